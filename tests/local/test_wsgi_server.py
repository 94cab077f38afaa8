"""The local backend's moto is served with HTTP/1.1 keep-alive: one client connection serves many requests,
and a request body the application leaves unread never corrupts the next request on that connection."""

from __future__ import annotations

import http.client
import json
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import urllib3.connection
from botocore.config import Config
from botocore.exceptions import ClientError

from airflow_sagemaker_async.local.wsgi_server import KeepAliveWSGIServer

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


def _recording_app(seen: list[dict[str, Any]]) -> Callable[..., Any]:
    """Answer every request with what it saw; read the body only when the path says so."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        body = b""
        if environ["PATH_INFO"].startswith("/read"):
            from werkzeug.wrappers import Request

            body = Request(environ).get_data()
        seen.append(
            {
                "method": environ["REQUEST_METHOD"],
                "path": environ["PATH_INFO"],
                "raw_uri": environ.get("RAW_URI"),
                "client_port": environ["REMOTE_PORT"],
                "body_length": len(body),
            }
        )
        answer = json.dumps(seen[-1]).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(answer)))])
        return [answer]

    return app


@pytest.fixture
def connect() -> Iterator[Callable[[str, int], http.client.HTTPConnection]]:
    connections: list[http.client.HTTPConnection] = []

    def connect(host: str, port: int) -> http.client.HTTPConnection:
        connections.append(http.client.HTTPConnection(host, port, timeout=30))
        return connections[-1]

    yield connect
    for connection in connections:
        connection.close()


@pytest.fixture
def served() -> Iterator[tuple[KeepAliveWSGIServer, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    server = KeepAliveWSGIServer(_recording_app(seen), "test-wsgi")
    server.start()
    try:
        yield server, seen
    finally:
        server.stop()


def _send(connection: http.client.HTTPConnection, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
    connection.request(method, path, body=body, **kwargs)
    response = connection.getresponse()
    data = response.read()
    assert response.status == 200, data
    assert response.getheader("Connection", "").lower() != "close"
    return json.loads(data)


def test_an_unread_body_does_not_reach_the_next_request_on_the_same_connection(served: Any, connect: Any) -> None:
    server, seen = served
    connection = connect("127.0.0.1", server.port)
    # 1 MiB unread: above uvicorn's flow-control high-water mark (64 KiB), so reading pauses and must resume.
    for size in (10, 1024 * 1024):
        unread = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n" + b"x" * size
        assert _send(connection, "POST", "/ignore", unread)["body_length"] == 0
        sock = connection.sock
        assert _send(connection, "GET", "/after")["path"] == "/after"
        assert connection.sock is sock  # the same socket: the server kept the connection open
    assert [s["path"] for s in seen] == ["/ignore", "/after", "/ignore", "/after"]
    assert len({s["client_port"] for s in seen}) == 1  # one TCP connection served all four


def test_a_chunked_body_and_an_encoded_path_arrive_as_sent(served: Any, connect: Any) -> None:
    server, _ = served
    connection = connect("127.0.0.1", server.port)
    answer = _send(connection, "PUT", "/read/a%2Fb%20c?x=1", iter([b"abc", b"defg"]), encode_chunked=True)
    assert answer["body_length"] == 7
    assert answer["path"] == "/read/a/b c"
    assert answer["raw_uri"] == "/read/a%2Fb%20c?x=1"


def test_moto_s3_keeps_the_connection_alive(sagemaker_async_backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """boto3's S3 requests to the backend's moto, one after the other, go through one TCP connection."""
    connects: list[Any] = []
    original = urllib3.connection.connection.create_connection

    def create_connection(*args: Any, **kwargs: Any) -> Any:
        connects.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(urllib3.connection.connection, "create_connection", create_connection)
    s3 = sagemaker_async_backend.client("s3", config=Config(s3={"addressing_style": "path"}, max_pool_connections=1))
    bucket = f"keepalive-{uuid.uuid4().hex[:8]}"
    key = "a b/c%2Fd+e.out"  # characters moto matches on the raw path
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key=key, Body=b'{"predictions": [1]}')
    for _ in range(3):
        assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == 20
        with pytest.raises(ClientError) as missing:
            s3.head_object(Bucket=bucket, Key="missing")
        assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b'{"predictions": [1]}'
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == [key]
    s3.delete_object(Bucket=bucket, Key=key)
    s3.delete_bucket(Bucket=bucket)
    # With "Connection: close" (moto's werkzeug server) urllib3 connects once per request: 12 here.
    assert len(connects) == 1, connects
