"""CI runs exactly the test command README gives, and that command lints and checks formatting first."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_test_command() -> str:
    """The command under README's "# 3." comment in its "Three commands" block."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    found = re.search(r"^# 3\..*\n(?P<command>[^#\n].*)$", text, re.MULTILINE)
    assert found, "README's third command (under '# 3.') is missing"
    return found["command"].strip()


def test_ci_runs_readme_test_command_word_for_word():
    command = readme_test_command()
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    assert command in ci_lines, f".ci/run does not run README's test command {command!r}"
    assert ci_lines.index(command) == max(i for i, line in enumerate(ci_lines) if line and not line.startswith("#"))


def test_readme_test_command_lints_and_checks_formatting_before_pytest():
    steps = [step.strip() for step in readme_test_command().split("&&")]
    assert steps == [".venv/bin/ruff check .", ".venv/bin/ruff format --check .", ".venv/bin/python -m pytest"]
