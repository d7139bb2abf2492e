"""examples/autogen runs as documented: two processes, and the serve form."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from helpers import bootstrap, eventually

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "autogen"


async def run(*args: str, env: dict) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLE / "team.py"), *args, env=env, cwd=EXAMPLE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )


async def test_team_example_answers_across_two_processes(prefix):
    env = dict(os.environ, SWITCHBOARD_TOPIC_PREFIX=prefix, SWITCHBOARD_BOOTSTRAP_SERVERS=bootstrap())
    hosts = [await run("researcher", env=env), await run("planner", env=env)]
    try:
        for h in hosts:
            line = await asyncio.wait_for(h.stdout.readline(), 60)
            assert b"serving on prefix" in line, line
        ask = await run("ask", "why is the sky blue", env=env)
        out, _ = await asyncio.wait_for(ask.communicate(), 60)
        assert ask.returncode == 0, out
        assert b"Answer(text='why is the sky blue? Because: blue is a known thing'" in out, out
        line = await asyncio.wait_for(hosts[0].stdout.readline(), 30)
        assert line.startswith(b"archive/user-1: why is the sky blue?"), line
    finally:
        for h in hosts:
            if h.returncode is None:
                h.terminate()
                await h.wait()


async def test_team_researcher_as_a_runtime_pod(prefix):
    from test_interop import free_port
    from test_serve import http

    port = free_port()
    env = dict(
        os.environ,
        SWITCHBOARD_TOPIC_PREFIX=prefix,
        SWITCHBOARD_BOOTSTRAP_SERVERS=bootstrap(),
        SWITCHBOARD_HTTP_LISTEN=f"127.0.0.1:{port}",
    )
    pod = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "switchboard", "serve", "--config", "runtime.yaml", "--agents", "team:register_researcher",
        env=env, cwd=EXAMPLE, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    planner = await run("planner", env=env)
    try:
        async def ready() -> bool:
            try:
                return (await asyncio.to_thread(http, "GET", f"http://127.0.0.1:{port}/readyz"))[0] == 200
            except OSError:
                return False

        await eventually(ready, timeout=60, every=0.3)
        status, body = await asyncio.to_thread(
            http, "POST", f"http://127.0.0.1:{port}/v1/agents/researcher/u1", b'{"topic": "blue skies"}',
            {"ce-type": "Lookup"},
        )
        assert status == 200 and b"blue is a known thing" in body and b'"lookups_so_far": 1' in body, body
        await asyncio.wait_for(planner.stdout.readline(), 60)
        ask = await run("ask", "what about skies", env=env)
        out, _ = await asyncio.wait_for(ask.communicate(), 60)
        assert b"what is a known thing; about is a known thing; skies is a known thing" in out, out
        pod.terminate()
        assert await asyncio.wait_for(pod.wait(), 60) == 0
    finally:
        for p in (pod, planner):
            if p.returncode is None:
                p.kill()
                await p.wait()
