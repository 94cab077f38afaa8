"""
Where a stream's parts go as they arrive: :class:`Sink` and its three kinds.

- :class:`FileSink`: a local file, flushed per part;
- :class:`S3Sink`: an S3 object, by multipart upload (parts of ``part_bytes``, at least
  :data:`MIN_MULTIPART_PART_BYTES` except the last; one PutObject when the whole answer fits in one part);
- :class:`MemorySink`: memory, bounded by ``max_output_bytes``, returned in the outcome.

A file or an S3 object receives the parts at its ``.partial`` sibling (:data:`PARTIAL_SUFFIX`) and reaches its
final path or key only when the stream ended without an error (:meth:`Sink.finish`), so a whole answer is all
that ever appears there; :meth:`Sink.keep_partial` leaves what arrived at the sibling.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Final

from botocore.exceptions import ClientError

from airflow_sagemaker_async.common.exceptions import (
    SageMakerAsyncOutputTooLarge,
)
from airflow_sagemaker_async.common.validation import parse_s3_uri

__all__ = ["MIN_MULTIPART_PART_BYTES", "PARTIAL_SUFFIX", "FileSink", "MemorySink", "S3Sink", "Sink"]

log = logging.getLogger(__name__)
#: Suffix of the sibling file / key that holds the parts while they arrive, and what arrived of a broken stream.
PARTIAL_SUFFIX: Final = ".partial"

#: S3's smallest part of a multipart upload (all but the last): 5 MiB.
MIN_MULTIPART_PART_BYTES: Final = 5 * 1024 * 1024


class Sink:
    """
    Where the parts go as they arrive. ``write`` each part, then ``finish``, ``keep_partial`` or ``abandon``.

    Partial output never looks complete: the parts go first to :attr:`partial_location` (the destination plus
    ``.partial``); only a stream that ended without an error reaches :attr:`location`.
    """

    #: the final destination (a local path or an S3 URI), or ``None`` when kept in memory.
    location: str | None = None
    #: where the parts are while they arrive, and what arrived of a broken stream stays (``location.partial``).
    partial_location: str | None = None

    def write(self, data: bytes) -> None:
        """Keep one part."""
        raise NotImplementedError

    def finish(self) -> None:
        """Put every part at :attr:`location`: the stream ended without an error."""

    def keep_partial(self) -> None:
        """Make the parts durable at :attr:`partial_location`, not the final one: the stream ended with an error."""

    def abandon(self) -> None:
        """Release what ``write`` holds after an unexpected error (e.g. abort a multipart upload)."""


class MemorySink(Sink):
    """
    Collect the parts in memory, at most ``max_bytes``.

    :raises SageMakerAsyncOutputTooLarge: from :meth:`write`, once more than ``max_bytes`` arrived.
    """

    def __init__(self, max_bytes: int, endpoint_name: str) -> None:
        self.max_bytes = max_bytes
        self.endpoint_name = endpoint_name
        self.parts: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> None:
        """Keep one part, or raise when the total passes ``max_bytes``."""
        self.size += len(data)
        if self.size > self.max_bytes:
            raise SageMakerAsyncOutputTooLarge(
                f"The streamed answer of endpoint {self.endpoint_name} passed max_output_bytes={self.max_bytes} "
                f"after {len(self.parts) + 1} parts; the stream was closed. Raise max_output_bytes, or write the "
                "stream to output_location='s3://bucket/key' or output_file='/path'."
            )
        self.parts.append(data)

    @property
    def data(self) -> bytes:
        """Every part received, joined."""
        return b"".join(self.parts)


class FileSink(Sink):
    """
    Append the parts to ``<path>.partial`` (created with its parent directories; truncated), flushed per part.

    :meth:`finish` renames it to ``path`` (atomic on one file system: a reader of ``path`` sees the whole
    answer or the previous file); after a stream error it stays at ``<path>.partial``.
    """

    def __init__(self, path: str) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        self.location = str(target)
        self.partial_location = f"{target}{PARTIAL_SUFFIX}"
        self._file = Path(self.partial_location).open("wb")  # noqa: SIM115 - open across write / finish

    def write(self, data: bytes) -> None:
        """Append and flush one part."""
        self._file.write(data)
        self._file.flush()

    def finish(self) -> None:
        """Close the file and move it to ``path``."""
        self._file.close()
        os.replace(self.partial_location or "", self.location or "")

    def keep_partial(self) -> None:
        """Close the file, left at ``<path>.partial``."""
        self._file.close()

    def abandon(self) -> None:
        """Close the file, keeping what it holds at ``<path>.partial``."""
        self._file.close()


class S3Sink(Sink):
    """
    Write the parts to one S3 object, through ``<key>.partial`` while they arrive.

    Up to one part's worth is buffered; past it the parts go to a multipart upload of ``<key>.partial``. On
    success the answer is written to ``key`` (one PutObject, or a server-side copy of the completed upload)
    and ``<key>.partial`` is deleted, so ``key`` (and its S3 event) only ever holds a whole answer. After a
    stream error what arrived is written to, or completed at, ``<key>.partial``.

    :param client: a boto3 S3 client.
    :param uri: ``s3://bucket/key``.
    :param part_bytes: size of every uploaded part but the last (>= 5 MiB).
    :param content_type: the object's Content-Type, if known.
    """

    def __init__(self, client: Any, uri: str, part_bytes: int, content_type: str | None) -> None:
        self.location = uri
        self.partial_location = f"{uri}{PARTIAL_SUFFIX}"
        self.bucket, self.key = parse_s3_uri(uri, "output_location")
        self.partial_key = f"{self.key}{PARTIAL_SUFFIX}"
        self.client = client
        self.part_bytes = part_bytes
        self.extra = {"ContentType": content_type} if content_type else {}
        self.buffer = bytearray()
        self.upload_id: str | None = None
        self.uploaded: list[dict[str, Any]] = []

    def write(self, data: bytes) -> None:
        """Buffer one part; upload a part each time ``part_bytes`` are buffered."""
        self.buffer += data
        while len(self.buffer) >= self.part_bytes:
            self._upload(bytes(self.buffer[: self.part_bytes]))
            del self.buffer[: self.part_bytes]

    def _upload(self, data: bytes) -> None:
        if self.upload_id is None:
            answer = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.partial_key, **self.extra)
            self.upload_id = answer["UploadId"]
        number = len(self.uploaded) + 1
        answer = self.client.upload_part(
            Bucket=self.bucket, Key=self.partial_key, UploadId=self.upload_id, PartNumber=number, Body=data
        )
        self.uploaded.append({"PartNumber": number, "ETag": answer["ETag"]})

    def _complete_partial(self) -> None:
        if self.buffer:
            self._upload(bytes(self.buffer))
            self.buffer.clear()
        self.client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=self.partial_key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": self.uploaded},
        )

    def finish(self) -> None:
        """Write the whole answer to ``key``: at once, or by copying the completed upload; drop ``<key>.partial``."""
        if self.upload_id is None:
            self.client.put_object(Bucket=self.bucket, Key=self.key, Body=bytes(self.buffer), **self.extra)
        else:
            self._complete_partial()
            # A managed copy (multipart above 5 GB); Content-Type and metadata are copied with the object.
            self.client.copy({"Bucket": self.bucket, "Key": self.partial_key}, self.bucket, self.key)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.partial_key)
        except ClientError as error:  # the answer is whole at key; a stale .partial only misleads
            log.warning(
                "Could not delete %s after writing the whole answer to %s: %s",
                self.partial_location,
                self.location,
                error,
            )

    def keep_partial(self) -> None:
        """Write what arrived to ``<key>.partial`` (completing the multipart upload there); ``key`` is not written."""
        if self.upload_id is None:
            self.client.put_object(Bucket=self.bucket, Key=self.partial_key, Body=bytes(self.buffer), **self.extra)
        else:
            self._complete_partial()

    def abandon(self) -> None:
        """Abort the multipart upload, if one was started (its parts would be billed forever otherwise)."""
        if self.upload_id is not None:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.partial_key, UploadId=self.upload_id)
