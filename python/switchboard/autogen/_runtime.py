"""``SwitchboardAgentRuntime``: autogen_core's ``AgentRuntime`` on the Switchboard core.

Every message goes through the Rust runtime in this process: RPCs to the recipient
runtime's inbox and back on this process's reply channel, events through the
network's events topic to every subscribed type. Agents hosted here run on the
asyncio loop ``start`` was called from, one message at a time per agent.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import time
from typing import Any, Awaitable, Callable, Dict, List, Mapping, Optional, Sequence, Set, Type, TypeVar

from autogen_core import (
    Agent,
    AgentId,
    AgentMetadata,
    AgentRuntime,
    AgentType,
    BaseAgent,
    CancellationToken,
    MessageSerializer,
    Subscription,
    TopicId,
    TypePrefixSubscription,
    TypeSubscription,
)

from .._native import NativeError, NativeRuntime, init_logging
from . import _errors
from ._config import RuntimeSettings
from ._serialization import Serializers
from .builtins import SERIALIZERS as BUILTIN_SERIALIZERS
from ._shell import HANDLER_CONTEXT, AgentShell

T = TypeVar("T", bound=Agent)

logger = logging.getLogger("switchboard")

_started_in_process = False


@atexit.register
def _let_rust_threads_leave() -> None:
    """Runs before interpreter finalization: a Rust thread that just completed an
    awaited future (the last ``stop``) may still be inside its Python call, and
    finalizing under it crashes the process. Runtimes are stopped by now, so nothing
    new starts; a short pause lets that call return."""
    if _started_in_process:
        time.sleep(0.1)


def _subscription_route(sub: Subscription) -> tuple[str, str, str]:
    """``(kind, topic, agent_type)`` of the subscriptions the network can match."""
    if isinstance(sub, TypeSubscription):  # DefaultSubscription included
        return ("type", sub.topic_type, sub.agent_type)
    if isinstance(sub, TypePrefixSubscription):
        return ("prefix", sub.topic_type_prefix, sub.agent_type)
    raise TypeError(
        f"{type(sub).__name__} is not supported: Switchboard matches subscriptions in every "
        "runtime of the network, so only TypeSubscription, TypePrefixSubscription and "
        "DefaultSubscription are (custom is_match code cannot travel)"
    )


def _make_subscription(kind: str, sub_id: str, topic: str, agent_type: str) -> Subscription:
    if kind == "prefix":
        return TypePrefixSubscription(topic_type_prefix=topic, agent_type=agent_type, id=sub_id)
    return TypeSubscription(topic_type=topic, agent_type=agent_type, id=sub_id)


class SwitchboardAgentRuntime(AgentRuntime):
    """An AutoGen agent runtime whose transport is Switchboard (Kafka).

    Runtimes with the same ``topic_prefix`` on the same Kafka cluster form one agent
    network; processes with the same ``runtime_name`` are replicas of one runtime
    (they share its agent types, inbox and state). See python/README.md for how this
    differs from ``SingleThreadedAgentRuntime``.
    """

    def __init__(
        self,
        runtime_name: str,
        *,
        topic_prefix: str = "switchboard",
        bootstrap_servers: str | Sequence[str] | None = None,
        **settings: Any,
    ) -> None:
        self._settings = RuntimeSettings(
            runtime_name=runtime_name,
            topic_prefix=topic_prefix,
            bootstrap_servers=bootstrap_servers,
            **settings,
        )
        init_logging("warn")
        try:
            native = NativeRuntime(
                self._settings.config_text(),
                self._settings.secrets(),
                **self._settings.native_options(),
            )
        except NativeError as e:
            raise _errors.translate(e) from None
        self._init(native)

    @classmethod
    def from_config_file(cls, text: str, *, apply_env: bool = True) -> "SwitchboardAgentRuntime":
        """A runtime from the runtime config file's text (YAML or JSON, the format
        ``switchboard-runtime run`` and the operator use); with ``apply_env``,
        ``SWITCHBOARD_*`` variables override it as they do for the binary."""
        init_logging("warn")
        try:
            native = NativeRuntime.from_file(text, apply_env)
        except NativeError as e:
            raise _errors.translate(e) from None
        self = cls.__new__(cls)
        self._settings = None
        self._init(native)
        return self

    def _init(self, native: NativeRuntime) -> None:
        self._native = native
        self._serializers = Serializers()
        self._serializers.add(BUILTIN_SERIALIZERS)
        self._start_task: Optional[asyncio.Future[None]] = None
        self._stopped = False
        # AutoGen subscription id -> the id of the same route in the network.
        self._subscription_ids: Dict[str, str] = {}
        self._local_types: Set[str] = set()
        self._known_classes: Set[type] = set()

    # -- lifecycle -------------------------------------------------------------

    @property
    def runtime_name(self) -> str:
        """This runtime's name (its replicas share it)."""
        return self._native.runtime_name

    @property
    def topic_prefix(self) -> str:
        """The agent network's topic prefix."""
        return self._native.topic_prefix

    @property
    def native(self) -> NativeRuntime:
        """The Rust runtime (stats, readiness)."""
        return self._native

    def start(self) -> "asyncio.Future[None]":
        """Connects and joins the network. Call it from the loop agents should run
        on. Returns an awaitable: ``await runtime.start()`` waits until the runtime
        serves; plain ``runtime.start()`` (AutoGen's style) starts it in the
        background and every later call waits for it."""
        if self._start_task is None:
            self._start_task = asyncio.ensure_future(self._start())
        return self._start_task

    async def _start(self) -> None:
        global _started_in_process
        _started_in_process = True
        try:
            await self._native.start()
        except NativeError as e:
            raise _errors.translate(e) from None

    async def _ready(self) -> None:
        if self._stopped:
            raise _errors.RuntimeStoppedError("the runtime is stopped")
        await self.start()

    @property
    def is_started(self) -> bool:
        """Whether the runtime has started and serves."""
        return self._start_task is not None and self._start_task.done() and not self._stopped

    async def stop(self) -> None:
        """Stops gracefully: handlers in flight finish, their offsets are committed;
        the last replica releases the runtime's agent types and subscriptions."""
        if self._stopped:
            return
        self._stopped = True
        if self._start_task is not None:
            try:
                await self._start_task
            except Exception:
                logger.debug("stopping a runtime whose start failed", exc_info=True)
        try:
            await self._native.stop()
        except NativeError as e:
            raise _errors.translate(e) from None
        # The Rust thread that completed the future may still be inside its Python
        # call; a program that exits right after `stop` must not finalize under it.
        await asyncio.sleep(0.05)

    async def stop_when_idle(self, idle_for: float = 1.0) -> None:
        """Stops once this process has handled nothing for ``idle_for`` seconds and
        waits for no RPC reply (AutoGen's in-process queue has no counterpart here:
        work may still be in Kafka, for this runtime's replicas or others)."""
        await self.stop_when(lambda: False, idle_for=idle_for)

    async def stop_when(
        self, condition: Callable[[], bool], check_period: float = 0.1, *, idle_for: Optional[float] = None
    ) -> None:
        """Stops when ``condition()`` is true (checked every ``check_period``), or,
        with ``idle_for``, when the process has been idle that long."""
        await self._ready()
        last = None
        quiet_since = time.monotonic()
        while True:
            if condition():
                break
            if idle_for is not None:
                stats = self._native.stats()
                now = (stats["handled"], stats["failed"], stats["waiting_rpcs"])
                if now != last or stats["waiting_rpcs"]:
                    last, quiet_since = now, time.monotonic()
                elif time.monotonic() - quiet_since >= idle_for:
                    break
            await asyncio.sleep(check_period)
        await self.stop()

    async def close(self) -> None:
        """Stops and calls ``close()`` on the agents this process holds."""
        agents = []
        for t, k in self._native.active_agents():
            try:
                agents.append(await self._native.local_instance(t, k))
            except NativeError:
                pass
        await self.stop()
        for agent in agents:
            await agent.close()

    # -- registration ------------------------------------------------------------

    def _learn_agent_class(self, cls: type) -> None:
        """Registers the serializers of the message types ``cls`` handles."""
        if cls in self._known_classes:
            return
        self._known_classes.add(cls)
        handles = getattr(cls, "_handles_types", None)
        if handles is not None:
            for _message_type, serializers in handles():
                self._serializers.add(serializers)

    async def register_factory(
        self,
        type: str | AgentType,
        agent_factory: Callable[[], T | Awaitable[T]],
        *,
        expected_class: type[T] | None = None,
    ) -> AgentType:
        agent_type = AgentType(type) if isinstance(type, str) else type
        if expected_class is not None:
            self._learn_agent_class(expected_class)

        def make_shell(key: str) -> AgentShell:
            return AgentShell(self, AgentId(agent_type.type, key), agent_factory, expected_class)

        if self._start_task is not None:
            await self._ready()
        try:
            await self._native.register_factory(agent_type.type, make_shell)
        except NativeError as e:
            raise _errors.translate(e) from None
        self._local_types.add(agent_type.type)
        return agent_type

    async def register_agent_instance(self, agent_instance: Agent, agent_id: AgentId) -> AgentId:
        await agent_instance.bind_id_and_runtime(id=agent_id, runtime=self)
        self._learn_agent_class(type(agent_instance))
        shell = AgentShell(self, agent_id, instance=agent_instance)
        if self._start_task is not None:
            await self._ready()
        try:
            await self._native.register_instance(
                agent_id.type, agent_id.key, shell, f"{type(agent_instance).__module__}.{type(agent_instance).__qualname__}"
            )
        except NativeError as e:
            raise _errors.translate(e) from None
        self._local_types.add(agent_id.type)
        return agent_id

    # -- messaging ---------------------------------------------------------------

    async def send_message(
        self,
        message: Any,
        recipient: AgentId,
        *,
        sender: AgentId | None = None,
        cancellation_token: CancellationToken | None = None,
        message_id: str | None = None,
    ) -> Any:
        await self._ready()
        type_name, content_type, data = self._serializers.encode(message)
        try:
            future = self._native.send(
                type_name,
                content_type,
                data,
                (recipient.type, recipient.key),
                (sender.type, sender.key) if sender is not None else None,
                None,
                HANDLER_CONTEXT.get(),
                message_id,
            )
            if cancellation_token is not None:
                cancellation_token.link_future(future)
            reply = await future
        except NativeError as e:
            raise _errors.translate(e) from None
        if reply is None:
            return None
        return self._serializers.decode(*reply)

    async def publish_message(
        self,
        message: Any,
        topic_id: TopicId,
        *,
        sender: AgentId | None = None,
        cancellation_token: CancellationToken | None = None,
        message_id: str | None = None,
    ) -> None:
        await self._ready()
        type_name, content_type, data = self._serializers.encode(message)
        try:
            future = self._native.publish(
                type_name,
                content_type,
                data,
                (topic_id.type, topic_id.source),
                (sender.type, sender.key) if sender is not None else None,
                HANDLER_CONTEXT.get(),
                message_id,
            )
            if cancellation_token is not None:
                cancellation_token.link_future(future)
            await future
        except NativeError as e:
            raise _errors.translate(e) from None

    def add_message_serializer(self, serializer: MessageSerializer[Any] | Sequence[MessageSerializer[Any]]) -> None:
        self._serializers.add(serializer)

    # -- subscriptions -------------------------------------------------------------

    async def add_subscription(self, subscription: Subscription) -> None:
        kind, topic, agent_type = _subscription_route(subscription)
        if subscription.id in self._subscription_ids:
            raise ValueError("Subscription already exists")
        await self._ready()
        try:
            added = await self._native.add_subscription(kind, subscription.id, topic, agent_type)
        except NativeError as e:
            raise _errors.translate(e) from None
        network_id = subscription.id
        if not added:
            # The network has this route already (a replica, or this runtime before a
            # restart, added it): share it rather than deliver every event twice.
            for k, sid, t, a in await self._native.subscriptions():
                if (k, t, a) == (kind, topic, agent_type):
                    network_id = sid
                    break
        self._subscription_ids[subscription.id] = network_id

    async def remove_subscription(self, id: str) -> None:
        await self._ready()
        network_id = self._subscription_ids.get(id, id)
        try:
            await self._native.remove_subscription(network_id)
        except NativeError as e:
            raise _errors.translate(e) from None
        self._subscription_ids.pop(id, None)

    async def subscriptions(self) -> List[Subscription]:
        """Every subscription of the network (all runtimes of the prefix)."""
        await self._ready()
        return [_make_subscription(*s) for s in await self._native.subscriptions()]

    # -- agents ------------------------------------------------------------------

    def _owner(self, agent_type: str) -> Optional[str]:
        for t, runtime in self._native.agent_types():
            if t == agent_type:
                return runtime
        return None

    def _hosted_here(self, agent_type: str) -> bool:
        return agent_type in self._local_types

    async def _local_instance(self, agent_id: AgentId) -> Agent:
        try:
            return await self._native.local_instance(agent_id.type, agent_id.key)
        except NativeError as e:
            raise _errors.translate(e) from None

    async def agent_metadata(self, agent: AgentId) -> AgentMetadata:
        await self._ready()
        if self._hosted_here(agent.type):
            instance = await self._local_instance(agent)
            metadata = getattr(instance, "metadata", None)
            if metadata is not None:
                return metadata
            return AgentMetadata(type=agent.type, key=agent.key, description="")
        try:
            runtime, _class, _local = await self._native.agent_metadata(agent.type, agent.key)
        except NativeError as e:
            raise _errors.translate(e) from None
        return AgentMetadata(type=agent.type, key=agent.key, description=f"hosted by runtime {runtime}")

    async def try_get_underlying_agent_instance(self, id: AgentId, type: Type[T] = Agent) -> T:  # type: ignore[assignment]
        await self._ready()
        if not self._hosted_here(id.type):
            owner = self._owner(id.type)
            if owner is None:
                raise _errors.UnknownAgentTypeError(f"Agent with name {id.type} not found.")
            raise _errors.NotAccessibleError(f"agent {id} lives in runtime {owner}, not in this process")
        instance = await self._local_instance(id)
        if not isinstance(instance, type):
            raise TypeError(
                f"Agent with name {id.type} is not of type {type.__name__}. "
                f"It is of type {instance.__class__.__name__}"
            )
        return instance  # type: ignore[return-value]

    async def get(
        self, id_or_type: AgentId | AgentType | str, /, key: str = "default", *, lazy: bool = True
    ) -> AgentId:
        if isinstance(id_or_type, AgentId):
            agent_id = id_or_type
        else:
            type_str = id_or_type if isinstance(id_or_type, str) else id_or_type.type
            agent_id = AgentId(type_str, key)
        if not lazy:
            await self._ready()
            if self._hosted_here(agent_id.type):
                await self._local_instance(agent_id)
            elif self._owner(agent_id.type) is None:
                raise _errors.UnknownAgentTypeError(f"Agent with name {agent_id.type} not found.")
        return agent_id

    # -- state -------------------------------------------------------------------

    async def agent_save_state(self, agent: AgentId) -> Mapping[str, Any]:
        await self._ready()
        try:
            text = await self._native.agent_save_state(agent.type, agent.key)
        except NativeError as e:
            raise _errors.translate(e) from None
        state = json.loads(text)
        return state if state is not None else {}

    async def agent_load_state(self, agent: AgentId, state: Mapping[str, Any]) -> None:
        await self._ready()
        try:
            await self._native.agent_load_state(agent.type, agent.key, json.dumps(dict(state)))
        except NativeError as e:
            raise _errors.translate(e) from None

    async def save_state(self) -> Mapping[str, Any]:
        """The state of every agent this process holds, by agent id."""
        await self._ready()
        out: Dict[str, Any] = {}
        for t, k in self._native.active_agents():
            out[f"{t}/{k}"] = dict(await self.agent_save_state(AgentId(t, k)))
        return out

    async def load_state(self, state: Mapping[str, Any]) -> None:
        """Loads each agent's state; agents of types hosted elsewhere are skipped
        (they load their own state from their runtime's state topic)."""
        await self._ready()
        for id_str, agent_state in state.items():
            agent_id = AgentId.from_str(id_str)
            if self._hosted_here(agent_id.type):
                await self.agent_load_state(agent_id, agent_state)
            else:
                logger.warning("load_state: skipping %s, its type is not hosted by this runtime", id_str)
