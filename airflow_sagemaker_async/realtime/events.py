"""
The event stream of InvokeEndpointWithResponseStream, read frame by frame: :func:`read_events`.

botocore parses the event stream but keeps only the code and message of an exception event, dropping
ModelStreamError's ``ErrorCode``, and offers no public way to the frames (its ``EventStream`` keeps the HTTP
body in the private ``_raw_stream``). :func:`read_events` therefore reads ``_raw_stream`` with botocore's public
``EventStreamBuffer`` and interprets the headers itself (``:message-type``, ``:event-type``,
``:exception-type``); ``tests/test_streaming.py`` pins both facts against botocore's own classes.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from botocore.eventstream import EventStreamBuffer

if TYPE_CHECKING:
    from collections.abc import Iterator


__all__ = ["StreamEvent", "read_events"]


class StreamEvent:
    """
    One event of the response stream: a part (``data``) or the error that ended the stream (``error_type``).

    :param data: the PayloadPart's bytes, or ``None`` for an error.
    :param error_type: ``ModelStreamError``, ``InternalStreamFailure`` (or another exception event), else ``None``.
    :param error_code: ModelStreamError's ``ErrorCode``, if sent.
    :param message: the error's ``Message``, if sent.
    """

    __slots__ = ("data", "error_code", "error_type", "message")

    def __init__(
        self,
        data: bytes | None = None,
        *,
        error_type: str | None = None,
        error_code: str | None = None,
        message: str | None = None,
    ) -> None:
        self.data = data
        self.error_type = error_type
        self.error_code = error_code
        self.message = message


def read_events(stream: Any) -> Iterator[StreamEvent]:
    """
    Yield the events of InvokeEndpointWithResponseStream's ``Body`` as they arrive; stop after an error event.

    Reads the frames of botocore's ``EventStream`` with botocore's own decoder (CRC-checked), so that the
    ``ErrorCode`` of a ModelStreamError, which botocore's parsed events drop, is kept. Event types other than
    ``PayloadPart`` are skipped.
    """
    raw = stream._raw_stream  # botocore's EventStream: the HTTP body it decodes
    frames: Any = EventStreamBuffer()  # botocore-stubs type its iteration loosely
    for chunk in raw.stream():
        frames.add_data(chunk)
        for message in frames:
            headers: dict[str, Any] = message.headers
            kind = headers.get(":message-type")
            if kind == "event":
                if headers.get(":event-type") == "PayloadPart":
                    yield StreamEvent(bytes(message.payload))
                continue
            if kind == "exception":
                try:
                    document = json.loads(message.payload or b"{}")
                except ValueError:
                    document = {}
                document = document if isinstance(document, dict) else {}
                yield StreamEvent(
                    error_type=headers.get(":exception-type") or "UnknownException",
                    error_code=document.get("ErrorCode"),
                    message=document.get("Message") or document.get("message"),
                )
            else:
                yield StreamEvent(
                    error_type=headers.get(":error-code") or "UnknownError", message=headers.get(":error-message")
                )
            return
