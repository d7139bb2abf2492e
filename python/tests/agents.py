"""Agents and messages shared by the tests and their worker processes, written as
AutoGen users write them (RoutedAgent, @rpc/@event/@message_handler, subscriptions)."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Dict, List, Mapping

from autogen_core import (
    AgentId,
    DefaultTopicId,
    MessageContext,
    RoutedAgent,
    TopicId,
    TypePrefixSubscription,
    TypeSubscription,
    default_subscription,
    event,
    message_handler,
    rpc,
    try_get_known_serializers_for_type,
    type_subscription,
)
from pydantic import BaseModel

from switchboard.autogen import SwitchboardAgentRuntime


# -- a RoutedAgent with several handlers ---------------------------------------------


@dataclass
class Add:
    a: int
    b: int


@dataclass
class Sum:
    value: int


@dataclass
class Mul:
    a: int
    b: int


class Product(BaseModel):
    value: int
    by: str


@dataclass
class Boom:
    text: str


@dataclass
class Nothing:
    reason: str


@dataclass
class Slow:
    seconds: float


@dataclass
class Note:
    text: str


@dataclass
class WhoAmI:
    pass_through: str


@dataclass
class Identity:
    agent: str
    sender: str
    is_rpc: bool
    message_id: str = ""


class Calc(RoutedAgent):
    """Several RPC handlers and one event handler."""

    def __init__(self) -> None:
        super().__init__("A calculator")
        self.notes: List[str] = []
        self.note_ids: List[str] = []

    @rpc
    async def add(self, message: Add, ctx: MessageContext) -> Sum:
        return Sum(message.a + message.b)

    @rpc
    async def mul(self, message: Mul, ctx: MessageContext) -> Product:
        return Product(value=message.a * message.b, by=str(self.id))

    @rpc
    async def boom(self, message: Boom, ctx: MessageContext) -> Sum:
        raise ValueError(message.text)

    @rpc
    async def nothing(self, message: Nothing, ctx: MessageContext) -> None:
        return None

    @rpc
    async def slow(self, message: Slow, ctx: MessageContext) -> Sum:
        # As AutoGen handlers should: the wait ends when the token is cancelled
        # (Switchboard cancels it when the caller's deadline passes).
        sleep = asyncio.ensure_future(asyncio.sleep(message.seconds))
        ctx.cancellation_token.link_future(sleep)
        await sleep
        return Sum(-1)

    @rpc
    async def who(self, message: WhoAmI, ctx: MessageContext) -> Identity:
        return Identity(agent=str(self.id), sender=str(ctx.sender), is_rpc=ctx.is_rpc, message_id=ctx.message_id)

    @event
    async def note(self, message: Note, ctx: MessageContext) -> None:
        self.notes.append(message.text)
        self.note_ids.append(ctx.message_id)


def reply_serializers() -> list:
    """What a caller registers to decode Calc's replies, as with AutoGen's gRPC runtime."""
    out: list = []
    for cls in REPLY_TYPES:
        out.extend(try_get_known_serializers_for_type(cls))
    return out


# -- AutoGen's cascading sample ---------------------------------------------------------


@dataclass
class CascadingMessage:
    round: int


@dataclass
class ReceiveMessageEvent:
    round: int
    sender: str
    recipient: str


@default_subscription
class CascadingAgent(RoutedAgent):
    def __init__(self, max_rounds: int) -> None:
        super().__init__("A cascading agent.")
        self.max_rounds = max_rounds

    @message_handler
    async def on_new_message(self, message: CascadingMessage, ctx: MessageContext) -> None:
        await self.publish_message(
            ReceiveMessageEvent(round=message.round, sender=str(ctx.sender), recipient=str(self.id)),
            topic_id=DefaultTopicId(),
        )
        if message.round == self.max_rounds:
            return
        await self.publish_message(CascadingMessage(round=message.round + 1), topic_id=DefaultTopicId())


@dataclass
class GetCount:
    pass_through: str = ""


@dataclass
class Count:
    value: int


@default_subscription
class ObserverAgent(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("An observer agent.")
        self.received: List[ReceiveMessageEvent] = []

    @message_handler
    async def on_receive_message(self, message: ReceiveMessageEvent, ctx: MessageContext) -> None:
        self.received.append(message)

    @rpc
    async def count(self, message: GetCount, ctx: MessageContext) -> Count:
        return Count(len(self.received))


# -- subscriptions ---------------------------------------------------------------------


@dataclass
class Ping:
    n: int


@type_subscription(topic_type="alerts")
class AlertCounter(RoutedAgent):
    """Counts Ping events per key; answers GetCount."""

    def __init__(self) -> None:
        super().__init__("Counts alerts")
        self.seen: List[int] = []

    @event
    async def on_ping(self, message: Ping, ctx: MessageContext) -> None:
        self.seen.append(message.n)

    @rpc
    async def count(self, message: GetCount, ctx: MessageContext) -> Count:
        return Count(len(self.seen))


# -- state -------------------------------------------------------------------------------


@dataclass
class Incr:
    by: int = 1


class Tally(RoutedAgent):
    """A stateful agent: its total survives restarts through save_state/load_state."""

    def __init__(self) -> None:
        super().__init__("Keeps a total")
        self.total = 0

    @rpc
    async def incr(self, message: Incr, ctx: MessageContext) -> Count:
        self.total += message.by
        return Count(self.total)

    @event
    async def incr_event(self, message: Ping, ctx: MessageContext) -> None:
        self.total += 1

    @rpc
    async def get(self, message: GetCount, ctx: MessageContext) -> Count:
        return Count(self.total)

    async def save_state(self) -> Mapping[str, Any]:
        return {"total": self.total}

    async def load_state(self, state: Mapping[str, Any]) -> None:
        self.total = int(state["total"])


# -- scenarios for worker processes ----------------------------------------------------------


async def scenario_calc(runtime: SwitchboardAgentRuntime) -> None:
    await Calc.register(runtime, "calc", Calc)
    # Added by the hosting process: known to it before it serves (a subscription added
    # by another process reaches it through the registry tail, a little later).
    await runtime.add_subscription(TypeSubscription("notes", "calc"))


async def scenario_cascade(runtime: SwitchboardAgentRuntime, agent_type: str, max_rounds: int) -> None:
    await CascadingAgent.register(runtime, agent_type, lambda: CascadingAgent(max_rounds))


async def scenario_alerts(runtime: SwitchboardAgentRuntime) -> None:
    await AlertCounter.register(runtime, "alert_counter", AlertCounter)


async def scenario_tally(runtime: SwitchboardAgentRuntime) -> None:
    await Tally.register(runtime, "tally", Tally)


SCENARIOS: Dict[str, Callable[..., Awaitable[None]]] = {
    "calc": scenario_calc,
    "cascade": scenario_cascade,
    "alerts": scenario_alerts,
    "tally": scenario_tally,
}


# -- failures ----------------------------------------------------------------------------


class NoModel(RuntimeError):
    pass


def fragile_factory() -> Calc:
    raise NoModel("no model configured")


async def scenario_fragile(runtime: SwitchboardAgentRuntime) -> None:
    """A type whose factory raises, plus a healthy type in the same process."""
    await runtime.register_factory("fragile", fragile_factory, expected_class=Calc)
    await runtime.add_subscription(TypeSubscription("fragile-events", "fragile"))
    await Calc.register(runtime, "calc", Calc)


# -- crash test: a stateful collector, two replicas -----------------------------------


@dataclass
class Seen:
    values: List[int]


class Collector(RoutedAgent):
    """Remembers every Ping it got, in its state (so a replica taking over knows)."""

    def __init__(self) -> None:
        super().__init__("Collects pings")
        self.seen: set[int] = set()

    @event
    async def on_ping(self, message: Ping, ctx: MessageContext) -> None:
        self.seen.add(message.n)

    @rpc
    async def report(self, message: GetCount, ctx: MessageContext) -> Seen:
        return Seen(sorted(self.seen))

    async def save_state(self) -> Mapping[str, Any]:
        return {"seen": sorted(self.seen)}

    async def load_state(self, state: Mapping[str, Any]) -> None:
        self.seen = set(state["seen"])


async def scenario_collector(runtime: SwitchboardAgentRuntime) -> None:
    await runtime.register_factory("collector", Collector, expected_class=Collector)
    await runtime.add_subscription(TypeSubscription("load", "collector"))


SCENARIOS.update({"fragile": scenario_fragile, "collector": scenario_collector})


# -- durable steps ----------------------------------------------------------------------


@dataclass
class Work:
    """Do two steps, marking each run in files under ``dir``; step b waits for dir/go."""

    dir: str


@dataclass
class Done:
    a_runs: int
    b_runs: int


def _mark(path: str) -> int:
    with open(path, "a") as f:
        f.write("run\n")
    with open(path) as f:
        return len(f.readlines())


class Stepper(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("two durable steps")

    @message_handler
    async def on_work(self, message: Work, ctx: MessageContext) -> Done:
        from switchboard import step

        a = await step("a", lambda: _mark(os.path.join(message.dir, "a")))

        async def b() -> int:
            n = _mark(os.path.join(message.dir, "b"))
            for _ in range(1200):  # bounded: 60 s
                if os.path.exists(os.path.join(message.dir, "go")):
                    return n
                await asyncio.sleep(0.05)
            raise TimeoutError("dir/go never appeared")

        return Done(a, await step("b", b))


async def scenario_stepper(runtime: SwitchboardAgentRuntime) -> None:
    await Stepper.register(runtime, "stepper", Stepper)


SCENARIOS["stepper"] = scenario_stepper

#: Replies the tests' callers decode (registered by helpers.make_runtime).
REPLY_TYPES = (Sum, Product, Identity, Count, Seen, Done)
