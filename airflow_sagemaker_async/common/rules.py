r"""
The one source of SageMaker Runtime's request rules, read from botocore's service model.

Every limit of an InvokeEndpointAsync / InvokeEndpoint / InvokeEndpointWithResponseStream request field
(length, range, pattern, sensitivity, whether it is required, where it travels) comes from the
``sagemaker-runtime`` service model shipped with the installed botocore
(``botocore/data/sagemaker-runtime/2017-05-13/service-2.json``), so a limit is never written twice and
follows the API as botocore evolves. The operators' parameter checks
(:mod:`airflow_sagemaker_async.common.validation`) and the local backend's request validation
(:mod:`airflow_sagemaker_async.local.request_model`) both read it from here.

Patterns in the model are Java regular expressions that AWS matches against the whole value; the few
Java-only constructs they use (``\p{ASCII}``, ``\p{Print}``, ``\z``) are translated by
:func:`python_pattern`.

**botocore's range.** A field added to the API after the oldest supported botocore (pyproject) is listed
in :data:`FIELDS_ADDED` with the botocore release whose model first has it. When the installed botocore
lacks it, :func:`field_rules` still returns a rule for it, with the limits of the API reference and
``available=False``: the operators then refuse the parameter with an error naming that release (never a
silent drop), the single async operator uploads ``input_data`` to S3 instead of sending it as ``Body``, and
the local backend (which follows the service, not the client) accepts both request shapes.

This module imports botocore only (no Airflow), so the local backend can use it.

.. seealso::
    - https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_runtime_InvokeEndpointAsync.html
    - https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_runtime_InvokeEndpoint.html
    - https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_runtime_InvokeEndpointWithResponseStream.html
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, Final

import botocore
import botocore.session
from botocore import xform_name

__all__ = [
    "DEFAULT_INVOCATION_TIMEOUT_SECONDS",
    "DEFAULT_REQUEST_TTL_SECONDS",
    "FIELDS_ADDED",
    "INVOKE_ENDPOINT",
    "INVOKE_ENDPOINT_ASYNC",
    "INVOKE_ENDPOINT_WITH_RESPONSE_STREAM",
    "FieldRule",
    "field_rule",
    "field_rules",
    "installed_botocore",
    "python_pattern",
]

INVOKE_ENDPOINT_ASYNC: Final = "InvokeEndpointAsync"
INVOKE_ENDPOINT: Final = "InvokeEndpoint"
INVOKE_ENDPOINT_WITH_RESPONSE_STREAM: Final = "InvokeEndpointWithResponseStream"

#: What SageMaker uses when an InvokeEndpointAsync request leaves them out (documented in the API
#: reference, not in the service model): 6 hours in the queue, 15 minutes of processing.
DEFAULT_REQUEST_TTL_SECONDS: Final = 21600
DEFAULT_INVOCATION_TIMEOUT_SECONDS: Final = 900

#: The request fields added to botocore's ``sagemaker-runtime`` model during botocore 1.42 and 1.43, by operation and
#: API name: the botocore release that first has the field, and the field's rules as the API reference (and
#: every later model) states them, used when the installed botocore lacks the field. Each release was found
#: by bisecting botocore's published wheels (``botocore/data/sagemaker-runtime/2017-05-13/service-2.json``).
FIELDS_ADDED: Final[dict[tuple[str, str], tuple[str, dict[str, Any]]]] = {
    (INVOKE_ENDPOINT_ASYNC, "S3OutputPathExtension"): (
        "1.42.54",
        {
            "location": "header",
            "wire_name": "X-Amzn-SageMaker-S3OutputPathExtension",
            "type_name": "string",
            "minimum": 1,
            "maximum": 512,
            "pattern": r"^(?!s3:|https:)[a-zA-Z0-9!_.*'()/-]+$",
        },
    ),
    (INVOKE_ENDPOINT_ASYNC, "Filename"): (
        "1.42.54",
        {
            "location": "header",
            "wire_name": "X-Amzn-SageMaker-Filename",
            "type_name": "string",
            "minimum": 1,
            "maximum": 32,
            "pattern": r"^(?!.*\..*\.)[a-zA-Z0-9][a-zA-Z0-9-_\.]*$",
        },
    ),
    # From 1.43.29 on, InputLocation is no longer required: exactly one of Body and InputLocation.
    (INVOKE_ENDPOINT_ASYNC, "Body"): (
        "1.43.29",
        {"location": None, "wire_name": "Body", "type_name": "blob", "maximum": 128_000, "sensitive": True},
    ),
    **{
        (operation, "PrefixAwareId"): (
            "1.43.68",
            {
                "location": "header",
                "wire_name": "X-Amzn-SageMaker-Prefix-Aware-Id",
                "type_name": "string",
                "minimum": 1,
                "maximum": 64,
                "pattern": r"\A\S[\p{Print}]*\z",
            },
        )
        for operation in (INVOKE_ENDPOINT, INVOKE_ENDPOINT_WITH_RESPONSE_STREAM)
    },
}

_JAVA_CLASSES: Final = {r"\p{ASCII}": r"\x00-\x7F", r"\p{Print}": r"\x20-\x7E"}


def python_pattern(java_pattern: str) -> re.Pattern[str]:
    r"""
    Compile a service-model (Java) pattern as a Python regular expression, to be used with ``fullmatch``.

    ``\z`` becomes ``\Z``; ``\p{ASCII}`` and ``\p{Print}`` become their character ranges.
    """
    pattern = java_pattern.replace(r"\z", r"\Z")
    for java, python_range in _JAVA_CLASSES.items():
        pattern = pattern.replace(f"[{java}]", f"[{python_range}]").replace(java, f"[{python_range}]")
    return re.compile(pattern)


@dataclass(frozen=True)
class FieldRule:
    """
    The rules of one request field, as the service model states them.

    :param operation: ``InvokeEndpointAsync``, ``InvokeEndpoint`` or ``InvokeEndpointWithResponseStream``.
    :param name: the API name, e.g. ``RequestTTLSeconds``.
    :param parameter: the snake_case name this package uses, e.g. ``request_ttl_seconds``.
    :param wire_name: the HTTP header (or URI label) it travels in, e.g. ``X-Amzn-SageMaker-RequestTTLSeconds``.
    :param location: ``"uri"``, ``"header"``, or ``None`` for the payload (HTTP body).
    :param type_name: the model's type: ``string``, ``integer`` or ``blob``.
    :param minimum: the model's ``min`` (length for strings and blobs, value for integers), or ``None``.
    :param maximum: the model's ``max``, or ``None``.
    :param pattern: the model's Java pattern, or ``None``.
    :param sensitive: the model marks the value sensitive (never shown in messages or logs).
    :param required: the request must carry it.
    :param available: the installed botocore's model has the field, so botocore can send it. ``False`` for a
        field of :data:`FIELDS_ADDED` that the installed botocore lacks (its rules then come from that table).
    :param added_in: the botocore release that added the field (:data:`FIELDS_ADDED`), ``None`` for the older ones.
    """

    operation: str
    name: str
    parameter: str
    wire_name: str
    location: str | None
    type_name: str
    minimum: int | None
    maximum: int | None
    pattern: str | None
    sensitive: bool
    required: bool
    available: bool = True
    added_in: str | None = None

    def matches(self, value: str) -> bool:
        """Tell whether ``value`` matches the whole :attr:`pattern` (``True`` when there is none)."""
        return self.pattern is None or _compiled(self.pattern).fullmatch(value) is not None

    def length_ok(self, value: str | bytes) -> bool:
        """Tell whether ``len(value)`` lies within :attr:`minimum` and :attr:`maximum`."""
        return (self.minimum is None or len(value) >= self.minimum) and (
            self.maximum is None or len(value) <= self.maximum
        )

    def range_ok(self, value: int) -> bool:
        """Tell whether the integer ``value`` lies within :attr:`minimum` and :attr:`maximum`."""
        return (self.minimum is None or value >= self.minimum) and (self.maximum is None or value <= self.maximum)


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return python_pattern(pattern)


@functools.cache
def field_rules(operation: str) -> dict[str, FieldRule]:
    """
    Return the rules of every request field of ``operation``, by snake_case parameter name, in model order.

    Fields of :data:`FIELDS_ADDED` that the installed botocore lacks come last, with ``available=False``.

    :param operation: one of :data:`INVOKE_ENDPOINT_ASYNC`, :data:`INVOKE_ENDPOINT`,
        :data:`INVOKE_ENDPOINT_WITH_RESPONSE_STREAM`.
    :raises botocore.exceptions.OperationNotFoundError: the installed botocore does not know ``operation``.
    """
    model = botocore.session.get_session().get_service_model("sagemaker-runtime")
    shape = model.operation_model(operation).input_shape
    assert shape is not None  # every SageMaker Runtime operation has an input
    required = set(shape.required_members)
    rules: dict[str, FieldRule] = {}
    for name, member in shape.members.items():
        metadata: dict[str, Any] = member.metadata
        parameter = xform_name(name)
        rules[parameter] = FieldRule(
            operation=operation,
            name=name,
            parameter=parameter,
            wire_name=member.serialization.get("name", name),
            location=member.serialization.get("location"),
            type_name=member.type_name,
            minimum=metadata.get("min"),
            maximum=metadata.get("max"),
            pattern=metadata.get("pattern"),
            sensitive=bool(metadata.get("sensitive")),
            required=name in required,
            added_in=FIELDS_ADDED.get((operation, name), (None,))[0],
        )
    for (added_to, name), (release, documented) in FIELDS_ADDED.items():
        parameter = xform_name(name)
        if added_to == operation and parameter not in rules:
            rules[parameter] = FieldRule(
                operation=operation,
                name=name,
                parameter=parameter,
                wire_name=documented["wire_name"],
                location=documented["location"],
                type_name=documented["type_name"],
                minimum=documented.get("minimum"),
                maximum=documented.get("maximum"),
                pattern=documented.get("pattern"),
                sensitive=documented.get("sensitive", False),
                required=False,
                available=False,
                added_in=release,
            )
    return rules


def installed_botocore() -> str:
    """Return the installed botocore's version, e.g. ``"1.42.84"``."""
    return str(botocore.__version__)


def field_rule(operation: str, parameter: str) -> FieldRule:
    """
    Return the rules of one field, e.g. ``field_rule(INVOKE_ENDPOINT_ASYNC, "filename")``.

    :raises KeyError: ``operation`` has no such field, neither in the installed botocore's model nor in
        :data:`FIELDS_ADDED`.
    """
    return field_rules(operation)[parameter]
