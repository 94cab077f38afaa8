"""Apache Airflow operator, sensor and trigger for Amazon SageMaker asynchronous inference."""

from __future__ import annotations

__version__ = "0.1.0"
