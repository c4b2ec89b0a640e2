"""The real ``retrain-studio`` command line, run as a child process the way a user's shell runs it."""

from __future__ import annotations

import subprocess
import sys


def cli(*args, text: bool = True, env=None, cwd=None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m app *args`` (each argument passed through ``str``), its output captured; ``text=False`` keeps
    the raw bytes (for output that may not be valid UTF-8)."""
    return subprocess.run(
        [sys.executable, "-m", "app", *map(str, args)],
        capture_output=True,
        text=text,
        env=env,
        cwd=cwd,
        timeout=timeout,
    )
