"""The main window as a user meets it: first launch, remembered settings, shortcuts, messages, themes.

Everything is driven with mouse clicks, key presses and typed text; no test calls a `_`-method.
"""

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import save_shot
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QKeySequence, QPalette
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QComboBox, QLabel, QPushButton

WCAG_AA = 4.5


def button(parent, text: str) -> QPushButton:
    return next(b for b in parent.findChildren(QPushButton) if b.text().replace("&", "") == text and b.isVisible())


def type_location(window, qtbot, text: str) -> None:
    """Select the backend location's text and type over it, as a user does."""
    edit = window.backend.location.lineEdit()
    qtbot.mouseClick(edit, Qt.MouseButton.LeftButton)
    QTest.keyClick(edit, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    QTest.keyClicks(edit, text)


def shortcut(window, keys: str) -> None:
    """Press a key sequence in the (active) window, as a user does."""
    if QApplication.activeWindow() is not window:
        window.activateWindow()
        QTest.qWaitForWindowActive(window)
    QTest.keySequence(window, QKeySequence(keys))


def test_window_opens_without_importing_tensorflow(isolated_settings):
    script = textwrap.dedent(f"""
        import os, sys, time
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
        start = time.perf_counter()
        from PySide6.QtCore import QSettings
        from PySide6.QtWidgets import QApplication
        QSettings.setDefaultFormat(QSettings.Format.IniFormat)
        QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, {str(isolated_settings)!r})
        app = QApplication([])
        from app.gui.qt_main_window import MainWindow
        window = MainWindow()
        window.show()
        app.processEvents()
        print(f"{{time.perf_counter() - start:.3f}}", "tensorflow" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    seconds, tf_loaded = out.stdout.split()
    print(f"window on screen after {seconds} s")
    assert tf_loaded == "False"


def _new_window(qtbot):
    from app.gui.qt_main_window import MainWindow

    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    return window


def test_first_launch_without_models_starts_on_train_then_remembers_the_page(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/RetrainStudio/models: a new user
    first = _new_window(qtbot)
    assert first.pages.currentWidget() is first.wizard
    assert first.sidebar.currentItem().text() == "Train"
    assert first.messages.text.text().startswith("Start here:") and "Use sample data" in first.messages.text.text()
    shortcut(first, "Ctrl+3")
    assert first.pages.currentWidget() is first.models
    assert first.messages.text.text() == ""  # the hint belongs to Train
    first.close()
    second = _new_window(qtbot)
    assert second.pages.currentWidget() is second.models and second.messages.text.text() == ""


def test_settings_persist_across_a_restart(qtbot, trained):
    from serving.double import TFServingDouble

    first = _new_window(qtbot)
    backend = next(c for c in first.findChildren(QComboBox) if c.accessibleName() == "Backend")
    with TFServingDouble({"clothes": trained["models"] / "clothes"}) as server:
        backend.setFocus()
        while backend.currentText() != "Remote REST":
            QTest.keyClick(backend, Qt.Key.Key_Down)
        type_location(first, qtbot, server.rest_url("clothes"))
        qtbot.mouseClick(button(first, "Check connection"), Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: first.backend.state == "ok", timeout=60_000)
        url = server.rest_url("clothes")
    first.resize(1111, 777)
    shortcut(first, "Ctrl+3")
    first.close()
    second = _new_window(qtbot)
    assert second.backend.choice().kind == "rest" and second.backend.choice().location == url
    assert second.size().width() == 1111 and second.pages.currentWidget() is second.models
    backend = next(c for c in second.findChildren(QComboBox) if c.accessibleName() == "Backend")
    backend.setFocus()
    QTest.keyClick(backend, Qt.Key.Key_Home)  # back to local: its own recent list
    assert second.backend.choice().kind == "tflite" and second.backend.choice().location != url


def test_a_local_model_says_which_version_it_is_before_it_is_opened(window, qtbot, trained, tmp_path):
    """Found under X: a local model read "Not checked" until its first image, as if it had to be checked first;
    a server still is, until it answers."""
    status = next(label for label in window.findChildren(QLabel) if label.accessibleName() == "Backend status")
    type_location(window, qtbot, str(trained["models"] / "clothes"))  # a model's folder: its newest version
    assert status.text() == "clothes version 1 · 5 classes · opens when first used"
    type_location(window, qtbot, str(trained["version_dir"] / "model.tflite"))
    assert status.text() == "model.tflite · opens when first used"
    type_location(window, qtbot, str(trained["models"] / "no such model"))
    assert status.text() == f"model not found: {trained['models'] / 'no such model'}"
    type_location(window, qtbot, str(trained["models"]))  # a folder of models, not a model
    assert status.text().endswith("holds no model version (expected NAME/1/saved_model.pb)")
    # found by attack under X: these read as healthy models, or raised on every key
    damaged = tmp_path / "damaged"
    shutil.copytree(trained["version_dir"], damaged / "1")
    (damaged / "1" / "metadata.json").write_text("[1, 2")
    type_location(window, qtbot, str(damaged))
    assert status.text().startswith(f"{damaged / '1' / 'metadata.json'} cannot be read (JSONDecodeError)")
    os.mkfifo(tmp_path / "pipe.tflite")
    type_location(window, qtbot, str(tmp_path / "pipe.tflite"))
    assert status.text() == f"{tmp_path / 'pipe.tflite'} is not a regular file"
    type_location(window, qtbot, "~zzq_no_such_user/x")
    assert status.text() == "model not found: ~zzq_no_such_user/x"
    window.backend.kind.setFocus()
    while window.backend.choice().kind != "grpc":
        QTest.keyClick(window.backend.kind, Qt.Key.Key_Down)
    assert status.text() == "Not checked"
    assert window.backend.owner is None  # nothing was opened to say it


def test_keyboard_shortcuts(window):
    shortcuts = {
        a.text().replace("&", ""): a.shortcut()
        for menu in window.menuBar().findChildren(type(window.menuBar().actions()[0].menu()))
        for a in menu.actions()
    }
    assert shortcuts["Open images…"] == QKeySequence(QKeySequence.StandardKey.Open)
    assert shortcuts["Quit"] == QKeySequence("Ctrl+Q")
    assert shortcuts["Train a new model"] == QKeySequence("Ctrl+T")
    assert shortcuts["Classify"] == QKeySequence("Ctrl+2")
    for keys, page in (("Ctrl+2", window.classify), ("Ctrl+3", window.models), ("Ctrl+1", window.wizard)):
        shortcut(window, keys)
        assert window.pages.currentWidget() is page


def _geometry(window):
    """Where the things a user aims at are, in window coordinates."""
    widgets = [window.backend, window.pages, window.messages, button(window, "Check connection")]
    widgets += [button(window, "Open images…")] if window.pages.currentWidget() is window.classify else []
    return [(w.mapTo(window, w.rect().topLeft()), w.size()) for w in widgets]


def test_messages_keep_the_layout_still_and_stay_on_their_page(window, qtbot, trained, tmp_path):
    shortcut(window, "Ctrl+2")
    QApplication.processEvents()
    before = _geometry(window)
    assert window.messages.text.text() == ""
    type_location(window, qtbot, str(tmp_path / "no-such-model"))
    shortcut(window, "Ctrl+K")  # check connection: an error raised on Classify
    qtbot.waitUntil(lambda: window.backend.state == "error", timeout=30_000)
    error = window.messages.text.text()
    assert error and window.messages.isVisible()
    QApplication.processEvents()
    assert _geometry(window) == before  # nothing moved: the message line is always there

    shortcut(window, "Ctrl+3")
    assert window.messages.text.text() == ""  # Classify's error is not Models' business
    assert "error" in window.sidebar.item(1).toolTip()  # but the side bar says Classify has one
    shortcut(window, "Ctrl+2")
    assert window.messages.text.text() == error  # shown again on return

    type_location(window, qtbot, str(trained["version_dir"]))
    shortcut(window, "Ctrl+K")
    qtbot.waitUntil(lambda: window.backend.state == "ok", timeout=60_000)
    # the success replaces the error (it arrives just after the status: the check runs a job after opening)
    qtbot.waitUntil(lambda: window.messages.text.text().startswith("Connected:"), timeout=10_000)
    assert window.sidebar.item(1).toolTip() == ""
    QApplication.processEvents()
    assert _geometry(window) == before
    qtbot.mouseClick(window.messages.close_button, Qt.MouseButton.LeftButton)
    assert window.messages.text.text() == "" and _geometry(window) == before


def distinct_colours(image) -> list[QColor]:
    """Every colour an image holds, once each (read as one array: per pixel, a line of text took a second)."""
    import numpy as np
    from PySide6.QtGui import QImage

    image = image.convertToFormat(QImage.Format.Format_ARGB32)
    pixels = np.frombuffer(image.constBits(), np.uint32, count=image.height() * image.bytesPerLine() // 4)
    return [QColor.fromRgba(int(v)) for v in np.unique(pixels)]


def contrast(a: QColor, b: QColor) -> float:
    """WCAG 2 contrast ratio of two colours."""

    def luminance(c: QColor) -> float:
        def channel(v: float) -> float:
            return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4

        return 0.2126 * channel(c.redF()) + 0.7152 * channel(c.greenF()) + 0.0722 * channel(c.blueF())

    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_selected_sidebar_item_is_readable_in_both_themes(qtbot, screenshots):
    from app.gui.qt_common import apply_theme

    app = QApplication.instance()
    try:
        for scheme in ("light", "dark"):
            apply_theme(app, scheme)
            palette = app.palette()
            colours = contrast(
                palette.color(QPalette.ColorRole.Highlight), palette.color(QPalette.ColorRole.HighlightedText)
            )
            window = _new_window(qtbot)
            shortcut(window, "Ctrl+2")
            QApplication.processEvents()
            sidebar = window.sidebar
            image = sidebar.grab(sidebar.visualItemRect(sidebar.currentItem())).toImage()
            background = QColor(image.pixelColor(image.width() - 8, image.height() // 2))
            rows = range(image.height() // 5, image.height() * 4 // 5)  # inside the rounded corners
            icon_part = [image.pixelColor(x, y) for x in range(6, 38) for y in rows]
            text_part = [image.pixelColor(x, y) for x in range(42, image.width() - 8) for y in rows]
            icon_ratio = max(contrast(background, c) for c in icon_part)
            text_ratio = max(contrast(background, c) for c in text_part)
            print(f"{scheme}: palette {colours:.1f}:1, rendered icon {icon_ratio:.1f}:1, text {text_ratio:.1f}:1")
            assert colours >= WCAG_AA and icon_ratio >= WCAG_AA and text_ratio >= WCAG_AA, scheme
            if scheme == "dark":
                save_shot(window, screenshots, "classify-dark")
            window.close()
    finally:
        apply_theme(app, "light")


def test_dark_theme_renders(qtbot, screenshots):
    from app.gui.qt_common import apply_theme

    app = QApplication.instance()
    try:
        assert apply_theme(app, "dark") == "dark"
        window = _new_window(qtbot)
        shortcut(window, "Ctrl+2")
        app.processEvents()
        image = window.grab().toImage()
        background = image.pixelColor(image.width() // 2, image.height() - 5)
        assert background.lightness() < 80  # the window really is dark
        window.close()
    finally:
        apply_theme(app, "light")


def test_a_success_replaces_its_own_sources_error_but_not_anothers(window, qtbot):
    """The message line's rule, from the sources' side: each view's next message replaces its last one."""
    bar = window.messages
    shortcut(window, "Ctrl+2")
    window.classify.message.emit("Could not read the folder.", "error")
    window.backend.message.emit("Connected: clothes version 1", "info")
    assert bar.text.text() == "Connected: clothes version 1"  # the newest on this page
    qtbot.mouseClick(bar.close_button, Qt.MouseButton.LeftButton)
    assert bar.text.text() == "Could not read the folder."  # Classify's error waits for its cause
    window.classify.message.emit("Results saved to /tmp/x.csv.", "info")  # Classify's next success
    assert bar.text.text() == "Results saved to /tmp/x.csv."
    qtbot.mouseClick(bar.close_button, Qt.MouseButton.LeftButton)
    assert bar.text.text() == ""


def test_messages_match_the_theme_and_stay_readable(qtbot):
    """A dark window shows dark message boxes (a pale pink box was glaring there), each >= 4.5:1."""
    from app.gui.qt_common import apply_theme

    app = QApplication.instance()
    try:
        for scheme in ("light", "dark"):
            apply_theme(app, scheme)
            window = _new_window(qtbot)
            for level in ("error", "warning", "info"):
                window.messages.show_message(f"A {level} to read.", level)
                QApplication.processEvents()
                image = window.messages.grab().toImage()
                background = QColor(image.pixelColor(image.width() // 2, 3))
                text = window.messages.text
                glyphs = text.grab().toImage()
                ink = distinct_colours(glyphs)
                assert (background.lightness() < 100) == (scheme == "dark"), (scheme, level, background.name())
                assert max(contrast(background, c) for c in ink) >= WCAG_AA, (scheme, level)
            window.close()
    finally:
        apply_theme(app, "light")


def test_a_long_backend_status_ends_in_an_ellipsis_inside_the_window(window, qtbot):
    """A failed connection's long sentence must not run off the window's edge: it ends in "…" on screen and is
    kept whole in the label's text and tooltip."""
    from PySide6.QtWidgets import QComboBox, QLabel

    window.resize(1024, 700)
    assert window.minimumSizeHint().width() <= 1024  # a local model's bar (its folder button too) fits as well
    kind = next(c for c in window.findChildren(QComboBox) if c.accessibleName() == "Backend")
    kind.setFocus()
    QTest.keyClick(kind, Qt.Key.Key_Home)
    for _ in range(kind.findText("Remote REST")):
        QTest.keyClick(kind, Qt.Key.Key_Down)
    location = next(c for c in window.findChildren(QComboBox) if c.accessibleName() == "Model or server")
    location.lineEdit().selectAll()
    QTest.keyClicks(location.lineEdit(), "127.0.0.1:9/" + "a_model_with_a_very_long_name_" * 3)
    QTest.keyClick(location.lineEdit(), Qt.Key.Key_Return)
    QTest.keyClick(window, Qt.Key.Key_K, Qt.KeyboardModifier.ControlModifier)  # Check connection
    status = next(label for label in window.findChildren(QLabel) if label.accessibleName() == "Backend status")
    qtbot.waitUntil(
        lambda: (
            "a_model_with_a_very_long_name_" * 3 in status.text()
            or "127.0.0.1:9" in status.text()
            and len(status.text()) > 60
        ),
        timeout=20_000,
    )
    QApplication.processEvents()
    assert status.fontMetrics().horizontalAdvance(status.text()) > status.width()  # really too long to fit
    assert window.width() <= 1024 and window.minimumSizeHint().width() <= 1024  # the window did not have to grow
    assert status.mapTo(window, status.rect().topRight()).x() <= window.width()
    image = status.grab().toImage()  # what is on screen: the text ends with "…" before the edge, not cut mid-letter
    background = image.pixelColor(image.width() - 1, 0)
    ink = [x for x in range(image.width()) for y in range(image.height()) if image.pixelColor(x, y) != background]
    assert ink and max(ink) < image.width() - 2
    assert status.toolTip() == status.text()


def test_a_message_of_one_long_word_does_not_widen_the_window(window, qtbot):
    """Found by attack under X: a 4,000-character path in an error made the window 29,592 px wide, its buttons
    off the screen; the message line takes the width it is given."""
    window.resize(1024, 700)
    qtbot.waitUntil(lambda: window.width() == 1024)
    QApplication.clipboard().setText("/tmp/" + "a" * 3995)  # pasted: typed, it took 4,000 key events
    type_location(window, qtbot, "")
    QTest.keyClick(window.backend.location.lineEdit(), Qt.Key.Key_V, Qt.KeyboardModifier.ControlModifier)
    assert len(window.backend.location.currentText()) == 4000
    QTest.keyClick(window, Qt.Key.Key_K, Qt.KeyboardModifier.ControlModifier)  # Check connection
    qtbot.waitUntil(lambda: "a" * 100 in window.messages.text.text(), timeout=20_000)
    QApplication.processEvents()
    assert window.minimumSizeHint().width() <= 1024 and window.width() == 1024


def test_the_window_is_never_narrower_than_what_it_shows(window, qtbot, trained):
    """Found under X: the window's fixed minimum (900 px) was below what Classify's buttons and a local model's
    bar need, so at 900 px "Compare backends…" read "Compare backend" and "Open images…" lost its edge."""
    type_location(window, qtbot, str(trained["version_dir"]))
    shortcut(window, "Ctrl+2")
    assert window.pages.currentWidget() is window.classify
    window.resize(800, 560)  # narrower than anything it can show: it stops where its contents would be cut
    qtbot.waitUntil(lambda: window.width() != 800 or window.minimumSizeHint().width() <= 800)
    assert window.width() >= window.minimumSizeHint().width() and window.width() <= 1024
    for shown in (b for b in window.findChildren(QPushButton) if b.isVisible()):
        assert shown.width() >= shown.sizeHint().width(), shown.text()
        assert shown.mapTo(window, shown.rect().topRight()).x() <= window.width(), shown.text()


class RealApp:
    """``python -m app`` in a process of its own (offscreen), with its own HOME; what it shows is read from its UI
    log (app/gui/qt_probe.py)."""

    def __init__(self, home: Path, ui_log: Path):
        env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}  # its state goes under HOME
        env |= {"HOME": str(home), "QT_QPA_PLATFORM": "offscreen", "RETRAIN_STUDIO_UI_LOG": str(ui_log)}
        self.ui_log = ui_log
        self.process = subprocess.Popen([sys.executable, "-m", "app"], env=env, stderr=subprocess.DEVNULL)

    def wait_for(self, text: str, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while not (self.ui_log.exists() and text in self.ui_log.read_text(encoding="utf-8")):
            assert time.monotonic() < deadline, f"{text!r} never shown"
            time.sleep(0.1)

    def __enter__(self):
        return self

    def __exit__(self, *_):
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


@pytest.mark.thorough  # over a second: two app processes
def test_a_crash_is_told_at_the_next_start_with_what_the_app_was_doing(tmp_path):
    """Found under X: the window once vanished without a word (nothing on stderr). A native crash now leaves every
    thread's stack in the user's state folder, and the next start says so, naming the file."""
    import signal

    home = tmp_path / "home"
    state = home / ".local" / "state" / "retrain-studio"
    with RealApp(home, tmp_path / "first.jsonl") as first:
        first.wait_for("Choose your photos")
        first.process.send_signal(signal.SIGSEGV)  # as a crash in a native library ends the process
        assert first.process.wait(timeout=30) == -signal.SIGSEGV
    assert "Segmentation fault" in (state / "crash.log").read_text()

    with RealApp(home, tmp_path / "second.jsonl") as second:
        kept = state / "last-crash.log"
        second.wait_for(f"Retrain Studio stopped unexpectedly last time; what it was doing is in {kept}.")
    assert "Segmentation fault" in kept.read_text() and "File " in kept.read_text()  # the stacks at that moment
    assert (state / "crash.log").read_text() == ""  # the second run ended without a crash


@pytest.mark.parametrize("where", ["a named pipe", "a link to another file"])
def test_what_stands_where_the_crash_log_goes_neither_stops_the_start_nor_is_written_through(tmp_path, where):
    """Hostile: a pipe at the crash log's name blocked the start (opening it waits for a reader); a link there
    made the log truncate the file it points to."""
    import signal

    home = tmp_path / "home"
    state = home / ".local" / "state" / "retrain-studio"
    state.mkdir(parents=True)
    elsewhere = tmp_path / "precious.txt"
    elsewhere.write_text("not the app's")
    if where == "a named pipe":
        os.mkfifo(state / "crash.log")
    else:
        (state / "crash.log").symlink_to(elsewhere)
    with RealApp(home, tmp_path / "ui.jsonl") as app:
        app.wait_for("Choose your photos", seconds=30)
        app.process.send_signal(signal.SIGSEGV)
        app.process.wait(timeout=30)
    assert elsewhere.read_text() == "not the app's"
    assert "stopped unexpectedly" not in (tmp_path / "ui.jsonl").read_text()  # what it found there was no crash
