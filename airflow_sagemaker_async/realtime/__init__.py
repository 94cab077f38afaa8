"""
Real-time inference on the worker: one InvokeEndpoint call, or one InvokeEndpointWithResponseStream.

Modules:
    operators  ``SageMakerInvokeEndpointOperator``: InvokeEndpoint, the answer into the outcome or S3.
    streaming  ``SageMakerInvokeEndpointWithResponseStreamOperator``: the event stream, its parts kept as they
               arrive.
    sinks      where a stream's parts go: a local file, an S3 object (multipart), the outcome.

Rules: no InvokeEndpoint* call is retried once it may have reached the model (``common.hooks``).
"""
