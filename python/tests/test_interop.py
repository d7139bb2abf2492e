"""A Python agent and the Rust runtime's built-ins (switchboard-runtime run) on one
prefix call each other by RPC and receive each other's events."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from autogen_core import AgentId, TopicId, TypeSubscription

from switchboard.autogen.builtins import Count as BuiltinCount

from agents import Add, Calc, Note, Ping
from helpers import HERE, bootstrap, eventually


def runtime_bin() -> str:
    path = os.environ.get("SWITCHBOARD_RUNTIME_BIN", "")
    if not path or not Path(path).is_file():
        pytest.fail(f"SWITCHBOARD_RUNTIME_BIN={path!r} is not the switchboard-runtime binary (make python-test builds it)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def rust_runtime(prefix):
    port = free_port()
    config = {
        "kafka": {"bootstrapServers": bootstrap(), "topicPrefix": prefix},
        "runtime": {"name": "rust-rt", "partitions": 3},
        "agents": [
            {"type": "echo", "builtin": "echo"},
            {"type": "counter", "builtin": "counter"},
            {"type": "relay", "builtin": "relay", "relay": {"publish": {"topicType": "from-rust"}}},
        ],
        "subscriptions": [
            {"topicType": "to-rust", "agentType": "counter"},
            {"topicType": "relay-in", "agentType": "relay"},
        ],
        "http": {"listen": f"127.0.0.1:{port}"},
    }
    logs = HERE.parent / ".pytest-logs"
    logs.mkdir(exist_ok=True)
    cfg = logs / f"{prefix}-rust.json"
    cfg.write_text(json.dumps(config))
    log = open(logs / f"{prefix}-rust.log", "w")
    proc = subprocess.Popen([runtime_bin(), "run", "--config", str(cfg)], stdout=log, stderr=log)
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"switchboard-runtime not ready:\n{(logs / f'{prefix}-rust.log').read_text()}")
        time.sleep(0.2)
    yield port
    proc.terminate()
    proc.wait(30)


async def cli(*args: str) -> tuple[int, str, str]:
    """Runs the binary without blocking the loop (this process hosts agents it calls)."""
    proc = await asyncio.create_subprocess_exec(
        runtime_bin(), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_python_and_rust_builtins_talk_both_ways(prefix, rust_runtime, runtime_factory):
    rt = runtime_factory(prefix, "py-rt")
    await Calc.register(rt, "calc", Calc)
    await rt.add_subscription(TypeSubscription("from-rust", "calc"))
    await rt.start()

    # Python -> Rust RPC: echo answers with the same message, decoded as the same class.
    assert await rt.send_message(Ping(7), AgentId("echo", "e1")) == Ping(7)
    assert await rt.send_message(Note("hi"), AgentId("counter", "c1")) == BuiltinCount(1)

    # Python -> Rust events: the counter counts what Python publishes.
    for _ in range(3):
        await rt.publish_message(Ping(1), TopicId("to-rust", "c2"))

    # Each probe is counted too: the count is exactly 3 events + the probes so far.
    probes = 0

    async def three_events_counted() -> bool:
        nonlocal probes
        probes += 1
        reply = await rt.send_message(Ping(0), AgentId("counter", "c2"))
        assert isinstance(reply, BuiltinCount) and reply.count <= 3 + probes, reply
        return reply.count == 3 + probes

    await eventually(three_events_counted, timeout=30, every=0.5)

    # Rust -> Python RPC: the CLI (the Rust library) calls the Python agent.
    code, out, err = await cli(
        "send", "--bootstrap", bootstrap(), "--prefix", prefix,
        "--to", "calc/k1", "--type", "Add", "--data", '{"a": 2, "b": 40}',
    )
    assert code == 0, err
    assert json.loads(out) == {"value": 42}

    # Rust -> Python events: the relay republishes to from-rust, which calc hears.
    await rt.publish_message(Note("via relay"), TopicId("relay-in", "k2"))
    code, out, err = await cli(
        "publish", "--bootstrap", bootstrap(), "--prefix", prefix,
        "--topic", "from-rust/k3", "--type", "Note", "--data", '{"text": "from the cli"}',
    )
    assert code == 0, err
    k2 = await rt.try_get_underlying_agent_instance(AgentId("calc", "k2"), Calc)
    k3 = await rt.try_get_underlying_agent_instance(AgentId("calc", "k3"), Calc)
    await eventually(lambda: k2.notes == ["via relay"] and k3.notes == ["from the cli"], timeout=30)
    await rt.stop()
