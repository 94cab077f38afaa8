"""ListObjectsV2 from the sorted index (:mod:`~airflow_sagemaker_async.local.moto_speedups`) answers as moto does."""

from __future__ import annotations

import random
from typing import Any, Final

import pytest
from moto.s3 import models as s3_models

from airflow_sagemaker_async.local import moto_speedups

ACCOUNT: Final = "123456789012"
#: Characters of the random keys: the delimiters used, neighbours of "/" in code point order, and non-ASCII.
ALPHABET: Final = "ab/-0.~éé\u00ff\u4e2d"


def _names(entries: list[Any]) -> list[str]:
    return [entry if isinstance(entry, str) else entry.name for entry in entries]


def _moto(backend: Any, *args: Any) -> tuple[list[str], bool, str | None]:
    entries, truncated, token = moto_speedups._ORIGINALS["list_objects_v2"](backend, *args)
    return _names(entries), bool(truncated), token


def _ours(backend: Any, *args: Any) -> tuple[list[str], bool, str | None]:
    entries, truncated, token = backend.list_objects_v2(*args)
    return _names(entries), bool(truncated), token


def _random_key(rng: random.Random) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 7)))


@pytest.mark.parametrize("seed", range(4))
def test_every_page_is_the_one_moto_answers_on_random_keys_puts_and_deletes(seed: int) -> None:
    moto_speedups.install()
    rng = random.Random(seed)
    backend = s3_models.S3Backend("us-east-1", ACCOUNT)
    bucket_name = f"index-{seed}"
    backend.create_bucket(bucket_name, "us-east-1")
    if seed % 2:
        backend.put_bucket_versioning(bucket_name, "Enabled")  # deletes leave delete markers, as in moto
    keys = {_random_key(rng) for _ in range(300)}
    for key in keys:
        backend.put_object(bucket_name, key, b"x")
    bucket = backend.get_bucket(bucket_name)
    compared = 0
    for round_ in range(60):
        if round_ % 3 == 0:  # the index exists now: change the bucket under it
            for key in rng.sample(sorted(keys), 10):
                backend.delete_object(bucket_name, key)
            for _ in range(10):
                key = _random_key(rng)
                keys.add(key)
                backend.put_object(bucket_name, key, b"y")
        prefix = rng.choice(["", "", "a", "a/", "b", "é", _random_key(rng)[:2]])
        delimiter = rng.choice([None, None, "/", "-", "é"])
        start_after = rng.choice([None, None, _random_key(rng), prefix + "/"])
        max_keys = rng.choice([0, 1, 2, 7, 50, 1000])
        token: str | None = None
        pages = 0
        while True:
            args = (bucket, prefix, delimiter, token, start_after, max_keys)
            expected = _moto(backend, *args)
            assert _ours(backend, *args) == expected, args
            compared += len(expected[0])
            pages += 1
            token = expected[2]
            if not expected[1] or pages > 400:
                break
    assert compared > 1000  # the comparisons saw entries, not empty pages only


def test_an_unknown_continuation_token_is_moto_s_own_answer() -> None:
    moto_speedups.install()
    backend = s3_models.S3Backend("us-east-1", ACCOUNT)
    backend.create_bucket("unknown-token", "us-east-1")
    backend.put_object("unknown-token", "a", b"x")
    bucket = backend.get_bucket("unknown-token")
    with pytest.raises(TypeError):  # moto compares the keys with None: a 500 through its server, here as there
        moto_speedups._ORIGINALS["list_objects_v2"](backend, bucket, "", None, "nope", None, 10)
    with pytest.raises(TypeError):
        backend.list_objects_v2(bucket, "", None, "nope", None, 10)


def test_an_index_left_behind_by_uninstall_is_built_again() -> None:
    moto_speedups.install()
    backend = s3_models.S3Backend("us-east-1", ACCOUNT)
    backend.create_bucket("rebuilt", "us-east-1")
    backend.put_object("rebuilt", "a", b"x")
    bucket = backend.get_bucket("rebuilt")
    assert _ours(backend, bucket, "", None, None, None, 10)[0] == ["a"]
    try:
        moto_speedups.uninstall()
        backend.put_object("rebuilt", "b", b"x")  # moto's own store: the index does not see it
    finally:
        moto_speedups.install()
    assert _ours(backend, bucket, "", None, None, None, 10)[0] == ["a", "b"]
