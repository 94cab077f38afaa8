"""The moto server (S3, SNS, SQS, SageMaker control plane) and the hooks that tie endpoints to containers.

moto runs in this process, so its SageMaker backend objects are reachable: :func:`install_hooks` wraps
``create_endpoint`` / ``delete_endpoint`` of moto's SageMaker backend class (once per process) so that a
listener registered for an (account, region) hears of every endpoint created through the API, whoever
created it, and can hold it in ``Creating`` until its containers answer ``/ping``.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import TYPE_CHECKING, Any, Protocol

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.sagemaker.exceptions import ValidationError as MotoValidationError
from moto.sagemaker.models import SageMakerModelBackend
from moto.sagemaker.responses import SageMakerResponse

from airflow_sagemaker_async.local import moto_speedups
from airflow_sagemaker_async.local.wsgi_server import KeepAliveWSGIServer

if TYPE_CHECKING:
    from moto.sagemaker.models import FakeEndpoint

log = logging.getLogger(__name__)

_hooks_lock = threading.Lock()
_hooks_installed = False
_listeners: dict[tuple[str, str], EndpointListener] = {}


class EndpointListener(Protocol):
    """What the runtime implements to hear of endpoints created and deleted in moto."""

    def endpoint_created(self, endpoint: FakeEndpoint) -> None:
        """Hear that moto created ``endpoint`` (called in moto's request thread; must not block)."""

    def endpoint_deleted(self, endpoint_name: str) -> None:
        """Hear that moto deleted the endpoint (called in moto's request thread; must not block)."""


class BackendAlreadyRunningError(RuntimeError):
    """Another local backend already serves this account and region in this process."""


def install_hooks() -> None:
    """Wrap moto's SageMaker ``create_endpoint`` / ``delete_endpoint`` once per process (idempotent).

    Without a registered listener the wrappers behave exactly as moto does.
    """
    global _hooks_installed  # noqa: PLW0603 - a process-wide, install-once patch
    with _hooks_lock:
        if _hooks_installed:
            return
        original_create = SageMakerModelBackend.create_endpoint
        original_delete = SageMakerModelBackend.delete_endpoint

        def create_endpoint(self: SageMakerModelBackend, *args: Any, **kwargs: Any) -> FakeEndpoint:
            listener = _listeners.get((self.account_id, self.region_name))
            name = kwargs.get("endpoint_name", args[0] if args else None)
            if listener is not None and name in self.endpoints:
                arn = self.endpoints[name].arn
                raise MotoValidationError(message=f'Cannot create already existing endpoint "{arn}".')
            endpoint = original_create(self, *args, **kwargs)
            if listener is not None:
                listener.endpoint_created(endpoint)
            return endpoint

        def delete_endpoint(self: SageMakerModelBackend, endpoint_name: str) -> None:
            original_delete(self, endpoint_name)
            listener = _listeners.get((self.account_id, self.region_name))
            if listener is not None:
                listener.endpoint_deleted(endpoint_name)

        SageMakerModelBackend.create_endpoint = create_endpoint  # type: ignore[method-assign]
        SageMakerModelBackend.delete_endpoint = delete_endpoint  # type: ignore[method-assign]
        _answer_unsupported_calls_as_aws_does()
        _hooks_installed = True


def _answer_unsupported_calls_as_aws_does() -> None:
    """Answer a SageMaker call moto does not implement (``UpdateEndpoint``, ...) as AWS answers an unknown one.

    moto raises ``NotImplementedError``, which its server turns into an HTML 500 page that botocore retries and
    then reports as an unparsable error. AWS answers an operation it does not know with 400
    ``UnknownOperationException`` in the JSON protocol; botocore raises that as a ``ClientError`` at once.
    """
    original = SageMakerResponse.call_action

    def call_action(self: SageMakerResponse) -> Any:
        try:
            return original(self)
        except NotImplementedError:
            operation = self._get_action()
            body = {
                "__type": "UnknownOperationException",
                "message": f"{operation} is not emulated by the local SageMaker backend (sagemaker-async-local). "
                "See its README, 'Not emulated'; e.g. instead of UpdateEndpoint, delete the endpoint and create "
                "it again with the new endpoint config.",
            }
            headers = {"Content-Type": "application/x-amz-json-1.1", "x-amzn-ErrorType": "UnknownOperationException"}
            return 400, headers, json.dumps(body)

    SageMakerResponse.call_action = call_action  # type: ignore[method-assign,assignment]


def register_listener(account_id: str, region_name: str, listener: EndpointListener) -> None:
    """Make ``listener`` hear of endpoints of this account and region.

    :raises BackendAlreadyRunningError: when another listener (another running backend) holds them.
    """
    install_hooks()
    with _hooks_lock:
        if (account_id, region_name) in _listeners:
            raise BackendAlreadyRunningError(
                f"A LocalSageMakerAsyncBackend already serves account {account_id} in {region_name} in this "
                "process; moto's state is process-wide. Share that backend (the session-scoped "
                "'sagemaker_async_backend' fixture), stop it first, or use another region_name."
            )
        _listeners[(account_id, region_name)] = listener


def unregister_listener(account_id: str, region_name: str) -> None:
    """Forget the listener of this account and region (no error if none)."""
    with _hooks_lock:
        _listeners.pop((account_id, region_name), None)


def running_regions() -> set[tuple[str, str]]:
    """Return the (account, region) pairs currently served by a backend in this process."""
    with _hooks_lock:
        return set(_listeners)


def sagemaker_backend(account_id: str, region_name: str) -> SageMakerModelBackend:
    """Moto's in-process SageMaker backend of this account and region."""
    from moto.sagemaker.models import sagemaker_backends

    return sagemaker_backends[account_id][region_name]


def reset_region(account_id: str, region_name: str, *, include_s3: bool) -> None:
    """Forget moto's SageMaker, SNS and SQS state of one region (and S3's, global, when asked)."""
    from moto.s3.models import s3_backends
    from moto.sns.models import sns_backends
    from moto.sqs.models import sqs_backends

    for backends in (sns_backends, sqs_backends):
        backends[account_id][region_name].reset()
    sagemaker_backend(account_id, region_name).reset()
    if include_s3:
        s3_backends[account_id]["aws"].reset()


class MotoServer:
    """moto's WSGI application served from a daemon thread on ``127.0.0.1`` and a port chosen by the OS.

    Served with HTTP/1.1 keep-alive, as AWS serves its clients (:mod:`~airflow_sagemaker_async.local.wsgi_server`;
    moto's own werkzeug server closes every connection), without a log line per request.
    """

    def __init__(self) -> None:
        self._server: KeepAliveWSGIServer | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` once started.

        :raises RuntimeError: before :meth:`start`.
        """
        if self._server is None:
            raise RuntimeError("The moto server is not started.")
        return f"http://127.0.0.1:{self._server.port}"

    def start(self) -> None:
        """Bind and serve in a background thread; returns once the socket listens (installs :mod:`.moto_speedups`)."""
        moto_speedups.install()
        server = KeepAliveWSGIServer(DomainDispatcherApplication(create_backend_app), "sagemaker-async-local-moto")
        server.start()
        self._server = server

    def stop(self) -> None:
        """Stop serving and join the thread (idempotent)."""
        if self._server is not None:
            self._server.stop()
        self._server = None
