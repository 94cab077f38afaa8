"""The I/O-free core of push completion: parsing SageMaker's notifications, routing them, what to do with each."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from airflow_sagemaker_async.batch.core import BatchNames, batch_tag
from airflow_sagemaker_async.common.layout import normalize_s3_uri
from airflow_sagemaker_async.push.notifications import (
    CLAIM_WINDOW_SECONDS,
    EXPIRED_KEEP_SECONDS,
    MAX_RELEASE_VISIBILITY_SECONDS,
    STALE_AFTER_SECONDS,
    Action,
    Ignored,
    Malformed,
    Notification,
    Router,
    Subscription,
    decide,
    expiry_applies,
    parse_message,
    queue_region,
    release_visibility,
)

OUT = "s3://bucket/out/11111111.out"
FAIL = "s3://bucket/fail/11111111-error.out"


def sagemaker_message(status: str = "Completed", **overrides: object) -> dict:
    """
    The developer guide's example notifications ("Check prediction results").

    Completed: ``responseParameters.outputLocation``. Failed: ``failureReason``, no ``responseParameters``
    and no failure location. Expired: no location either.
    """
    message: dict = {
        "awsRegion": "us-east-1",
        "eventTime": "2026-11-22T10:00:01.608Z",
        "receivedTime": "2026-11-22T10:00:00.455Z",
        "invocationStatus": status,
        "requestParameters": {"contentType": "text/csv", "endpointName": "ep", "inputLocation": "s3://bucket/in/x"},
        "inferenceId": "inf-1",
        "eventVersion": "1.0",
        "eventSource": "aws:sagemaker",
        "eventName": "InferenceResult",
    }
    if status == "Completed":
        message["responseParameters"] = {"contentType": "text/csv", "outputLocation": OUT}
    elif status == "Failed":
        message["failureReason"] = "ClientError: Received server error (500) from model."
    else:
        message["failureReason"] = "InternalServerError: Request expired in queue."
    message.update(overrides)
    return message


def envelope(message: dict) -> str:
    return json.dumps(
        {
            "Type": "Notification",
            "MessageId": "m-1",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:success",
            "Message": json.dumps(message),
            "Timestamp": "2026-11-22T10:00:01.700Z",
            "SignatureVersion": "1",
        }
    )


@pytest.mark.parametrize("wrap", [json.dumps, envelope], ids=["raw-delivery", "sns-envelope"])
def test_completed_notification_is_read_from_raw_and_enveloped_bodies(wrap) -> None:
    parsed = parse_message(wrap(sagemaker_message()))

    assert parsed == Notification(
        status="Completed",
        inference_id="inf-1",
        endpoint_name="ep",
        locations=(OUT,),
        input_location="s3://bucket/in/x",
        received_time=datetime(2026, 11, 22, 10, 0, 0, 455000, tzinfo=UTC),
    )
    assert not parsed.expired


@pytest.mark.parametrize("wrap", [json.dumps, envelope], ids=["raw-delivery", "sns-envelope"])
def test_aws_failed_notification_without_any_location_is_read_not_malformed(wrap) -> None:
    # Before: Malformed("a Failed notification without outputLocation or failureLocation").
    failed = parse_message(wrap(sagemaker_message("Failed")))

    assert isinstance(failed, Notification)
    assert failed.status == "Failed"
    assert failed.inference_id == "inf-1"
    assert failed.endpoint_name == "ep"
    assert failed.locations == ()
    assert failed.failure_reason == "ClientError: Received server error (500) from model."


def test_failed_and_expired_notifications_keep_their_status_and_reason() -> None:
    failed = parse_message(envelope(sagemaker_message("Failed", responseParameters={"failureLocation": FAIL})))
    expired = parse_message(json.dumps(sagemaker_message("Expired")))

    assert isinstance(failed, Notification)
    assert failed.locations == (FAIL,), "a failureLocation, should SageMaker ever send one, is read too"
    assert failed.status == "Failed"
    assert isinstance(expired, Notification)
    assert expired.expired
    assert expired.locations == ()
    assert expired.failure_reason == "InternalServerError: Request expired in queue."


@pytest.mark.parametrize(
    "location",
    [
        "https://bucket.s3.us-east-1.amazonaws.com/out/11111111.out",
        "https://bucket.s3.amazonaws.com/out/11111111.out",
        "https://bucket.s3-us-east-1.amazonaws.com/out/11111111.out",
        "https://bucket.s3.dualstack.us-east-1.amazonaws.com/out/11111111.out",
        "https://s3.us-east-1.amazonaws.com/bucket/out/11111111.out",
        "https://s3.amazonaws.com/bucket/out/11111111.out",
        "s3://bucket/out/11111111.out",
    ],
    ids=["virtual-hosted", "virtual-global", "virtual-dash", "virtual-dualstack", "path-style", "path-global", "s3"],
)
def test_an_output_location_in_any_s3_uri_form_is_read_and_routed_as_s3(location: str) -> None:
    parsed = parse_message(
        json.dumps(sagemaker_message(responseParameters={"contentType": "text/csv", "outputLocation": location}))
    )
    router = Router()
    by_location = Subscription(locations=frozenset({OUT}))  # a sensor told no inference id
    router.add(by_location)

    assert isinstance(parsed, Notification)
    assert parsed.locations == (OUT,)
    assert router.route(parsed) == {by_location}


def test_https_keys_are_percent_decoded_and_other_uris_are_left_alone() -> None:
    assert (
        normalize_s3_uri("https://my.bucket.s3.eu-west-1.amazonaws.com/a%20b/c%2Bd.out") == "s3://my.bucket/a b/c+d.out"
    )
    assert normalize_s3_uri("https://s3.eu-west-1.amazonaws.com.cn/bucket/k") == "s3://bucket/k"
    assert normalize_s3_uri("https://example.com/bucket/k") == "https://example.com/bucket/k"
    assert normalize_s3_uri("s3://bucket/a%20b") == "s3://bucket/a%20b", "an s3:// key is not encoded"


def test_test_notification_is_ignored_not_malformed() -> None:
    body = json.dumps({"eventName": "TestNotification", "endpointName": "ep", "eventSource": "aws:sagemaker"})
    assert parse_message(body) is Ignored.TEST_NOTIFICATION


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not an object"),
        (json.dumps({"Type": "Notification", "Message": "{broken"}), "Message is not JSON"),
        (json.dumps({"eventName": "ObjectCreated"}), "eventName"),
        (json.dumps(sagemaker_message("Pending")), "invocationStatus"),
        (json.dumps(sagemaker_message(inferenceId="")), "inferenceId"),
        (json.dumps(sagemaker_message(responseParameters={})), "without responseParameters.outputLocation"),
    ],
)
def test_malformed_messages_say_why(body: str, reason: str) -> None:
    parsed = parse_message(body)
    assert isinstance(parsed, Malformed)
    assert reason in parsed.reason


def test_router_wakes_by_exact_location_inference_id_and_prefix_and_nobody_else() -> None:
    router = Router()
    single = Subscription(locations=frozenset({OUT, FAIL}), inference_ids=frozenset({"inf-1"}))
    batch = Subscription(prefixes=("s3://bucket/out/batch-7f3a-",))
    other = Subscription(locations=frozenset({"s3://bucket/out/other.out"}), inference_ids=frozenset({"inf-2"}))
    for subscription in (single, batch, other):
        router.add(subscription)

    assert router.route(Notification("Completed", "inf-1", locations=(OUT,))) == {single}
    assert router.route(Notification("Expired", "inf-1")) == {single}
    assert router.route(Notification("Completed", "inf-9", locations=("s3://bucket/out/batch-7f3a-0042.out",))) == {
        batch
    }
    assert router.route(Notification("Failed", "inf-9", locations=("s3://bucket/out/batch-7f3b-0042.out",))) == set()
    assert router.route(Notification("Completed", "inf-9", locations=("s3://elsewhere/out/batch-7f3a-1.out",))) == set()


def test_router_forgets_removed_subscriptions_and_counts_the_rest() -> None:
    router = Router()
    first = Subscription(locations=frozenset({OUT}))
    second = Subscription(locations=frozenset({OUT}))
    router.add(first)
    router.add(second)
    router.remove(first)
    router.remove(first)  # twice: no error, no miscount

    assert router.route(Notification("Completed", "x", locations=(OUT,))) == {second}
    assert len(router) == 1
    router.remove(second)
    assert router.route(Notification("Completed", "x", locations=(OUT,))) == set()
    assert len(router) == 0


def test_router_wakes_a_batch_by_the_tag_its_items_inference_ids_end_with() -> None:
    tag = batch_tag("dag", "score", "run-1")
    names = BatchNames.of(tag, "a_dag_with_a_rather_long_name_indeed", "score_every_input", "s3://b/out", "s3://b/f")
    router = Router()
    batch = Subscription(prefixes=("s3://b/out/other-",), batch_tags=frozenset({tag}))
    other = Subscription(batch_tags=frozenset({batch_tag("dag", "score", "run-2")}))
    router.add(batch)
    router.add(other)

    for index in (0, 7, 999, 1_000_000):
        item_id = names.inference_id(index)  # the readable start is cut to keep 64 characters
        assert router.route(Notification("Failed", item_id)) == {batch}, item_id
    assert router.route(Notification("Failed", f"{tag}-7")) == set(), "no '-' before the tag"
    assert router.route(Notification("Failed", f"x-{tag}-7-retry")) == set()
    router.remove(batch)
    assert router.route(Notification("Failed", names.inference_id(7))) == set()
    assert len(router) == 1


def test_routed_and_test_messages_are_deleted_unrouted_released_malformed_kept() -> None:
    notification = Notification("Completed", "x", locations=(OUT,))

    assert decide(notification, routed=True, age_seconds=1) is Action.DELETE
    assert decide(Ignored.TEST_NOTIFICATION, routed=False, age_seconds=1) is Action.DELETE
    assert decide(notification, routed=False, age_seconds=1) is Action.RELEASE
    assert decide(Malformed("x"), routed=False, age_seconds=1) is Action.KEEP


@pytest.mark.parametrize(
    "parsed", [Notification("Completed", "x", locations=(OUT,)), Notification("Failed", "x"), Malformed("x")]
)
def test_completed_failed_and_malformed_messages_are_stale_after_the_safety_poll_ceiling(parsed) -> None:
    assert decide(parsed, routed=False, age_seconds=STALE_AFTER_SECONDS - 1) is not Action.DELETE
    assert decide(parsed, routed=False, age_seconds=STALE_AFTER_SECONDS + 1) is Action.DELETE


def test_an_expired_message_is_kept_until_no_wait_it_concerns_can_be_alive() -> None:
    expired = Notification("Expired", "x")

    # Before: deleted once older than 300 s, so a wait whose trigger started late never learnt of it.
    assert decide(expired, routed=False, age_seconds=400) is Action.RELEASE
    assert decide(expired, routed=False, age_seconds=EXPIRED_KEEP_SECONDS - 1) is Action.RELEASE
    assert decide(expired, routed=False, age_seconds=EXPIRED_KEEP_SECONDS + 1) is Action.DELETE
    assert EXPIRED_KEEP_SECONDS == 3600 + 600, "the largest InvocationTimeoutSeconds + the deadline margin"


def test_a_young_message_is_handed_back_at_once_then_after_a_fifth_of_its_age_up_to_twenty_seconds() -> None:
    # Before: 0, 1, 2, 4 ... 20 s by receive count, so a few wrong receipts added tens of seconds.
    assert [release_visibility(age) for age in (0, 1, CLAIM_WINDOW_SECONDS - 0.1)] == [0, 0, 0]
    assert [release_visibility(age) for age in (CLAIM_WINDOW_SECONDS, 9.9, 35, 60, 99, 4000)] == [1, 1, 7, 12, 19, 20]
    assert release_visibility(10**6) == MAX_RELEASE_VISIBILITY_SECONDS


def test_expiry_applies_only_to_the_same_inference_endpoint_and_try() -> None:
    submitted = datetime(2026, 11, 22, 10, 0, 1, tzinfo=UTC)
    expired = Notification("Expired", "inf-1", endpoint_name="ep", received_time=submitted - timedelta(seconds=1))

    assert expiry_applies(expired, inference_id="inf-1", endpoint_name="ep", submitted_at=submitted)
    assert expiry_applies(expired, inference_id="inf-1", endpoint_name=None, submitted_at=None)
    assert not expiry_applies(expired, inference_id="inf-2", endpoint_name="ep", submitted_at=submitted)
    assert not expiry_applies(expired, inference_id="inf-1", endpoint_name="other", submitted_at=submitted)
    # An earlier try's expiry (same inference id, received long before this try was submitted).
    retry = submitted + timedelta(minutes=5)
    assert not expiry_applies(expired, inference_id="inf-1", endpoint_name="ep", submitted_at=retry)
    completed = Notification("Completed", "inf-1", locations=(OUT,))
    assert not expiry_applies(completed, inference_id="inf-1", endpoint_name=None, submitted_at=None)


@pytest.mark.parametrize(
    ("url", "region"),
    [
        ("https://sqs.eu-west-1.amazonaws.com/123456789012/q", "eu-west-1"),
        ("https://us-west-2.queue.amazonaws.com/123456789012/q", "us-west-2"),
        ("https://sqs.cn-north-1.amazonaws.com.cn/123456789012/q", "cn-north-1"),
        ("http://127.0.0.1:4566/123456789012/q", None),
    ],
)
def test_queue_region_is_read_from_aws_queue_urls_only(url: str, region: str | None) -> None:
    assert queue_region(url) == region
