"""Verify AWS Signature Version 4 on requests to the local runtime, with botocore's own primitives.

The canonical request is rebuilt from the method, the raw path and query, exactly the headers the client
listed in ``SignedHeaders`` (with the values received), the payload hash and ``X-Amz-Date``; botocore's
:class:`~botocore.auth.SigV4Auth` then derives the signature, which is compared in constant time.
"""

from __future__ import annotations

import hmac
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

if TYPE_CHECKING:
    from collections.abc import Mapping

#: How far ``X-Amz-Date`` may be from the server's clock, as AWS allows.
MAX_CLOCK_SKEW = timedelta(minutes=15)

_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<key>[^/\s]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)"
    r"/aws4_request,\s*SignedHeaders=(?P<headers>[a-z0-9;\-]+),\s*Signature=(?P<signature>[0-9a-f]{64})$"
)


class SignatureError(Exception):
    """The request is not signed, or not signed with the backend's credentials; answered as a 403.

    :param error_type: the AWS error code answered in ``x-amzn-ErrorType``.
    :param message: the message answered in the body.
    """

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message


class _ListedHeadersSigV4Auth(SigV4Auth):
    """SigV4Auth that signs exactly the headers the client listed, not botocore's own selection."""

    def __init__(self, credentials: Credentials, service_name: str, region_name: str, signed: list[str]):
        super().__init__(credentials, service_name, region_name)
        self._signed = signed

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        headers = HTTPHeaders()
        for name in self._signed:
            headers[name] = request.headers[name]
        return headers


def verify_sigv4(
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    access_key: str,
    secret_key: str,
    region_name: str,
    service_name: str = "sagemaker",
    now: datetime | None = None,
) -> None:
    """Check that a request carries a valid SigV4 signature made with the given credentials.

    :param method: the HTTP method.
    :param url: scheme, host (as sent in ``Host``), raw (still percent-encoded) path and query.
    :param headers: the received headers (any case); repeated headers joined with ``,``.
    :param body: the raw body.
    :param access_key: the only access key id accepted.
    :param secret_key: its secret.
    :param region_name: the region the credential scope must name.
    :param service_name: the signing name the scope must name, default ``sagemaker``.
    :param now: the server time (UTC), default the current time.
    :raises SignatureError: ``MissingAuthenticationTokenException`` when unsigned,
        ``UnrecognizedClientException`` for another access key, ``InvalidSignatureException`` for a wrong
        scope, a date more than 15 minutes off, or a signature that does not match.
    """
    headers = {name.lower(): value for name, value in headers.items()}
    authorization = headers.get("authorization")
    if not authorization:
        raise SignatureError("MissingAuthenticationTokenException", "Missing Authentication Token")
    match = _AUTHORIZATION.match(authorization.strip())
    if match is None:
        raise SignatureError(
            "IncompleteSignatureException",
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' "
            "with the AWS4-HMAC-SHA256 algorithm.",
        )
    if match["key"] != access_key:
        raise SignatureError("UnrecognizedClientException", "The security token included in the request is invalid.")
    if match["service"] != service_name:
        raise SignatureError(
            "InvalidSignatureException", f"Credential should be scoped to correct service: '{service_name}'."
        )
    if match["region"] != region_name:
        raise SignatureError(
            "InvalidSignatureException",
            f"Credential should be scoped to a valid region, not '{match['region']}'; "
            f"this backend serves '{region_name}'.",
        )
    signed = match["headers"].split(";")
    missing = [name for name in signed if name not in headers]
    amz_date = headers.get("x-amz-date")
    if missing or "host" not in signed or amz_date is None or "x-amz-date" not in signed:
        raise SignatureError(
            "InvalidSignatureException",
            "The request must sign 'host' and 'x-amz-date', and send every header listed in "
            f"SignedHeaders (missing: {', '.join(missing) or 'none'}).",
        )
    try:
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise SignatureError(
            "InvalidSignatureException", f"X-Amz-Date '{amz_date}' is not in the form YYYYMMDDTHHMMSSZ."
        ) from None
    current = now or datetime.now(UTC)
    if abs(current - signed_at) > MAX_CLOCK_SKEW or match["date"] != amz_date[:8]:
        raise SignatureError(
            "InvalidSignatureException",
            f"Signature expired: {amz_date} is now earlier or later than the allowed 15 minutes "
            f"({current.strftime('%Y%m%dT%H%M%SZ')}).",
        )
    request = AWSRequest(method=method, url=url, headers={name: headers[name] for name in signed}, data=body)
    request.context["timestamp"] = amz_date
    auth = _ListedHeadersSigV4Auth(Credentials(access_key, secret_key), service_name, region_name, signed)
    canonical_request = auth.canonical_request(request)
    expected = auth.signature(auth.string_to_sign(request, canonical_request), request)
    if not hmac.compare_digest(expected, match["signature"]):
        raise SignatureError(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method.",
        )
