"""GUI fixtures: offscreen Qt, settings in a temp folder, a screenshot folder, drag-and-drop helpers."""

from __future__ import annotations

import faulthandler
import gc
import linecache
import os
import re
import tempfile
import threading
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPointF, QSettings, Qt, QTimer, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QFileDialog, QLineEdit, QMessageBox


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path, monkeypatch):
    """Settings and the home folder in the test's own folder, before any window exists: the default models
    folder is ~/RetrainStudio/models, and a wizard run with it trained into the real home's (87 versions there)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    yield tmp_path / "settings"


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_teardown(item):
    """Answer Yes to every question asked while a test's windows close (pytest-qt closes them here).

    A test that fails while a training runs leaves its window to ask "Stop the training?" on close, and nobody
    answers: the run hung without a word, because pytest-timeout stops watching a test once it has failed."""
    answer = None
    if QApplication.instance() is not None:
        answer = QTimer()
        answer.setInterval(100)
        answer.timeout.connect(_answer_yes)
        answer.start()
    yield
    if answer is not None:
        answer.stop()


def _answer_yes() -> None:
    question = QApplication.activeModalWidget()
    if isinstance(question, QMessageBox):
        question.done(QMessageBox.StandardButton.Yes)
    elif question is not None:
        question.reject()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory) -> Path:
    """Where tests save screenshots of every main screen (set RETRAIN_STUDIO_SCREENSHOTS to keep them)."""
    folder = os.environ.get("RETRAIN_STUDIO_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_shot(widget, folder: Path, name: str) -> Path:
    QApplication.processEvents()
    path = folder / f"{name}.png"
    assert widget.grab().save(str(path)), f"could not save {path}"
    return path


def drop(widget, paths) -> None:
    """A real drag-enter / drop sequence carrying file URLs, as a file manager sends it."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    centre = widget.rect().center()
    try:  # PySide6 6.12 takes a QPointF (a QPoint is deprecated there); 6.11 only a QPoint
        enter = QDragEnterEvent(
            QPointF(centre), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
        )
    except TypeError:
        enter = QDragEnterEvent(
            centre, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
        )
    QApplication.sendEvent(widget, enter)
    assert enter.isAccepted()
    event = QDropEvent(
        QPointF(centre), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    )
    QApplication.sendEvent(widget, event)


def _waited_for_a_cpu_s() -> float:
    """Seconds this thread has spent runnable but waiting for a CPU (``/proc/thread-self/schedstat``'s second
    field), 0.0 where the kernel does not say."""
    try:
        return int(Path("/proc/thread-self/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


class GapMeter:
    """A 10 ms QTimer that records the longest gap between its ticks (event-loop stalls).

    A stall is time the GUI thread could not run its events: working, or sleeping on a lock (the interpreter
    lock held by a busy thread included). Time it was ready to run but every CPU was busy with other processes
    (the rest of the suite on a 2-core machine) is the machine's, not the app's: ``longest_ms`` leaves it out,
    ``longest_wall_ms`` keeps it.

    A watchdog thread looks at the GUI thread once a tick is ``WATCH_AFTER_S`` late and keeps what it saw (its
    Python stack, its kernel state and wait channel) as ``longest_where``: a stall seen once in many runs
    under load says where it was, not only how long.
    """

    WATCH_AFTER_S = 0.1

    def __init__(self):
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.timeout.connect(self._tick)
        self.longest_ms = 0.0
        self.longest_wall_ms = 0.0
        self.longest_where = ""
        self.ticks = 0
        self._last = None
        self._seen: dict[float, str] = {}  # tick time -> where the GUI thread was after it, once it was late
        self._watching = False
        self._gui_thread = threading.get_ident()

    def _tick(self):
        now, waited = time.perf_counter(), _waited_for_a_cpu_s()
        if self._last is not None:
            wall = (now - self._last[0]) * 1000
            self.longest_wall_ms = max(self.longest_wall_ms, wall)
            stall = wall - (waited - self._last[1]) * 1000
            if stall > self.longest_ms:
                self.longest_ms = stall
                self.longest_where = self._seen.pop(self._last[0], "")
        self._last = (now, waited)
        self.ticks += 1

    def _watch(self):
        tid = threading.main_thread().native_id if self._gui_thread == threading.main_thread().ident else None
        while self._watching:
            time.sleep(0.01)
            last = self._last
            if last is None or last[0] in self._seen or time.perf_counter() - last[0] < self.WATCH_AFTER_S:
                continue
            stacks = _python_stacks()
            gui = stacks.pop(self._gui_thread, [])
            stack = "".join(_frame_text(*frame, source=True) for frame in gui[-8:]) or "(no Python frame)\n"
            stacks.pop(threading.get_ident(), None)
            others = "".join(  # a thread holding the interpreter lock would be among them
                f"  other thread {ident:#x}:" + _frame_text(*frames[-1]) for ident, frames in stacks.items() if frames
            )
            self._seen[last[0]] = f"{_kernel_state(tid)}\n{stack}{others}"

    def start(self):
        # The test process holds TensorFlow's ~300,000 objects (the app's window process never imports it for
        # TFLite): one full collection of them took 120-220 ms here, a stall of the test runner's, not the app's.
        # Frozen, they are left out of collections until stop(); what the app makes meanwhile is collected as ever.
        gc.collect()
        gc.freeze()
        self._last = None
        self._watching = True
        threading.Thread(target=self._watch, name="gap-meter-watchdog", daemon=True).start()
        self.timer.start()

    def stop(self):
        self.timer.stop()
        self._watching = False
        gc.unfreeze()


def _python_stacks() -> dict[int, list[tuple[str, int, str]]]:
    """Every thread's Python stack as {thread ident: [(file, line, function), ...]}, innermost last, read from
    ``faulthandler.dump_traceback``: the documented way to see the frames of threads other than this one."""
    with tempfile.TemporaryFile() as out:
        faulthandler.dump_traceback(out, all_threads=True)
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    stacks: dict[int, list[tuple[str, int, str]]] = {}
    frames: list[tuple[str, int, str]] = []
    for line in text.splitlines():
        if thread := re.match(r"(?:Current thread|Thread) (0x[0-9a-f]+)", line):
            frames = stacks.setdefault(int(thread.group(1), 16), [])
        elif frame := re.match(r'\s+File "(.*)", line (\d+) in (.*)', line):
            frames.insert(0, (frame.group(1), int(frame.group(2)), frame.group(3)))  # it says the innermost first
    return stacks


def _frame_text(file: str, line: int, function: str, source: bool = False) -> str:
    """One frame as a traceback prints it, with its source line when ``source``."""
    code = linecache.getline(file, line).strip() if source else ""
    return f'  File "{file}", line {line}, in {function}\n' + (f"    {code}\n" if code else "")


def _kernel_state(tid: int | None) -> str:
    """A thread's scheduler state (R running, S sleeping, D waiting on the disk) and what it waits in."""
    if tid is None:
        return "kernel state unknown"
    try:
        task = Path(f"/proc/self/task/{tid}")
        state = task.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0]
        return f"kernel state {state}, waiting in {task.joinpath('wchan').read_text() or '-'}"
    except (OSError, IndexError):
        return "kernel state unknown"


@pytest.fixture
def window(qtbot):
    from app.gui.qt_main_window import MainWindow

    win = MainWindow()
    qtbot.addWidget(win)
    win.resize(1280, 800)
    win.show()
    qtbot.waitExposed(win)
    yield win
    win.close()


def answer_next_file_dialog(path: Path, chosen: list, record=lambda dialog, line: dialog.windowTitle()) -> None:
    """When the next modal file dialog opens, type ``path`` into its name line as a user would and press Return.

    Call it before the click that opens the dialog (its ``exec`` blocks the test). ``record(dialog, line)`` is
    appended to ``chosen`` first, so the test can check which dialog it was and what it read.
    """

    def fill():
        dialog = QApplication.activeModalWidget()
        if not isinstance(dialog, QFileDialog):
            QTimer.singleShot(20, fill)
            return
        QTimer.singleShot(500, lambda: type_path(dialog))  # once its folder view has loaded

    def type_path(dialog):
        line = dialog.findChild(QLineEdit, "fileNameEdit")
        line.setFocus()
        QTest.keyClick(line, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
        QTest.keyClicks(line, str(path))
        chosen.append(record(dialog, line))
        QTest.keyClick(line, Qt.Key.Key_Return)

    QTimer.singleShot(0, fill)
