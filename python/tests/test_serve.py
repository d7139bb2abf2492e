"""`python -m switchboard serve`: Python agents behind the Rust runtime's own server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from autogen_core import AgentId

from agents import Add, Incr, Sum, Count
from helpers import HERE, bootstrap
from test_interop import free_port


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def serve_config(prefix: str, name: str, port: int, agents: str) -> Path:
    """A runtime config file for `serve` (runtime `py-pod`), under .pytest-logs."""
    logs = HERE.parent / ".pytest-logs"
    logs.mkdir(exist_ok=True)
    cfg = logs / f"{prefix}-{name}.yaml"
    cfg.write_text(
        f"kafka: {{ bootstrapServers: \"{bootstrap()}\", topicPrefix: {prefix} }}\n"
        "runtime: { name: py-pod, partitions: 3 }\n"
        f"agents:\n{agents}"
        f"http: {{ listen: \"127.0.0.1:{port}\" }}\n"
    )
    return cfg


async def test_serve_hosts_python_agents_with_the_rust_gateway(prefix, runtime_factory):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    logs = HERE.parent / ".pytest-logs"
    cfg = serve_config(
        prefix, "serve", port,
        "  - { type: echo, builtin: echo }\n  - { type: calc, code: {} }\n  - { type: tally, code: {} }\n",
    )
    log = open(logs / f"{prefix}-serve.log", "w")
    # The config comes from $SWITCHBOARD_CONFIG, as in the operator's pods.
    proc = subprocess.Popen(
        [sys.executable, "-m", "switchboard", "serve", "--agents", "serve_agents:register"],
        cwd=HERE, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "SWITCHBOARD_CONFIG": str(cfg)},
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if http("GET", f"{base}/readyz")[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, (logs / f"{prefix}-serve.log").read_text()
            assert time.monotonic() < deadline, "not ready in 60s"
            time.sleep(0.2)
        assert http("GET", f"{base}/healthz") == (200, b"ok")
        status, metrics = http("GET", f"{base}/metrics")
        assert status == 200 and b"switchboard_" in metrics

        # The /v1 gateway reaches the Python agent; the file's builtin is there too.
        status, body = http(
            "POST", f"{base}/v1/agents/calc/k1", json.dumps({"a": 20, "b": 22}).encode(),
            {"ce-type": "Add", "content-type": "application/json"},
        )
        assert (status, json.loads(body)) == (200, {"value": 42}), body
        status, body = http("POST", f"{base}/v1/agents/echo/e", b'{"x": 1}', {"ce-type": "Thing"})
        assert (status, json.loads(body)) == (200, {"x": 1}), body

        # And so does another runtime of the network.
        rt = runtime_factory(prefix, "client")
        await rt.start()
        assert await rt.send_message(Add(1, 2), AgentId("calc", "k2")) == Sum(3)
        assert await rt.send_message(Incr(5), AgentId("tally", "t")) == Count(5)
        await rt.stop()

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        text = (logs / f"{prefix}-serve.log").read_text()
        assert "stopped" in text, text
    finally:
        if proc.poll() is None:
            proc.kill()


def test_serve_refuses_a_declared_code_agent_the_program_does_not_register(prefix):
    cfg = serve_config(
        prefix, "serve-missing", free_port(), "  - { type: calc, code: {} }\n  - { type: planner, code: {} }\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "switchboard", "serve", "--config", str(cfg), "--agents", "serve_agents:register"],
        cwd=HERE, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode != 0, done.stderr
    assert "agents[1].code" in done.stderr and "planner" in done.stderr, done.stderr
    assert "did not register it" in done.stderr, done.stderr
