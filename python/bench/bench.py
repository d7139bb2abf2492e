"""Python scenarios of the benchmark: prints one JSON object on stdout.

    python bench.py --bootstrap HOST:PORT [--rpcs 2000] [--events 50000]

Two processes on one broker: this one (the caller) and a host (``bench.py --host``)
with four agents: ``py_echo`` and ``py_sink`` (Python, AutoGen RoutedAgents) and
``rs_echo`` and ``rs_sink`` (the runtime's built-in Rust echo, no Python involved).

- RPC: sequential echo round trips, p50/p99. ``python`` = Python caller to Python
  agent in the other process; ``rust`` = the same runtime driven from Rust
  (``bench_rpc``) to the Rust echo: the Rust runtime's figure from the same run.
  The mixed pairs show where the time goes.
- Events: N events published from Rust (``bench_publish``, over 16 and then 64 topic
  sources = sink agents) to a topic the sink type subscribes to; delivered events/s =
  N / (time until the host has handled all N), for the Python sink and the Rust one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from typing import List

from autogen_core import AgentId, MessageContext, RoutedAgent, TypeSubscription, event, rpc

from switchboard._native import bench_publish, bench_rpc
from switchboard.autogen import SwitchboardAgentRuntime


#: Topic sources of the events (= agent keys receiving them, which run concurrently:
#: one message at a time per agent), one measurement each.
KEYS = tuple(int(k) for k in os.environ.get("BENCH_KEYS", "16,64").split(","))


@dataclass
class Ping:
    n: int


@dataclass
class Handled:
    count: int


@dataclass
class GetHandled:
    pass_through: int = 0


class Echo(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("echo")

    @rpc
    async def echo(self, message: Ping, ctx: MessageContext) -> Ping:
        return message


class Sink(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("sink")
        self.count = 0

    @event
    async def on_ping(self, message: Ping, ctx: MessageContext) -> None:
        self.count += 1


class HostStats(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("stats")

    @rpc
    async def handled(self, message: GetHandled, ctx: MessageContext) -> Handled:
        return Handled(self.runtime.native.stats()["handled"])  # type: ignore[attr-defined]


def runtime(name: str, prefix: str, bootstrap: str) -> SwitchboardAgentRuntime:
    return SwitchboardAgentRuntime(name, topic_prefix=prefix, bootstrap_servers=bootstrap, partitions=3)


async def host(prefix: str, bootstrap: str) -> None:
    rt = runtime("bench-host", prefix, bootstrap)
    await Echo.register(rt, "py_echo", Echo)
    await Sink.register(rt, "py_sink", Sink)
    await HostStats.register(rt, "host_stats", HostStats)
    await rt.native.register_builtin("rs_echo", "echo")
    await rt.native.register_builtin("rs_sink", "echo")
    await rt.add_subscription(TypeSubscription("py-load", "py_sink"))
    await rt.add_subscription(TypeSubscription("rs-load", "rs_sink"))
    await rt.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("READY", flush=True)
    await stop.wait()
    await rt.stop()


def summary(micros: List[int]) -> dict:
    s = sorted(micros)
    return {
        "n": len(s),
        "p50_ms": round(s[len(s) // 2] / 1000, 3),
        "p99_ms": round(s[min(len(s) - 1, int(len(s) * 0.99))] / 1000, 3),
        "mean_ms": round(statistics.fmean(s) / 1000, 3),
    }


async def python_rpcs(rt: SwitchboardAgentRuntime, agent: AgentId, n: int) -> List[int]:
    out = []
    for i in range(n):
        start = time.perf_counter_ns()
        reply = await rt.send_message(Ping(i), agent)
        out.append((time.perf_counter_ns() - start) // 1000)
        assert reply == Ping(i), reply
    return out


async def delivered_per_s(rt: SwitchboardAgentRuntime, topic_type: str, n: int, keys: int) -> float:
    stats = AgentId("host_stats", "s")
    before = (await rt.send_message(GetHandled(), stats)).count
    start = time.perf_counter()
    await bench_publish(rt.native, "Ping", b'{"n": 1}', topic_type, keys, n)
    probes = 1
    while True:
        probes += 1
        handled = (await rt.send_message(GetHandled(), stats)).count
        if handled - before - probes >= n - 1:
            return n / (time.perf_counter() - start)
        if time.perf_counter() - start > 300:
            raise TimeoutError(f"{topic_type}: {handled - before} of {n} handled after 300 s")
        await asyncio.sleep(0.02)


async def caller(prefix: str, bootstrap: str, rpcs: int, events: int) -> dict:
    rt = runtime("bench-caller", prefix, bootstrap)
    rt.add_message_serializer(Echo._handles_types()[0][1])
    from autogen_core import try_get_known_serializers_for_type

    rt.add_message_serializer(try_get_known_serializers_for_type(Handled))
    rt.add_message_serializer(try_get_known_serializers_for_type(GetHandled))
    await rt.start()
    py_echo, rs_echo = AgentId("py_echo", "k"), AgentId("rs_echo", "k")
    data = b'{"n": 1}'
    # Warm-up: connections, partitions' leaders, agents made.
    await python_rpcs(rt, py_echo, 200)
    await python_rpcs(rt, rs_echo, 200)
    await bench_rpc(rt.native, "Ping", data, ("rs_echo", "k"), 200)
    await bench_publish(rt.native, "Ping", data, "warmup", 16, 5_000)
    result: dict = {"rpc": {}, "events": {}}
    # Interleaved rounds, so a slow phase of the shared machine hits both alike.
    rounds = 4
    samples: dict = {"rust": [], "python": [], "python_caller_rust_agent": [], "rust_caller_python_agent": []}
    for _ in range(rounds):
        samples["rust"] += await bench_rpc(rt.native, "Ping", data, ("rs_echo", "k"), rpcs // rounds)
        samples["python"] += await python_rpcs(rt, py_echo, rpcs // rounds)
        samples["python_caller_rust_agent"] += await python_rpcs(rt, rs_echo, rpcs // rounds)
        samples["rust_caller_python_agent"] += await bench_rpc(rt.native, "Ping", data, ("py_echo", "k"), rpcs // rounds)
    for name, micros in samples.items():
        result["rpc"][name] = summary(micros)
    result["rpc"]["python_p50_over_rust_p50"] = round(result["rpc"]["python"]["p50_ms"] / result["rpc"]["rust"]["p50_ms"], 3)
    result["events"]["n"] = events
    best = 0.0
    for keys in KEYS:
        rust = await delivered_per_s(rt, "rs-load", events, keys)
        python = await delivered_per_s(rt, "py-load", events, keys)
        best = max(best, python)
        result["events"][f"{keys}_keys"] = {
            "rust_agent_per_s": round(rust),
            "python_agent_per_s": round(python),
            "python_over_rust": round(python / rust, 3),
        }
    result["targets"] = {
        "rpc_p50_ratio_max": 1.3,
        "rpc_p50_ratio_met": result["rpc"]["python_p50_over_rust_p50"] <= 1.3,
        "python_events_per_s_min": 10_000,
        "python_events_per_s_best": round(best),
        "python_events_per_s_met": best >= 10_000,
    }
    await rt.stop()
    return result


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", default=os.environ.get("SWITCHBOARD_TEST_KAFKA", "127.0.0.1:9092"))
    p.add_argument("--prefix")
    p.add_argument("--host", action="store_true", help="run the host process (internal)")
    p.add_argument("--rpcs", type=int, default=2000)
    p.add_argument("--events", type=int, default=50_000)
    a = p.parse_args()
    if a.host:
        asyncio.run(host(a.prefix, a.bootstrap))
        return 0
    prefix = a.prefix or f"bench-py-{uuid.uuid4().hex[:8]}"
    load_before = os.getloadavg()[0]
    proc = subprocess.Popen(
        [sys.executable, __file__, "--host", "--prefix", prefix, "--bootstrap", a.bootstrap],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "READY":
            raise SystemExit("bench host did not start")
        result = asyncio.run(caller(prefix, a.bootstrap, a.rpcs, a.events))
        result["scenario"] = "python"
        result["bootstrap"] = a.bootstrap
        # The machine's state matters for every figure above: say what it was.
        result["machine"] = {"cpus": os.cpu_count(), "load_avg_1m": [round(load_before, 1), round(os.getloadavg()[0], 1)]}
        print(json.dumps(result, indent=2))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
