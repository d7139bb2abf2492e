"""SIGKILL of one of two replica processes mid-stream of 1,000 events loses none."""

from __future__ import annotations

import asyncio

from autogen_core import AgentId, TopicId

from agents import GetCount, Ping, Seen
from helpers import eventually

EVENTS = 1_000
KEYS = 10
# A dead replica's partitions move after the group's session timeout.
REPLICA = {"runtime": {"consumer": {"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"}}}


async def test_sigkill_of_one_replica_mid_stream_loses_no_event(prefix, workers, runtime_factory):
    first = workers("collector", prefix, "sink", args=dict(REPLICA))
    workers("collector", prefix, "sink", args=dict(REPLICA))
    rt = runtime_factory(prefix, "producer")
    await rt.start()
    sent = 0
    for n in range(EVENTS):
        await rt.publish_message(Ping(n), TopicId("load", f"key-{n % KEYS}"))
        sent += 1
        if n == EVENTS // 3:
            first.kill()  # SIGKILL: no drain, no commit, no goodbye
    assert sent == EVENTS

    async def everything_seen() -> bool:
        seen: set[int] = set()
        for k in range(KEYS):
            reply = await rt.send_message(GetCount(), AgentId("collector", f"key-{k}"))
            assert isinstance(reply, Seen)
            assert all(n % KEYS == k for n in reply.values), f"key-{k} got another key's events"
            seen.update(reply.values)
        missing = set(range(EVENTS)) - seen
        if missing:
            print(f"still missing {len(missing)} events, e.g. {sorted(missing)[:5]}")
        return not missing

    await eventually(everything_seen, timeout=90, every=2.0)
    await rt.stop()
