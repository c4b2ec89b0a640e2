"""The wizard's first page takes several folders: dropped, renamed, removed, merged by class, trained on."""

import json

from conftest import drop
from images import copy_sample
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QLineEdit, QTableWidget
from test_gui_wizard import TRAIN_TIMEOUT_MS, button, click, open_train, page, type_backbone, type_into

from app.paths import sample_data_dir


def _cell(qtbot, table: QTableWidget, row: int, column: int, double: bool = False) -> None:
    table.scrollToItem(table.item(row, column))
    where = table.visualItemRect(table.item(row, column)).center()
    qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=where)
    if double:
        qtbot.mouseDClick(table.viewport(), Qt.MouseButton.LeftButton, pos=where)


def test_training_from_a_folder_a_dropped_folder_and_a_renamed_one_class_folder(
    window, qtbot, tmp_path, standin_backbone
):
    a = copy_sample({"bag": slice(0, 15), "dress": slice(0, 30)}, tmp_path / "a")
    b = copy_sample({"bag": slice(15, 30), "sneaker": slice(0, 30)}, tmp_path / "b")
    pants = copy_sample({"trouser": slice(0, 30)}, tmp_path / "usb") / "trouser"
    stray = copy_sample({"dress": slice(0, 3)}, tmp_path / "stray") / "dress"
    open_train(window, qtbot)
    type_into(qtbot, window.wizard.findChild(QLineEdit, "training_folder"), str(a))
    first = page(window, "folder_page")
    drop(first, [b, pants, stray])
    table = first.findChild(QTableWidget, "more_sources")
    assert [(table.item(r, 0).text(), table.item(r, 1).text()) for r in range(table.rowCount())] == [
        ("(its sub-folders)", str(b)),
        ("trouser", str(pants)),
        ("dress", str(stray)),
    ]

    _cell(qtbot, table, 1, 0, double=True)  # rename the one-class folder's class
    editor = QApplication.focusWidget()
    assert isinstance(editor, QLineEdit) and table.isAncestorOf(editor), editor
    QTest.keyClick(editor, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    QTest.keyClicks(editor, "trousers")
    QTest.keyClick(editor, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: table.item(1, 0).text() == "trousers", timeout=2000)  # the view commits it queued
    _cell(qtbot, table, 2, 1)
    click(qtbot, button(first, "Remove folder"))
    assert table.rowCount() == 2

    click(qtbot, button(window.wizard, "Next"))
    review = page(window, "review_page")
    qtbot.waitUntil(review.isComplete, timeout=30_000)
    summary = review.findChild(type(review.summary), "review_summary").text()
    assert "120 images in 4 classes" in summary and "bag: 15 from a, 15 from b" in summary
    assert "trousers: 30 from trouser" in summary

    click(qtbot, button(window.wizard, "Next"))
    options = page(window, "options_page")
    type_into(qtbot, options.findChild(QLineEdit, "models_dir"), str(tmp_path / "models"))
    type_into(qtbot, options.findChild(QLineEdit, "model_name"), "merged")
    type_backbone(qtbot, options, standin_backbone)
    click(qtbot, button(window.wizard, "Train"))
    training = page(window, "training_page")
    qtbot.waitUntil(training.isComplete, timeout=TRAIN_TIMEOUT_MS)
    metadata = json.loads((tmp_path / "models" / "merged" / "1" / "metadata.json").read_text())
    assert metadata["labels"] == ["bag", "dress", "sneaker", "trousers"]
    assert metadata["training"]["sources"] == [
        {"path": str(a), "kind": "folder", "classes": ["bag", "dress"]},
        {"path": str(b), "kind": "folder", "classes": ["bag", "sneaker"]},
        {"path": str(pants), "kind": "class", "name": "trousers", "classes": ["trousers"]},
    ]


def test_add_one_class_folder_through_the_file_dialog_then_refuse_a_bad_class_name(window, qtbot, tmp_path):
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QFileDialog, QLabel

    pants = copy_sample({"trouser": slice(0, 5)}, tmp_path / "usb") / "trouser"
    open_train(window, qtbot)
    type_into(qtbot, window.wizard.findChild(QLineEdit, "training_folder"), str(sample_data_dir()))
    first = page(window, "folder_page")
    chosen = []

    def fill():
        dialog = QApplication.activeModalWidget()
        if not isinstance(dialog, QFileDialog):
            QTimer.singleShot(20, fill)
            return
        QTimer.singleShot(500, lambda: type_path(dialog))  # once its folder view has loaded

    def type_path(dialog):
        name = dialog.findChild(QLineEdit, "fileNameEdit")
        name.setFocus()
        QTest.keyClick(name, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
        QTest.keyClicks(name, str(pants))
        chosen.append((dialog.windowTitle(), name.text()))
        QTest.keyClick(name, Qt.Key.Key_Return)

    QTimer.singleShot(0, fill)
    click(qtbot, button(first, "Add one-class folder…"))
    assert chosen == [("Add a folder that is one class", str(pants))]
    table = first.findChild(QTableWidget, "more_sources")
    assert [(table.item(0, 0).text(), table.item(0, 1).text()) for _ in [0]] == [("trouser", str(pants))]

    window.activateWindow()  # the closed dialog had the focus
    QTest.qWaitForWindowActive(window)
    _cell(qtbot, table, 0, 0, double=True)
    editor = QApplication.focusWidget()
    assert isinstance(editor, QLineEdit) and table.isAncestorOf(editor), editor
    QTest.keyClick(editor, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    QTest.keyClicks(editor, "../up")
    QTest.keyClick(editor, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: table.item(0, 0).text() == "../up", timeout=2000)
    click(qtbot, button(window.wizard, "Next"))
    assert window.wizard.currentPage() is first  # refused, in one sentence, before any scan
    error = first.findChild(QLabel, "folder_error")
    assert (
        error.isVisible()
        and error.text() == "Class name '../up' cannot be a class: its name is a path ('/', '.' or '..')."
    )
