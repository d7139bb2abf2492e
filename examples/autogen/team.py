"""A small AutoGen program across two processes on Switchboard.

- `planner` (process A) answers a `Question` by RPC: it asks `researcher` for facts
  (an RPC into process B), then publishes an `Answered` event.
- `researcher` (process B) answers `Lookup` RPCs; it also keeps a count of lookups per
  key in its agent state (it survives restarts of process B).
- `archive` (process B, `@type_subscription("answers")`) receives every `Answered`.

Run a broker (e2e/infra/kafka.sh start), then in three shells:

    python team.py researcher     # process B
    python team.py planner        # process A
    python team.py ask "why is the sky blue"

The same agents as runtime pods: runtime.yaml with
`python -m switchboard serve --config runtime.yaml --agents team:register_researcher`,
or all three as an AgentRuntime (examples/demo/autogen.yaml, part of `make demo`).
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from typing import Any, List, Mapping

from autogen_core import (
    AgentId,
    MessageContext,
    RoutedAgent,
    TopicId,
    event,
    rpc,
    try_get_known_serializers_for_type,
    type_subscription,
)

from switchboard.autogen import SwitchboardAgentRuntime

PREFIX = os.environ.get("SWITCHBOARD_TOPIC_PREFIX", "autogen-demo")
BOOTSTRAP = os.environ.get("SWITCHBOARD_BOOTSTRAP_SERVERS", "127.0.0.1:9092")


@dataclass
class Question:
    text: str


@dataclass
class Answer:
    text: str
    facts: List[str]


@dataclass
class Lookup:
    topic: str


@dataclass
class Facts:
    items: List[str]
    lookups_so_far: int


@dataclass
class Answered:
    question: str
    answer: str


class Planner(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("Plans an answer from the researcher's facts")

    @rpc
    async def on_question(self, message: Question, ctx: MessageContext) -> Answer:
        facts = await self.send_message(Lookup(message.text), AgentId("researcher", self.id.key))
        answer = f"{message.text}? Because: {'; '.join(facts.items)}"
        await self.publish_message(Answered(message.text, answer), TopicId("answers", self.id.key))
        return Answer(answer, facts.items)


class Researcher(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("Looks facts up")
        self.lookups = 0

    @rpc
    async def on_lookup(self, message: Lookup, ctx: MessageContext) -> Facts:
        self.lookups += 1
        words = [w for w in message.topic.split() if len(w) > 3]
        return Facts([f"{w} is a known thing" for w in words], self.lookups)

    async def save_state(self) -> Mapping[str, Any]:
        return {"lookups": self.lookups}

    async def load_state(self, state: Mapping[str, Any]) -> None:
        self.lookups = int(state["lookups"])


@type_subscription(topic_type="answers")
class Archive(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("Keeps every answer")

    @event
    async def on_answered(self, message: Answered, ctx: MessageContext) -> None:
        print(f"archive/{self.id.key}: {message.answer}", flush=True)


def serializers(runtime: SwitchboardAgentRuntime) -> None:
    """Replies decoded in this process (as with AutoGen's gRPC runtime)."""
    for cls in (Answer, Facts):
        runtime.add_message_serializer(try_get_known_serializers_for_type(cls))


async def register_planner(runtime: SwitchboardAgentRuntime) -> None:
    serializers(runtime)
    await Planner.register(runtime, "planner", Planner)


async def register_researcher(runtime: SwitchboardAgentRuntime) -> None:
    await Researcher.register(runtime, "researcher", Researcher)
    await Archive.register(runtime, "archive", Archive)


async def register_team(runtime: SwitchboardAgentRuntime) -> None:
    """All three in one runtime pod (examples/demo/autogen.yaml)."""
    await register_planner(runtime)
    await register_researcher(runtime)


async def host(name: str, register) -> None:
    runtime = SwitchboardAgentRuntime(name, topic_prefix=PREFIX, bootstrap_servers=BOOTSTRAP)
    await register(runtime)
    await runtime.start()
    print(f"{name}: serving on prefix {PREFIX}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runtime.stop()


async def ask(text: str, key: str = "user-1") -> None:
    runtime = SwitchboardAgentRuntime("asker", topic_prefix=PREFIX, bootstrap_servers=BOOTSTRAP)
    serializers(runtime)
    await runtime.start()
    answer = await runtime.send_message(Question(text), AgentId("planner", key))
    print(answer)
    await runtime.stop()


if __name__ == "__main__":
    role = sys.argv[1] if len(sys.argv) > 1 else ""
    if role == "planner":
        asyncio.run(host("team-planner", register_planner))
    elif role == "researcher":
        asyncio.run(host("team-researcher", register_researcher))
    elif role == "ask":
        asyncio.run(ask(" ".join(sys.argv[2:]) or "why is the sky blue"))
    else:
        sys.exit("usage: team.py planner | researcher | ask QUESTION")
