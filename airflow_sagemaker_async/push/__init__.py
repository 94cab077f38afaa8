"""
Push completion: SageMaker's SNS notifications, read from an SQS queue, end waits without polling S3.

Modules:
    notifications  the I/O-free core: parse SageMaker's notification, route it to a wait, decide its fate.
    receiver       the async shell: one long-polling SQS receiver per (event loop, queue, connection), shared
                   by every wait on that queue.

Rules: ``notifications`` imports no aiobotocore, boto3 client code or Airflow; a message is deleted only once it
has ended a wait or is known to be nobody's (see ``receiver``).
"""
