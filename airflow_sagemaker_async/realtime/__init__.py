"""
Real-time inference on the worker: one InvokeEndpoint call, or one InvokeEndpointWithResponseStream.

Modules:
    operators  ``SageMakerInvokeEndpointOperator``: InvokeEndpoint, the answer into the outcome or S3.
    streaming  ``SageMakerInvokeEndpointWithResponseStreamOperator``: the event stream, its parts kept as they
               arrive.
    requests   what both share: the request fields as parameters, the payload, the one call, model errors.
    events     the response event stream, read frame by frame.
    sinks      where a stream's parts go: a local file, an S3 object (multipart), the outcome.

Rules: no InvokeEndpoint* call is retried once it may have reached the model (``common.hooks``); these
operators never defer, so nothing here runs in the triggerer.
"""
