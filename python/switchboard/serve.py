"""``python -m switchboard serve``: a runtime pod whose agents are Python.

Reads the runtime config file (the operator's ConfigMap, at ``$SWITCHBOARD_CONFIG`` in
its pods; ``SWITCHBOARD_*`` variables override it as for ``switchboard-runtime run``),
calls each ``module:function`` with the runtime so it registers its agents
(``await MyAgent.register(runtime, ...)``); every ``{type: T, code: {}}`` entry of the
file must be registered by then, or serving fails naming ``agents[i].code``. Then it
serves the Rust runtime's own HTTP API (``/healthz``, ``/readyz``, ``/metrics``,
``/v1``) until SIGTERM or SIGINT, and stops gracefully.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable, List, Sequence, Union

from ._native import NativeError, init_logging

logger = logging.getLogger("switchboard.serve")

Registrar = Callable[[Any], Any]


def load_registrar(spec: str) -> Registrar:
    """``module:function`` -> the function (a clear error when either is missing)."""
    module_name, sep, function = spec.partition(":")
    if not sep or not module_name or not function:
        raise ValueError(f"--agents {spec!r}: expected MODULE:FUNCTION")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"--agents {spec!r}: cannot import {module_name!r}: {e}") from e
    target: Any = module
    for part in function.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ValueError(f"--agents {spec!r}: {module_name!r} has no {function!r}")
    if not callable(target):
        raise ValueError(f"--agents {spec!r}: {function!r} is not callable")
    return target


async def serve(config: Union[str, Path], agents: Sequence[Union[str, Registrar]]) -> None:
    """Runs the runtime ``config`` describes with the agents ``agents`` register."""
    from .autogen import SwitchboardAgentRuntime
    from .autogen._errors import translate

    text = Path(config).read_text()
    runtime = SwitchboardAgentRuntime.from_config_file(text)
    registrars: List[Registrar] = [load_registrar(a) if isinstance(a, str) else a for a in agents]
    for register in registrars:
        result = register(runtime)
        if inspect.isawaitable(result):
            await result
    if runtime._start_task is not None:
        await runtime._start_task  # registration started it: let it finish first
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runtime.native.request_shutdown)
    logger.info("serving runtime %s on prefix %s", runtime.runtime_name, runtime.topic_prefix)
    try:
        await runtime.native.serve()
    except NativeError as e:
        raise translate(e) from None
    finally:
        runtime._stopped = True
    logger.info("stopped")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m switchboard", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    s = commands.add_parser("serve", help="host Python agents and serve the runtime's HTTP API until SIGTERM")
    s.add_argument(
        "--config",
        default=os.environ.get("SWITCHBOARD_CONFIG"),
        metavar="FILE",
        help="the runtime config file (YAML or JSON); default $SWITCHBOARD_CONFIG, which the operator sets in its pods",
    )
    s.add_argument(
        "--agents",
        action="append",
        default=[],
        metavar="MODULE:FUNCTION",
        help="a function called with the runtime to register agents (repeatable)",
    )
    args = parser.parse_args(argv)
    if not args.config:
        parser.error("--config FILE is required (or set SWITCHBOARD_CONFIG)")
    init_logging("info")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # MODULE is looked up from the working directory too
    try:
        asyncio.run(serve(args.config, args.agents))
        code = 0
    except (ValueError, OSError) as e:
        print(f"switchboard serve: {e}", file=sys.stderr)
        code = 2
    except Exception as e:  # noqa: BLE001 - one line, then a failing exit code
        print(f"switchboard serve: {type(e).__name__}: {e}", file=sys.stderr)
        code = 1
    # Exit without interpreter finalization: the runtime's Rust threads may still be
    # leaving a Python call (the completion of the last awaited future), and
    # finalizing under them aborts the process. Everything is stopped and flushed.
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)
