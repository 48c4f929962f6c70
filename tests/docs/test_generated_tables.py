"""README figures regenerate: a table after ``<!-- generated: path -->`` is a table of that file.

The scripts of ``examples/`` and ``benchmarks/`` write their tables (with versions and machine)
to ``examples/results/*.md`` / ``benchmarks/results/*.md``; a README table that was edited by hand,
or a results file regenerated without updating the README, fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MARKER = re.compile(r"^<!-- generated: (\S+) -->$")
# Tables that are not measurements (the error reference), and sections whose tables other branches are
# regenerating right now (their owners add the markers with the new files; then drop them from here).
NOT_FIGURES = ("## Errors you can expect",)
PENDING_ELSEWHERE = ("### kopt against TFMOT",)


def tables(lines: list[str]) -> list[tuple[int, str]]:
    """(first line index, text) of every Markdown table: runs of lines starting with ``|``."""
    found, i = [], 0
    while i < len(lines):
        if lines[i].startswith("|"):
            j = i
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            found.append((i, "\n".join(line.rstrip() for line in lines[i:j])))
            i = j
        else:
            i += 1
    return found


def readme_tables() -> list[dict]:
    """Every README table with its section and the file its marker names (None without one)."""
    lines = README.read_text(encoding="utf-8").splitlines()
    out = []
    for start, text in tables(lines):
        section = next((lines[k] for k in range(start, -1, -1) if lines[k].startswith("#")), "")
        before = next((lines[k].strip() for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        marker = MARKER.match(before)
        out.append({"line": start + 1, "section": section, "text": text, "file": marker and marker.group(1)})
    return out


GENERATED = [t for t in readme_tables() if t["file"]]


@pytest.mark.parametrize("table", GENERATED, ids=[f"README.md:{t['line']}" for t in GENERATED])
def test_readme_table_is_its_generated_file(table):
    path = ROOT / table["file"]
    assert path.is_file(), f"README.md:{table['line']} names {table['file']}, which does not exist"
    generated = [text for _, text in tables(path.read_text(encoding="utf-8").splitlines())]
    assert table["text"] in generated, (
        f"README.md:{table['line']} differs from every table in {table['file']}: rerun the script that writes it "
        f"and copy its table into README.md.\nREADME:\n{table['text']}\n\n{table['file']}:\n" + "\n\n".join(generated)
    )


def test_every_readme_figure_table_names_its_generated_file():
    unmarked = [
        f"README.md:{t['line']} ({t['section']})"
        for t in readme_tables()
        if not t["file"] and not t["section"].startswith(NOT_FIGURES + PENDING_ELSEWHERE)
    ]
    assert not unmarked, (
        "README tables without '<!-- generated: <results file> -->' before them (a script must write each "
        f"figure table): {unmarked}"
    )
