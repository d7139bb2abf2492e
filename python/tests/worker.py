"""A runtime in its own process, for tests: ``worker.py SCENARIO PREFIX NAME ARGS_JSON``.

Registers the agents of ``agents.SCENARIOS[SCENARIO]``, starts, prints READY, and
stops gracefully on SIGTERM (exit 0).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys

import agents
from helpers import make_runtime


async def main(scenario: str, prefix: str, name: str, args: dict) -> None:
    runtime = make_runtime(prefix, name, **args.pop("runtime", {}))
    await agents.SCENARIOS[scenario](runtime, **args)
    await runtime.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("READY", flush=True)
    await stop.wait()
    await runtime.stop()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])))
