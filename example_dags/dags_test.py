"""
``airflow dags test`` with one upstream Airflow fix applied: ``python example_dags/dags_test.py DAG_ID [options]``.

Same arguments and behaviour as ``airflow dags test``. Why it exists: in the Task SDK shipped with Airflow
3.3.2 (``apache-airflow-task-sdk`` 1.3.2), ``dag.test()`` runs a deferred task's trigger in line and then
resumes the task with ``event`` only, dropping the keyword arguments the task passed to ``defer()``
(apache/airflow#69942, merged upstream, not yet released). The triggerer of a real deployment keeps them
and adds ``event``. The example DAGs' operator resumes with such arguments (``endpoint_name``,
``submitted_at``), so under the unfixed ``dags test`` its resume fails with a ``TypeError``.

This script rewrites that one line of ``airflow.sdk.definitions.dag._run_task`` to what the triggerer does,
then runs the ``airflow`` CLI. If the line is not found (a fixed or different Airflow), it changes nothing.
Used by ``run_demo.py`` and ``tests/test_example_dags.py``.
"""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap

BUGGY = 'ti.next_kwargs = {"event": serialize(event.payload)} if event else msg.next_kwargs'
FIXED = (
    "ti.next_kwargs = ("
    'serialize({**(deserialize(msg.next_kwargs) or {}), "event": event.payload}) if event else msg.next_kwargs'
    ")"
)


def keep_defer_kwargs_in_dag_test() -> bool:
    """Make ``dag.test()`` resume a deferred task with its ``defer()`` kwargs plus ``event``; True if patched."""
    from airflow.sdk.definitions import dag as dag_module

    lines, first_line = inspect.getsourcelines(dag_module._run_task)
    source = textwrap.dedent("".join(lines))
    if BUGGY not in source:
        return False
    tree = ast.parse(source.replace(BUGGY, FIXED))
    ast.increment_lineno(tree, first_line - 1)  # tracebacks point at the right lines of Airflow's dag.py
    code = compile(tree, inspect.getsourcefile(dag_module._run_task) or "<dag>", "exec")
    # Redefine _run_task from Airflow's own source with that one line changed.
    exec(code, dag_module.__dict__)
    return True


def main() -> int:
    """Run ``airflow dags test`` with the arguments of this script."""
    keep_defer_kwargs_in_dag_test()
    from airflow.__main__ import main as airflow_main

    sys.argv = ["airflow", "dags", "test", *sys.argv[1:]]
    airflow_main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
