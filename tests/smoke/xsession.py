"""A real X session for the smoke test: Xvfb on a free display, openbox, xdotool input, ImageMagick shots,
the app as its own process, and the app's UI log (app/gui/qt_probe.py) read as the user's eyes.

Nothing here calls app code: the app is driven with real key presses and mouse clicks only.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

X_TOOLS = {"Xvfb": "xvfb", "openbox": "openbox", "xdotool": "xdotool", "import": "imagemagick"}  # tool: apt package
TF_NOISE = re.compile(r"^(I0000|W0000|E0000|WARNING: All log messages|Extension modules:)")
QT_THREAD_WARNING = re.compile(r"(different|another) thread|outside the GUI thread|not safe to use pixmaps")


class StepFailed(AssertionError):
    pass


class Crashed(StepFailed):
    pass


def missing_packages() -> list[str]:
    return [package for tool, package in X_TOOLS.items() if shutil.which(tool) is None]


class Display:
    """Xvfb on the first free display number (-displayfd) plus openbox, which returns focus after dialogs."""

    def __init__(self, size: str = "1280x800x24"):
        self.size = size
        self.processes: list[subprocess.Popen] = []
        self.name = ""

    def __enter__(self) -> Display:
        read, write = os.pipe()
        xvfb = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write), "-screen", "0", self.size, "-nolisten", "tcp"],
            pass_fds=(write,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.processes.append(xvfb)
        os.close(write)
        number = b""
        deadline = time.monotonic() + 20
        while not number.endswith(b"\n") and time.monotonic() < deadline:
            if select.select([read], [], [], 0.2)[0]:
                chunk = os.read(read, 16)
                if not chunk:
                    break
                number += chunk
        os.close(read)
        if not number.strip().isdigit():
            self.__exit__()
            raise RuntimeError("Xvfb did not start")
        self.name = ":" + number.decode().strip()
        self.processes.append(
            subprocess.Popen(["openbox"], env=self.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
        deadline = time.monotonic() + 20  # openbox is up once it answers EWMH questions
        while self.xdotool("get_num_desktops", check=False).returncode != 0:
            if time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError("openbox did not start")
            time.sleep(0.1)
        return self

    def __exit__(self, *exc) -> None:
        for process in reversed(self.processes):
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()

    def env(self, **extra) -> dict:
        return {**os.environ, "DISPLAY": self.name, **extra}

    def xdotool(self, *args, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["xdotool", *args], env=self.env(), capture_output=True, text=True, check=check, timeout=30
        )

    # --- a person's hands and eyes ----------------------------------------------------
    def key(self, *combos: str) -> None:
        self.xdotool("key", "--delay", "60", *combos)

    def type(self, text: str) -> None:
        self.xdotool("type", "--delay", "15", text)

    def click(self, record: dict) -> None:
        """A left click in the middle of what the UI log says is on screen."""
        x, y = record["x"] + record["w"] // 2, record["y"] + record["h"] // 2
        self.xdotool("mousemove", str(x), str(y), "click", "1")  # --sync hangs when the pointer is already there

    def screenshot(self, path: Path) -> None:
        subprocess.run(
            ["import", "-window", "root", str(path)], env=self.env(), check=True, timeout=30, capture_output=True
        )


class UiLog:
    """What the app shows now (state) and ever showed (history), from its JSON-lines UI log."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0
        self.state: dict[str, dict] = {}
        self.history: list[dict] = []
        self.longest_stall_ms = 0.0
        self.recent_stall_ms = 0.0  # since the caller last reset it (per step)
        self.stalls: list[float] = []

    def poll(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        for line in data[:end].decode("utf-8", "replace").splitlines():
            record = json.loads(line)
            if record["kind"] == "stall":
                self.longest_stall_ms = max(self.longest_stall_ms, record["ms"])
                self.recent_stall_ms = max(self.recent_stall_ms, record["ms"])
                if record["ms"] > 250:
                    self.stalls.append(record["ms"])
            elif record["kind"] == "gone":
                self.state.pop(record["id"], None)
            else:
                self.state[record["id"]] = record
                self.history.append(record)

    def find(self, kind: str | None = None, text: str | None = None, window: str | None = None, **fields) -> list[dict]:
        """Records on screen now; ``text`` and ``window`` are regular expressions (searched)."""
        return [
            r
            for r in self.state.values()
            if (kind is None or r["kind"] == kind)
            and (text is None or re.search(text, r.get("text", "") or " | ".join(r.get("cells", []))))
            and (window is None or re.search(window, r.get("window", "")))
            and all(r.get(k) == v for k, v in fields.items())
        ]

    def windows(self) -> list[str]:
        return [r["window"] for r in self.state.values() if r["kind"] == "window"]


class App:
    """``retrain-studio`` as its own process, with every user folder in ``home``."""

    def __init__(self, display: Display, home: Path, logs: Path, extra_env: dict | None = None):
        self.display, self.home, self.logs = display, home, logs
        self.extra_env = extra_env or {}
        self.process: subprocess.Popen | None = None
        self.runs = 0

    def start(self) -> UiLog:
        self.runs += 1
        self.ui_log = self.logs / f"ui-{self.runs}.jsonl"
        self.stderr_path = self.logs / f"stderr-{self.runs}.log"
        env = self.display.env(
            QT_QPA_PLATFORM="xcb",
            HOME=str(self.home),
            XDG_CONFIG_HOME=str(self.home / ".config"),
            XDG_DATA_HOME=str(self.home / ".local/share"),
            XDG_CACHE_HOME=str(self.home / ".cache"),
            RETRAIN_STUDIO_UI_LOG=str(self.ui_log),
            RETRAIN_STUDIO_WATCHDOG="1",
            PYTHONUNBUFFERED="1",
            PYTHONFAULTHANDLER="1",  # a crash prints every thread's stack
            **self.extra_env,
        )
        env.pop("QT_QPA_PLATFORMTHEME", None)
        env.pop("XDG_CURRENT_DESKTOP", None)
        for folder in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"):  # as a desktop login has them
            Path(env[folder]).mkdir(parents=True, exist_ok=True)
        script = Path(sys.executable).parent / "retrain-studio"
        if not script.exists():
            raise StepFailed(f"{script} is missing: install the app into this environment (pip install -e .)")
        with (self.logs / f"stdout-{self.runs}.log").open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen([str(script)], env=env, stdout=out, stderr=err, cwd=self.home)
        self.ui = UiLog(self.ui_log)
        return self.ui

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
            raise Crashed(f"the app {how}; last stderr lines: {self.stderr_tail()!r}")

    def stderr_tail(self, lines: int = 3) -> str:
        """Python's fatal error and the crashing thread's innermost frames, else the app's own last lines."""
        text = self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""
        own = [line.strip()[:200] for line in text.splitlines() if line.strip() and not TF_NOISE.match(line)]
        fatal = next((i for i, line in enumerate(own) if line.startswith("Fatal Python error")), None)
        if fatal is not None:  # the frames of the thread that crashed, the app's own first
            frames = [
                line
                for line in itertools.takewhile(lambda text: not text.startswith("Thread 0x"), own[fatal + 1 :])
                if line.startswith("File")
            ]
            return " | ".join([own[fatal]] + ([f for f in frames if "/app/" in f] or frames)[:4])
        return " | ".join(own[-lines:])

    def problems(self) -> list[str]:
        """Tracebacks (their last line) and Qt's warnings about objects used from the wrong thread."""
        text = self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""
        found = [block.strip().splitlines()[-1] for block in text.split("Traceback (most recent call last):")[1:]]
        return found + [line for line in text.splitlines() if QT_THREAD_WARNING.search(line)]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def wait_for(app: App, what: str, check, timeout: float = 30.0, interval: float = 0.1):
    """Poll the UI log until ``check()`` returns something true; fail if the app dies or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        app.ui.poll()
        app.check_alive()
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise StepFailed(f"{what} did not appear within {timeout:.0f} s (windows: {app.ui.windows()})")
        time.sleep(interval)
