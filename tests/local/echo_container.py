"""A tiny container for tests (stdlib only, starts in ~50 ms) that follows the SageMaker container contract.

``POST /invocations`` answers 200 with a JSON echo of the request (body, headers, ``GREETING`` from the
environment, the port). Environment knobs: ``START_DELAY`` (seconds before listening), ``EXIT_AT_START``
(exit code, without ever listening).
"""

from __future__ import annotations

import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall

    def log_message(self, format, *args):
        pass

    def _answer(self, status, payload, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):
        self._answer(200 if self.path == "/ping" else 404, b"")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        document = {
            "body": body.decode(errors="replace"),
            "content_type": self.headers.get("Content-Type"),
            "accept": self.headers.get("Accept"),
            "custom_attributes": self.headers.get("X-Amzn-SageMaker-Custom-Attributes"),
            "greeting": os.environ.get("GREETING"),
            "port": os.environ.get("SAGEMAKER_BIND_TO_PORT"),
        }
        self._answer(200, json.dumps(document).encode())


def main():
    if "EXIT_AT_START" in os.environ:
        sys.exit(int(os.environ["EXIT_AT_START"]))
    time.sleep(float(os.environ.get("START_DELAY", "0")))
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["SAGEMAKER_BIND_TO_PORT"])), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
