"""Send hand-signed (or unsigned, or badly signed) requests to the local runtime."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def signed_headers(
    backend,
    path: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    *,
    access_key: str | None = None,
    secret_key: str | None = None,
    service: str = "sagemaker",
    region: str | None = None,
) -> dict[str, str]:
    request = AWSRequest(method="POST", url=backend.runtime_url + path, data=body, headers=dict(headers or {}))
    credentials = Credentials(access_key or backend.aws_access_key_id, secret_key or backend.aws_secret_access_key)
    SigV4Auth(credentials, service, region or backend.region_name).add_auth(request)
    return dict(request.headers.items())


def send(backend, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], dict]:
    request = urllib.request.Request(backend.runtime_url + path, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers.items()), json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers.items()), json.loads(error.read() or b"{}")


def send_signed(backend, path: str, body: bytes, headers: dict[str, str] | None = None, **signing):
    return send(backend, path, body, signed_headers(backend, path, body, headers, **signing))
