"""Where an echo RPC between two Python processes spends its time: CPU per thread and
per library of both processes, sampled with ``perf`` while the caller sends echo RPCs
back to back. Prints JSON on stdout.

    python rpc_profile.py --bootstrap HOST:PORT [--seconds 15] [--agent py_echo]

Uses ``bench.py``'s host (its agents) and its runtime settings; ``perf`` must be on
PATH and allowed to attach (root, or ``kernel.perf_event_paranoid`` <= 1). Threads are
grouped by name: ``python`` (the asyncio loop: Python code and what it calls in
``_native``), ``tokio-runtime-w`` (Tokio workers), ``rdk:*`` (librdkafka), the
runtime's consumer threads; per thread, the share of samples by library (libpython,
``_native``, libc, the kernel).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
from autogen_core import AgentId, try_get_known_serializers_for_type  # noqa: E402


async def caller(prefix: str, bootstrap: str, agent: str, seconds: float, host_pid: int, out: str) -> dict:
    rt = bench.runtime("bench-caller", prefix, bootstrap)
    rt.add_message_serializer(try_get_known_serializers_for_type(bench.Ping))
    await rt.start()
    target = AgentId(agent, "k")
    await bench.python_rpcs(rt, target, 300)
    perf = subprocess.Popen(
        ["perf", "record", "-q", "-F", "1999", "-g", "-o", out, "-p", f"{os.getpid()},{host_pid}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    await asyncio.sleep(1.0)  # perf attached
    micros: list = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        micros += await bench.python_rpcs(rt, target, 100)
    perf.send_signal(signal.SIGINT)
    perf.wait(60)
    await rt.stop()
    return bench.summary(micros)


def thread_group(comm: str) -> str:
    for prefix in ("tokio-runtime-w", "rdk:broker", "rdk:main", "rdk:"):
        if comm.startswith(prefix):
            return prefix
    return comm


def breakdown(data: str, pids: dict) -> dict:
    """Samples by process, thread group and library (perf report --sort pid,comm,dso)."""
    text = subprocess.run(
        ["perf", "report", "-i", data, "--no-children", "--sort", "pid,comm,dso", "--stdio", "-g", "none", "--percent-limit", "0"],
        capture_output=True, text=True, check=True,
    ).stdout
    rows = collections.defaultdict(float)
    line = re.compile(r"^\s*([\d.]+)%\s+(\d+):\S*\s+(.+?)\s{2,}(\S.*)$")
    for raw in text.splitlines():
        m = line.match(raw)
        if not m:
            continue
        pct, pid, comm, dso = float(m.group(1)), int(m.group(2)), m.group(3).strip(), m.group(4).strip()
        dso = "_native" if "_native" in dso else dso.strip("[]")
        dso = "libpython" if "python" in dso else dso
        rows[(pids.get(pid, str(pid)), thread_group(comm), dso)] += pct
    out: dict = {}
    for (proc, group, dso), pct in sorted(rows.items(), key=lambda kv: -kv[1]):
        if pct < 0.2:
            continue
        out.setdefault(proc, {}).setdefault(group, {})[dso] = round(pct, 1)
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", default=os.environ.get("SWITCHBOARD_TEST_KAFKA", "127.0.0.1:9092"))
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--agent", default="py_echo")
    a = p.parse_args()
    prefix = f"bench-prof-{uuid.uuid4().hex[:8]}"
    host = subprocess.Popen(
        [sys.executable, bench.__file__, "--host", "--prefix", prefix, "--bootstrap", a.bootstrap],
        stdout=subprocess.PIPE, text=True,
    )
    data = tempfile.mktemp(suffix=".perf.data")
    try:
        assert host.stdout is not None
        if host.stdout.readline().strip() != "READY":
            raise SystemExit("bench host did not start")
        load = os.getloadavg()[0]
        rpc = asyncio.run(caller(prefix, a.bootstrap, a.agent, a.seconds, host.pid, data))
        result = {
            "agent": a.agent,
            "rpc": rpc,
            "load_avg_1m": [round(load, 1), round(os.getloadavg()[0], 1)],
            "cpu_percent_of_samples": breakdown(data, {os.getpid(): "caller", host.pid: "host"}),
        }
        print(json.dumps(result, indent=2))
    finally:
        host.send_signal(signal.SIGTERM)
        host.wait(60)
        if os.path.exists(data):
            os.unlink(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
