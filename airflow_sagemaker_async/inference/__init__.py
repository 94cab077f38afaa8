"""
One asynchronous inference: submit it (or find one submitted elsewhere), wait for it in the triggerer, finish.

Modules:
    operators  ``SageMakerInvokeEndpointAsyncOperator``: InvokeEndpointAsync on the worker, then the wait.
    sensors    ``SageMakerAsyncInferenceSensor``: the wait alone, for an inference submitted elsewhere.
    waiting    what the two share: the worker check before deferring, the fast-event guard (minimum deferral
               age), the finish; the ``[sagemaker_async]`` deployment settings.
    triggers   ``SageMakerAsyncInferenceTrigger``: the async shell of ``common.watch.Watch`` in the triggerer,
               and ``S3ResultTrigger``, the part the batch trigger shares.

Rules: the trigger never submits and never imports the runtime hook (import-linter contract); its kwargs stay
small; it never blocks the event loop.
"""
