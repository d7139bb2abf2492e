"""The Python side of one agent as the Rust runtime holds it (see ``bridge.rs``).

The Rust core decides when a message runs (one at a time per agent, in order) and
what happens to its outcome (reply, commit, state snapshot, dead letter). The shell
makes the agent, decodes the payload, calls ``on_message`` and encodes the reply,
all in one coroutine on the runtime's asyncio loop.
"""

from __future__ import annotations

import contextvars
import inspect
import json
import logging
from typing import TYPE_CHECKING, Any, Callable, Optional, Tuple

from autogen_core import (
    Agent,
    AgentId,
    AgentInstantiationContext,
    BaseAgent,
    CancellationToken,
    MessageContext,
    MessageHandlerContext,
    TopicId,
)
from autogen_core._serialization import UnknownPayload

from ._errors import format_exception

if TYPE_CHECKING:
    from ._runtime import SwitchboardAgentRuntime

logger = logging.getLogger("switchboard")

# Status codes of `handle` (kept in sync with bridge.rs).
NO_REPLY, REPLY, HANDLER_ERROR, DECODE_ERROR, UNKNOWN_TYPE, FACTORY_ERROR = range(6)

#: The Rust context of the message being handled (trace, self-RPC check, deadline).
HANDLER_CONTEXT: contextvars.ContextVar[Any] = contextvars.ContextVar("switchboard_handler_context", default=None)

Outcome = Tuple[int, Optional[str], Optional[str], Optional[bytes], Optional[str]]


def _is_stateful(agent: Agent) -> bool:
    """False when ``save_state`` is BaseAgent's placeholder (it warns and returns {})."""
    if isinstance(agent, BaseAgent):
        return type(agent).save_state is not BaseAgent.save_state
    return True


class AgentShell:
    """Makes and runs one agent of a Switchboard runtime."""

    __slots__ = ("_runtime", "_id", "_factory", "_expected", "_agent", "_stateful", "_token")

    def __init__(
        self,
        runtime: "SwitchboardAgentRuntime",
        agent_id: AgentId,
        factory: Optional[Callable[..., Any]] = None,
        expected_class: Optional[type] = None,
        instance: Optional[Agent] = None,
    ) -> None:
        self._runtime = runtime
        self._id = agent_id
        self._factory = factory
        self._expected = expected_class
        self._agent: Optional[Agent] = instance
        self._stateful = instance is not None and _is_stateful(instance)
        self._token: Optional[CancellationToken] = None

    async def _make(self) -> Agent:
        factory = self._factory
        if factory is None:
            raise RuntimeError(f"agent {self._id} has no factory")
        with AgentInstantiationContext.populate_context((self._runtime, self._id)):
            params = len(inspect.signature(factory).parameters)
            if params == 0:
                agent = factory()
            elif params == 2:  # AutoGen's deprecated (runtime, agent_id) factories
                agent = factory(self._runtime, self._id)
            else:
                raise ValueError("Agent factory must take 0 or 2 arguments.")
            if inspect.isawaitable(agent):
                agent = await agent
        if self._expected is not None and not isinstance(agent, self._expected):
            raise ValueError(
                f"Factory registered using the wrong type: expected {self._expected.__name__}, "
                f"got {type(agent).__name__}"
            )
        bind = getattr(agent, "bind_id_and_runtime", None)
        if bind is not None:
            await bind(id=self._id, runtime=self._runtime)
        self._runtime._learn_agent_class(type(agent))
        return agent

    async def instance(self) -> Agent:
        if self._agent is None:
            self._agent = await self._make()
            self._stateful = _is_stateful(self._agent)
        return self._agent

    def cancel_current(self) -> None:
        """Cancels the running handler's token (the caller's deadline passed)."""
        token = self._token
        if token is not None:
            token.cancel()

    async def handle(
        self,
        type_name: str,
        content_type: str,
        data: bytes,
        sender: Optional[Tuple[str, str]],
        topic: Optional[Tuple[str, str]],
        is_rpc: bool,
        message_id: str,
        native_ctx: Any,
        completion: Callable[..., None],
    ) -> None:
        """Handles one message and reports its outcome to ``completion`` (always
        exactly once, also when the handler is cancelled)."""
        try:
            outcome = await self._handle(type_name, content_type, data, sender, topic, is_rpc, message_id, native_ctx)
        except BaseException as e:
            completion(None, format_exception(e))
            raise
        completion(outcome)

    async def _handle(
        self,
        type_name: str,
        content_type: str,
        data: bytes,
        sender: Optional[Tuple[str, str]],
        topic: Optional[Tuple[str, str]],
        is_rpc: bool,
        message_id: str,
        native_ctx: Any,
    ) -> Outcome:
        try:
            agent = self._agent if self._agent is not None else await self.instance()
        except Exception as e:
            logger.error("agent factory for %s raised", self._id, exc_info=True)
            return (FACTORY_ERROR, f"agent factory for {self._id} raised {format_exception(e)}", None, None, None)
        if topic is not None and sender is not None and sender[0] == self._id.type and sender[1] == self._id.key:
            # AutoGen never delivers a published message back to its sender.
            return (NO_REPLY, None, None, None, None)
        serializers = self._runtime._serializers
        if not serializers.is_registered(type_name, content_type):
            return (UNKNOWN_TYPE, type_name, None, None, None)
        try:
            message = serializers.decode(type_name, content_type, data)
        except Exception as e:
            return (DECODE_ERROR, format_exception(e), None, None, None)
        token = CancellationToken()
        self._token = token
        ctx = MessageContext(
            sender=AgentId(sender[0], sender[1]) if sender is not None else None,
            topic_id=TopicId(topic[0], topic[1]) if topic is not None else None,
            is_rpc=is_rpc,
            cancellation_token=token,
            message_id=message_id,
        )
        reset = HANDLER_CONTEXT.set(native_ctx)
        try:
            with MessageHandlerContext.populate_context(self._id):
                reply = await agent.on_message(message, ctx)
        except Exception as e:
            logger.debug("handler of %s raised", self._id, exc_info=True)
            return (HANDLER_ERROR, format_exception(e), None, None, await self._state(agent))
        finally:
            HANDLER_CONTEXT.reset(reset)
            self._token = None
        state = await self._state(agent)
        if reply is None or not is_rpc:
            return (NO_REPLY, None, None, None, state)
        if isinstance(reply, UnknownPayload):
            return (REPLY, reply.type_name, reply.data_content_type, reply.payload, state)
        try:
            rtype, rct, rdata = serializers.encode(reply)
        except Exception as e:
            return (HANDLER_ERROR, f"reply could not be encoded: {format_exception(e)}", None, None, state)
        return (REPLY, rtype, rct, rdata, state)

    async def _state(self, agent: Agent) -> Optional[str]:
        if not self._stateful:
            return None
        return json.dumps(dict(await agent.save_state()))

    async def save_state(self) -> Optional[str]:
        agent = await self.instance()
        return await self._state(agent)

    async def load_state(self, text: str) -> None:
        agent = await self.instance()
        state = json.loads(text)
        if state is None:
            return
        await agent.load_state(state)
