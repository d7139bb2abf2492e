"""The `a2a` agent kind: an agent of one runtime that forwards to the A2A server of
another runtime, end to end, with the official a2a-sdk calling the first."""

from __future__ import annotations

import uuid

import pytest
from a2a.types.a2a_pb2 import TaskState

from conftest import STATE, TOKEN
from test_a2a import artifact_json, client_for, http, message, send


async def test_an_a2a_agent_calls_a_remote_a2a_server(network, runtime):
    agents = f"""
  - type: remote-echo
    a2a: {{ url: "{runtime.url}/a2a/echo", tokenEnv: REMOTE_TOKEN, timeoutMs: 20000 }}
  - type: remote-counter
    a2a: {{ url: "{runtime.url}/a2a/counter", tokenEnv: REMOTE_TOKEN }}
  - type: remote-py
    a2a: {{ url: "{runtime.url}/a2a/py", tokenEnv: REMOTE_TOKEN }}
  - type: remote-no-token
    a2a: {{ url: "{runtime.url}/a2a/echo" }}
"""
    caller = network.start("caller", agents=agents, env={"REMOTE_TOKEN": TOKEN})
    async with http() as h:
        # An A2A client -> caller's A2A server -> remote-echo agent -> runtime's A2A server -> echo.
        remote = await client_for(f"{caller.url}/a2a/remote-echo", h)
        task = await send(remote, message("through two runtimes"))
        assert task.status.state == TaskState.TASK_STATE_COMPLETED, task
        assert artifact_json(task) == "through two runtimes"

        # One local key is one remote conversation: the remote counter's state carries over.
        counter = await client_for(f"{caller.url}/a2a/remote-counter", h)
        context = f"conv-{uuid.uuid4().hex[:6]}"
        counts = [artifact_json(await send(counter, message("x", context_id=context))) for _ in range(2)]
        assert counts == [{"count": 1}, {"count": 2}]

        # The /v1 gateway reaches it too; the reply keeps the remote reply's type.
        r = await h.post(
            f"{caller.url}/v1/agents/remote-py/k1",
            headers={"ce-type": "demo.Ask"},
            json={"text": "via v1"},
        )
        assert (r.status_code, r.headers["ce-type"], r.json()) == (200, "demo.Reply", {"text": "py got via v1"})

        # The remote's failure is this agent's handler error.
        r = await h.post(f"{caller.url}/v1/agents/remote-py/k1", headers={"ce-type": "demo.Ask"}, json={"text": "fail"})
        assert r.status_code == 502 and "asked to fail" in r.json()["error"], r.text
        # Without the token the remote refuses.
        r = await h.post(f"{caller.url}/v1/agents/remote-no-token/k1", headers={"ce-type": "x.T"}, json={"text": "t"})
        assert r.status_code == 502 and "401" in r.json()["error"], r.text
    assert caller.alive()


def test_a_missing_token_variable_fails_at_start(network):
    var = f"NO_SUCH_VARIABLE_{uuid.uuid4().hex[:4].upper()}"
    agents = f"""
  - type: remote-echo
    a2a: {{ url: "http://127.0.0.1:1/a2a/echo", tokenEnv: {var} }}
"""
    with pytest.raises(RuntimeError, match="exited"):
        network.start("badtoken", agents=agents)
    log = sorted(STATE.glob(f"{network.prefix}-badtoken-*.log"))[-1]
    assert f"agents[0].a2a.tokenEnv" in log.read_text() and var in log.read_text()
