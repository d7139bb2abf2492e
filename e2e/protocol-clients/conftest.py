"""Real runtime processes for the protocol tests.

`switchboard-runtime run` processes (the binary in SWITCHBOARD_RUNTIME_BIN) on the
broker in SWITCHBOARD_TEST_KAFKA, each on its own 127.0.0.1 port (from
SWITCHBOARD_PROTOCOL_PORT_BASE, default 18110, upwards), stopped by pid with SIGTERM.
A stdlib HTTP agent (`py`) runs in this process: it replies {"text": "py got <text>"}
after sleeping `sleep` seconds when the message data asks for it; to "ask" it replies
`switchboard.a2a.InputRequired` (a question), to "fail" HTTP 500.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

TOKEN = "protocol-test-token"
MAX_MESSAGE_BYTES = 65536
STATE = Path(__file__).resolve().parents[2] / ".state" / "protocol-clients"


def _free_port(start: int) -> int:
    for port in range(start, start + 80):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port from {start}")


class _PyAgent(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        data = json.loads(body or b"null")
        if isinstance(data, dict) and isinstance(data.get("sleep"), (int, float)):
            time.sleep(data["sleep"])
        text = data.get("text") if isinstance(data, dict) else None
        if text == "ask":
            # Needs more input: the A2A task becomes input-required with this question.
            reply = json.dumps({"text": "what is your name?"}).encode()
            self.send_response(200)
            self.send_header("ce-type", "switchboard.a2a.InputRequired")
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)
            return
        if text == "fail":
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"the py agent was asked to fail")
            return
        reply = json.dumps({"text": f"py got {text}"}).encode()
        self.send_response(200)
        self.send_header("ce-type", "demo.Reply")
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def py_agent_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PyAgent)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/agents/py"
    server.shutdown()


class Runtime:
    """One `switchboard-runtime run` process."""

    def __init__(
        self,
        name: str,
        prefix: str,
        port: int,
        py_url: str,
        log: Path,
        agents: str | None = None,
        env: dict[str, str] | None = None,
        runtime_extra: str = "",
    ):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        config = log.with_suffix(".yaml")
        if agents is None:
            agents = f"""
  - {{ type: echo, builtin: echo }}
  - {{ type: counter, builtin: counter }}
  - type: py
    http: {{ url: "{py_url}", timeoutMs: 60000, retries: 0 }}
    description: "A Python agent behind HTTP"
    messageTypes:
      - name: demo.Ask
        schema: {{ type: object, properties: {{ text: {{ type: string }}, sleep: {{ type: number }} }}, required: [text] }}
"""
        config.write_text(
            f"""
kafka: {{ bootstrapServers: "{os.environ['SWITCHBOARD_TEST_KAFKA']}", topicPrefix: {prefix} }}
runtime: {{ name: {name}, createTopics: true, partitions: 2, maxMessageBytes: {MAX_MESSAGE_BYTES}{runtime_extra} }}
agents:{agents}
http: {{ listen: "127.0.0.1:{port}", bearerToken: "{TOKEN}" }}
"""
        )
        self.proc = subprocess.Popen(
            [os.environ["SWITCHBOARD_RUNTIME_BIN"], "run", "--config", str(config)],
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info"), **(env or {})},
        )
        log.with_suffix(".pid").write_text(str(self.proc.pid))
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"runtime exited ({self.proc.returncode}); see {self.log}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"runtime on {self.url} not ready in {timeout}s; see {self.log}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then wait for the graceful stop."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class Network:
    """Runtimes on fresh topic prefixes: one prefix per runtime name, since an agent
    type belongs to one runtime of a prefix and every runtime hosts the same types."""

    def __init__(self, py_url: str):
        self.prefix = f"proto-{uuid.uuid4().hex[:8]}"
        self.py_url = py_url
        self.runtimes: list[Runtime] = []
        self._next_port = int(os.environ.get("SWITCHBOARD_PROTOCOL_PORT_BASE", "18110"))
        STATE.mkdir(parents=True, exist_ok=True)

    def start(
        self,
        name: str = "rt",
        agents: str | None = None,
        env: dict[str, str] | None = None,
        runtime_extra: str = "",
    ) -> Runtime:
        """A replica of runtime `name`; `agents` replaces the default agents block (YAML
        list items), `env` adds to the process environment, `runtime_extra` to the
        `runtime:` section (e.g. `, taskRetentionMs: 2000`)."""
        port = _free_port(self._next_port)
        self._next_port = port + 1
        log = STATE / f"{self.prefix}-{name}-{port}.log"
        rt = Runtime(name, f"{self.prefix}-{name}", port, self.py_url, log, agents, env, runtime_extra)
        self.runtimes.append(rt)
        return rt

    def stop_all(self) -> None:
        for rt in self.runtimes:
            rt.stop()


@pytest.fixture(scope="session")
def network(py_agent_url):
    net = Network(py_agent_url)
    yield net
    net.stop_all()


@pytest.fixture(scope="session")
def runtime(network) -> Runtime:
    """One replica, shared by the tests that need just one."""
    return network.start()
