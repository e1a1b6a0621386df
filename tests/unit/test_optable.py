"""docs/events.md's generated operation table (supervisor/optable.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor import optable
from supervisor.operations import OPERATIONS

EVENTS_DOC = Path(__file__).parents[2] / "docs" / "events.md"


def test_docs_events_md_s_operation_table_is_the_generated_one() -> None:
    document = EVENTS_DOC.read_text()
    assert optable.with_table(document) == document, (
        "docs/events.md's operation table differs from the declarations (supervisor/operations.py); regenerate it with "
        "`python -m supervisor.optable --update docs/events.md`")


def test_the_generated_table_names_every_argument_and_error_of_each_operation() -> None:
    table = optable.markdown_table()
    rows = {line.split("`")[1]: line for line in table.splitlines() if line.startswith("| `")}
    assert list(rows) == list(OPERATIONS)
    for name, operation in OPERATIONS.items():
        for argument in operation.arguments.values():
            assert (f"`{argument.name}`" if argument.required else f"`{argument.name}`?") in rows[name]
        for code in operation.errors:
            assert f"`{code}`" in rows[name].rsplit(" | ", 1)[1]


def test_the_generated_table_is_refused_where_its_markers_are_missing() -> None:
    with pytest.raises(ValueError, match="no generated operation table"):
        optable.with_table("# the bus\n\nno table here\n")


def test_the_update_command_rewrites_only_the_table(tmp_path: Path) -> None:
    page = tmp_path / "events.md"
    page.write_text(f"before\n{optable.TABLE_BEGIN}\n| stale |\n{optable.TABLE_END}\nafter\n")
    assert optable.main(["--update", str(page)]) == 0
    text = page.read_text()
    assert text.startswith(f"before\n{optable.TABLE_BEGIN}\n\n| op | arguments | reply |")
    assert "| stale |" not in text and text.endswith(f"{optable.TABLE_END}\nafter\n")
    assert "| `container.run` | `spec`" in text


def test_the_module_runs_as_the_docs_say() -> None:
    import subprocess
    import sys

    table = subprocess.run([sys.executable, "-m", "supervisor.optable", "--markdown"], capture_output=True, text=True,
                           cwd=Path(__file__).parents[2], check=True).stdout
    assert table == optable.markdown_table()
