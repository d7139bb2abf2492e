"""Test helpers: runtimes with short timings, worker processes, polling."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional

from switchboard.autogen import SwitchboardAgentRuntime

HERE = Path(__file__).resolve().parent

# Short enough that a killed replica's partitions move within seconds.
FAST = dict(
    heartbeat_interval=0.5,
    liveness_timeout=3.0,
    drain_timeout=5.0,
    partitions=3,
    rpc_timeout=20.0,
)


def bootstrap() -> str:
    return os.environ["SWITCHBOARD_TEST_KAFKA"]


def make_runtime(prefix: str, name: str, **kw: Any) -> SwitchboardAgentRuntime:
    settings = dict(FAST)
    settings.update(kw)
    rt = SwitchboardAgentRuntime(name, topic_prefix=prefix, bootstrap_servers=bootstrap(), **settings)
    # As AutoGen's gRPC runtime, a caller needs serializers for the replies it decodes.
    from agents import reply_serializers

    rt.add_message_serializer(reply_serializers())
    return rt


class Worker:
    """A runtime in another process: ``tests/worker.py SCENARIO``, ready when it prints READY."""

    def __init__(self, scenario: str, prefix: str, name: str, args: Optional[dict] = None) -> None:
        self.scenario, self.prefix, self.name = scenario, prefix, name
        self.args = args or {}
        self.proc: Optional[subprocess.Popen[str]] = None
        self.log = HERE.parent / ".pytest-logs" / f"{prefix}-{name}-{scenario}-{time.time_ns()}.log"

    def start(self, timeout: float = 90.0) -> "Worker":
        self.log.parent.mkdir(exist_ok=True)
        logf = open(self.log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "worker.py"), self.scenario, self.prefix, self.name, json.dumps(self.args)],
            stdout=subprocess.PIPE,
            stderr=logf,
            text=True,
            cwd=HERE,
        )
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if line.strip() == "READY":
                return self
            if not line and self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited with {self.proc.returncode}:\n{self.log.read_text()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"worker {self.name} not ready in {timeout}s:\n{self.log.read_text()}")

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait: the worker stops its runtime gracefully."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> Optional[int]:
        """Stops a worker still running; its exit code (None: it was not running)."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        try:
            return self.terminate(30)
        except Exception:
            self.kill()
            return -9


async def eventually(
    check: Callable[[], Awaitable[Any]] | Callable[[], Any], timeout: float = 30.0, every: float = 0.1
) -> Any:
    """Polls ``check`` until it returns a truthy value; fails with the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"condition not met in {timeout}s (last value {last!r})")
