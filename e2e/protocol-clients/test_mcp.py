"""The runtime's MCP server, with the official `mcp` SDK as the client."""

from __future__ import annotations

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from conftest import TOKEN


def client(runtime, mode: str = "auto") -> Client:
    transport = streamable_http_client(
        f"{runtime.url}/mcp",
        http_client=httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60),
    )
    return Client(transport, mode=mode)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_list_tools_and_call_one(runtime, mode):
    async with client(runtime, mode) as c:
        if mode == "auto":
            assert c.session.protocol_version == "2026-07-28", "server/discover was used"
        else:
            assert c.session.protocol_version == "2025-11-25", "the initialize handshake was used"
        tools = {t.name: t for t in (await c.list_tools()).tools}
        assert set(tools) == {"echo", "counter", "py"}
        py = tools["py"].input_schema
        assert py["required"] == ["message"]
        assert py["properties"]["message"]["required"] == ["text"]
        assert py["properties"]["messageType"]["enum"] == ["demo.Ask"]

        result = await c.call_tool("counter", {"message": {}, "key": f"mcp-{mode}"})
        assert not result.is_error
        assert result.structured_content == {"count": 1}
        result = await c.call_tool("counter", {"message": {}, "key": f"mcp-{mode}"})
        assert result.structured_content == {"count": 2}, "one key, one agent instance"

        result = await c.call_tool("py", {"message": {"text": "tool"}})
        assert (result.is_error, result.structured_content) == (False, {"text": "py got tool"})


async def test_bad_input_is_an_error_and_a_failing_handler_is_an_error_result(runtime):
    async with client(runtime) as c:
        with pytest.raises(MCPError) as e:
            await c.call_tool("nobody", {"message": 1})
        assert e.value.error.code == -32602, "an unknown tool is a protocol error"
        # Arguments that do not fit the input schema are tool errors naming the field
        # (SEP-1303), so a model can correct them; the agent is not called.
        bad = {
            "echo": ({"not_message": 1}, "message: is required"),
            "py": ({"message": {"text": "x"}, "messageType": "demo.Other"}, "messageType"),
        }
        for tool, (arguments, names) in bad.items():
            result = await c.call_tool(tool, arguments)
            assert result.is_error, (tool, arguments)
            assert names in result.content[0].text, result.content[0].text
        schema_violations = [
            ({"message": {}}, "message.text: is required"),
            ({"message": {"text": 3}}, "message.text: expected string, got integer"),
            ({"message": {"text": "x", "sleep": "long"}}, "message.sleep: expected number"),
            ({"message": "just text"}, "message: expected object, got string"),
            ({"message": {"text": "x"}, "extra": 1}, "extra: is not an allowed property"),
        ]
        for arguments, names in schema_violations:
            result = await c.call_tool("py", arguments)
            assert result.is_error, arguments
            assert names in result.content[0].text, result.content[0].text
        result = await c.call_tool("py", {"message": {"text": "fail"}})
        assert result.is_error
        assert "asked to fail" in result.content[0].text
        result = await c.call_tool("py", {"message": {"text": "still here", "sleep": 0}})
        assert (result.is_error, result.structured_content) == (False, {"text": "py got still here"})


def test_unsupported_versions_and_stateless_transport(runtime):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/list",
        "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": "1999-01-01"}},
    }
    r = httpx.post(f"{runtime.url}/mcp", json=body, headers=auth).json()
    assert r["error"]["code"] == -32022
    assert "2026-07-28" in r["error"]["data"]["supported"]
    assert httpx.get(f"{runtime.url}/mcp", headers=auth).status_code == 405
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert httpx.post(f"{runtime.url}/mcp", json=note, headers=auth).status_code == 202
