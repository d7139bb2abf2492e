"""An AgentRuntime whose pods run `python -m switchboard serve`: the real API server, the
switchboard-operator binary, and the node agent running the pods (the Python image from
a directory standing in for it, `--image-root`), against the real broker.

The CRD's `code: {}` agent kind and `template.command` go all the way: the operator
writes them into the ConfigMap and the Deployment, the pod's program registers the
declared types, and a pod whose program misses one never becomes ready and says why.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, List

import pytest
from autogen_core import AgentId

from agents import Add, Count, Incr, Sum
from helpers import HERE, bootstrap
from test_interop import free_port

ROOT = HERE.parent.parent
IMAGE = "example.com/team/switchboard-python:test"


def need(var: str) -> str:
    value = os.environ.get(var)
    if not value:
        pytest.fail(f"${var} is not set: run under e2e/infra/with-infra.sh (python/scripts/test.sh does)")
    return value


def kubectl_path() -> str:
    bindir = subprocess.run([str(ROOT / "e2e/infra/cluster.sh"), "bindir"], check=True, capture_output=True, text=True)
    return str(Path(bindir.stdout.strip()) / "kubectl")


class Cluster:
    """kubectl against the test cluster, and the processes this test started."""

    def __init__(self, tmp: Path) -> None:
        self.kubeconfig = need("KUBECONFIG")
        self.kubectl = kubectl_path()
        self.tmp = tmp
        self.procs: List[subprocess.Popen] = []

    def kc(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        done = subprocess.run(
            [self.kubectl, "--kubeconfig", self.kubeconfig, *args],
            input=stdin, capture_output=True, text=True, timeout=60,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {done.stderr}")
        return done.stdout

    def start(self, name: str, argv: List[str]) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "w")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def wait_for(what: str, check: Callable[[], bool], timeout: float, logs: Path) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(logs.rglob("*.log")))
            raise AssertionError(f"gave up waiting for {what} after {timeout}s\n{tails}")
        time.sleep(0.5)


def image_root(tmp: Path) -> Path:
    """The Python image as a directory: bin/python (this venv's) and app/ (the tests' agents)."""
    root = tmp / "image"
    (root / "bin").mkdir(parents=True)
    python = root / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    (root / "app").symlink_to(HERE, target_is_directory=True)
    return root


def agent_runtime(ns: str, name: str, prefix: str, agents: List[dict]) -> str:
    return json.dumps({
        "apiVersion": "switchboard.dev/v1alpha1", "kind": "AgentRuntime",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "image": IMAGE,
            "kafka": {"bootstrapServers": bootstrap(), "topicPrefix": prefix},
            "topics": {"partitions": 3},
            "agents": agents,
            "template": {
                "command": ["python", "-m", "switchboard", "serve", "--agents", "serve_agents:register"],
                "env": [{"name": "PYTHONPATH", "value": "/app"}],
            },
            "deletionPolicy": "Delete",
        },
    })


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    yield c
    c.stop_all()


async def test_an_agent_runtime_of_python_agents_runs_as_pods(prefix, cluster, runtime_factory, tmp_path):
    ns = f"py-{uuid.uuid4().hex[:8]}"
    operator_bin = need("SWITCHBOARD_OPERATOR_BIN")
    node_bin = need("SWITCHBOARD_NODE_AGENT_BIN")
    cluster.kc("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))

    def established() -> bool:
        out = cluster.kc("get", "crd", "agentruntimes.switchboard.dev", "agentsubscriptions.switchboard.dev", "-o",
                         "jsonpath={.items[*].status.conditions[?(@.type==\"Established\")].status}", check=False)
        return out.split() == ["True", "True"]

    wait_for("the CRDs established", established, 60, tmp_path)
    cluster.kc("create", "namespace", ns)
    metrics = free_port()
    cluster.start("operator", [
        operator_bin, "run", "--kubeconfig", cluster.kubeconfig, "--namespace", ns,
        "--lease-namespace", ns, "--runtime-image", "switchboard-runtime:test",
        "--metrics-addr", f"127.0.0.1:{metrics}",
    ])
    b = uuid.uuid4().bytes
    cluster.start("node-agent", [
        node_bin, "--kubeconfig", cluster.kubeconfig, "--node-name", f"py-node-{ns}",
        "--pod-cidr", f"127.{100 + b[0] % 100}.{b[1]}.0/24", "--runtime-bin", os.environ["SWITCHBOARD_RUNTIME_BIN"],
        "--state-dir", str(tmp_path / "node"), "--namespace", ns,
        "--image-root", f"*switchboard-python={image_root(tmp_path)}",
    ])

    # A valid runtime: the program registers both declared types.
    manifest = agent_runtime(ns, "calc", prefix, [
        {"type": "calc", "code": {}}, {"type": "tally", "code": {}}, {"type": "echo", "builtin": "echo"},
    ])
    cluster.kc("apply", "-f", "-", stdin=manifest)

    def condition(name: str, kind: str) -> str:
        return cluster.kc("-n", ns, "get", "agentruntime", name, "-o",
                          f"jsonpath={{.status.conditions[?(@.type==\"{kind}\")].status}}", check=False)

    wait_for("AgentRuntime calc Ready", lambda: condition("calc", "Ready") == "True", 180, tmp_path)
    deployment = json.loads(cluster.kc("-n", ns, "get", "deployment", "calc", "-o", "json"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:3] == ["python", "-m", "switchboard"], container
    assert {"name": "SWITCHBOARD_CONFIG", "value": "/etc/switchboard/runtime.yaml"} in container["env"]
    config = cluster.kc("-n", ns, "get", "configmap", "calc-config", "-o", "jsonpath={.data.runtime\\.yaml}")
    assert "code: {}" in config, config

    # The pod's Python agents answer another runtime of the network over Kafka.
    rt = runtime_factory(prefix, "client")
    await rt.start()
    assert await rt.send_message(Add(40, 2), AgentId("calc", "k1")) == Sum(42)
    assert await rt.send_message(Incr(3), AgentId("tally", "t1")) == Count(3)
    await rt.stop()

    # A runtime whose program does not register a declared type: its pod never gets
    # ready, and its log says which entry.
    cluster.kc("apply", "-f", "-", stdin=agent_runtime(ns, "broken", f"{prefix}-b", [
        {"type": "calc", "code": {}}, {"type": "planner", "code": {}},
    ]))

    def broken_log() -> str:
        logs = list((tmp_path / "node").glob(f"pods/{ns}_broken-*/runtime.log"))
        return logs[0].read_text() if logs else ""

    wait_for("the broken pod to say why", lambda: "agents[1].code" in broken_log(), 120, tmp_path)
    assert "planner" in broken_log() and "did not register it" in broken_log(), broken_log()
    assert condition("broken", "Ready") != "True"

    # Deleting the namespace stops the pods gracefully (SIGTERM, then the runtime drains).
    cluster.kc("delete", "agentruntime", "-n", ns, "calc", "broken", "--wait=true", "--timeout=90s")
    wait_for("the calc pod's graceful stop", lambda: not list((tmp_path / "node").glob(f"pods/{ns}_calc-*")), 90, tmp_path)
    cluster.kc("delete", "namespace", ns, "--wait=false")
