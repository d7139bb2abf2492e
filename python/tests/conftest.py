"""Fixtures of the Python suite: a real Kafka broker (``SWITCHBOARD_TEST_KAFKA``, as
started by e2e/infra/kafka.sh), a fresh topic prefix per test, worker processes.

Async tests run on a fresh event loop each, with a deadline, without plugins.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import uuid

import pytest

from helpers import Worker, make_runtime

TEST_DEADLINE_S = float(os.environ.get("SWITCHBOARD_PY_TEST_DEADLINE", "180"))


def pytest_configure(config: pytest.Config) -> None:
    if not os.environ.get("SWITCHBOARD_TEST_KAFKA"):
        raise pytest.UsageError(
            "SWITCHBOARD_TEST_KAFKA is not set: run through `make python-test` or "
            "e2e/infra/with-infra.sh --kafka-only (these tests need a real broker)"
        )


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}

    async def run() -> None:
        await asyncio.wait_for(pyfuncitem.obj(**args), TEST_DEADLINE_S)

    asyncio.run(run())
    return True


@pytest.fixture
def prefix() -> str:
    """A topic prefix of this test's own: its agent network."""
    return f"pyt-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def workers():
    """Starts worker processes; stops (or kills) them all at the end."""
    started: list[Worker] = []

    def start(scenario: str, prefix: str, name: str, **kw) -> Worker:
        w = Worker(scenario, prefix, name, **kw)
        started.append(w)
        w.start()
        return w

    yield start
    # A worker stopped by SIGTERM stops its runtime gracefully and exits 0; anything
    # else (a crash at shutdown, a hang) fails the test.
    codes = [(w.name, w.close()) for w in started]
    bad = [(name, code) for name, code in codes if code not in (None, 0)]
    assert not bad, f"workers did not stop cleanly: {bad}"


@pytest.fixture
def runtime_factory():
    """Makes runtimes in the test process; the test stops them (or the fixture does)."""
    made = []

    def make(prefix: str, name: str, **kw):
        rt = make_runtime(prefix, name, **kw)
        made.append(rt)
        return rt

    yield make
    for rt in made:
        if not rt._stopped and rt._start_task is not None:
            asyncio.run(_stop_in_fresh_loop(rt))


async def _stop_in_fresh_loop(rt) -> None:
    try:
        await rt.stop()
    except Exception:
        pass
