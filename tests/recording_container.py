"""A model container for the real-time tests (stdlib only) that answers with what it received.

``POST /invocations`` answers 200 with JSON ``{"body": ..., "headers": {...}}`` (every request header). It
sets the response headers a model may set: ``X-Amzn-SageMaker-Custom-Attributes: reply=<the request's>``,
``X-Amzn-SageMaker-New-Session-Id`` when the request's session id is ``NEW_SESSION``, and
``X-Amzn-SageMaker-Closed-Session-Id`` when it is ``close-<id>``. ``POST /invocations-response-stream``
streams the same JSON in three chunks.
"""

from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SESSION = "X-Amzn-SageMaker-Session-Id"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        self.send_response(200 if self.path == "/ping" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        payload = json.dumps({"body": body.decode(errors="replace"), "headers": dict(self.headers.items())}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        attributes = self.headers.get("X-Amzn-SageMaker-Custom-Attributes")
        if attributes is not None:
            self.send_header("X-Amzn-SageMaker-Custom-Attributes", f"reply={attributes}")
        session = self.headers.get(SESSION) or ""
        if session == "NEW_SESSION":
            self.send_header("X-Amzn-SageMaker-New-Session-Id", "sess-1; Expires=2026-11-22T00:00:00Z")
        elif session.startswith("close-"):
            self.send_header("X-Amzn-SageMaker-Closed-Session-Id", session.removeprefix("close-"))
        if self.path == "/invocations":
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        third = len(payload) // 3 + 1
        for start in range(0, len(payload), third):
            chunk = payload[start : start + third]
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")


def main():
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["SAGEMAKER_BIND_TO_PORT"])), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
