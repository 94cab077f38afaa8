"""Encode AWS event-stream messages (``application/vnd.amazon.eventstream``), the framing botocore parses.

A message is a prelude (total length, headers length, CRC32 of those 8 bytes), headers, the payload and
the CRC32 of everything before it; all integers big-endian. Headers here are strings (type 7): botocore
reads ``:message-type`` (``event`` or ``exception``), ``:event-type`` / ``:exception-type`` (the member of
the stream's union shape, e.g. ``PayloadPart`` or ``ModelStreamError``) and ``:content-type``.

A message is at most :data:`MAX_MESSAGE_BYTES` (16 MiB), the cap of AWS's own encoder
(``AWS_EVENT_STREAM_MAX_MESSAGE_SIZE`` in aws-c-event-stream), so real SageMaker cannot send a larger frame:
:func:`encode_payload_parts` splits a model's chunk into as many ``PayloadPart`` events as that takes.

.. seealso::
    - https://docs.aws.amazon.com/transcribe/latest/dg/streaming-setting-up.html (the framing)
    - ``botocore/eventstream.py`` (the decoder this must satisfy; it refuses payloads over 24 MiB)
    - https://github.com/awslabs/aws-c-event-stream (``AWS_EVENT_STREAM_MAX_MESSAGE_SIZE``, 16 MiB)
"""

from __future__ import annotations

import json
import struct
from binascii import crc32
from typing import Final

__all__ = [
    "CONTENT_TYPE",
    "MAX_MESSAGE_BYTES",
    "MAX_PAYLOAD_PART_BYTES",
    "encode_exception",
    "encode_message",
    "encode_payload_part",
    "encode_payload_parts",
]

#: The HTTP Content-Type of an event-stream response body.
CONTENT_TYPE: Final = "application/vnd.amazon.eventstream"
_STRING: Final = 7
#: Largest event-stream message AWS's encoder writes (prelude, headers, payload and CRCs): 16 MiB.
MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
_PAYLOAD_PART_HEADERS: Final = {
    ":message-type": "event",
    ":event-type": "PayloadPart",
    ":content-type": "application/octet-stream",
}


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode("utf-8"), value.encode("utf-8")
    return struct.pack("!B", len(raw_name)) + raw_name + struct.pack("!BH", _STRING, len(raw_value)) + raw_value


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """Return one framed message with string ``headers`` and ``payload``."""
    raw_headers = b"".join(_header(name, value) for name, value in headers.items())
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = struct.pack("!II", total, len(raw_headers))
    prelude += struct.pack("!I", crc32(prelude) & 0xFFFFFFFF)
    message = prelude + raw_headers + payload
    return message + struct.pack("!I", crc32(message) & 0xFFFFFFFF)


def encode_payload_part(data: bytes) -> bytes:
    """Return a ``PayloadPart`` event carrying ``data`` (its ``Bytes`` member is the event payload)."""
    return encode_message(_PAYLOAD_PART_HEADERS, data)


#: Largest ``PayloadPart`` payload that keeps its message within :data:`MAX_MESSAGE_BYTES`.
MAX_PAYLOAD_PART_BYTES: Final = MAX_MESSAGE_BYTES - len(encode_payload_part(b""))


def encode_payload_parts(data: bytes) -> list[bytes]:
    """Return ``data`` as ``PayloadPart`` events of at most :data:`MAX_MESSAGE_BYTES` each, in order."""
    view = memoryview(data)
    return [
        encode_payload_part(bytes(view[start : start + MAX_PAYLOAD_PART_BYTES]))
        for start in range(0, len(data), MAX_PAYLOAD_PART_BYTES)
    ]


def encode_exception(exception_type: str, document: dict[str, str]) -> bytes:
    """Return an exception event, e.g. ``ModelStreamError`` with ``{"Message": ..., "ErrorCode": ...}``."""
    return encode_message(
        {":message-type": "exception", ":exception-type": exception_type, ":content-type": "application/json"},
        json.dumps(document).encode("utf-8"),
    )
