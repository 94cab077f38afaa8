"""The runtime's two S3 calls made on moto's S3 backend in this process, not through HTTP, SigV4 and XML.

The runtime reads each request's input (``GetObject``) and writes its output or failure (``PutObject``). Through
moto's server each costs both ends a signed HTTP request: aiobotocore builds, signs and parses it in the runtime;
uvicorn, a2wsgi, Flask and moto's response layer decode and answer it. Profiled on 2,000 asynchronous inferences,
that was about two fifths of the backend's CPU per inference (``benchmarks/README.md``). The local backend runs
moto's server and the runtime in one process (:class:`~.backend.LocalSageMakerAsyncBackend`),
so :class:`DirectS3` calls the backend objects that moto's server would call, with what its response layer does
for these two calls:

- ``get_object(Bucket, Key)``: ``NoSuchBucket`` / ``NoSuchKey`` as moto answers them, ``InvalidObjectState`` for an
  archived object not restored (moto's ``S3Response._get_key``); returns ``{"Body": ..., "ContentType": ...,
  "ContentLength": ...}``, ``Body`` an async context manager with ``read()`` as aiobotocore's stream;
- ``put_object(Bucket, Key, Body, ContentType)``: moto's ``S3Backend.put_object`` with the STANDARD storage class,
  then, as ``S3Response.put_object`` does, the ``Content-Type`` metadata, the bucket's ACL, no tags, and the
  CRC32 checksum that aiobotocore sends by default (``request_checksum_calculation`` ``when_supported``), so the
  stored object is the one the HTTP path stored; S3 event notifications are moto's (sent inside
  ``S3Backend.put_object``).

A moto error is raised as botocore's ``ClientError`` with moto's code and message, as the HTTP path raised it.
The calls run on a worker thread (``asyncio.to_thread``), like moto's server threads, never on the runtime's loop.
What the plugin and tests see of S3 goes through moto's server as before; only the runtime's calls are direct.
``tests/local/test_moto_direct.py`` compares the objects both paths store and the errors they raise.
"""

from __future__ import annotations

import asyncio
from typing import Any

from botocore.exceptions import ClientError
from moto.core.exceptions import ServiceException
from moto.s3.exceptions import InvalidObjectState, MissingKey
from moto.s3.models import s3_backends
from moto.s3.utils import ARCHIVE_STORAGE_CLASSES, compute_checksum

__all__ = ["DirectS3"]

#: The checksum aiobotocore adds to a PutObject by default (botocore's ``DEFAULT_CHECKSUM_ALGORITHM``).
CHECKSUM_ALGORITHM = "CRC32"


class _Body:
    """The bytes of a GetObject answer, read as aiobotocore's ``StreamingBody`` is (``async with`` + ``read()``)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def __aenter__(self) -> _Body:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    async def read(self) -> bytes:
        return self._data


#: HTTP status of the errors these two calls can meet (S3's error codes table); others answer 400.
_STATUS = {"NoSuchBucket": 404, "NoSuchKey": 404, "InvalidObjectState": 403}


def _client_error(error: ServiceException, operation: str) -> ClientError:
    response: Any = {
        "Error": {"Code": error.code, "Message": error.message},
        "ResponseMetadata": {"HTTPStatusCode": _STATUS.get(error.code, 400)},
    }
    return ClientError(response, operation)


class DirectS3:
    """GetObject / PutObject on moto's S3 backend of ``account_id`` in this process (see the module docstring).

    :param account_id: moto's account id (the local backend's).
    """

    def __init__(self, account_id: str) -> None:
        self._account_id = account_id

    @property
    def _backend(self) -> Any:
        return s3_backends[self._account_id]["aws"]

    async def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        """Return ``{"Body", "ContentType", "ContentLength"}`` of the object; raise ``ClientError`` as S3 would."""
        return await asyncio.to_thread(self._get, Bucket, Key)

    async def put_object(self, *, Bucket: str, Key: str, Body: bytes, ContentType: str) -> dict[str, Any]:
        """Store the object (STANDARD, ``ContentType``, CRC32); return ``{"ETag"}``; ``ClientError`` as S3 raises."""
        return await asyncio.to_thread(self._put, Bucket, Key, Body, ContentType)

    def _get(self, bucket: str, key: str) -> dict[str, Any]:
        try:
            found = self._backend.get_object(bucket, key)
            if found is None:
                raise MissingKey(key=key)
            if found.storage_class in ARCHIVE_STORAGE_CLASSES and 'ongoing-request="false"' not in (
                found.response_dict.get("x-amz-restore", "")
            ):
                raise InvalidObjectState(storage_class=found.storage_class)
            data: bytes = found.value
            content_type = found.metadata.get("Content-Type", "binary/octet-stream")
        except ServiceException as error:
            raise _client_error(error, "GetObject") from None
        return {"Body": _Body(data), "ContentType": content_type, "ContentLength": len(data)}

    def _put(self, bucket_name: str, key: str, body: bytes, content_type: str) -> dict[str, Any]:
        try:
            backend = self._backend
            bucket = backend.get_bucket(bucket_name)
            checksum = compute_checksum(body, algorithm=CHECKSUM_ALGORITHM)
            new_key = backend.put_object(
                bucket_name,
                key,
                body,
                storage="STANDARD",
                checksum_value=checksum.decode() if isinstance(checksum, bytes) else checksum,
            )
            new_key.set_metadata({"Content-Type": content_type})
            new_key.set_acl(bucket.acl)
            new_key.checksum_algorithm = CHECKSUM_ALGORITHM
            backend.put_object_tagging(new_key, {})
        except ServiceException as error:
            raise _client_error(error, "PutObject") from None
        return {"ETag": new_key.etag}
