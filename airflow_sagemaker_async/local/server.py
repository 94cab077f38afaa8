"""Our sagemaker-runtime server: an aiohttp application on its own event loop in a background thread.

It answers ``InvokeEndpointAsync`` for async endpoints and ``InvokeEndpoint`` /
``InvokeEndpointWithResponseStream`` for real-time ones (each with the error the real service gives the
other kind), checks SigV4 signatures, hears of endpoints created in moto (see
:mod:`~airflow_sagemaker_async.local.control_plane`) and runs an
:class:`~airflow_sagemaker_async.local.endpoints.EndpointRuntime` for each async endpoint, a
:class:`~airflow_sagemaker_async.local.realtime.RealtimeEndpoint` for each real-time one, whose image is
registered. Nothing here blocks the loop: SNS and SageMaker calls to moto go through aiobotocore, and so do S3
calls unless moto runs in this process (``direct_s3``: :mod:`~airflow_sagemaker_async.local.moto_direct`, on a
worker thread).

Longer than ~400 lines because it holds one aiohttp handler per runtime operation (InvokeEndpointAsync,
InvokeEndpoint, InvokeEndpointWithResponseStream, ping, control) with their AWS-shaped error answers; each
is short, and splitting them would scatter the one table of routes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import socket
import threading
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from aiohttp import web
from multidict import CIMultiDict

from airflow_sagemaker_async.common.rules import INVOKE_ENDPOINT, INVOKE_ENDPOINT_WITH_RESPONSE_STREAM, field_rule
from airflow_sagemaker_async.local.capacity import CapacityController, ScaleToZero
from airflow_sagemaker_async.local.control import CONTROL_PREFIX, control_routes
from airflow_sagemaker_async.local.endpoints import EndpointRuntime, EndpointSpec, RuntimeContext
from airflow_sagemaker_async.local.moto_direct import DirectS3
from airflow_sagemaker_async.local.notifications import endpoint_test_notification
from airflow_sagemaker_async.local.realtime import ModelFailure, RealtimeEndpoint, model_error_response
from airflow_sagemaker_async.local.request_model import (
    RequestValidationError,
    parse_invoke_endpoint,
    parse_invoke_endpoint_async,
    validate_endpoint_name,
)
from airflow_sagemaker_async.local.sigv4 import SignatureError, verify_sigv4

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine

    from moto.sagemaker.models import FakeEndpoint

    from airflow_sagemaker_async.local.records import InvocationRecord

log = logging.getLogger("airflow_sagemaker_async.local")

#: aiohttp refuses bodies above this many bytes outright (413); smaller bodies above the model's limits
#: (128,000 bytes async, 6,291,456 real-time) get a proper ValidationError.
MAX_HTTP_BODY = (field_rule(INVOKE_ENDPOINT, "body").maximum or 6_291_456) + 1024 * 1024


class ImageNotRegisteredError(LookupError):
    """An endpoint's model names an image that no container command is registered for."""


class RuntimeServer:
    """The sagemaker-runtime emulation; implements the control plane's ``EndpointListener``.

    :param moto_url: the moto server the runtime reads and writes (S3, SNS, SageMaker).
    :param region_name: the only region the runtime serves and accepts in signatures.
    :param account_id: moto's account id, used in error messages.
    :param access_key: the only access key id accepted in signatures.
    :param secret_key: its secret.
    :param images: image name → (command argv, environment); read when an endpoint is created.
    :param time_scale: returns the current time scale (read when a request is accepted).
    :param container_startup_timeout: seconds a container gets to answer ``/ping``.
    :param set_time_scale: changes the time scale, for the control surface's ``PUT /_local/time-scale``
        (:mod:`~airflow_sagemaker_async.local.control`); without it that answers 400.
    :param scale_to_zero: returns the scale-to-zero emulation's settings, read when an async endpoint is created;
        ``None`` (the default): off (:mod:`~airflow_sagemaker_async.local.capacity`).
    :param direct_s3: read inputs and write outputs on moto's S3 backend in this process
        (:class:`~airflow_sagemaker_async.local.moto_direct.DirectS3`), default False (through ``moto_url``);
        only when moto's server runs in this process.
    """

    def __init__(
        self,
        *,
        moto_url: str,
        region_name: str,
        account_id: str,
        access_key: str,
        secret_key: str,
        images: dict[str, tuple[list[str], dict[str, str]]],
        time_scale: Callable[[], float],
        container_startup_timeout: float,
        set_time_scale: Callable[[float], None] | None = None,
        scale_to_zero: Callable[[], ScaleToZero | None] = lambda: None,
        direct_s3: bool = False,
    ) -> None:
        self._direct_s3 = direct_s3
        self._scale_to_zero = scale_to_zero
        self._moto_url = moto_url
        self._region_name = region_name
        self._account_id = account_id
        self._access_key = access_key
        self._secret_key = secret_key
        self._images = images
        self._time_scale = time_scale
        self._set_time_scale = set_time_scale
        self._container_startup_timeout = container_startup_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._exit_stack: contextlib.AsyncExitStack | None = None
        self._context: RuntimeContext | None = None
        self._sagemaker: Any = None
        self._endpoints: dict[str, EndpointRuntime] = {}
        self._retired: list[EndpointRuntime] = []  # deleted or replaced: kept for their records
        self._realtime: dict[str, RealtimeEndpoint] = {}
        self._startups: dict[str, concurrent.futures.Future[EndpointSpec | None]] = {}
        self.url: str = ""

    # -- life cycle (called from the owner's thread) ------------------------------------------------------

    def start(self) -> None:
        """Start the loop thread, the AWS clients and the HTTP server on ``127.0.0.1`` (port chosen by the OS)."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="sagemaker-async-local-runtime", daemon=True)
        self._thread.start()
        try:
            self.url = self.call(self._astart(), timeout=60)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop serving, stop every endpoint's containers, close the clients and join the thread."""
        loop = self._loop
        if loop is None:
            return
        if loop.is_running():
            with contextlib.suppress(Exception):
                self.call(self._astop(), timeout=60)
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        loop.close()
        self._loop = None
        self._thread = None

    def call(self, coroutine: Coroutine[Any, Any, Any], timeout: float | None = None) -> Any:
        """Run ``coroutine`` on the runtime's loop and wait for its result in the calling thread.

        :raises TimeoutError: when it takes longer than ``timeout`` seconds.
        """
        if self._loop is None:
            coroutine.close()
            raise RuntimeError("The runtime server is not running.")
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"The runtime did not answer within {timeout} s.") from None

    async def _astart(self) -> str:
        stack = contextlib.AsyncExitStack()
        self._exit_stack = stack
        session = get_session()
        config = AioConfig(s3={"addressing_style": "path"}, max_pool_connections=32, retries={"max_attempts": 3})
        common: dict[str, Any] = {
            "endpoint_url": self._moto_url,
            "region_name": self._region_name,
            "aws_access_key_id": self._access_key,
            "aws_secret_access_key": self._secret_key,
            "config": config,
        }
        if self._direct_s3:  # moto's server runs in this process: its S3 backend, without HTTP (moto_direct)
            s3: Any = DirectS3(self._account_id)
        else:
            s3 = await stack.enter_async_context(session.create_client("s3", **common))
        sns = await stack.enter_async_context(session.create_client("sns", **common))
        self._sagemaker = await stack.enter_async_context(session.create_client("sagemaker", **common))
        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        stack.push_async_callback(http.close)
        self._context = RuntimeContext(
            region_name=self._region_name,
            s3=s3,
            sns=sns,
            http=http,
            container_startup_timeout=self._container_startup_timeout,
        )
        app = web.Application(middlewares=[self._signature_middleware], client_max_size=MAX_HTTP_BODY)
        app.router.add_post("/endpoints/{name}/async-invocations", self._invoke_endpoint_async)
        app.router.add_post("/endpoints/{name}/invocations", self._invoke_endpoint)
        app.router.add_post("/endpoints/{name}/invocations-response-stream", self._invoke_endpoint_with_response_stream)
        app.router.add_routes(control_routes(self))
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self._runner = runner
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(runner, sock).start()
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def _astop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        current = asyncio.current_task()
        starting = [t for t in asyncio.all_tasks() if t is not current and t.get_name().startswith("create-")]
        for task in starting:
            task.cancel()
        await asyncio.gather(*starting, return_exceptions=True)
        await asyncio.gather(*(runtime.stop() for runtime in self._endpoints.values()), return_exceptions=True)
        await asyncio.gather(*(endpoint.stop() for endpoint in self._realtime.values()), return_exceptions=True)
        if self._exit_stack is not None:
            await self._exit_stack.aclose()

    # -- EndpointListener (called in moto's request thread; must not block) --------------------------------

    def endpoint_created(self, endpoint: FakeEndpoint) -> None:
        """Hold the new endpoint in ``Creating`` and start its containers on the runtime's loop."""
        if self._loop is None:
            return
        endpoint.endpoint_status = "Creating"
        name = endpoint.endpoint_name
        self._startups[name] = asyncio.run_coroutine_threadsafe(self._create_task(endpoint), self._loop)

    def endpoint_deleted(self, endpoint_name: str) -> None:
        """Stop the endpoint's workers and containers on the runtime's loop."""
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._delete(endpoint_name), self._loop)

    async def _create_task(self, endpoint: FakeEndpoint) -> EndpointSpec | None:
        task = asyncio.create_task(self._create(endpoint), name=f"create-{endpoint.endpoint_name}")
        return await task

    async def _create(self, endpoint: FakeEndpoint) -> EndpointSpec | None:
        name = endpoint.endpoint_name
        runtime: EndpointRuntime | None = None
        try:
            spec = await self._describe(name)
            if spec.image not in self._images:
                raise ImageNotRegisteredError(
                    f"Image '{spec.image}' of model {spec.model_name} is not registered with the local backend. "
                    f"Start it with 'sagemaker-async-local up --image {spec.image}=COMMAND' (from Python: "
                    f"backend.register_container('{spec.image}', [command, ...])), then create the endpoint again."
                )
            command, environment = self._images[spec.image]
            assert self._context is not None
            if not spec.is_async:
                await self._create_realtime(spec, command, {**environment, **spec.environment})
                endpoint.endpoint_status = "InService"
                return spec
            runtime = EndpointRuntime(spec, command, {**environment, **spec.environment}, self._context)
            previous = self._endpoints.pop(name, None)
            if previous is not None:
                self._retired.append(previous)
                await previous.stop()
            self._endpoints[name] = runtime
            log.info("%s creating: starting %d container(s) of %s", name, spec.instance_count, spec.image)
            await runtime.start()
            if (scale_to_zero := self._scale_to_zero()) is not None:
                CapacityController(runtime, scale_to_zero, self._account_id, self._region_name).start()
        except BaseException as error:
            if runtime is not None:
                runtime.state = "Failed"
            endpoint.endpoint_status = "Failed"
            endpoint.failure_reason = str(error) or type(error).__name__  # type: ignore[assignment]
            log.error("%s failed to start: %s", name, endpoint.failure_reason)
            raise
        endpoint.endpoint_status = "InService"
        log.info(
            "%s InService: %d instance(s) x %d concurrent invocations, output %s, failure %s",
            name,
            spec.instance_count,
            spec.max_concurrent_invocations_per_instance,
            spec.s3_output_path,
            spec.s3_failure_path,
        )
        await self._send_test_notifications(spec)
        return spec

    async def _create_realtime(self, spec: EndpointSpec, command: list[str], environment: dict[str, str]) -> None:
        assert self._context is not None
        realtime = RealtimeEndpoint(spec, command, environment, self._context, self._account_id)
        previous = self._realtime.pop(spec.endpoint_name, None)
        if previous is not None:
            await previous.stop()
        self._realtime[spec.endpoint_name] = realtime
        log.info(
            "%s creating (real-time): starting %d container(s) of %s",
            spec.endpoint_name,
            spec.instance_count,
            spec.image,
        )
        try:
            await realtime.start()
        except BaseException:
            self._realtime.pop(spec.endpoint_name, None)
            raise
        log.info("%s InService (real-time): %d instance(s)", spec.endpoint_name, spec.instance_count)

    async def _describe(self, name: str) -> EndpointSpec:
        endpoint = await self._sagemaker.describe_endpoint(EndpointName=name)
        config = await self._sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
        model = await self._sagemaker.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
        return EndpointSpec.from_descriptions(endpoint, config, model)

    async def _send_test_notifications(self, spec: EndpointSpec) -> None:
        assert self._context is not None
        message = endpoint_test_notification(
            region_name=self._region_name, endpoint_name=spec.endpoint_name, event_time=datetime.now(UTC)
        )
        for topic in dict.fromkeys(t for t in (spec.success_topic, spec.error_topic) if t):
            try:
                await self._context.sns.publish(TopicArn=topic, Message=json.dumps(message))
            except Exception as error:  # a missing topic must not fail the endpoint
                log.warning("%s: could not send the TestNotification to %s: %s", spec.endpoint_name, topic, error)

    async def _delete(self, name: str) -> None:
        realtime = self._realtime.pop(name, None)
        if realtime is not None:
            await realtime.stop()
            log.info("%s deleted: containers stopped", name)
        runtime = self._endpoints.pop(name, None)
        if runtime is not None:
            self._retired.append(runtime)  # before stopping: its records stay visible meanwhile
            await runtime.stop()
            log.info("%s deleted: containers stopped", name)

    # -- queries (called from the owner's thread) ---------------------------------------------------------

    def wait_endpoint(self, name: str, timeout: float) -> EndpointSpec | None:
        """Wait until the endpoint created in moto is ``InService``.

        :raises KeyError: when no endpoint of that name was created while this runtime ran.
        :raises ContainerStartError: or the error that made the endpoint ``Failed``.
        :raises TimeoutError: after ``timeout`` seconds.
        """
        future = self._startups[name]
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"Endpoint {name} was not InService within {timeout} s.") from None

    def records(self, endpoint_name: str | None) -> list[InvocationRecord]:
        """Return snapshots of every accepted request (of one endpoint, or of all)."""
        return list(self.call(self.snapshot_records(endpoint_name), timeout=30))

    async def snapshot_records(self, endpoint_name: str | None) -> list[InvocationRecord]:
        """Return snapshots of every accepted request (of one endpoint, or of all); on the runtime's loop."""
        runtimes = [
            runtime
            for runtime in [*self._retired, *self._endpoints.values()]
            if endpoint_name is None or runtime.spec.endpoint_name == endpoint_name
        ]
        return [invocation.snapshot() for runtime in runtimes for invocation in runtime.invocations]

    def get_time_scale(self) -> float:
        """Return the time scale applied to requests accepted now."""
        return self._time_scale()

    def set_time_scale(self, value: float) -> None:
        """Change the time scale for requests accepted from now.

        :raises ValueError: when ``value`` is not positive, or the owner gave no way to change it.
        """
        if self._set_time_scale is None:
            raise ValueError("this runtime's time scale is fixed")
        self._set_time_scale(value)

    def busy(self) -> bool:
        """Tell whether any endpoint has a request not yet finished and notified."""

        async def check() -> bool:
            return any(runtime.busy() for runtime in [*self._retired, *self._endpoints.values()])

        return bool(self.call(check(), timeout=30))

    def container_pids(self, endpoint_name: str) -> list[int]:
        """Return the process ids of the endpoint's containers (one per instance).

        :raises KeyError: for an endpoint the runtime does not run.
        """

        async def pids() -> list[int]:
            endpoint = self._endpoints.get(endpoint_name) or self._realtime[endpoint_name]
            return [c.pid for c in endpoint.containers if c.pid is not None]

        return list(self.call(pids(), timeout=30))

    # -- HTTP --------------------------------------------------------------------------------------------

    def _error(self, status: int, error_type: str, message: str) -> web.Response:
        return web.json_response(
            {"message": message},
            status=status,
            headers={"x-amzn-ErrorType": error_type, "x-amzn-RequestId": str(uuid.uuid4())},
        )

    @web.middleware
    async def _signature_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.startswith(CONTROL_PREFIX):  # the local control surface, not a SageMaker API
            return await handler(request)
        body = await request.read()
        headers: CIMultiDict[str] = CIMultiDict()
        for key in dict.fromkeys(request.headers.keys()):
            headers[key] = ",".join(request.headers.getall(key))
        try:
            verify_sigv4(
                method=request.method,
                url=f"http://{request.host}{request.raw_path}",
                headers=headers,
                body=body,
                access_key=self._access_key,
                secret_key=self._secret_key,
                region_name=self._region_name,
            )
        except SignatureError as error:
            log.info("refused %s %s: %s", request.method, request.path, error)
            return self._error(403, error.error_type, error.message)
        return await handler(request)

    def _not_found(self, name: str) -> web.Response:
        if name in self._realtime:
            return self._error(
                400,
                "ValidationError",
                f"Endpoint {name} of account {self._account_id} is not configured for asynchronous inference "
                "(no AsyncInferenceConfig); invoke it with InvokeEndpoint or InvokeEndpointWithResponseStream.",
            )
        return self._error(400, "ValidationError", f"Endpoint {name} of account {self._account_id} not found.")

    async def _invoke_endpoint_async(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            parsed = parse_invoke_endpoint_async(name, request.headers, await request.read())
            runtime = self._endpoints.get(name)
            if runtime is None:
                return self._not_found(name)
            invocation = runtime.accept(parsed, self._time_scale())
        except RequestValidationError as error:
            return self._error(400, "ValidationError", error.message)
        headers = {"X-Amzn-SageMaker-OutputLocation": invocation.output_location, "x-amzn-RequestId": str(uuid.uuid4())}
        if invocation.failure_location is not None:
            headers["X-Amzn-SageMaker-FailureLocation"] = invocation.failure_location
        return web.json_response({"InferenceId": invocation.inference_id}, status=202, headers=headers)

    def _realtime_endpoint(self, operation: str, name: str, request: web.Request, body: bytes) -> Any:
        """Return ``(RealtimeEndpoint, parsed request)``, or the error response to send instead."""
        try:
            validate_endpoint_name(operation, name)
        except RequestValidationError as error:
            return self._error(400, "ValidationError", error.message)
        endpoint = self._realtime.get(name)
        if endpoint is None:
            if name in self._endpoints:
                return self._error(
                    400,
                    "ValidationError",
                    f"Endpoint {name} of account {self._account_id} is configured for asynchronous inference "
                    "(AsyncInferenceConfig); invoke it with InvokeEndpointAsync.",
                )
            return self._error(400, "ValidationError", f"Endpoint {name} of account {self._account_id} not found.")
        try:
            parsed = parse_invoke_endpoint(operation, name, request.headers, body)
        except RequestValidationError as error:
            return self._error(400, "ValidationError", error.message)
        return endpoint, parsed

    async def _invoke_endpoint(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        found = self._realtime_endpoint(INVOKE_ENDPOINT, name, request, await request.read())
        if isinstance(found, web.Response):
            return found
        endpoint, parsed = found
        try:
            body, headers = await endpoint.invoke(parsed, self._time_scale())
        except RequestValidationError as error:
            return self._error(400, "ValidationError", error.message)
        except ModelFailure as failure:
            log.info("%s InvokeEndpoint: ModelError (%s)", name, failure.original_status_code)
            return model_error_response(failure)
        log.info("%s InvokeEndpoint: %d bytes answered", name, len(body))
        return web.Response(body=body, headers={**headers, "x-amzn-RequestId": str(uuid.uuid4())})

    async def _invoke_endpoint_with_response_stream(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        found = self._realtime_endpoint(INVOKE_ENDPOINT_WITH_RESPONSE_STREAM, name, request, await request.read())
        if isinstance(found, web.Response):
            return found
        endpoint, parsed = found
        try:
            return await endpoint.stream(request, parsed, self._time_scale())
        except RequestValidationError as error:
            return self._error(400, "ValidationError", error.message)
        except ModelFailure as failure:
            log.info("%s InvokeEndpointWithResponseStream: ModelError (%s)", name, failure.original_status_code)
            return model_error_response(failure)
