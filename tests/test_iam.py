"""
The IAM policies in iam/ grant exactly the actions the code calls, operator by operator.

Each module an operator runs is read (AST) for calls of AWS client operations (any operation of the s3, sqs,
sagemaker and sagemaker-runtime service models, also when named as a string: ``get_paginator("list_objects_v2")``,
the receiver's ``_call(..., "delete_message_batch", ...)``) and of the hook helpers the code uses
(``S3Hook.load_bytes``). Each is mapped to its IAM action; the policy must grant every one and nothing else,
but for the documented extras (``s3:ListBucket``, so that S3 answers 404, not 403, for a result not there yet).

Sources for the mapping: the Service Authorization Reference (sagemaker, s3, sqs action lists) and the SageMaker
developer guide's API permissions reference; InvokeEndpointWithResponseStream needs ``sagemaker:InvokeEndpoint``
(its API reference: "your IAM permissions must allow the sagemaker:InvokeEndpoint action").
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import botocore.session
import pytest
from botocore import xform_name

import airflow_sagemaker_async

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(airflow_sagemaker_async.__file__).parent

#: Client operation (snake_case) or hook / boto3 helper -> IAM action(s).
ACTIONS: dict[str, str | tuple[str, ...]] = {
    "invoke_endpoint_async": "sagemaker:InvokeEndpointAsync",
    "invoke_endpoint": "sagemaker:InvokeEndpoint",
    "invoke_endpoint_with_response_stream": "sagemaker:InvokeEndpoint",
    "describe_endpoint": "sagemaker:DescribeEndpoint",
    "describe_endpoint_config": "sagemaker:DescribeEndpointConfig",
    "describe_scaling_policies": "application-autoscaling:DescribeScalingPolicies",
    "head_object": "s3:GetObject",
    "get_object": "s3:GetObject",
    "put_object": "s3:PutObject",
    "load_bytes": "s3:PutObject",
    "create_multipart_upload": "s3:PutObject",
    "upload_part": "s3:PutObject",
    "complete_multipart_upload": "s3:PutObject",
    "abort_multipart_upload": "s3:AbortMultipartUpload",
    "delete_object": "s3:DeleteObject",
    # boto3's managed copy (S3.Client.copy): HeadObject + CopyObject / UploadPartCopy: read the source, write the copy.
    "copy": ("s3:GetObject", "s3:PutObject"),
    "list_objects_v2": "s3:ListBucket",
    "receive_message": "sqs:ReceiveMessage",
    "delete_message_batch": "sqs:DeleteMessage",
    "change_message_visibility_batch": "sqs:ChangeMessageVisibility",
}
#: boto3 helpers whose names are everyday Python methods (``dict.copy``): counted only on a client.
CLIENT_HELPERS = {"copy"}
#: Granted without a call: S3 answers 404 instead of 403 for a missing key only with s3:ListBucket.
EXTRAS = {"s3:ListBucket"}
#: Actions without resource-level permissions (the Service Authorization Reference lists no resource type for
#: them): their statement must say ``"Resource": "*"``.
WILDCARD_ONLY = {"application-autoscaling:DescribeScalingPolicies"}

#: The modules each policy's operator runs (its own, and what it imports that calls AWS).
MODULES = {
    "async-single": [
        "inference/operators",
        "inference/waiting",
        "inference/triggers",
        "common/watch",
        "common/outcome",
        "common/clients",
        "common/capacity",
    ],
    "sensor": [
        "inference/sensors",
        "inference/waiting",
        "inference/triggers",
        "common/watch",
        "common/outcome",
        "common/clients",
    ],
    "batch": [
        "batch/operators",
        "batch/waves",
        "batch/state",
        "batch/inputs",
        "batch/triggers",
        "batch/core",
        "common/watch",
        "common/outcome",
        "common/clients",
        "common/capacity",
    ],
    "push-sqs": ["push/receiver", "push/notifications"],
    "realtime": ["realtime/operators", "realtime/requests"],
    "streaming": ["realtime/streaming", "realtime/requests", "realtime/sinks", "realtime/events"],
}


def _operations() -> set[str]:
    session = botocore.session.get_session()
    return {
        xform_name(name)
        for service in ("s3", "sqs", "sagemaker", "sagemaker-runtime", "application-autoscaling")
        for name in session.get_service_model(service).operation_names
    }


#: Operation names that are also everyday Python methods (``re.Pattern.search``); no module calls SageMaker Search.
NOT_AWS = {"search"}
OPERATIONS = _operations() - NOT_AWS


def _calls(module: str) -> set[str]:
    """Every AWS operation (or hook helper) ``module`` (a path under the package, without ``.py``) calls."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        for argument in node.args:
            if isinstance(argument, ast.Constant) and argument.value in OPERATIONS:
                found.add(argument.value)
            # A client operation passed to be called (``call_endpoint(self.hook.invoke_endpoint, ...)``).
            if isinstance(argument, ast.Attribute) and argument.attr in OPERATIONS:
                found.add(argument.attr)
        if not isinstance(node.func, ast.Attribute):
            continue
        name = node.func.attr
        if name in CLIENT_HELPERS:
            if _names_a_client(node.func.value):
                found.add(name)
        elif name in OPERATIONS or name in ACTIONS:
            found.add(name)
    return found


def _names_a_client(node: ast.expr) -> bool:
    """Whether ``node`` reads like a boto3 client (``client``, ``self.client``, ``s3_client``)."""
    name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""
    return name.endswith("client")


def _granted(policy: str) -> set[str]:
    document = json.loads((ROOT / "iam" / f"{policy}.json").read_text())
    granted: set[str] = set()
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"]
        if statement["Resource"] == "*":
            assert set([actions] if isinstance(actions, str) else actions) <= WILDCARD_ONLY, (
                f"{policy}: {statement['Sid']} must name its resources"
            )
        granted.update([actions] if isinstance(actions, str) else actions)
    return granted


def _actions(call: str) -> tuple[str, ...]:
    action = ACTIONS[call]
    return (action,) if isinstance(action, str) else action


def test_every_policy_file_has_its_operator() -> None:
    assert {path.stem for path in (ROOT / "iam").glob("*.json")} == set(MODULES)


def test_every_aws_call_has_a_known_action() -> None:
    plugin = [path for path in PACKAGE.rglob("*.py") if "local" not in path.relative_to(PACKAGE).parts]
    called = set().union(*(_calls(str(path.relative_to(PACKAGE).with_suffix(""))) for path in plugin))
    assert called - set(ACTIONS) == set(), "add the IAM action of each new AWS call to ACTIONS and to iam/"


@pytest.mark.parametrize("policy", sorted(MODULES))
def test_policy_grants_exactly_what_the_operator_calls(policy: str) -> None:
    needed = {action for module in MODULES[policy] for call in _calls(module) for action in _actions(call)}
    granted = _granted(policy)

    assert needed - granted == set(), f"iam/{policy}.json lacks actions the code calls"
    assert granted - needed - EXTRAS == set(), f"iam/{policy}.json grants actions the code never calls"


def test_the_streaming_operator_needs_invoke_endpoint_not_a_streaming_action() -> None:
    assert "sagemaker:InvokeEndpoint" in _granted("streaming")
    assert not any("WithResponseStream" in action for action in _granted("streaming"))
