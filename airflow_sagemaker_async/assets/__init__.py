"""
Airflow assets for SageMaker asynchronous inference: what the operators wrote, and what an endpoint finished.

- :mod:`~airflow_sagemaker_async.assets.events`: the operators' outlet asset events. An operator fills the
  ``extra`` of each S3 asset of its ``outlets`` that covers what it wrote (inference id and status; a batch's
  counts and manifest), so a DAG scheduled on that asset reads them from ``triggering_asset_events``.
- :mod:`~airflow_sagemaker_async.assets.watcher`: :class:`SageMakerAsyncNotificationTrigger`, a
  ``BaseEventTrigger`` for an ``AssetWatcher``: a DAG run per SageMaker notification read from SQS.

Rules of this subpackage:

- Assets use the amazon provider's ``s3`` URI scheme (``s3://bucket/prefix``,
  ``airflow.providers.amazon.aws.assets.s3``), so OpenLineage and the UI name them as other S3 assets; any
  other URI is a parameter error before anything starts.
- An asset event's ``extra`` holds JSON primitives only, and stays small (never an entry per item).
- The watcher's kwargs are deterministic (Airflow identifies an event trigger by a hash of them); its
  decisions (filters, payloads, what to do with a message) are I/O-free functions here, its SQS I/O a thin
  async shell; it shares the parsing and the message fate rules of push completion
  (:mod:`airflow_sagemaker_async.push.notifications`).
"""

from __future__ import annotations
