"""switchboard.step: SIGKILL of the hosting worker after step a completed and while
step b runs; after redelivery to a new worker, step a is not run again (its result
comes from the journal) and the caller gets one reply. With durable_steps=False the
same crash runs step a twice, so the test can fail."""

from __future__ import annotations

import asyncio
import os

import pytest
from autogen_core import AgentId, try_get_known_serializers_for_type

from agents import Done, Work
from helpers import eventually

# A killed worker's partitions move after the group's session timeout.
FAST_GROUP = {"consumer": {"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"}}


def lines(path: str) -> int:
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return len(f.readlines())


@pytest.mark.parametrize("durable", [True, False])
async def test_a_completed_step_is_not_run_again_after_a_sigkill(prefix, workers, runtime_factory, tmp_path, durable):
    settings = dict(FAST_GROUP, durable_steps=durable)
    first = workers("stepper", prefix, "steps", args={"runtime": dict(settings)})
    caller = runtime_factory(prefix, "caller", rpc_timeout=60.0)
    caller.add_message_serializer(try_get_known_serializers_for_type(Work))
    await caller.start()
    d = str(tmp_path)
    reply = asyncio.ensure_future(caller.send_message(Work(d), AgentId("stepper", "k1")))

    async def b_started() -> bool:
        return lines(os.path.join(d, "b")) >= 1

    await eventually(b_started, timeout=60, every=0.2)
    assert lines(os.path.join(d, "a")) == 1
    first.kill()  # SIGKILL while step b waits: a is journaled, b is not
    workers("stepper", prefix, "steps", args={"runtime": dict(settings)})
    open(os.path.join(d, "go"), "w").close()
    done = await asyncio.wait_for(reply, timeout=90)
    assert isinstance(done, Done)
    a_runs, b_runs = lines(os.path.join(d, "a")), lines(os.path.join(d, "b"))
    if durable:
        assert (a_runs, b_runs) == (1, 2), "step a came from the journal, b ran again"
        assert done == Done(1, 2)
    else:
        assert (a_runs, b_runs) == (2, 2), "without the journal both steps run again"
    await caller.stop()
