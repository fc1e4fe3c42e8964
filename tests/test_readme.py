"""The README's code blocks run as written (slow: `pytest -m slow`, run by CI)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _python_block(after_heading: str) -> str:
    text = README.read_text()
    section = text.split(after_heading, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_your_own_objective_snippet(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(_python_block("## Your own objective"), "README.md", "exec"), namespace)  # noqa: S102
    summary = namespace["summary"]
    assert summary.verdict.name == "MULTIPLE_LEVELS"  # two wells, the README says so
    assert len(summary.minimum_values) == 2
    assert (tmp_path / "runs" / "mine" / "report.md").is_file()
