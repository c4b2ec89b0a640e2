"""Window on screen from process start, on a real X server (issue 11): where the time goes.

    .venv/bin/python tests/benchmarks/bench_startup.py [--runs 5] [--json]

Starts Xvfb + openbox (tests/smoke/xsession.py), then, per run:
- outside: `retrain-studio` (no arguments) as its own process; from just before it is spawned until
  `xdotool search --sync --onlyvisible` sees its window mapped (what a person sees), plus the CPU
  time the process used by then (from /proc), which load from other jobs does not inflate;
- inside: one process timing its phases (interpreter start, PySide6, numpy, our GUI modules, the
  QApplication, building the main window, show until the window's first Expose event), each in
  wall and CPU seconds.
Prints the medians. `python -X importtime -m app` then shows which imports dominate.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "smoke"))

from xsession import Display, missing_packages  # noqa: E402

PHASES = textwrap.dedent(
    """
    import json, os, sys, time
    marks = [("interpreter", float(sys.argv[1]), float(sys.argv[2]))]
    def mark(name):
        marks.append((name, time.time(), time.process_time()))
    import PySide6.QtWidgets
    mark("PySide6")
    import numpy
    mark("numpy")
    import app.cli, app.gui.qt_main_window
    mark("our modules")
    from PySide6.QtCore import QEvent, QObject, QTimer
    from PySide6.QtWidgets import QApplication
    from app.gui import qt_main_window
    app = QApplication(["retrain-studio"])
    qt_main_window.apply_theme(app)
    mark("QApplication")
    window = qt_main_window.MainWindow()
    mark("main window built")
    class Exposed(QObject):
        def eventFilter(self, obj, event):
            if event.type() == QEvent.Type.Expose and obj.isExposed() and len(marks) == 6:
                mark("shown until first expose")
                QTimer.singleShot(0, app.quit)
            return False
    watcher = Exposed()
    window.windowHandle() or window.winId()
    window.windowHandle().installEventFilter(watcher)
    window.show()
    QTimer.singleShot(20000, app.quit)
    app.exec()
    print(json.dumps(marks))
    os._exit(0)
    """
)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a live process has used (from /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def outside(display: Display, settings: Path) -> tuple[float, float]:
    """(wall s, CPU s) from spawning `python -m app` to its window mapped on the display."""
    env = display.env(QT_QPA_PLATFORM="xcb", XDG_CONFIG_HOME=str(settings), PYTHONPATH=str(REPO))
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "app"], env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while display.xdotool("search", "--onlyvisible", "--pid", str(process.pid), check=False).returncode:
            if process.poll() is not None or time.perf_counter() - start > 60:
                raise RuntimeError("the window did not appear")
            time.sleep(0.005)
        wall = time.perf_counter() - start
        cpu = cpu_seconds(process.pid)
    finally:
        process.terminate()
        process.wait(10)
    return wall, cpu


def inside(display: Display, settings: Path) -> list[tuple[str, float, float]]:
    """[(phase, wall s, CPU s)], each phase's own share."""
    env = display.env(QT_QPA_PLATFORM="xcb", XDG_CONFIG_HOME=str(settings), PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-c", PHASES, repr(time.time()), "0.0"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    marks = json.loads(result.stdout.strip().splitlines()[-1])
    return [(name, t - marks[i - 1][1], c - marks[i - 1][2]) for i, (name, t, c) in enumerate(marks) if i]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if missing_packages():
        raise SystemExit(f"needs: apt-get install {' '.join(missing_packages())}")
    settings = Path(tempfile.mkdtemp(prefix="startup-settings-"))
    with Display() as display:
        outside(display, settings)  # first run: files into the page cache, settings written
        runs = [outside(display, settings) for _ in range(args.runs)]
        phases = [inside(display, settings) for _ in range(args.runs)]
    result = {
        "window_mapped_wall_s": round(statistics.median(w for w, _ in runs), 3),
        "window_mapped_cpu_s": round(statistics.median(c for _, c in runs), 3),
        "phases": {
            name: {
                "wall_s": round(statistics.median(run[i][1] for run in phases), 3),
                "cpu_s": round(statistics.median(run[i][2] for run in phases), 3),
            }
            for i, (name, _, _) in enumerate(phases[0])
        },
    }
    first = result["phases"].pop(next(iter(result["phases"])))  # the interpreter's mark is the spawn time
    result["phases"] = {"interpreter start + PySide6": first, **result["phases"]}
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
