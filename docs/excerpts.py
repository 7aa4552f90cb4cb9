"""The code the chapters show, pulled from the source so that it cannot go stale.

A Markdown block

    <!-- excerpt:numpy_impl/functional/conv.py:depthwise_conv2d nodoc -->
    ...
    <!-- /excerpt -->

holds the named function, class or ``Class.method`` of that file as it is today (its decorators
included; ``nodoc`` leaves its docstring out), in a ``python`` code fence. ``docs/make_figures.py``
rewrites every such block, and ``--check`` (run by the tests) fails when one no longer matches
its file, or names what the file no longer has.
"""

from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATTERN = re.compile(
    r"<!-- excerpt:(?P<path>[\w/.]+):(?P<name>[\w.]+)(?P<opts>(?: \w+)*) -->\n.*?<!-- /excerpt -->", re.S
)
OPTIONS = {"nodoc"}


def _find(tree: ast.Module, name: str, where: str):
    node, scope = None, tree.body
    for part in name.split("."):
        node = next(
            (n for n in scope if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == part), None
        )
        if node is None:
            raise KeyError(f"excerpt {where}:{name}: the file has no {part!r} there")
        scope = node.body
    return node


def source(path: str, name: str, nodoc: bool = False) -> str:
    """The source of ``name`` (a function, class or ``Class.method``) in ``path`` (from the
    repository root), dedented; without its docstring when ``nodoc``."""
    text = (ROOT / path).read_text()
    node = _find(ast.parse(text), name, path)
    lines = text.splitlines()
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    keep = list(range(first - 1, node.end_lineno))
    doc = node.body[0] if node.body else None
    if nodoc and isinstance(doc, ast.Expr) and isinstance(getattr(doc, "value", None), ast.Constant):
        drop = set(range(doc.lineno - 1, doc.end_lineno))
        keep = [i for i in keep if i not in drop]
    return textwrap.dedent("\n".join(lines[i] for i in keep)).rstrip()


def render(text: str) -> str:
    """``text`` with every excerpt block filled from the source as it is now."""

    def sub(m):
        opts = m.group("opts").split()
        unknown = set(opts) - OPTIONS
        if unknown:
            raise KeyError(f"excerpt {m.group('path')}:{m.group('name')}: unknown option {sorted(unknown)}")
        code = source(m.group("path"), m.group("name"), nodoc="nodoc" in opts)
        head = f"<!-- excerpt:{m.group('path')}:{m.group('name')}{m.group('opts')} -->"
        return f"{head}\n```python\n{code}\n```\n<!-- /excerpt -->"

    return PATTERN.sub(sub, text)
