"""The main window: starts without TensorFlow, remembers settings, lists models, keyboard shortcuts."""
import subprocess
import sys
import textwrap

from PySide6.QtGui import QKeySequence

from conftest import save_shot


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


def test_settings_persist_across_a_restart(qtbot, trained):
    from app.gui.qt_main_window import MainWindow

    first = MainWindow()
    qtbot.addWidget(first)
    first.show()
    qtbot.waitExposed(first)
    first.backend.set_choice("rest", "http://127.0.0.1:8501/v1/models/clothes")
    first.backend._remember_location()
    first.resize(1111, 777)
    first.show_page(2)
    first.close()
    second = MainWindow()
    qtbot.addWidget(second)
    second.show()
    qtbot.waitExposed(second)
    assert second.backend.choice().kind == "rest"
    assert second.backend.choice().location == "http://127.0.0.1:8501/v1/models/clothes"
    assert second.size().width() == 1111 and second.pages.currentIndex() == 2
    second.backend.kind.setCurrentIndex(0)  # back to local: its own recent list
    assert second.backend.choice().kind == "tflite"


def test_models_view_lists_and_deletes(window, qtbot, trained, tmp_path, screenshots):
    import shutil

    models = tmp_path / "models"
    shutil.copytree(trained["models"] / "clothes", models / "clothes")
    shutil.copytree(trained["models"] / "clothes" / "1", models / "clothes" / "2")
    window.show_page(2)
    window.models.set_folder(str(models))
    top = window.models.tree.topLevelItem(0)
    assert top.text(0) == "clothes" and top.childCount() == 2
    assert top.child(0).text(0) == "version 2" and top.child(0).text(1) == "5"
    assert top.child(0).text(2).endswith("%") and "model.tflite" in top.child(0).text(6)
    save_shot(window, screenshots, "models")
    window.models.tree.setCurrentItem(top.child(0))
    window.models._delete(confirm=False)
    assert [p.name for p in (models / "clothes").iterdir()] == ["1"]
    window.models.tree.setCurrentItem(window.models.tree.topLevelItem(0).child(0))
    window.models._open()
    assert window.backend.choice().location == str(models / "clothes" / "1")


def test_keyboard_shortcuts(window):
    shortcuts = {a.text().replace("&", ""): a.shortcut() for menu in window.menuBar().findChildren(type(
        window.menuBar().actions()[0].menu())) for a in menu.actions()}
    assert shortcuts["Open images…"] == QKeySequence(QKeySequence.StandardKey.Open)
    assert shortcuts["Quit"] == QKeySequence("Ctrl+Q")
    assert shortcuts["Train a new model"] == QKeySequence("Ctrl+T")
    assert shortcuts["Classify"] == QKeySequence("Ctrl+2")


def test_dark_theme_renders(window, qtbot, screenshots):
    from PySide6.QtWidgets import QApplication

    from app.gui.qt_common import apply_theme

    app = QApplication.instance()
    try:
        assert apply_theme(app, "dark") == "dark"
        window.show_page(1)
        app.processEvents()
        image = window.grab().toImage()
        background = image.pixelColor(image.width() // 2, image.height() - 5)
        assert background.lightness() < 80  # the window really is dark
        save_shot(window, screenshots, "classify-dark")
    finally:
        apply_theme(app, "light")
