"""Bad requests to the A2A and MCP endpoints: each gets its protocol error, and the
runtime keeps serving."""

from __future__ import annotations

import uuid

import httpx
import pytest

from conftest import MAX_MESSAGE_BYTES, TOKEN

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def rpc(method: str, params=None, id_=1) -> dict:
    body = {"jsonrpc": "2.0", "id": id_, "method": method}
    if params is not None:
        body["params"] = params
    return body


def send_params(text: str = "x") -> dict:
    return {"message": {"messageId": str(uuid.uuid4()), "role": "ROLE_USER", "parts": [{"text": text}]}}


@pytest.mark.parametrize("path", ["/a2a/echo", "/mcp"])
def test_each_bad_request_gets_its_json_rpc_error(runtime, path):
    url = runtime.url + path
    with httpx.Client(headers=AUTH, timeout=30) as h:
        def error(**kw) -> tuple[int, int, object]:
            r = h.post(url, **kw)
            body = r.json()
            return r.status_code, body["error"]["code"], body.get("id")

        assert error(content=b"{not json", headers={"content-type": "application/json"}) == (200, -32700, None)
        assert error(json=[rpc("x")]) == (200, -32600, None)
        assert error(json={"id": 5, "method": "x"}) == (200, -32600, 5)
        assert error(json={"jsonrpc": "2.0", "id": "a", "method": 7}) == (200, -32600, "a")
        assert error(json=rpc("NoSuchMethod", {}, id_="m")) == (200, -32601, "m")
        assert error(json=rpc("SendMessage" if "a2a" in path else "tools/call", [1, 2])) == (200, -32602, 1)
        big = {"jsonrpc": "2.0", "id": 1, "method": "x", "params": {"pad": "x" * (MAX_MESSAGE_BYTES + 1)}}
        assert error(json=big) == (413, -32600, None)
        assert error(content=b"hello", headers={"content-type": "text/plain"}) == (415, -32600, None)
        r = httpx.post(url, json=rpc("x"), headers={"Authorization": "Bearer wrong"})
        assert (r.status_code, r.json()["error"]["code"]) == (401, -32600)
        assert r.headers["www-authenticate"] == "Bearer"
        assert httpx.post(url, json=rpc("x")).status_code == 401, "no token"


def test_a2a_params_and_task_errors(runtime):
    url = runtime.url + "/a2a/echo"
    with httpx.Client(headers=AUTH, timeout=30) as h:
        def code(body, headers=None) -> int:
            return h.post(url, json=body, headers=headers).json()["error"]["code"]

        assert code(rpc("SendMessage", {})) == -32602, "no message"
        assert code(rpc("SendMessage", {"message": {"messageId": "m", "parts": []}})) == -32602
        assert code(rpc("SendMessage", {"message": {"messageId": "m", "parts": [{"kind": "video"}]}})) == -32602
        file = {"messageId": "m", "parts": [{"url": "http://127.0.0.1:1/f.png", "mediaType": "image/png"}]}
        assert code(rpc("SendMessage", {"message": file})) == -32005
        assert code(rpc("GetTask", {"id": str(uuid.uuid4())})) == -32001
        assert code(rpc("GetTask", {})) == -32602
        assert code(rpc("CancelTask", {"id": "no-such-task"})) == -32001
        assert code(rpc("SubscribeToTask", {"id": "no-such-task"})) == -32001
        assert code(rpc("ListTasks", {"pageSize": 1000})) == -32602
        assert code(rpc("CreateTaskPushNotificationConfig", {})) == -32003
        assert code(rpc("GetTask", {"id": "x"}), headers={"A2A-Version": "9.9"}) == -32009
        # A message for a type this runtime does not host, through the runtime endpoint.
        p = send_params()
        p["message"]["metadata"] = {"agentType": "nobody"}
        assert h.post(runtime.url + "/a2a", json=rpc("SendMessage", p)).json()["error"]["code"] == -32602
        # py accepts only demo.Ask.
        p = send_params()
        p["message"]["metadata"] = {"messageType": "demo.Other"}
        assert h.post(runtime.url + "/a2a/py", json=rpc("SendMessage", p)).json()["error"]["code"] == -32602


def test_nothing_crashed_and_nothing_was_lost(runtime):
    assert runtime.alive()
    with httpx.Client(headers=AUTH, timeout=30) as h:
        r = h.post(runtime.url + "/a2a/echo", json=rpc("SendMessage", send_params("still here"))).json()
        assert r["result"]["task"]["artifacts"][0]["parts"][0]["text"] == "still here"
        assert httpx.get(runtime.url + "/healthz").status_code == 200
        assert httpx.get(runtime.url + "/readyz").status_code == 200
