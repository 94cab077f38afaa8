"""
A batch of asynchronous inferences in one task: waves of submissions, one trigger watching them all, a manifest.

Modules:
    core       the I/O-free core: names, block prefixes, state, reconciling what was found with what is pending.
    operators  ``SageMakerInvokeEndpointAsyncBatchOperator``: the worker shell (checks, submits waves, finishes).
    state      the batch's S3 state I/O on the worker: pinned inputs (chunks), state, manifest parts and the manifest.
    waves      the submissions: waves sent by threads in the background while the task records what ended.
    triggers   ``SageMakerAsyncBatchInferenceTrigger``: the triggerer shell (LIST per block, notifications).

Rules: trigger kwargs and XCom never hold N items (the state lives in S3); the trigger never submits; ``core``
imports no aiobotocore, boto3 client code or Airflow (import-linter contracts).
"""
