"""
The batch progress page: an Airflow 3 plugin (FastAPI app on the API server) and the batch task's extra link.

- :mod:`.links`: the "Batch progress" extra link and the XCom pointer key (light: the worker imports it).
- :mod:`.app`: the FastAPI app, mounted at ``/sagemaker-async`` by :mod:`.plugin`: one HTML page and the JSON it
  polls. Both require Airflow's own authentication (the UI's ``_token`` cookie or a bearer token) and read access
  to the DAG's XCom, through the auth manager; the JSON is the batch's ``progress.json``, read through the task's
  own AWS connection.
- :mod:`.plugin`: the :class:`~airflow.plugins_manager.AirflowPlugin` (entry point ``airflow.plugins``).

The UI never imports the runtime hook nor the operators (an import-linter contract).
"""
