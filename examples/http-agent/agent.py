#!/usr/bin/env python3
"""A Switchboard HTTP agent in plain Python (standard library only).

The runtime POSTs each message to this server as a CloudEvent in HTTP binary mode:
the message type in `ce-type`, the receiving agent in `ce-agrecipient` (type/key),
`ce-agisrpc: true` when the sender waits for a reply, the data as the JSON body.

This agent greets: for any message it answers with a `demo.Greeting` whose data
names the agent and echoes what it got. A message of type `demo.Fail` gets a 422,
which the caller sees as a handler error. Events (not RPCs) get 204: no reply.

    python3 agent.py --port 8081        # then point an agent's http.url at
                                        # http://127.0.0.1:8081/agents/py
"""

import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class AgentHandler(BaseHTTPRequestHandler):
    # Keep-alive: the runtime pools its connections.
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        message_type = self.headers.get("ce-type", "")
        agent = self.headers.get("ce-agrecipient", "")
        is_rpc = self.headers.get("ce-agisrpc") == "true"
        try:
            data = json.loads(body) if body else None
        except ValueError as err:
            return self.answer(400, {"error": f"body is not JSON: {err}"})

        if message_type == "demo.Fail":
            return self.answer(422, {"error": f"{agent} refuses: {data}"})
        if not is_rpc:
            return self.answer(204, None)
        name = data.get("name", "world") if isinstance(data, dict) else "world"
        reply = {"greeting": f"hello {name}", "agent": agent, "type": message_type, "received": data}
        return self.answer(200, reply, reply_type="demo.Greeting")

    def answer(self, status, data, reply_type=None):
        payload = b"" if data is None else json.dumps(data).encode()
        self.send_response(status)
        if reply_type:
            self.send_header("ce-specversion", "1.0")
            self.send_header("ce-type", reply_type)
        if payload:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, fmt, *args):
        sys.stderr.write("agent.py: " + (fmt % args) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081, help="0 picks a free port")
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), AgentHandler)
    # The first line on stdout tells scripts (and tests) where it listens.
    print(f"listening on http://{args.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
