"""
MkDocs hook: the build fails when a public name is missing from the reference, or named there by a module path.

Every name in ``airflow_sagemaker_async.__all__`` (but ``__version__``, a string shown on the reference's
front page) must have a ``::: airflow_sagemaker_async.<Name>`` directive on a page under ``docs/reference/``,
and every such directive names the object through the top-level package, the path users import from, which
stays the same when modules move. ``mkdocs build --strict`` checks the links and cross-references; this hook
checks what it cannot: an undocumented name.

It also silences one griffe warning, and only for four names: the amazon provider's AWS parameters
(``aws_conn_id``, ``region_name``, ``verify``, ``botocore_config``) reach ``AwsBaseOperator`` through
``**kwargs``, so griffe finds no matching parameter in the signature for their ``:param:`` lines. Every other
docstring warning still fails the strict build.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from griffe_rst import PACKAGE, public_names
from mkdocs.exceptions import PluginError

if TYPE_CHECKING:
    from mkdocs.config.defaults import MkDocsConfig
    from mkdocs.structure.files import Files

DIRECTIVE = re.compile(r"^:::[ \t]+(?P<path>\S+)", re.MULTILINE)
NOT_RENDERED = {"__version__"}
AWS_PARAMETERS = re.compile(r"No matching parameter for '(aws_conn_id|region_name|verify|botocore_config)'$")


class _AwsParametersThroughKwargs(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not AWS_PARAMETERS.search(record.getMessage())


_griffe_logger = logging.getLogger("mkdocs.plugins.griffe")
if not any(isinstance(f, _AwsParametersThroughKwargs) for f in _griffe_logger.filters):
    _griffe_logger.addFilter(_AwsParametersThroughKwargs())


def on_files(files: Files, config: MkDocsConfig, **kwargs: Any) -> Files:
    """Check the reference pages' ``:::`` directives against ``__all__`` before anything is rendered."""
    documented: dict[str, str] = {}
    problems: list[str] = []
    for file in files.documentation_pages():
        if not file.src_uri.startswith("reference/"):
            continue
        for match in DIRECTIVE.finditer(file.content_string):
            path = match.group("path")
            package, _, name = path.rpartition(".")
            if package != PACKAGE:
                problems.append(f"{file.src_uri}: '::: {path}' names a module path; use '::: {PACKAGE}.<Name>'")
                continue
            if name in documented:
                problems.append(f"{file.src_uri}: {name} is documented twice (also on {documented[name]})")
            documented[name] = file.src_uri
    public = public_names() - NOT_RENDERED
    problems += [f"{name} is not in {PACKAGE}.__all__" for name in sorted(set(documented) - public)]
    problems += [
        f"{name} (in {PACKAGE}.__all__) is documented on no reference page: add '::: {PACKAGE}.{name}'"
        for name in sorted(public - set(documented))
    ]
    if problems:
        raise PluginError("The API reference does not match the public names:\n  " + "\n  ".join(problems))
    return files
