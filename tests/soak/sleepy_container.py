"""
The soak's model container: sleeps per input row, fails on malformed rows (SageMaker container contract).

Run as ``python tests/soak/sleepy_container.py``; serves on ``127.0.0.1:$SAGEMAKER_BIND_TO_PORT``:

- ``GET /ping``: 200.
- ``POST /invocations``: a JSON body ``{"item": 7, "sleep": 0.25, "features": [5.1, 3.5, 1.4, 0.2]}``: sleeps
  ``sleep`` seconds (real seconds), then answers 200 ``{"item": 7, "label": ...}``; ``features`` that are not 4
  numbers answer 400 ``{"message": ..., "status": "error"}`` (a malformed row: the request ends ``Failed``).

The iris container's ``sleep=`` knob comes from CustomAttributes, which a batch sends to every item; this one
reads the time from the row itself, so one batch spreads from milliseconds to tens of seconds.
"""

from __future__ import annotations

import json
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LABELS = ("setosa", "versicolor", "virginica")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: the backend logs every request itself."""

    def _answer(self, status: int, document: dict[str, Any] | None) -> None:
        payload = b"" if document is None else json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        self._answer(200 if self.path == "/ping" else 404, None)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            row = json.loads(body)
            item, sleep, features = int(row["item"]), float(row.get("sleep", 0)), row.get("features")
        except (ValueError, KeyError, TypeError) as error:
            self._answer(400, {"message": f"The body is not a soak row: {error}", "status": "error"})
            return
        time.sleep(max(sleep, 0.0))
        if (
            not isinstance(features, list)
            or len(features) != 4
            or not all(isinstance(f, (int, float)) for f in features)
        ):
            self._answer(
                400, {"message": f"Row {item}: features must be 4 numbers, got {features!r}", "status": "error"}
            )
            return
        self._answer(200, {"item": item, "label": LABELS[int(sum(features)) % len(LABELS)]})


def main() -> None:
    """Serve until terminated."""
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080"))), _Handler)
    server.daemon_threads = True
    server.request_queue_size = 256
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
