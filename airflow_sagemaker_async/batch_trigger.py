"""
The trigger's classpath before the subpackage layout (an alias, for persisted trigger rows).

Alias of :class:`~airflow_sagemaker_async.batch.triggers.SageMakerAsyncBatchInferenceTrigger`.

Airflow stores a deferred task's trigger as its classpath and kwargs (the ``trigger`` table) for as long as the
wait lasts, and the triggerer imports that classpath to rebuild it. A deployment upgraded while a batch waits
still names ``airflow_sagemaker_async.batch_trigger.SageMakerAsyncBatchInferenceTrigger``; this alias lets it
rebuild. New triggers serialise under their new module. Remove once no deployment runs a build older than the
layout.
"""

from airflow_sagemaker_async.batch.triggers import SageMakerAsyncBatchInferenceTrigger

__all__ = ["SageMakerAsyncBatchInferenceTrigger"]
