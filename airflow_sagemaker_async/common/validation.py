"""
Parameter checks, done once here and called from the operators, the sensor and the triggers.

The limits and patterns are not written here: they come from botocore's service model through
:mod:`airflow_sagemaker_async.common.rules`, the one source shared with the local backend. This module adds the
messages (parameter, rule, offending value redacted where the model marks it sensitive, what to do) and
the few rules the model does not carry (CustomAttributes is *visible* US-ASCII, per the API reference;
InferenceId travels as an ASCII header).

A field the installed botocore cannot send (:data:`~airflow_sagemaker_async.common.rules.FIELDS_ADDED`) is refused
with an error naming the botocore release that added it; ``input_data`` then goes through S3
(:data:`INLINE_BODY`).

Each check raises :class:`~airflow_sagemaker_async.common.exceptions.SageMakerAsyncParameterError`. A value that
Airflow will still render (a Jinja string, an ``XComArg``) is not checked at construction; the operator
checks it again after rendering, before any AWS call.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final, NoReturn

from airflow_sagemaker_async.common.exceptions import SageMakerAsyncParameterError
from airflow_sagemaker_async.common.layout import split_s3_uri
from airflow_sagemaker_async.common.rules import (
    INVOKE_ENDPOINT,
    INVOKE_ENDPOINT_ASYNC,
    field_rule,
    field_rules,
    installed_botocore,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_sagemaker_async.common.rules import FieldRule

_ENDPOINT_NAME: Final = field_rule(INVOKE_ENDPOINT_ASYNC, "endpoint_name")
_INFERENCE_ID: Final = field_rule(INVOKE_ENDPOINT_ASYNC, "inference_id")
_INPUT_LOCATION: Final = field_rule(INVOKE_ENDPOINT_ASYNC, "input_location")
_EXTENSION: Final = field_rule(INVOKE_ENDPOINT_ASYNC, "s3_output_path_extension")
_FILENAME: Final = field_rule(INVOKE_ENDPOINT_ASYNC, "filename")
_BODY: Final = field_rule(INVOKE_ENDPOINT_ASYNC, "body")

#: Whether the installed botocore can send an InvokeEndpointAsync ``Body`` (botocore >= 1.43.29). Without it,
#: every ``input_data`` is uploaded to ``input_s3_prefix`` and sent as its InputLocation.
INLINE_BODY: Final = _BODY.available
#: Largest InvokeEndpointAsync Body, bytes (the service model's ``max``: 128,000); larger payloads go through
#: S3. 0 when the installed botocore has no Body (:data:`INLINE_BODY`): every payload goes through S3.
MAX_INLINE_BODY_BYTES: Final = (_BODY.maximum or 128_000) if INLINE_BODY else 0
#: Largest InvokeEndpoint / InvokeEndpointWithResponseStream Body, bytes (the service model's ``max``:
#: 6,291,456 = 6 MiB); larger payloads need asynchronous inference.
MAX_REALTIME_BODY_BYTES: Final = field_rule(INVOKE_ENDPOINT, "body").maximum or 6_291_456
#: Longest InferenceId (the service model's ``max``: 64).
INFERENCE_ID_MAX: Final = _INFERENCE_ID.maximum or 64

OUTPUT_FORMATS: Final = ("location", "text", "json", "bytes")

_JINJA_MARKERS: Final = ("{{", "{%", "{#")


def is_rendered(value: Any) -> bool:
    """
    Tell whether ``value`` is final, i.e. Airflow will not render it any further.

    False for a string holding Jinja markers and for objects Airflow resolves at run time
    (``XComArg``, ``ObjectStoragePath``...: anything with a ``resolve`` method), True otherwise.
    """
    if isinstance(value, str):
        return not any(marker in value for marker in _JINJA_MARKERS)
    return not callable(getattr(value, "resolve", None))


def _fail(parameter: str, rule: str, value: Any, todo: str, *, sensitive: bool = False) -> NoReturn:
    shown = f"<redacted, {len(value)} characters>" if sensitive and isinstance(value, str) else repr(value)
    raise SageMakerAsyncParameterError(f"{parameter}={shown} is invalid: {rule}. {todo}", parameter=parameter)


def _string(parameter: str, value: Any, *, sensitive: bool = False) -> str:
    if not isinstance(value, str):
        _fail(parameter, f"must be a string, got {type(value).__name__}", value, "Pass a str.", sensitive=sensitive)
    return value


def check_available(rule: FieldRule, value: Any) -> None:
    """
    Refuse a value for a field the installed botocore cannot send (it would be dropped or refused by botocore).

    :raises SageMakerAsyncParameterError: naming the parameter, the botocore release that added the field and
        the installed one.
    """
    if not rule.available:
        _fail(
            rule.parameter,
            f"{rule.operation}'s {rule.name} needs botocore >= {rule.added_in}, and the installed botocore is "
            f"{installed_botocore()}",
            value,
            f"Upgrade botocore (pip install 'botocore>={rule.added_in}'), or leave {rule.parameter} out.",
            sensitive=rule.sensitive,
        )


def _limits(rule: FieldRule) -> str:
    return f"{rule.minimum or 1}-{rule.maximum}"


def check_endpoint_name(value: Any, parameter: str = "endpoint_name") -> str:
    """Return ``value`` if it is a valid EndpointName (service model: 1-63 of ``[a-zA-Z0-9](-*[a-zA-Z0-9])*``)."""
    name = _string(parameter, value)
    if not name or not _ENDPOINT_NAME.length_ok(name) or not _ENDPOINT_NAME.matches(name):
        _fail(
            parameter,
            f"an endpoint name has {_limits(_ENDPOINT_NAME)} characters, letters, digits and inner hyphens",
            name,
            "Use the name shown by `aws sagemaker list-endpoints` (not its ARN).",
        )
    return name


def check_inference_id(value: Any, parameter: str = "inference_id") -> str:
    """Return ``value`` if it is a valid InferenceId (service model: 1-64 printable characters, no leading space)."""
    inference_id = _string(parameter, value)
    if not (_INFERENCE_ID.length_ok(inference_id) and _INFERENCE_ID.matches(inference_id) and inference_id.isascii()):
        _fail(
            parameter,
            f"an inference id has {_limits(_INFERENCE_ID)} printable ASCII characters and does not start with "
            "whitespace",
            inference_id,
            "Shorten it or leave it out: the default is derived from dag_id, task_id, run_id and map_index.",
        )
    return inference_id


def check_header(value: Any, parameter: str, *, sensitive: bool = False, operation: str = INVOKE_ENDPOINT_ASYNC) -> str:
    """
    Return ``value`` if it fits its header field (service model: at most 1024 ASCII characters).

    ``custom_attributes`` must be *visible* US-ASCII (space to ``~``), as the API reference says.
    """
    text = _string(parameter, value, sensitive=sensitive)
    rule = field_rule(operation, parameter)
    visible = parameter == "custom_attributes"
    ok = rule.length_ok(text) and rule.matches(text) and (not visible or all(" " <= c <= "~" for c in text))
    if not ok:
        kind = "visible US-ASCII" if visible else "ASCII"
        _fail(
            parameter,
            f"must be at most {rule.maximum} {kind} characters (it travels as an HTTP header)",
            text,
            "Shorten it or move the data into the payload.",
            sensitive=sensitive,
        )
    return text


def check_field(value: Any, parameter: str, *, operation: str) -> str:
    """
    Return ``value`` if it satisfies the string rules the service model gives ``parameter`` in ``operation``.

    The generic check for fields without a bespoke one (TargetModel, TargetVariant, SessionId, ...): length,
    pattern, and ASCII for a value that travels as an HTTP header. Sensitive values are redacted in the message.
    A field the installed botocore lacks (``PrefixAwareId`` before botocore 1.43.68) is refused
    (:func:`check_available`).
    """
    rule = field_rule(operation, parameter)
    check_available(rule, value)
    text = _string(parameter, value, sensitive=rule.sensitive)
    header = rule.location == "header"
    if not (rule.length_ok(text) and rule.matches(text) and (not header or text.isascii())):
        limits = f"{rule.minimum or 0}-{rule.maximum}" if rule.maximum is not None else f"at least {rule.minimum}"
        pattern = f" matching {rule.pattern}" if rule.pattern else ""
        where = " (it travels as an HTTP header)" if header else ""
        _fail(
            parameter,
            f"{rule.name} must be {limits} {'ASCII ' if header else ''}characters{pattern}{where}",
            text,
            f"See {operation} in the SageMaker Runtime API reference for what {rule.name} accepts.",
            sensitive=rule.sensitive,
        )
    return text


def check_realtime_fields(fields: dict[str, Any], *, operation: str, only_rendered: bool) -> dict[str, Any]:
    """
    Check every InvokeEndpoint / InvokeEndpointWithResponseStream field present in ``fields``; return them.

    Fields with a bespoke check (endpoint name, inference id, the header fields) use it; every other field
    of ``operation``'s service model gets :func:`check_field`. ``None`` values are left out.

    :param fields: snake_case field name -> value; every name must be a field of ``operation``.
    :param operation: :data:`~airflow_sagemaker_async.common.rules.INVOKE_ENDPOINT` or
        :data:`~airflow_sagemaker_async.common.rules.INVOKE_ENDPOINT_WITH_RESPONSE_STREAM`.
    :param only_rendered: skip values Airflow will still render (construction time).
    :raises SageMakerAsyncParameterError: on the first field that breaks its rule.
    """
    rules = field_rules(operation)
    checked: dict[str, Any] = {}
    for name, value in fields.items():
        if value is None:
            continue
        if only_rendered and not is_rendered(value):
            checked[name] = value
        elif name == "endpoint_name":
            checked[name] = check_endpoint_name(value)
        elif name == "inference_id":
            checked[name] = check_inference_id(value)
        elif name in ("content_type", "accept", "custom_attributes"):
            checked[name] = check_header(value, name, sensitive=rules[name].sensitive, operation=operation)
        else:
            checked[name] = check_field(value, name, operation=operation)
    return checked


def check_input_location(value: Any, parameter: str = "input_location") -> str:
    """Return ``value`` if it is an ``s3://bucket/key`` or ``https://`` URI (service model: 1-1024 characters)."""
    uri = _string(parameter, value)
    if not _INPUT_LOCATION.length_ok(uri) or not _INPUT_LOCATION.matches(uri):
        _fail(
            parameter,
            f"must be an s3://bucket/key or https:// URI of at most {_INPUT_LOCATION.maximum} characters",
            uri,
            "Upload the payload to S3 first, or pass it as input_data instead.",
        )
    return uri


def parse_s3_uri(value: str, parameter: str) -> tuple[str, str]:
    """
    Split ``s3://bucket/key`` into ``(bucket, key)`` (:func:`airflow_sagemaker_async.common.layout.split_s3_uri`).

    :raises SageMakerAsyncParameterError: when ``value`` is not an ``s3://`` URI with a bucket, naming ``parameter``.
    """
    try:
        return split_s3_uri(value)
    except ValueError:
        _fail(parameter, "must be an S3 URI of the form s3://bucket/prefix", value, "Fix the URI.")


def check_s3_output_path_extension(value: Any, parameter: str = "s3_output_path_extension") -> str:
    """Return ``value`` if it is a valid S3OutputPathExtension (service model: 1-512 of ``[a-zA-Z0-9!_.*'()/-]``)."""
    check_available(_EXTENSION, value)
    text = _string(parameter, value)
    if not _EXTENSION.length_ok(text) or not _EXTENSION.matches(text):
        _fail(
            parameter,
            f"must be {_limits(_EXTENSION)} characters of a-z A-Z 0-9 ! _ . * ' ( ) / - "
            "and not start with s3: or https:",
            text,
            "Give a relative path such as 'daily/2026-11-21'; it is appended to the endpoint's S3OutputPath.",
        )
    return text


def check_filename(value: Any, parameter: str = "filename") -> str:
    """Return ``value`` if it is a valid Filename (service model: 1-32 characters, at most one dot)."""
    check_available(_FILENAME, value)
    text = _string(parameter, value)
    if not _FILENAME.length_ok(text) or not _FILENAME.matches(text):
        _fail(
            parameter,
            f"must be {_limits(_FILENAME)} characters of a-z A-Z 0-9 - _ ., start with a letter or digit "
            "and hold at most one dot",
            text,
            "Use a short name such as 'result.json'.",
        )
    return text


def check_int_range(value: Any, parameter: str, operation: str = INVOKE_ENDPOINT_ASYNC, unit: str = "seconds") -> int:
    """Return ``value`` as an int if it lies in the field's service-model range; a rendered "600" is accepted."""
    rule = field_rule(operation, parameter)
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value)
    if number is None or not rule.range_ok(number):
        _fail(
            parameter,
            f"must be a whole number of {unit} from {rule.minimum} to {rule.maximum}",
            value,
            "Pick a value in range.",
        )
    return number


def _number(value: Any) -> float | None:
    """Return ``value`` as a float if it is a number or a numeric string (rendered templates), else ``None``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def check_positive(value: Any, parameter: str, unit: str = "seconds") -> float:
    """Return ``value`` as a float if it is a number > 0; a rendered "2.5" is accepted."""
    number = _number(value)
    if number is None or not number > 0:
        _fail(parameter, f"must be a number of {unit} greater than 0", value, "Pass a positive number.")
    return number


def check_non_negative(value: Any, parameter: str, unit: str = "seconds") -> float:
    """Return ``value`` as a float if it is a number >= 0; a rendered "2.5" is accepted."""
    number = _number(value)
    if number is None or not number >= 0:
        _fail(parameter, f"must be a number of {unit}, 0 or more", value, "Pass 0 or a positive number.")
    return number


def check_poll_schedule(poll_interval: Any, max_poll_interval: Any) -> tuple[float, float]:
    """Return ``(poll_interval, max_poll_interval)`` if both are > 0 and the ceiling is not below the start."""
    start = check_positive(poll_interval, "poll_interval")
    ceiling = check_positive(max_poll_interval, "max_poll_interval")
    if ceiling < start:
        _fail(
            "max_poll_interval",
            f"the ceiling of the poll interval must not be below poll_interval={start}",
            max_poll_interval,
            "Raise max_poll_interval or lower poll_interval.",
        )
    return start, ceiling


_QUEUE_URL: Final = re.compile(r"https?://[A-Za-z0-9.:\[\]-]+/[0-9]{12}/[A-Za-z0-9_-]{1,80}(?:\.fifo)?")


def check_queue_url(value: Any, parameter: str = "notification_queue_url") -> str:
    """
    Return ``value`` if it is an SQS queue URL: ``https://sqs.<region>.amazonaws.com/<account id>/<queue name>``.

    Any host is accepted (VPC endpoints, a local SQS such as moto's ``http://127.0.0.1:PORT/123456789012/q``);
    the path must be a 12-digit account id and a queue name (1-80 of ``A-Z a-z 0-9 _ -``, ``.fifo`` allowed).
    """
    url = _string(parameter, value)
    if not _QUEUE_URL.fullmatch(url):
        _fail(
            parameter,
            "must be an SQS queue URL such as https://sqs.us-east-1.amazonaws.com/123456789012/my-queue",
            url,
            "Pass the QueueUrl that `aws sqs get-queue-url --queue-name <name>` prints (not the queue's ARN).",
        )
    return url


def check_output_format(value: Any, parameter: str = "output_format") -> str:
    """Return ``value`` if it is one of ``location``, ``text``, ``json``, ``bytes``."""
    if value not in OUTPUT_FORMATS:
        _fail(
            parameter,
            f"must be one of {', '.join(OUTPUT_FORMATS)}",
            value,
            "'location' downloads nothing; the others download the output on the worker.",
        )
    return value


#: The checks of every InvokeEndpointAsync field that has one, by snake_case parameter name.
INVOKE_CHECKS: Final[dict[str, Callable[[Any], Any]]] = {
    "endpoint_name": check_endpoint_name,
    "inference_id": check_inference_id,
    "content_type": lambda v: check_header(v, "content_type"),
    "accept": lambda v: check_header(v, "accept"),
    "custom_attributes": lambda v: check_header(v, "custom_attributes", sensitive=True),
    "input_location": check_input_location,
    "s3_output_path_extension": check_s3_output_path_extension,
    "filename": check_filename,
    "request_ttl_seconds": lambda v: check_int_range(v, "request_ttl_seconds"),
    "invocation_timeout_seconds": lambda v: check_int_range(v, "invocation_timeout_seconds"),
}


def check_invoke_fields(fields: dict[str, Any], *, only_rendered: bool) -> dict[str, Any]:
    """
    Check every InvokeEndpointAsync field present in ``fields`` and return them normalised.

    ``None`` values are left out of the result (SageMaker's default applies).

    :param fields: snake_case field name -> value.
    :param only_rendered: skip values Airflow will still render (construction time).
    :raises SageMakerAsyncParameterError: on the first field that breaks its rule.
    """
    checked: dict[str, Any] = {}
    for name, value in fields.items():
        if value is None:
            continue
        if only_rendered and not is_rendered(value):
            checked[name] = value
            continue
        checked[name] = INVOKE_CHECKS[name](value)
    return checked


def check_inline_payload(size: int, input_s3_prefix: str | None, what: str, parameter: str) -> None:
    """Refuse a payload that cannot travel inline (InvokeEndpointAsync ``Body``) when nothing can upload it.

    :param size: the serialised payload's size, bytes.
    :param input_s3_prefix: where it would be uploaded instead; with one, nothing is refused.
    :param what: how the message names the payload (``"input_data"``, ``"input_records[3]"``).
    :param parameter: the parameter named when the payload is too large for the inline ``Body``.
    :raises SageMakerAsyncParameterError: naming ``input_s3_prefix`` when the installed botocore has no inline
        ``Body`` (< 1.43.29); naming ``parameter`` when the payload exceeds :data:`MAX_INLINE_BODY_BYTES`.
    """
    if input_s3_prefix is not None:
        return
    if not INLINE_BODY:
        raise SageMakerAsyncParameterError(
            f"{what} needs input_s3_prefix with the installed botocore {installed_botocore()}: "
            "InvokeEndpointAsync's inline Body needs botocore >= 1.43.29, so the payload is uploaded to S3 "
            "and sent as its InputLocation. Pass input_s3_prefix='s3://bucket/prefix' (the task needs "
            "s3:PutObject there), or upgrade botocore (pip install 'botocore>=1.43.29').",
            parameter="input_s3_prefix",
        )
    if size > MAX_INLINE_BODY_BYTES:
        raise SageMakerAsyncParameterError(
            f"{what} is {size} bytes once serialised, more than the {MAX_INLINE_BODY_BYTES} bytes "
            "InvokeEndpointAsync accepts inline, and no input_s3_prefix was given to upload it to. "
            "Pass input_s3_prefix='s3://bucket/prefix' (the task needs s3:PutObject there).",
            parameter=parameter,
        )
