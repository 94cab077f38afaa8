"""One real-time endpoint at run time: its containers, and what InvokeEndpoint and its streaming variant answer.

A real-time endpoint (an endpoint config without ``AsyncInferenceConfig``) has no queue: each request goes
straight to a container (round robin over the instances) and the answer goes back on the same HTTP
exchange. A model that answers a non-2xx status becomes a 424 ``ModelError`` in AWS's shape: ``Message``
(with the console link), ``OriginalStatusCode``, ``OriginalMessage``, ``ErrorCode`` (``CLIENT_ERROR_FROM_MODEL``
for a 4xx; AWS documents no code for a 5xx, so none is sent) and ``LogStreamArn``, which names the endpoint's
log **group**, as real SageMaker sends it.

A streamed answer is re-framed as an AWS event stream: one ``PayloadPart`` per HTTP chunk of the container,
split into parts of at most :data:`~airflow_sagemaker_async.local.eventstream.MAX_PAYLOAD_PART_BYTES` (AWS's
event-stream encoder caps a message at 16 MiB), then, if the container drops the connection or runs past the
time limit, a ``ModelStreamError`` (``StreamBroken`` / ``ModelInvocationTimeExceeded``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from typing import TYPE_CHECKING, Any, Final

import aiohttp
from aiohttp import web

from airflow_sagemaker_async.local.containers import ContainerProcess
from airflow_sagemaker_async.local.eventstream import CONTENT_TYPE, encode_exception, encode_payload_parts
from airflow_sagemaker_async.local.request_model import RequestValidationError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow_sagemaker_async.local.endpoints import EndpointSpec, RuntimeContext
    from airflow_sagemaker_async.local.request_model import RealtimeInvocationRequest

__all__ = ["FORWARDED", "MODEL_TIMEOUT_SECONDS", "ModelFailure", "RealtimeEndpoint", "model_error_response"]

log = logging.getLogger("airflow_sagemaker_async.local")

#: A model container has 60 seconds to answer a real-time request (scaled by the backend's time_scale).
MODEL_TIMEOUT_SECONDS: Final = 60.0
#: Request header fields (API names) the container receives, under their own wire names, besides
#: Content-Type and Accept. TargetVariant, TargetContainerHostname and InferenceComponentName route the
#: request inside SageMaker and stop there; EnableExplanations is SageMaker Clarify's.
FORWARDED: Final = ("CustomAttributes", "TargetModel", "InferenceId", "SessionId", "PrefixAwareId")
#: Response headers a container may set that SageMaker passes back (wire names, InvokeEndpoint).
PASSED_BACK: Final = (
    "X-Amzn-SageMaker-Custom-Attributes",
    "X-Amzn-SageMaker-New-Session-Id",
    "X-Amzn-SageMaker-Closed-Session-Id",
)
_WIRE: Final = {
    "CustomAttributes": "X-Amzn-SageMaker-Custom-Attributes",
    "TargetModel": "X-Amzn-SageMaker-Target-Model",
    "InferenceId": "X-Amzn-SageMaker-Inference-Id",
    "SessionId": "X-Amzn-SageMaker-Session-Id",
    "PrefixAwareId": "X-Amzn-SageMaker-Prefix-Aware-Id",
}


class ModelFailure(Exception):
    """The container answered an error (or none): answered as a 424 ``ModelError``."""

    def __init__(
        self,
        message: str,
        original_status_code: int,
        original_message: str,
        log_stream_arn: str,
        error_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.original_status_code = original_status_code
        self.original_message = original_message
        self.log_stream_arn = log_stream_arn
        self.error_code = error_code


class RealtimeEndpoint:
    """The running side of one real-time endpoint.

    :param spec: the endpoint as the control plane describes it.
    :param command: argv of the model container.
    :param environment: environment of the model container.
    :param context: the shared clients and settings.
    :param account_id: used in the log stream ARN.
    """

    def __init__(
        self,
        spec: EndpointSpec,
        command: Sequence[str],
        environment: dict[str, str],
        context: RuntimeContext,
        account_id: str,
    ) -> None:
        self.spec = spec
        self.state = "Creating"
        self._context = context
        self._account_id = account_id
        self.containers = [
            ContainerProcess(f"{spec.endpoint_name}/{index}", command, environment)
            for index in range(spec.instance_count)
        ]
        self._next = itertools.cycle(self.containers)
        self.requests = 0

    async def start(self) -> None:
        """Start every container and wait for ``/ping``.

        :raises ContainerStartError: when a container exits or does not answer ``/ping`` in time.
        """
        try:
            await asyncio.gather(*(container.start() for container in self.containers))
            await asyncio.gather(
                *(c.wait_ready(self._context.http, self._context.container_startup_timeout) for c in self.containers)
            )
        except BaseException:
            await self.stop()
            raise
        self.state = "InService"

    async def stop(self) -> None:
        """Stop the containers."""
        self.state = "Deleted"
        await asyncio.gather(*(container.stop() for container in self.containers), return_exceptions=True)

    def log_stream_arn(self, container: ContainerProcess) -> str:
        """Return ``LogStreamArn`` as SageMaker sends it: the endpoint's log group, not a container's stream.

        Real ModelErrors name ``arn:aws:logs:<region>:<account>:log-group:/aws/sagemaker/Endpoints/<name>``
        (the container's stream, ``<variant>/<instance>``, is not named), so ``container`` is not used.
        """
        return (
            f"arn:aws:logs:{self._context.region_name}:{self._account_id}:log-group:/aws/sagemaker/Endpoints/"
            f"{self.spec.endpoint_name}"
        )

    def _route(self, request: RealtimeInvocationRequest) -> ContainerProcess:
        if self.state != "InService":
            raise RequestValidationError(
                f"Endpoint {self.spec.endpoint_name} is in {self.state} status; wait until it is InService."
            )
        variant = request.get("TargetVariant")
        if variant is not None and variant != self.spec.variant_name:
            raise RequestValidationError(
                f"The variant {variant} does not exist on endpoint {self.spec.endpoint_name}; "
                f"its variants are: {self.spec.variant_name}."
            )
        component = request.get("InferenceComponentName")
        if component is not None:
            raise RequestValidationError(
                f"Inference component {component} not found on endpoint {self.spec.endpoint_name}."
            )
        self.requests += 1
        return next(self._next)

    def _container_headers(self, request: RealtimeInvocationRequest) -> dict[str, str]:
        headers = {"Content-Type": request.get("ContentType") or "application/octet-stream"}
        accept = request.get("Accept")
        if accept is not None:
            headers["Accept"] = accept
        for name in FORWARDED:
            value = request.get(name)
            if value is not None:
                headers[_WIRE[name]] = value
        return headers

    def _failure(self, container: ContainerProcess, status: int, text: str) -> ModelFailure:
        kind = "client" if 400 <= status < 500 else "server"
        group = f"/aws/sagemaker/Endpoints/{self.spec.endpoint_name}"
        region = self._context.region_name
        return ModelFailure(
            f'Received {kind} error ({status}) from primary with message "{text}". See '
            f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#logEventViewer:group={group} "
            f"in account {self._account_id} for more information.",
            status,
            text,
            self.log_stream_arn(container),
            "CLIENT_ERROR_FROM_MODEL" if kind == "client" else None,
        )

    def _timeout(self, time_scale: float) -> float:
        return MODEL_TIMEOUT_SECONDS * time_scale

    async def invoke(self, request: RealtimeInvocationRequest, time_scale: float) -> tuple[bytes, dict[str, str]]:
        """Send the request to a container; return ``(body, response headers)``.

        :raises RequestValidationError: the endpoint is not InService, or the variant / component is unknown.
        :raises ModelFailure: the model answered an error, did not answer in time, or could not be reached.
        """
        container = self._route(request)
        try:
            async with self._context.http.post(
                f"{container.url}/invocations",
                data=request.body,
                headers=self._container_headers(request),
                timeout=aiohttp.ClientTimeout(total=self._timeout(time_scale)),
            ) as response:
                body = await response.read()
                status = response.status
                answer = {k: v for k, v in response.headers.items() if k in PASSED_BACK}
                answer["Content-Type"] = response.headers.get("Content-Type", "application/octet-stream")
        except TimeoutError:
            raise ModelFailure(
                "Your invocation timed out while waiting for a response from container primary "
                f"({self._timeout(time_scale):g} s).",
                408,
                "",
                self.log_stream_arn(container),
            ) from None
        except aiohttp.ClientError as error:
            raise ModelFailure(
                f"Could not get an answer from the model container ({error}).",
                500,
                str(error),
                self.log_stream_arn(container),
            ) from None
        if not 200 <= status < 300:
            raise self._failure(container, status, body.decode("utf-8", errors="replace"))
        answer["x-Amzn-Invoked-Production-Variant"] = self.spec.variant_name
        return body, answer

    async def stream(
        self, http_request: web.Request, request: RealtimeInvocationRequest, time_scale: float
    ) -> web.StreamResponse:
        """Stream the container's chunks back as ``PayloadPart`` events.

        Before the first byte, a model error is a 424 ``ModelError`` (raised as :class:`ModelFailure`); after
        it, the stream ends with a ``ModelStreamError`` event.

        :raises RequestValidationError: as :meth:`invoke`.
        :raises ModelFailure: the model answered an error status, or could not be reached.
        """
        container = self._route(request)
        headers = self._container_headers(request)
        deadline = asyncio.get_running_loop().time() + self._timeout(time_scale)
        try:
            upstream = await self._context.http.post(
                f"{container.url}/invocations-response-stream",
                data=request.body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            )
        except aiohttp.ClientError as error:
            raise ModelFailure(
                f"Could not get an answer from the model container ({error}).",
                500,
                str(error),
                self.log_stream_arn(container),
            ) from None
        try:
            if not 200 <= upstream.status < 300:
                text = (await upstream.read()).decode("utf-8", errors="replace")
                raise self._failure(container, upstream.status, text)
            response = web.StreamResponse(
                status=200,
                headers={
                    "Content-Type": CONTENT_TYPE,
                    "X-Amzn-SageMaker-Content-Type": upstream.headers.get("Content-Type", "application/octet-stream"),
                    "x-Amzn-Invoked-Production-Variant": self.spec.variant_name,
                    "x-amzn-RequestId": str(uuid.uuid4()),
                    **{k: v for k, v in upstream.headers.items() if k == "X-Amzn-SageMaker-Custom-Attributes"},
                },
            )
            await response.prepare(http_request)
            parts = 0
            # One PayloadPart per HTTP chunk of the container: aiohttp may hand a large chunk over in pieces
            # (end_of_http_chunk False), which are joined first. A body that is not chunked gives a part per read.
            chunked = upstream.headers.get("Transfer-Encoding", "").lower() == "chunked"
            pending = bytearray()
            try:
                while True:
                    remaining = deadline - asyncio.get_running_loop().time()
                    if remaining <= 0:
                        raise TimeoutError
                    data, end_of_chunk = await asyncio.wait_for(upstream.content.readchunk(), remaining)
                    if not data and not end_of_chunk:
                        break  # the end of the body
                    pending += data
                    if pending and (end_of_chunk or not chunked):
                        for frame in encode_payload_parts(bytes(pending)):  # at most 16 MiB each, as AWS
                            parts += 1
                            await response.write(frame)
                        pending.clear()
            except TimeoutError:
                await response.write(
                    encode_exception(
                        "ModelStreamError",
                        {
                            "Message": f"The model did not finish its response within {self._timeout(time_scale):g} s.",
                            "ErrorCode": "ModelInvocationTimeExceeded",
                        },
                    )
                )
            except aiohttp.ClientError as error:
                log.info("%s: the model's stream broke after %d part(s): %s", self.spec.endpoint_name, parts, error)
                await response.write(
                    encode_exception(
                        "ModelStreamError",
                        {
                            "Message": f"The model container closed the stream after {parts} part(s) ({error}).",
                            "ErrorCode": "StreamBroken",
                        },
                    )
                )
            await response.write_eof()
            return response
        finally:
            upstream.release()
            upstream.close()


def model_error_response(failure: ModelFailure) -> web.Response:
    """Return the 424 ``ModelError`` answer (rest-json error format) for ``failure``."""
    document: dict[str, Any] = {
        "Message": failure.message,
        "OriginalStatusCode": failure.original_status_code,
        "OriginalMessage": failure.original_message,
        "LogStreamArn": failure.log_stream_arn,
    }
    if failure.error_code is not None:
        document["ErrorCode"] = failure.error_code
    return web.json_response(
        document, status=424, headers={"x-amzn-ErrorType": "ModelError", "x-amzn-RequestId": str(uuid.uuid4())}
    )
