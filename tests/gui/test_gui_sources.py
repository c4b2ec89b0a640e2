"""The wizard's first page takes several folders: dropped, renamed, removed, merged by class, trained on."""

import json
from pathlib import Path

import pytest
from conftest import answer_next_file_dialog, drop
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


@pytest.mark.thorough  # over a second: a training in a child process
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
    from PySide6.QtWidgets import QLabel

    pants = copy_sample({"trouser": slice(0, 5)}, tmp_path / "usb") / "trouser"
    open_train(window, qtbot)
    type_into(qtbot, window.wizard.findChild(QLineEdit, "training_folder"), str(sample_data_dir()))
    first = page(window, "folder_page")
    chosen = []

    answer_next_file_dialog(pants, chosen, lambda dialog, line: (dialog.windowTitle(), line.text()))
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


@pytest.mark.thorough  # over a second: a review in a child process
def test_browse_images_and_find_problems_cover_every_folder(window, qtbot, tmp_path, cache_dir):
    """Images of a second folder are listed by Browse images and Find problems; each exclusion goes to the list of
    the folder its image came from, and the other folder's list is left alone."""
    import shutil

    from PySide6.QtWidgets import QComboBox, QDialog, QLabel, QListWidget, QTabBar
    from test_gui_wizard import TRAIN_TIMEOUT_MS

    a = copy_sample({"bag": slice(0, 15), "dress": slice(0, 30)}, tmp_path / "a")
    b = copy_sample({"bag": slice(15, 30), "sneaker": slice(0, 30)}, tmp_path / "b")
    twin = b / "sneaker" / "twin of a dress.png"
    shutil.copy(sorted((a / "dress").iterdir())[0], twin)  # an exact copy across the two folders
    open_train(window, qtbot)
    type_into(qtbot, window.wizard.findChild(QLineEdit, "training_folder"), str(a))
    drop(page(window, "folder_page"), [b])
    click(qtbot, button(window.wizard, "Next"))
    review = page(window, "review_page")
    qtbot.waitUntil(review.isComplete, timeout=30_000)

    combo = review.findChild(QComboBox, "browse_class")
    combo.setFocus()
    QTest.keyClick(combo, Qt.Key.Key_Home)  # bag: the first class
    assert combo.currentText() == "bag"
    click(qtbot, button(review, "Browse images…"))
    browser = next(d for d in window.findChildren(QDialog, "class_browser") if d.isVisible())
    grid = browser.findChild(QListWidget, "class_images")
    shown = [grid.item(i).toolTip() for i in range(grid.count())]
    assert len(shown) == 30 and sum(path.startswith(str(b)) for path in shown) == 15  # both folders' bags
    row = next(i for i, path in enumerate(shown) if path.startswith(str(b)))
    assert grid.item(row).text() == f"{Path(shown[row]).name}\nb"  # the caption says which folder
    grid.setFocus()
    grid.setCurrentRow(row)
    QTest.keyClick(grid, Qt.Key.Key_Space)  # untick one of the second folder's bags
    click(qtbot, button(browser, "Close"))
    assert (b / ".retrain-studio" / "excluded.txt").read_text().splitlines() == [str(Path(shown[row]).relative_to(b))]
    assert not (a / ".retrain-studio").exists()  # the first folder's list is not touched
    qtbot.waitUntil(review.isComplete, timeout=30_000)
    assert "90 images in 3 classes" in review.findChild(QLabel, "review_summary").text()  # 91 found, 1 excluded
    skipped = review.findChild(QTableWidget, "skipped_files")
    rows = [(skipped.item(r, 0).text(), skipped.item(r, 1).text()) for r in range(skipped.rowCount())]
    assert rows == [(str(Path(shown[row]).relative_to(b.parent)), "excluded by you")]  # named with its folder

    click(qtbot, button(review, "Find problems…"))
    dialog = next(d for d in window.findChildren(QDialog, "data_review") if d.isVisible())
    status = dialog.findChild(QLabel, "review_status")
    qtbot.waitUntil(lambda: status.text().startswith(("Found", "The review failed")), timeout=TRAIN_TIMEOUT_MS)
    assert status.text().startswith("Found"), status.text()
    duplicates = dialog.findChild(QListWidget, "duplicates")
    captions = [duplicates.item(i).text() for i in range(duplicates.count())]
    index = next(i for i, caption in enumerate(captions) if caption.startswith(twin.name))  # from the second folder
    assert duplicates.item(index).toolTip().startswith(f"b/sneaker/{twin.name}")
    tabs = dialog.findChild(QTabBar)
    tab = next(i for i in range(tabs.count()) if tabs.tabText(i).startswith("Duplicates"))
    qtbot.mouseClick(tabs, Qt.MouseButton.LeftButton, pos=tabs.tabRect(tab).center())
    duplicates.scrollToItem(duplicates.item(index))
    where = duplicates.visualItemRect(duplicates.item(index)).center()
    qtbot.mouseClick(duplicates.viewport(), Qt.MouseButton.LeftButton, pos=where)
    assert duplicates.item(index).isSelected()
    click(qtbot, button(dialog, "Exclude"))
    assert sorted((b / ".retrain-studio" / "excluded.txt").read_text().splitlines()) == sorted(
        [str(Path(shown[row]).relative_to(b)), f"sneaker/{twin.name}"]
    )
    assert not (a / ".retrain-studio").exists()
    click(qtbot, button(dialog, "Close"))
    qtbot.waitUntil(review.isComplete, timeout=30_000)  # a change means a new scan: both exclusions honoured
    assert "89 images in 3 classes" in review.findChild(QLabel, "review_summary").text()
