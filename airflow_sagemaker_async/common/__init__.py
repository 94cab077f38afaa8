"""
What every flow shares: the records, the request rules, the checks, the S3 layout, the watch core, the outcome.

Modules:
    records     the shapes that cross modules (TypedDicts) and the status vocabulary; no I/O.
    rules       SageMaker Runtime's request rules, read from botocore's service model (data only, no client).
    validation  the parameter checks and their messages, on top of ``rules``.
    layout      where SageMaker puts things in S3, and the deadline arithmetic; no I/O.
    watch       the I/O-free core of one wait (``Watch``, ``PollSchedule``) and its synchronous shell.
    outcome     a finished wait turned into the XCom outcome, on the worker (bounded downloads).
    submission  payload serialisation, default inference ids, upload keys.
    hooks       ``SageMakerRuntimeHook``: the ``sagemaker-runtime`` client (worker side only).
    clients     one aiobotocore client per (event loop, connection), shared by the triggers of a triggerer.
    exceptions  the error tree.
    lineage     OpenLineage datasets and facets for every operator.
    links       console links (endpoint, S3 output, CloudWatch logs).

Rules kept here (checked by import-linter in ``make lint``): ``records``, ``rules``, ``layout`` and ``watch`` import
no aiobotocore, boto3 client code or Airflow; nothing here imports ``airflow_sagemaker_async.local``.
"""
