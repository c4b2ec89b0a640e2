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
    pytest = ".venv/bin/python -m pytest -m 'not slow'"
    assert steps == [".venv/bin/ruff check .", ".venv/bin/ruff format --check .", pytest]


def test_the_quick_default_run_leaves_out_only_what_ci_s_run_adds():
    """`pytest` alone skips the `thorough` tests and the benchmarks; CI's `-m 'not slow'` replaces that selection,
    so it runs the `thorough` tests too. A marker expression is Python-like: evaluate both on each kind of test."""
    import shlex
    import tomllib

    options = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["pytest"]["ini_options"]
    addopts = shlex.split(options["addopts"])
    default = addopts[addopts.index("-m") + 1]
    ci = shlex.split(readme_test_command().split("&&")[-1])[-1]
    declared = {line.split(":")[0] for line in options["markers"]}
    assert {"slow", "thorough"} <= declared

    def selects(expression: str, marks: set[str]) -> bool:
        return eval(expression, {}, {name: name in marks for name in declared})  # noqa: S307 (our own config)

    assert [selects(default, marks) for marks in ({}, {"thorough"}, {"slow"})] == [True, False, False]
    assert [selects(ci, marks) for marks in ({}, {"thorough"}, {"slow"})] == [True, True, False]
