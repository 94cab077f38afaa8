"""
Griffe extension: the package's reStructuredText docstrings rendered as Markdown by mkdocstrings.

The docstrings follow Airflow's style (``:param:``, ``:raises:``, ``:class:`~pkg.mod.Name```, ``.. seealso::``,
``.. code-block::``). mkdocstrings' Sphinx parser reads the fields; this extension rewrites what it leaves as
text:

- a role (``:class:``, ``:func:``, ``:mod:``, ``:meth:``, ``:attr:``, ``:data:``, ``:external+boto3:py:meth:``)
  becomes a code span; when it names a public name (``airflow_sagemaker_async.__all__``), a cross-reference
  to that name's reference entry, which ``mkdocs build --strict`` checks. Module paths inside the package are
  not linked, so the reference holds while modules move;
- ``.. seealso::`` becomes a "See also" admonition (its bare URLs are linked by ``pymdownx.magiclink``);
- ``.. code-block:: python`` and its indented block become a fenced code block.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from griffe import Extension, Object

PACKAGE = "airflow_sagemaker_async"
ROLE = re.compile(r"(?::[\w+.-]+)+:`(?P<target>[^`]+)`")
SEEALSO = re.compile(r"^(?P<indent>[ \t]*)\.\. seealso::[ \t]*$", re.MULTILINE)
CODE_BLOCK = re.compile(r"^(?P<indent>[ \t]*)\.\. code-block::[ \t]*(?P<lang>\S*)[ \t]*$")


def public_names() -> set[str]:
    """``airflow_sagemaker_async.__all__``, read from the source without importing the package."""
    tree = ast.parse((Path(__file__).resolve().parents[1] / PACKAGE / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    raise LookupError(f"{PACKAGE}/__init__.py defines no __all__")


def _role(match: re.Match[str], public: set[str]) -> str:
    target = match.group("target")
    if "<" in target and target.endswith(">"):  # :class:`text <target>`
        target = target[target.index("<") + 1 : -1]
    short = target.startswith("~")
    path = target.lstrip("~.").removesuffix("()")
    name = path.rsplit(".", 1)[-1]
    shown = name if short else path
    if name in public and (path == name or path.startswith(f"{PACKAGE}.")):
        return f"[`{shown}`][{PACKAGE}.{name}]"
    return f"`{shown}`"


def _code_blocks(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = CODE_BLOCK.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        indent = match.group("indent")
        out.append(f"{indent}```{match.group('lang')}")
        i += 1
        block: list[str] = []
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > len(indent)):
            block.append(lines[i])
            i += 1
        while block and not block[0].strip():
            block.pop(0)
        trailing = 0
        while block and not block[-1].strip():
            block.pop()
            trailing += 1
        depth = min(len(line) - len(line.lstrip()) for line in block if line.strip())
        out.extend(indent + line[depth:] if line.strip() else "" for line in block)
        out.append(f"{indent}```")
        out.extend([""] * trailing)
    return "\n".join(out)


def to_markdown(text: str, public: set[str]) -> str:
    """Rewrite one docstring's reStructuredText constructs as Markdown (see the module docstring)."""
    text = _code_blocks(text)
    text = SEEALSO.sub(lambda m: f'{m.group("indent")}!!! info "See also"\n', text)
    return ROLE.sub(lambda m: _role(m, public), text)


class RstToMarkdown(Extension):
    """Rewrite every docstring griffe loads, before mkdocstrings parses its fields."""

    def __init__(self) -> None:
        super().__init__()
        self.public = public_names()

    def on_instance(self, *, obj: Object, **kwargs: Any) -> None:
        """Rewrite ``obj``'s docstring in place."""
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value, self.public)
