"""Parse and validate InvokeEndpointAsync requests with the constraints of botocore's service model.

The constraints (min / max length, integer ranges, patterns) come from :mod:`airflow_sagemaker_async.common.rules`,
the one source the operators use too, read from the ``sagemaker-runtime`` service model shipped with botocore.

The backend follows the service, not the installed client: it accepts both InvokeEndpointAsync shapes,
the current one (exactly one of ``Body`` and ``InputLocation``) and the one older botocore sends
(``InputLocation`` only, botocore < 1.43.29). A field the installed botocore's model lacks is still read
and checked with the rules of :data:`airflow_sagemaker_async.common.rules.FIELDS_ADDED`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_sagemaker_async.common.rules import (
    DEFAULT_INVOCATION_TIMEOUT_SECONDS,
    DEFAULT_REQUEST_TTL_SECONDS,
    field_rules,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_sagemaker_async.common.rules import FieldRule


class RequestValidationError(Exception):
    """The request breaks a constraint of the service model; answered as a 400 ``ValidationError``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class AsyncInvocationRequest:
    """A validated InvokeEndpointAsync request; field names are the API's, in snake_case.

    ``request_ttl_seconds`` and ``invocation_timeout_seconds`` carry their documented defaults (21600 and
    900 seconds) when the request leaves them out. ``body`` is ``None`` when ``input_location`` is used.
    """

    endpoint_name: str
    content_type: str | None
    accept: str | None
    custom_attributes: str | None
    inference_id: str | None
    input_location: str | None
    s3_output_path_extension: str | None
    filename: str | None
    request_ttl_seconds: int
    invocation_timeout_seconds: int
    body: bytes | None


def _members(operation_name: str) -> tuple[FieldRule, ...]:
    return tuple(field_rules(operation_name).values())


def _field(name: str) -> str:
    return name[0].lower() + name[1:]


def _value_text(member: FieldRule, value: object) -> str:
    return "Value" if member.sensitive else f"Value '{value}'"


def _check(member: FieldRule, value: str | int | bytes, errors: list[str]) -> None:
    field = _field(member.name)
    shown = _value_text(member, value)
    if isinstance(value, int):
        if member.minimum is not None and value < member.minimum:
            errors.append(
                f"{shown} at '{field}' failed to satisfy constraint: "
                f"Member must have value greater than or equal to {member.minimum}"
            )
        if member.maximum is not None and value > member.maximum:
            errors.append(
                f"{shown} at '{field}' failed to satisfy constraint: "
                f"Member must have value less than or equal to {member.maximum}"
            )
        return
    if member.minimum is not None and len(value) < member.minimum:
        errors.append(
            f"{shown} at '{field}' failed to satisfy constraint: "
            f"Member must have length greater than or equal to {member.minimum}"
        )
    if member.maximum is not None and len(value) > member.maximum:
        errors.append(
            f"{'Value' if isinstance(value, bytes) else shown} at '{field}' failed to satisfy constraint: "
            f"Member must have length less than or equal to {member.maximum}"
        )
    if member.pattern is not None and isinstance(value, str) and not member.matches(value):
        errors.append(
            f"{shown} at '{field}' failed to satisfy constraint: "
            f"Member must satisfy regular expression pattern: {member.pattern}"
        )


def validate_endpoint_name(operation_name: str, endpoint_name: str) -> None:
    """Validate only the ``EndpointName`` of a request (used for InvokeEndpoint).

    :param operation_name: ``InvokeEndpoint`` or ``InvokeEndpointAsync``.
    :param endpoint_name: the name taken from the URI.
    :raises RequestValidationError: when the name breaks the model's constraints.
    """
    errors: list[str] = []
    for member in _members(operation_name):
        if member.name == "EndpointName":
            _check(member, endpoint_name, errors)
    _raise(errors)


def _raise(errors: list[str]) -> None:
    if not errors:
        return
    count = len(errors)
    noun = "error" if count == 1 else "errors"
    raise RequestValidationError(f"{count} validation {noun} detected: " + "; ".join(errors))


def parse_invoke_endpoint_async(endpoint_name: str, headers: Mapping[str, str], body: bytes) -> AsyncInvocationRequest:
    """Build an :class:`AsyncInvocationRequest` from the HTTP request, as the service would.

    :param endpoint_name: the ``{EndpointName}`` of the URI, already percent-decoded.
    :param headers: the HTTP headers (case-insensitive mapping).
    :param body: the HTTP body; an empty body means "no ``Body``".
    :raises RequestValidationError: for every broken constraint (all reported in one message, as AWS does),
        and when the request carries both or neither of ``Body`` and ``InputLocation``.
    """
    errors: list[str] = []
    values: dict[str, Any] = {}
    for member in _members("InvokeEndpointAsync"):
        value: str | int | bytes | None
        if member.location == "uri":
            value = endpoint_name
        elif member.location == "header":
            value = headers.get(member.wire_name)
            if value is not None and member.type_name == "integer":
                try:
                    value = int(value)
                except ValueError:
                    errors.append(
                        f"{_value_text(member, value)} at '{_field(member.name)}' failed to satisfy "
                        "constraint: Member must be an integer"
                    )
                    continue
        else:  # the payload
            value = body or None
        if value is not None:
            _check(member, value, errors)
        values[member.name] = value
    _raise(errors)
    if (values["Body"] is None) == (values["InputLocation"] is None):
        raise RequestValidationError(
            "Provide exactly one of Body and InputLocation: "
            + ("both were given." if values["Body"] is not None else "neither was given.")
        )
    ttl = values["RequestTTLSeconds"]
    timeout = values["InvocationTimeoutSeconds"]
    return AsyncInvocationRequest(
        endpoint_name=endpoint_name,
        content_type=values["ContentType"],
        accept=values["Accept"],
        custom_attributes=values["CustomAttributes"],
        inference_id=values["InferenceId"],
        input_location=values["InputLocation"],
        s3_output_path_extension=values["S3OutputPathExtension"],
        filename=values["Filename"],
        request_ttl_seconds=DEFAULT_REQUEST_TTL_SECONDS if ttl is None else ttl,
        invocation_timeout_seconds=DEFAULT_INVOCATION_TIMEOUT_SECONDS if timeout is None else timeout,
        body=values["Body"],
    )


@dataclass(frozen=True)
class RealtimeInvocationRequest:
    """A validated InvokeEndpoint / InvokeEndpointWithResponseStream request.

    :param operation: ``InvokeEndpoint`` or ``InvokeEndpointWithResponseStream``.
    :param endpoint_name: the ``{EndpointName}`` of the URI.
    :param headers: every header field of the operation the request carried, by API name (``TargetVariant``,
        ``SessionId``, ...); fields left out are absent.
    :param body: the payload (may be empty).
    """

    operation: str
    endpoint_name: str
    headers: dict[str, str]
    body: bytes

    def get(self, name: str) -> str | None:
        """Return the header field ``name`` (API name, e.g. ``CustomAttributes``), or ``None``."""
        return self.headers.get(name)


def parse_invoke_endpoint(
    operation_name: str, endpoint_name: str, headers: Mapping[str, str], body: bytes
) -> RealtimeInvocationRequest:
    """Build a :class:`RealtimeInvocationRequest` from the HTTP request, as the service would.

    Every header field of the operation's input shape is read under its wire name and checked with the
    model's constraints (:mod:`airflow_sagemaker_async.common.rules`); all broken constraints in one message.

    :param operation_name: ``InvokeEndpoint`` or ``InvokeEndpointWithResponseStream``.
    :param endpoint_name: the ``{EndpointName}`` of the URI, already percent-decoded.
    :param headers: the HTTP headers (case-insensitive mapping).
    :param body: the HTTP body.
    :raises RequestValidationError: for every broken constraint.
    """
    errors: list[str] = []
    fields: dict[str, str] = {}
    for member in _members(operation_name):
        if member.location == "uri":
            _check(member, endpoint_name, errors)
        elif member.location == "header":
            value = headers.get(member.wire_name)
            if value is not None:
                _check(member, value, errors)
                fields[member.name] = value
        else:
            _check(member, body, errors)
    _raise(errors)
    return RealtimeInvocationRequest(operation_name, endpoint_name, fields, body)
