"""
Parameter rules, checked once here and called from the operator, the sensor and the trigger.

The limits are the ones of the ``sagemaker-runtime`` service model shipped in botocore
(``botocore/data/sagemaker-runtime/2017-05-13/service-2.json``, shape ``InvokeEndpointAsyncInput``);
``tests/test_validation.py`` checks that they still agree with the installed service model.

Each check raises :class:`~airflow_sagemaker_async.exceptions.SageMakerAsyncParameterError` naming the
parameter, the rule, the offending value (redacted where the service model marks it sensitive) and
what to do. A value that Airflow will still render (a Jinja string, an ``XComArg``) is not checked at
construction; the operator checks it again after rendering, before any AWS call.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final

from airflow_sagemaker_async.exceptions import SageMakerAsyncBotocoreTooOldError, SageMakerAsyncParameterError

if TYPE_CHECKING:
    from collections.abc import Callable

#: InvokeEndpointAsync limits (service model shapes in brackets).
ENDPOINT_NAME_MAX: Final = 63  # EndpointName
ENDPOINT_NAME_RE: Final = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*")
HEADER_MAX: Final = 1024  # ContentType, Accept, CustomAttributes
INFERENCE_ID_MAX: Final = 64  # InferenceId: \A\S[\p{Print}]*\z
INPUT_LOCATION_MAX: Final = 1024  # InputLocationHeader
INPUT_LOCATION_RE: Final = re.compile(r"(https|s3)://([^/]+)/?(.*)", re.DOTALL)
S3_OUTPUT_PATH_EXTENSION_MAX: Final = 512  # S3OutputPathExtensionHeader
S3_OUTPUT_PATH_EXTENSION_RE: Final = re.compile(r"(?!s3:|https:)[a-zA-Z0-9!_.*'()/-]+")
FILENAME_MAX: Final = 32  # FilenameHeader
FILENAME_RE: Final = re.compile(r"(?!.*\..*\.)[a-zA-Z0-9][a-zA-Z0-9\-_.]*")
REQUEST_TTL_SECONDS_RANGE: Final = (60, 21600)  # RequestTTLSecondsHeader
INVOCATION_TIMEOUT_SECONDS_RANGE: Final = (1, 3600)  # InvocationTimeoutSecondsHeader
MAX_INLINE_BODY_BYTES: Final = 128_000  # InvocationBody (async)

#: What SageMaker uses when the request leaves them out (InvokeEndpointAsync API reference).
DEFAULT_REQUEST_TTL_SECONDS: Final = 21600
DEFAULT_INVOCATION_TIMEOUT_SECONDS: Final = 900

#: The botocore release that first knows each optional InvokeEndpointAsync field.
BOTOCORE_MINIMUM: Final = {
    "filename": (1, 42, 54),
    "s3_output_path_extension": (1, 42, 54),
    "input_data": (1, 43, 29),  # sent inline as Body
}

OUTPUT_FORMATS: Final = ("location", "text", "json", "bytes")

_S3_URI_RE: Final = re.compile(r"s3://([^/]+)(?:/(.*))?", re.DOTALL)
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


def _fail(parameter: str, rule: str, value: Any, todo: str, *, sensitive: bool = False) -> None:
    shown = f"<redacted, {len(value)} characters>" if sensitive and isinstance(value, str) else repr(value)
    raise SageMakerAsyncParameterError(f"{parameter}={shown} is invalid: {rule}. {todo}", parameter=parameter)


def _string(parameter: str, value: Any, *, sensitive: bool = False) -> str:
    if not isinstance(value, str):
        _fail(parameter, f"must be a string, got {type(value).__name__}", value, "Pass a str.", sensitive=sensitive)
    return value


def check_endpoint_name(value: Any, parameter: str = "endpoint_name") -> str:
    """Return ``value`` if it is a valid EndpointName (1-63 characters, ``[a-zA-Z0-9](-*[a-zA-Z0-9])*``)."""
    name = _string(parameter, value)
    if not 1 <= len(name) <= ENDPOINT_NAME_MAX or not ENDPOINT_NAME_RE.fullmatch(name):
        _fail(
            parameter,
            f"an endpoint name has 1-{ENDPOINT_NAME_MAX} characters, letters, digits and inner hyphens",
            name,
            "Use the name shown by `aws sagemaker list-endpoints` (not its ARN).",
        )
    return name


def check_inference_id(value: Any, parameter: str = "inference_id") -> str:
    """Return ``value`` if it is a valid InferenceId (1-64 printable ASCII, no leading whitespace)."""
    inference_id = _string(parameter, value)
    if (
        not 1 <= len(inference_id) <= INFERENCE_ID_MAX
        or inference_id[0].isspace()
        or not all(" " <= c <= "~" for c in inference_id)
    ):
        _fail(
            parameter,
            f"an inference id has 1-{INFERENCE_ID_MAX} printable ASCII characters and does not start with whitespace",
            inference_id,
            "Shorten it or leave it out: the default is derived from dag_id, task_id, run_id and map_index.",
        )
    return inference_id


def check_header(value: Any, parameter: str, *, sensitive: bool = False) -> str:
    """Return ``value`` if it fits an InvokeEndpointAsync header field (<= 1024 ASCII characters)."""
    text = _string(parameter, value, sensitive=sensitive)
    visible = parameter == "custom_attributes"
    ok = len(text) <= HEADER_MAX and all((" " <= c <= "~") if visible else c < "\x80" for c in text)
    if not ok:
        kind = "visible US-ASCII" if visible else "ASCII"
        _fail(
            parameter,
            f"must be at most {HEADER_MAX} {kind} characters (it travels as an HTTP header)",
            text,
            "Shorten it or move the data into the payload.",
            sensitive=sensitive,
        )
    return text


def check_input_location(value: Any, parameter: str = "input_location") -> str:
    """Return ``value`` if it is an ``s3://bucket/key`` or ``https://`` URI of at most 1024 characters."""
    uri = _string(parameter, value)
    match = INPUT_LOCATION_RE.fullmatch(uri)
    if not 1 <= len(uri) <= INPUT_LOCATION_MAX or not match or not match.group(2):
        _fail(
            parameter,
            f"must be an s3://bucket/key or https:// URI of at most {INPUT_LOCATION_MAX} characters",
            uri,
            "Upload the payload to S3 first, or pass it as input_data instead.",
        )
    return uri


def parse_s3_uri(value: str, parameter: str) -> tuple[str, str]:
    """
    Split ``s3://bucket/key`` into ``(bucket, key)``.

    :raises SageMakerAsyncParameterError: when ``value`` is not an ``s3://`` URI with a bucket.
    """
    match = _S3_URI_RE.fullmatch(value) if isinstance(value, str) else None
    if not match:
        _fail(parameter, "must be an S3 URI of the form s3://bucket/prefix", value, "Fix the URI.")
    assert match is not None  # for mypy: _fail raised otherwise
    return match.group(1), match.group(2) or ""


def check_s3_output_path_extension(value: Any, parameter: str = "s3_output_path_extension") -> str:
    """Return ``value`` if it is a valid S3OutputPathExtension (1-512 of ``[a-zA-Z0-9!_.*'()/-]``)."""
    text = _string(parameter, value)
    if not 1 <= len(text) <= S3_OUTPUT_PATH_EXTENSION_MAX or not S3_OUTPUT_PATH_EXTENSION_RE.fullmatch(text):
        _fail(
            parameter,
            f"must be 1-{S3_OUTPUT_PATH_EXTENSION_MAX} characters of a-z A-Z 0-9 ! _ . * ' ( ) / - "
            "and not start with s3: or https:",
            text,
            "Give a relative path such as 'daily/2026-11-21'; it is appended to the endpoint's S3OutputPath.",
        )
    return text


def check_filename(value: Any, parameter: str = "filename") -> str:
    """Return ``value`` if it is a valid Filename (1-32 characters, at most one dot)."""
    text = _string(parameter, value)
    if not 1 <= len(text) <= FILENAME_MAX or not FILENAME_RE.fullmatch(text):
        _fail(
            parameter,
            f"must be 1-{FILENAME_MAX} characters of a-z A-Z 0-9 - _ ., start with a letter or digit "
            "and hold at most one dot",
            text,
            "Use a short name such as 'result.json'.",
        )
    return text


def check_int_range(value: Any, parameter: str, bounds: tuple[int, int], unit: str = "seconds") -> int:
    """Return ``value`` as an int if it lies in ``bounds`` (inclusive); a rendered "600" is accepted."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value)
    low, high = bounds
    if number is None or not low <= number <= high:
        _fail(parameter, f"must be a whole number of {unit} from {low} to {high}", value, "Pick a value in range.")
    assert number is not None
    return number


def check_positive(value: Any, parameter: str, unit: str = "seconds") -> float:
    """Return ``value`` as a float if it is a number > 0; a rendered "2.5" is accepted."""
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is None or not number > 0:
        _fail(parameter, f"must be a number of {unit} greater than 0", value, "Pass a positive number.")
    assert number is not None
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


def check_botocore_supports(parameter: str, botocore_version: str) -> None:
    """
    Refuse a field the installed botocore cannot send.

    :param parameter: a key of :data:`BOTOCORE_MINIMUM` (``filename``, ``s3_output_path_extension``,
        ``input_data``).
    :param botocore_version: ``botocore.__version__``.
    :raises SageMakerAsyncBotocoreTooOldError: with the version needed.
    """
    needed = BOTOCORE_MINIMUM[parameter]
    have = tuple(int(part) for part in re.findall(r"\d+", botocore_version)[:3])
    if have < needed:
        version = ".".join(map(str, needed))
        raise SageMakerAsyncBotocoreTooOldError(
            f"{parameter} needs botocore>={version} (InvokeEndpointAsync gained the field then); "
            f"botocore {botocore_version} is installed. Upgrade: pip install 'botocore>={version}'.",
            parameter=parameter,
        )


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
    "request_ttl_seconds": lambda v: check_int_range(v, "request_ttl_seconds", REQUEST_TTL_SECONDS_RANGE),
    "invocation_timeout_seconds": lambda v: check_int_range(
        v, "invocation_timeout_seconds", INVOCATION_TIMEOUT_SECONDS_RANGE
    ),
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
