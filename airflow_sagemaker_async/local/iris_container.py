"""The bundled model container: an iris classifier that follows the SageMaker container contract.

Run as ``python -m airflow_sagemaker_async.local.iris_container``. It trains a scikit-learn
``LogisticRegression`` on ``sklearn.datasets.load_iris()`` (shipped inside scikit-learn, no network) at
start, then serves on ``127.0.0.1:$SAGEMAKER_BIND_TO_PORT`` (default 8080):

- ``GET /ping``: 200 with an empty body once the model is trained.
- ``POST /invocations``: ``text/csv`` (one row of 4 floats per line) or ``application/json``
  (``{"instances": [[5.1, 3.5, 1.4, 0.2], ...]}``); answers ``application/json``
  ``{"predictions": [{"label": "setosa", "class_index": 0, "probabilities": [...]}, ...]}``.
  Malformed input answers 400, an unsupported content type 415, both with
  ``{"message": "...", "status": "error"}``.

Test knobs, read from ``X-Amzn-SageMaker-Custom-Attributes`` (``key=value`` pairs separated by ``,`` or
``;``, unknown keys ignored):

- ``sleep=2.5``: wait that many seconds (real seconds, not scaled) before answering.
- ``wait_for=/path``: wait until that file exists (checked every 0.05 s, at most 10 minutes) before answering:
  a test releases the model when it is ready, whatever the machine's speed.
- ``status=500``: answer that HTTP status with an error body instead of predicting.
- ``exit=1``: the process exits at once with that code, without answering (a dying container).
"""

from __future__ import annotations

import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
FEATURES = 4


class InputError(ValueError):
    """The payload cannot be read as iris rows; answered with a 400."""


def parse_custom_attributes(value: str | None) -> dict[str, str]:
    """Read ``key=value`` pairs separated by ``,`` or ``;`` (other text is ignored).

    :param value: the ``X-Amzn-SageMaker-Custom-Attributes`` header, possibly ``None``.
    :return: the pairs, keys lower-cased and stripped.
    """
    pairs: dict[str, str] = {}
    for part in (value or "").replace(";", ",").split(","):
        key, sep, raw = part.partition("=")
        if sep:
            pairs[key.strip().lower()] = raw.strip()
    return pairs


def parse_rows(body: bytes, content_type: str) -> list[list[float]]:
    """Turn a CSV or JSON payload into rows of 4 floats.

    :param body: the request payload.
    :param content_type: its media type; an empty or ``application/octet-stream`` type is sniffed.
    :raises InputError: when the payload is not 4 numbers per row, or is empty.
    :raises LookupError: for a content type that is neither CSV nor JSON.
    """
    media = content_type.split(";", maxsplit=1)[0].strip().lower()
    text = body.decode("utf-8", errors="replace").strip()
    if media in ("", "application/octet-stream"):
        media = "application/json" if text.startswith(("{", "[")) else "text/csv"
    rows: list[Any]
    if media == "text/csv":
        rows = [line.split(",") for line in text.splitlines() if line.strip()]
    elif media == "application/json":
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"The body is not valid JSON: {error}.") from None
        if not isinstance(document, dict) or not isinstance(document.get("instances"), list):
            raise InputError('A JSON body must be {"instances": [[f1, f2, f3, f4], ...]}.')
        rows = document["instances"]
    else:
        raise LookupError(f"Unsupported content type '{content_type}'; send text/csv or application/json.")
    if not rows:
        raise InputError("The body holds no rows; send at least one row of 4 numbers.")
    parsed = []
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, list) or len(row) != FEATURES:
            raise InputError(f"Row {number} must hold exactly {FEATURES} numbers, got {row!r}.")
        try:
            parsed.append([float(cell) for cell in row])
        except (TypeError, ValueError):
            raise InputError(f"Row {number} must hold exactly {FEATURES} numbers, got {row!r}.") from None
    return parsed


class IrisModel:
    """A logistic regression trained on the iris data set at construction (about 0.1 s)."""

    def __init__(self) -> None:
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression

        iris = load_iris()
        self.labels = [str(name) for name in iris.target_names]
        self.classifier = LogisticRegression(max_iter=1000).fit(iris.data, iris.target)

    def predict(self, rows: list[list[float]]) -> dict[str, Any]:
        """Predict the class of each row.

        :param rows: rows of 4 floats (sepal length, sepal width, petal length, petal width, in cm).
        :return: ``{"predictions": [{"label", "class_index", "probabilities"}, ...]}``.
        """
        probabilities = self.classifier.predict_proba(rows)
        predictions = []
        for row in probabilities:
            index = int(row.argmax())
            predictions.append(
                {
                    "label": self.labels[index],
                    "class_index": index,
                    "probabilities": [round(float(p), 6) for p in row],
                }
            )
        return {"predictions": predictions}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall
    model: IrisModel

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: the backend logs every request state change itself."""

    def _answer(self, status: int, document: dict[str, Any] | None) -> None:
        payload = b"" if document is None else json.dumps(document).encode()
        self.send_response(status)
        if document is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        if self.path == "/ping":
            self._answer(200, None)
        else:
            self._answer(404, {"message": f"No route for GET {self.path}.", "status": "error"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.path != "/invocations":
            self._answer(404, {"message": f"No route for POST {self.path}.", "status": "error"})
            return
        knobs = parse_custom_attributes(self.headers.get(CUSTOM_ATTRIBUTES_HEADER))
        if "exit" in knobs:
            os._exit(int(knobs["exit"] or 1))
        if "sleep" in knobs:
            time.sleep(float(knobs["sleep"]))
        if knobs.get("wait_for"):
            released_by = time.monotonic() + 600
            while not os.path.exists(knobs["wait_for"]) and time.monotonic() < released_by:
                time.sleep(0.05)
        if "status" in knobs and knobs["status"] != "200":
            code = int(knobs["status"])
            self._answer(code, {"message": f"Failing on request (status={code} knob).", "status": "error"})
            return
        try:
            rows = parse_rows(body, self.headers.get("Content-Type") or "")
        except InputError as error:
            self._answer(400, {"message": str(error), "status": "error"})
            return
        except LookupError as error:
            self._answer(415, {"message": str(error), "status": "error"})
            return
        self._answer(200, self.model.predict(rows))


def main() -> None:
    """Train the model and serve until terminated."""
    port = int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080"))
    _Handler.model = IrisModel()
    server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    server.daemon_threads = True
    print(f"iris container serving on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
