"""Code snippets of the Markdown docs and of kopt's docstrings, as test cases.

A fenced ```python or ```bash block is a snippet. ``<!-- illustrative -->`` on the line before
the fence (blank lines allowed between) marks one that is not run (e.g. a 30-minute benchmark).
Docstring examples are the ``::`` literal blocks of kopt's modules, classes and functions.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ILLUSTRATIVE = "<!-- illustrative -->"
_FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass(frozen=True)
class Snippet:
    source: str  # "README.md:123" or "kopt.api.prepare"
    language: str  # "python" or "bash"
    code: str
    section: str = ""  # the Markdown heading the snippet sits under
    illustrative: bool = False


def markdown_snippets(path: Path) -> list[Snippet]:
    """Every ```python / ```bash block of ``path`` with its line, heading and illustrative mark."""
    lines = path.read_text(encoding="utf-8").splitlines()
    snippets, section, i = [], "", 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            section = line.strip()
        fence = _FENCE.match(line)
        if fence is None:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        if fence.group(1) in ("python", "bash"):
            snippets.append(
                Snippet(f"{path.relative_to(ROOT)}:{i + 1}", fence.group(1), "\n".join(lines[i + 1 : end]) + "\n",
                        section, before == ILLUSTRATIVE)
            )
        i = end + 1
    return snippets


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _literal_blocks(doc: str) -> list[str]:
    """The ``::`` literal blocks of a reStructuredText-style docstring."""
    lines = inspect.cleandoc(doc).splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].rstrip().endswith("::"):
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            body = []
            while j < len(lines) and (not lines[j].strip() or lines[j].startswith((" ", "\t"))):
                body.append(lines[j])
                j += 1
            if body:
                blocks.append(textwrap.dedent("\n".join(body)).strip() + "\n")
            i = j
        else:
            i += 1
    return blocks


def docstring_snippets(package: str = "kopt") -> list[Snippet]:
    """The ``::`` examples in the docstrings of ``package``'s public modules, classes and functions."""
    root = importlib.import_module(package)
    names = [package] + [m.name for m in pkgutil.walk_packages(root.__path__, package + ".")]
    snippets, seen = [], set()
    for name in names:
        if any(part.startswith("_") for part in name.split(".")) or name == "kopt.cli":
            continue
        module = importlib.import_module(name)
        objects = [(name, module)] + [
            (f"{name}.{attr}", obj)
            for attr, obj in vars(module).items()
            if not attr.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
            and getattr(obj, "__module__", None) == name
        ]
        for qualname, obj in objects:
            doc = obj.__doc__
            if not doc or id(obj) in seen:
                continue
            seen.add(id(obj))
            for k, code in enumerate(_literal_blocks(doc)):
                snippets.append(Snippet(f"{qualname}#{k}", "python", code))
    return snippets
