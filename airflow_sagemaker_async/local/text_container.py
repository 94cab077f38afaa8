"""The bundled streaming text model: a tiny deterministic "LLM" that follows the SageMaker container contract.

Run as ``python -m airflow_sagemaker_async.local.text_container``; standard library only, serves on
``127.0.0.1:$SAGEMAKER_BIND_TO_PORT`` (default 8080):

- ``GET /ping``: 200.
- ``POST /invocations``: the whole generation at once (``text/plain``).
- ``POST /invocations-response-stream``: the same generation streamed with chunked transfer encoding, one
  token per HTTP chunk, ``delay`` seconds apart (SageMaker turns each chunk into a ``PayloadPart`` event).

The payload is JSON ``{"inputs": "a prompt", "parameters": {"max_new_tokens": 20}}`` or plain text (the
prompt). Tokens are words picked deterministically from the prompt's hash, each followed by a space.

Test knobs, read from ``X-Amzn-SageMaker-Custom-Attributes`` (``key=value`` pairs separated by ``,`` or ``;``):

- ``delay=0.05``: seconds between tokens (default 0.02).
- ``tokens=N``: generate N tokens (overrides ``max_new_tokens``; default 16).
- ``token_bytes=K``: pad every token to K bytes (to make large responses).
- ``fail_after=N``: send N tokens, then drop the connection without ending the chunked body (the model
  dies mid-stream; SageMaker reports ``ModelStreamError``).
- ``status=500``: answer that HTTP status with an error body before streaming anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from airflow_sagemaker_async.local.iris_container import CUSTOM_ATTRIBUTES_HEADER, parse_custom_attributes

_SENTENCE = (
    "the quick brown fox jumps over a lazy dog while airflow schedules sagemaker streams tokens to the worker "
    "one part at a time and every part arrives in order"
)
WORDS = tuple(_SENTENCE.split())
DEFAULT_TOKENS = 16
DEFAULT_DELAY = 0.02


def read_prompt(body: bytes) -> tuple[str, int | None]:
    """Return ``(prompt, max_new_tokens)`` from a JSON or plain-text payload."""
    text = body.decode("utf-8", errors="replace")
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        return text, None
    if isinstance(document, dict):
        parameters = document.get("parameters") or {}
        tokens = parameters.get("max_new_tokens") if isinstance(parameters, dict) else None
        return str(document.get("inputs", "")), int(tokens) if isinstance(tokens, int) else None
    return text, None


def generate(prompt: str, count: int, token_bytes: int = 0) -> list[bytes]:
    """Return ``count`` tokens chosen from the prompt's SHA-256, each padded to ``token_bytes`` if given."""
    seed = hashlib.sha256(prompt.encode()).digest()
    tokens = []
    for index in range(count):
        word = WORDS[(seed[index % len(seed)] + index) % len(WORDS)] + " "
        token = word.encode()
        if token_bytes > len(token):
            token = token.rstrip() + b"." * (token_bytes - len(token)) + b" "
        tokens.append(token)
    return tokens


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: the backend logs what matters."""

    def _answer(self, status: int, payload: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        self._answer(200 if self.path == "/ping" else 404, b"")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path not in ("/invocations", "/invocations-response-stream"):
            self._answer(404, json.dumps({"message": f"No route for POST {self.path}."}).encode())
            return
        knobs = parse_custom_attributes(self.headers.get(CUSTOM_ATTRIBUTES_HEADER))
        if knobs.get("status", "200") != "200":
            code = int(knobs["status"])
            self._answer(code, json.dumps({"message": f"Failing on request (status={code} knob)."}).encode())
            return
        prompt, max_new_tokens = read_prompt(body)
        count = int(knobs.get("tokens") or max_new_tokens or DEFAULT_TOKENS)
        tokens = generate(prompt, count, int(knobs.get("token_bytes") or 0))
        if self.path == "/invocations":
            self._answer(200, b"".join(tokens), "text/plain; charset=utf-8")
            return
        delay = float(knobs.get("delay") or DEFAULT_DELAY)
        fail_after = int(knobs["fail_after"]) if "fail_after" in knobs else None
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for index, token in enumerate(tokens):
            if fail_after is not None and index >= fail_after:
                self.wfile.flush()
                time.sleep(0.2)  # let the parts already sent reach the reader before the connection breaks
                self.close_connection = True
                self.connection.shutdown(2)  # no terminating chunk: the stream is broken
                return
            if index and delay:
                time.sleep(delay)
            self.wfile.write(f"{len(token):x}\r\n".encode() + token + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def main() -> None:
    """Serve until terminated."""
    port = int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080"))
    server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    server.daemon_threads = True
    print(f"text container serving on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
