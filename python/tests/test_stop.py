"""`SwitchboardAgentRuntime.stop()` is bounded when Kafka went away under the runtime.

The test runs its own broker (e2e/infra/kafka.sh with a state dir and ports of its
own, under the suite's state dir), so stopping it does not disturb the other tests.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

from autogen_core import AgentId, TopicId

from agents import AlertCounter, Incr, Ping, Tally
from helpers import FAST, HERE
from switchboard.autogen import SwitchboardAgentRuntime

ROOT = HERE.parent.parent
KAFKA_SH = ROOT / "e2e" / "infra" / "kafka.sh"
# NativeRuntime's STOP_SLACK (python/src/runtime.rs).
STOP_SLACK_S = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnBroker:
    """A broker of this test's own; `stop` is idempotent, `close` also removes its state."""

    def __init__(self) -> None:
        base = Path(os.environ.get("SWITCHBOARD_STATE_DIR", ROOT / ".state"))
        self.state = base / "owned" / f"py-stop-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.env = dict(
            os.environ,
            SWITCHBOARD_STATE_DIR=str(self.state),
            SWITCHBOARD_KAFKA_PORT=str(self.port),
            SWITCHBOARD_KAFKA_CONTROLLER_PORT=str(free_port()),
        )

    def run(self, command: str, timeout: float) -> None:
        subprocess.run([str(KAFKA_SH), command], env=self.env, check=True, timeout=timeout)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        try:
            self.run("stop", 120)
        finally:
            subprocess.run(["rm", "-rf", str(self.state)], check=False)


async def test_stop_is_bounded_when_the_broker_is_gone(prefix: str) -> None:
    broker = OwnBroker()
    broker.run("start", 120)
    try:
        drain_timeout = 1.0
        settings = dict(FAST, drain_timeout=drain_timeout)
        rt = SwitchboardAgentRuntime("stopper", topic_prefix=prefix, bootstrap_servers=broker.bootstrap, **settings)
        await Tally.register(rt, "tally", Tally)
        await AlertCounter.register(rt, "alert_counter", AlertCounter)
        await rt.start()
        # Work that reached the agents: the runtime has state, commits and registry
        # records to deal with when it stops.
        await rt.publish_message(Ping(1), topic_id=TopicId("alerts", "k"))
        assert (await rt.send_message(Incr(2), AgentId("tally", "k"))).value == 2
        broker.run("stop", 120)
        started = time.monotonic()
        await rt.stop()
        took = time.monotonic() - started
        bound = drain_timeout + STOP_SLACK_S
        assert took <= bound + 2.0, f"stop() took {took:.1f} s with the broker gone (bound {bound:.0f} s)"
    finally:
        broker.close()
