"""A runtime whose tasks topic does not exist yet (an operator that has not created
it): everything else serves, A2A task methods answer 503 with a JSON-RPC error, and
once the topic exists the runtime loads it by itself."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx

from conftest import TOKEN

KAFKA_SH = Path(__file__).resolve().parents[1] / "infra" / "kafka.sh"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def topics(*args: str) -> None:
    subprocess.run([str(KAFKA_SH), "topics", *args], check=True, capture_output=True, timeout=120)


def get_task(url: str) -> httpx.Response:
    body = {"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "no-such-task"}}
    return httpx.post(f"{url}/a2a/echo", json=body, headers=AUTH, timeout=30)


def test_a_missing_tasks_topic_is_waited_for(network):
    # A first replica creates the runtime's topics; then its tasks topic goes away.
    first = network.start("late")
    first.stop()
    tasks = f"{network.prefix}-late.late.tasks"
    topics("--delete", "--topic", tasks)
    time.sleep(2)

    rt = network.start("late", env={"SWITCHBOARD_CREATE_TOPICS": "false"})
    r = get_task(rt.url)
    assert (r.status_code, r.json()["error"]["code"]) == (503, -32603), r.text
    assert "not loaded" in r.json()["error"]["message"]
    # /v1 and MCP do not need it.
    assert httpx.post(f"{rt.url}/v1/agents/echo/k", headers={**AUTH, "ce-type": "t"}, json={}).status_code == 200

    topics("--create", "--topic", tasks, "--partitions", "2", "--config", "cleanup.policy=compact")
    deadline = time.monotonic() + 40
    while True:
        r = get_task(rt.url)
        if r.json()["error"]["code"] == -32001:
            break
        assert time.monotonic() < deadline, r.text
        time.sleep(1)
