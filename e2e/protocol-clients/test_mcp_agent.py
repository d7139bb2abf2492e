"""The `mcp` agent kind: a runtime's agent calling a tool of an MCP server, here one
served by the official SDK (`mcp.server.mcpserver.MCPServer` over Streamable HTTP) in
this process."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel

from conftest import TOKEN


class Forecast(BaseModel):
    city: str
    days: int
    sky: str


@pytest.fixture(scope="module")
def mcp_server_url():
    server = MCPServer("weather")

    @server.tool(structured_output=True)
    def forecast(city: str, days: int = 1) -> Forecast:
        """The forecast for a city."""
        return Forecast(city=city, days=days, sky="clear")

    @server.tool()
    def shout(text: str) -> str:
        """The text in capitals."""
        return text.upper()

    @server.tool()
    def broken(reason: str) -> str:
        """Always fails."""
        raise ToolError(f"broken on purpose: {reason}")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = server.streamable_http_app(json_response=True)
    web = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=web.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not web.started:
        assert time.monotonic() < deadline, "the MCP server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/mcp"
    web.should_exit = True
    thread.join(10)


def test_an_mcp_agent_calls_a_tool_of_an_sdk_mcp_server(network, mcp_server_url):
    agents = f"""
  - {{ type: forecast, mcp: {{ url: "{mcp_server_url}", tool: forecast }} }}
  - {{ type: shout, mcp: {{ url: "{mcp_server_url}", tool: shout }} }}
  - {{ type: broken, mcp: {{ url: "{mcp_server_url}", tool: broken }} }}
  - {{ type: missing, mcp: {{ url: "{mcp_server_url}", tool: no_such_tool }} }}
"""
    rt = network.start("tools", agents=agents)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(headers=auth, timeout=30) as h:
        def rpc(agent: str, data):
            return h.post(f"{rt.url}/v1/agents/{agent}/k1", headers={"ce-type": "demo.Args"}, json=data)

        r = rpc("forecast", {"city": "Oslo", "days": 3})
        assert r.status_code == 200, r.text
        assert r.json() == {"city": "Oslo", "days": 3, "sky": "clear"}
        r = rpc("shout", {"text": "quiet"})
        assert r.status_code == 200, r.text
        # Structured content when the tool gives it, else {"text": <its text>}.
        assert "QUIET" in r.text, r.text
        r = rpc("broken", {"reason": "test"})
        assert r.status_code == 502 and "broken on purpose" in r.json()["error"], r.text
        r = rpc("missing", {})
        assert r.status_code == 502 and "no_such_tool" in r.json()["error"], r.text
        r = rpc("forecast", [1, 2])
        assert r.status_code == 502 and "JSON object" in r.json()["error"], r.text
        # The same tools, offered again through this runtime's own MCP server.
        listed = h.post(
            f"{rt.url}/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                  "params": {"name": "forecast", "arguments": {"message": {"city": "Rome"}}}},
        ).json()
        assert listed["result"]["structuredContent"]["city"] == "Rome", listed
