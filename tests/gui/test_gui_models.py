"""Models page and stored results, driven as a user does: clicks on rows and buttons, real message boxes."""

import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import save_shot
from PIL import Image
from PySide6.QtCore import QEvent, Qt, QTimer
from PySide6.QtTest import QTest
from PySide6.QtWidgets import (
    QApplication,
    QDialog,
    QLabel,
    QMessageBox,
    QPushButton,
    QWizard,
)
from test_gui_wizard import type_backbone

from app.core.evaluation import evaluate, save_results, summary
from app.store import RESULTS_FILE, folder_size, human_size

TRAIN_TIMEOUT_MS = 300_000


def button(parent, text: str) -> QPushButton:
    return next(b for b in parent.findChildren(QPushButton) if b.text().replace("&", "") == text and b.isVisible())


def answer_boxes(seen: list, *answers: str):
    """Answer the next message boxes, in turn, by clicking the buttons labelled ``answers``; note their texts.

    Returns a function that stops waiting (for a box that must not appear).
    """
    answered, stopped, deadline = [], [], time.monotonic() + 30  # a stray watcher must not answer a later test

    def poll():
        if stopped or time.monotonic() > deadline:
            return
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox) or box in answered:
            QTimer.singleShot(20, poll)
            return
        answered.append(box)
        seen.append(box.text() + "\n" + box.informativeText())
        QTest.mouseClick(
            next(b for b in box.buttons() if b.text().replace("&", "") == answers[len(answered) - 1]),
            Qt.MouseButton.LeftButton,
        )
        if len(answered) < len(answers):
            QTimer.singleShot(20, poll)

    QTimer.singleShot(0, poll)
    return lambda: stopped.append(True)


def click_row(qtbot, tree, item) -> None:
    tree.scrollToItem(item)
    qtbot.mouseClick(tree.viewport(), Qt.MouseButton.LeftButton, pos=tree.visualItemRect(item).center())
    assert tree.currentItem() is item


def click_cell(qtbot, table, row: int, column: int) -> None:
    table.scrollToItem(table.item(row, column))
    qtbot.mouseClick(
        table.viewport(), Qt.MouseButton.LeftButton, pos=table.visualItemRect(table.item(row, column)).center()
    )


def open_models(window, qtbot, folder: Path):
    """Models page (Ctrl+3), folder typed into its field."""
    window.activateWindow()
    QTest.qWaitForWindowActive(window)
    QTest.keyClick(window, Qt.Key.Key_3, Qt.KeyboardModifier.ControlModifier)
    view = window.models
    assert window.pages.currentWidget() is view
    qtbot.mouseClick(view.folder, Qt.MouseButton.LeftButton)
    QTest.keyClick(view.folder, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    QTest.keyClicks(view.folder, str(folder))
    QTest.keyClick(view.folder, Qt.Key.Key_Return)
    return view


def fabricated_version(
    models: Path, name: str, classes: list[str], per_class: int, wrong: float = 0.0, seed: int = 0
) -> Path:
    """A version folder as training writes it (metadata.json + results.npz + tiny files), without TensorFlow."""
    rng = np.random.default_rng(seed)
    version = models / name / "1"
    (version / "variables").mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"\0" * 300)
    (version / "model.tflite").write_bytes(b"\0" * 700)
    photos = models.parent / f"{name}-photos"
    truth = np.repeat(np.arange(len(classes)), per_class)
    predicted = np.where(rng.random(len(truth)) < wrong, (truth + 1) % len(classes), truth)
    probabilities = np.full((len(truth), len(classes)), 0.1 / max(len(classes) - 1, 1), np.float32)
    probabilities[np.arange(len(truth)), predicted] = 0.9
    paths = []
    for i, t in enumerate(truth):
        path = photos / classes[t] / f"{i}.png"
        if i < 50:  # thumbnails for the first few; the rest are allowed to be gone
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (40 * t % 255, 80, 160)).save(path)
        paths.append(str(path))
    save_results(version / RESULTS_FILE, probabilities, truth, classes, paths)
    metrics = summary(evaluate(probabilities, truth, classes, paths))
    (version / "metadata.json").write_text(
        json.dumps(
            {
                "labels": classes,
                "metrics": metrics,
                "backbone": {"id": "efficientnet_lite0"},
                "created": "2026-11-25T05:00:00+00:00",
                "files": {"results": RESULTS_FILE},
            }
        )
    )
    return version


@pytest.fixture
def trash(tmp_path, monkeypatch) -> Path:
    """A private system trash (freedesktop.org layout) so the user's real trash is never touched."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    (tmp_path / "home").mkdir()
    (tmp_path / "data").mkdir()
    return tmp_path / "data" / "Trash"


def test_models_page_lists_versions_with_readable_sizes(window, qtbot, trained, tmp_path, screenshots):
    models = tmp_path / "models"
    shutil.copytree(trained["models"] / "clothes", models / "clothes")
    shutil.copytree(trained["models"] / "clothes" / "1", models / "clothes" / "2")
    fabricated_version(models, "tiny", ["a", "b"], 3)
    view = open_models(window, qtbot, models)
    clothes, tiny = view.tree.topLevelItem(0), view.tree.topLevelItem(1)
    assert clothes.text(0) == "clothes" and clothes.childCount() == 2
    row = clothes.child(0)
    assert row.text(0) == "version 2" and row.text(1) == "5"
    assert row.text(2).endswith(f"% on {trained['done']['metrics']['test_images']} images")
    assert "model.tflite" in row.text(6) and re.fullmatch(r"\d+\.\d [KM]B", row.text(5))  # the SavedModel's size
    assert re.fullmatch(r"\d\.\d KB", tiny.child(0).text(5))  # a few KB: never "0.0 MB"
    assert tiny.child(0).text(6) == "model.tflite 700 B"
    save_shot(window, screenshots, "models")


def test_delete_asks_naming_the_version_and_moves_it_to_the_trash(window, qtbot, trained, tmp_path, trash):
    models = tmp_path / "models"
    shutil.copytree(trained["models"] / "clothes", models / "clothes")
    shutil.copytree(trained["models"] / "clothes" / "1", models / "clothes" / "2")
    view = open_models(window, qtbot, models)
    click_row(qtbot, view.tree, view.tree.topLevelItem(0).child(0))  # version 2
    qtbot.mouseClick(button(view, "Open in Classify"), Qt.MouseButton.LeftButton)
    status = next(label for label in window.findChildren(QLabel) if label.accessibleName() == "Backend status")
    QTest.keyClick(window, Qt.Key.Key_K, Qt.KeyboardModifier.ControlModifier)  # Check connection: opens it
    qtbot.waitUntil(lambda: "version 2" in status.text(), timeout=30_000)  # opened and in use
    view = open_models(window, qtbot, models)
    click_row(qtbot, view.tree, view.tree.topLevelItem(0).child(0))
    delete = button(view, "Delete version…")
    version = models / "clothes" / "2"

    seen = []
    answer_boxes(seen, "Cancel")
    qtbot.mouseClick(delete, Qt.MouseButton.LeftButton)
    assert seen, "no question was asked"
    accuracy = f"{trained['done']['metrics']['test_accuracy']:.1%}"
    size = f"Size: {human_size(folder_size(version))}"
    for fact in ("clothes", "Version: 2", "Classes: 5", f"Test accuracy: {accuracy}", size, str(version)):
        assert fact in seen[0], fact
    assert version.is_dir()  # Cancel keeps it

    answer_boxes(seen, "Move to trash")
    qtbot.mouseClick(delete, Qt.MouseButton.LeftButton)
    assert len(seen) == 2
    assert not version.exists() and (models / "clothes" / "1").is_dir()
    assert (trash / "files" / "2" / "saved_model.pb").is_file()
    info = (trash / "info" / "2.trashinfo").read_text()
    assert f"Path={version}" in info or "Path=" + str(version).replace(" ", "%20") in info
    assert (
        window.messages.text.text().startswith("Moved clothes version 2 to the trash")
        and "restore" in window.messages.text.text()
    )
    assert view.tree.topLevelItem(0).childCount() == 1
    assert "version 2" not in status.text()  # the deleted version is no longer shown as the open model


def test_with_a_model_row_selected_nothing_is_deleted(window, qtbot, trained, tmp_path, trash):
    models = tmp_path / "models"
    shutil.copytree(trained["models"] / "clothes", models / "clothes")
    shutil.copytree(trained["models"] / "clothes" / "1", models / "clothes" / "2")
    view = open_models(window, qtbot, models)
    click_row(qtbot, view.tree, view.tree.topLevelItem(0))  # the model, not a version
    delete = button(view, "Delete version…")
    assert not delete.isEnabled() and "Select a version" in delete.toolTip()
    seen = []
    stop = answer_boxes(seen, "Move to trash")
    qtbot.mouseClick(delete, Qt.MouseButton.LeftButton)
    QTest.qWait(200)
    stop()
    assert not seen and sorted(p.name for p in (models / "clothes").iterdir()) == ["1", "2"]


def test_without_a_trash_it_asks_again_before_deleting_for_good(window, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "not-a-folder").write_text("XDG_DATA_HOME is a file: there can be no trash")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "not-a-folder"))
    models = tmp_path / "models"
    version = fabricated_version(models, "tiny", ["a", "b"], 3)
    view = open_models(window, qtbot, models)
    click_row(qtbot, view.tree, view.tree.topLevelItem(0).child(0))
    seen = []
    answer_boxes(seen, "Move to trash", "Cancel")
    qtbot.mouseClick(button(view, "Delete version…"), Qt.MouseButton.LeftButton)
    assert len(seen) == 2 and "no trash" in seen[1].lower() and version.is_dir()  # asked again; Cancel kept it
    answer_boxes(seen, "Move to trash", "Delete permanently")
    qtbot.mouseClick(button(view, "Delete version…"), Qt.MouseButton.LeftButton)
    assert len(seen) == 4 and not version.exists()
    assert not [p for p in version.parent.iterdir() if p.name.startswith(".tmp")]
    assert "permanently" in window.messages.text.text()


def open_results(qtbot, view) -> QDialog:
    qtbot.mouseClick(button(view, "Open results"), Qt.MouseButton.LeftButton)
    dialog = next(d for d in view.findChildren(QDialog, "resultsDialog") if d.isVisible())
    qtbot.waitExposed(dialog)
    return dialog


def test_open_results_reopens_what_the_results_page_showed(window, qtbot, trained, tmp_path, screenshots):
    from PySide6.QtWidgets import QLabel, QListWidget, QTableWidget

    models = tmp_path / "models"
    shutil.copytree(trained["models"] / "clothes", models / "clothes")
    view = open_models(window, qtbot, models)
    click_row(qtbot, view.tree, view.tree.topLevelItem(0).child(0))
    dialog = open_results(qtbot, view)
    metrics = trained["done"]["metrics"]
    assert dialog.findChild(QLabel, "resultsAccuracy").text() == f"Test accuracy {metrics['test_accuracy']:.1%}"
    detail = dialog.findChild(QLabel, "resultsDetail").text()
    low, high = metrics["test_accuracy_95"]
    assert f"of {metrics['test_images']} test images" in detail and f"{low:.0%} to {high:.0%}" in detail
    assert dialog.findChild(QTableWidget, "resultsPerClass").rowCount() == 5
    where = dialog.findChild(QLabel, "resultsWhere").text()  # found under X: it said how to reopen what is open
    assert str(models / "clothes" / "1") in where and "Reopen them" not in where
    matrix = dialog.findChild(QTableWidget, "resultsMatrix")
    assert matrix.rowCount() == matrix.columnCount() == 5
    images = dialog.findChild(QListWidget, "resultsImages")
    title = dialog.findChild(QLabel, "resultsCellTitle")
    click_cell(qtbot, matrix, 1, 1)
    diagonal = int(matrix.item(1, 1).text())
    assert images.count() == diagonal > 0
    assert title.text().startswith(f"True {trained['done']['classes'][1]}, predicted {trained['done']['classes'][1]}")
    qtbot.waitUntil(lambda: not images.item(0).icon().isNull(), timeout=10_000)  # the photos, from their paths
    save_shot(dialog, screenshots, "results-reopened")
    dialog.close()


def test_nine_test_images_come_with_their_uncertainty(window, qtbot, tmp_path):
    from PySide6.QtWidgets import QLabel

    models = tmp_path / "models"
    fabricated_version(models, "few", ["cat", "dog", "fox"], 3)  # 9 test images, all right
    view = open_models(window, qtbot, models)
    click_row(qtbot, view.tree, view.tree.topLevelItem(0).child(0))
    dialog = open_results(qtbot, view)
    assert dialog.findChild(QLabel, "resultsAccuracy").text() == "Test accuracy 100.0%"
    assert "9 of 9 test images" in dialog.findChild(QLabel, "resultsDetail").text()
    warning = dialog.findChild(QLabel, "resultsWarning")
    assert warning.isVisible() and "Only 9 test images" in warning.text() and "70%" in warning.text()
    dialog.close()


def test_show_in_file_manager_without_one_says_where_the_folder_is(window, qtbot, tmp_path):
    """Found under X: with no file manager (a bare session; offscreen Qt has none either) "Show in file manager"
    and the Export page's "Show in folder" did nothing at all; now a message gives the folder's path."""
    models = tmp_path / "models"
    version = fabricated_version(models, "shown", ["cat", "dog"], 3)
    view = open_models(window, qtbot, models)
    click_row(qtbot, view.tree, view.tree.topLevelItem(0).child(0))
    seen: list[str] = []
    stop = answer_boxes(seen, "OK")
    qtbot.mouseClick(button(view, "Show in file manager"), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(seen), timeout=5_000)
    stop()
    assert f"the location is {version}" in seen[0] and "No file manager" in seen[0]


def test_2000_classes_open_as_the_most_confused_pairs(window, qtbot, tmp_path):
    from PySide6.QtWidgets import QListWidget, QTableWidget

    models = tmp_path / "models"
    classes = [f"species_{i:04d}" for i in range(2000)]
    version = fabricated_version(models, "many", classes, 2, wrong=0.1)
    assert (version / "metadata.json").stat().st_size < 200_000
    view = open_models(window, qtbot, models)
    click_row(qtbot, view.tree, view.tree.topLevelItem(0).child(0))
    dialog = open_results(qtbot, view)
    assert dialog.findChild(QTableWidget, "resultsPerClass").rowCount() == 2000
    pairs = dialog.findChild(QTableWidget, "resultsMatrix")
    assert pairs.columnCount() == 3 and 0 < pairs.rowCount() <= 100
    click_cell(qtbot, pairs, 0, 0)
    images = dialog.findChild(QListWidget, "resultsImages")
    assert images.count() == int(pairs.item(0, 2).text())
    assert images.item(0).text().startswith(pairs.item(0, 0).text() + " → " + pairs.item(0, 1).text())
    dialog.close()


@pytest.mark.thorough
def test_cancel_on_the_results_page_keeps_them_reopenable(window, qtbot, tmp_path, cache_dir, standin_backbone):
    """Train the sample through the wizard, Cancel on Results, reopen the same results from Models."""
    from PySide6.QtWidgets import QLabel

    from app.gui.qt_train_wizard import default_models_dir  # under the test's HOME (tests/gui/conftest.py)

    window.activateWindow()
    QTest.qWaitForWindowActive(window)
    QTest.keyClick(window, Qt.Key.Key_1, Qt.KeyboardModifier.ControlModifier)
    wizard = window.wizard
    next_button = wizard.button(QWizard.WizardButton.NextButton)
    qtbot.mouseClick(button(wizard, "Use sample data"), Qt.MouseButton.LeftButton)
    qtbot.mouseClick(next_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(next_button.isEnabled, timeout=60_000)  # the review scan finished
    qtbot.mouseClick(next_button, Qt.MouseButton.LeftButton)  # to the options
    type_backbone(qtbot, wizard.currentPage(), standin_backbone)
    qtbot.mouseClick(next_button, Qt.MouseButton.LeftButton)  # "Train"
    qtbot.waitUntil(lambda: next_button.isEnabled() and next_button.isVisible(), timeout=TRAIN_TIMEOUT_MS)
    qtbot.mouseClick(next_button, Qt.MouseButton.LeftButton)  # to the results
    page = wizard.currentPage()
    assert page.title() == "Results on the test split"
    shown = page.findChild(QLabel, "resultsAccuracy").text()
    assert shown.startswith("Test accuracy")
    assert "Models → select the version → Open results" in page.findChild(QLabel, "resultsWhere").text()

    qtbot.mouseClick(wizard.button(QWizard.WizardButton.CancelButton), Qt.MouseButton.LeftButton)
    version = Path(default_models_dir()) / "sample_data" / "1"
    assert version.is_relative_to(tmp_path) and (version / RESULTS_FILE).is_file()  # this run's, not an old one
    view = open_models(window, qtbot, Path(default_models_dir()))
    click_row(qtbot, view.tree, view.tree.topLevelItem(0).child(0))
    dialog = open_results(qtbot, view)
    assert dialog.findChild(QLabel, "resultsAccuracy").text() == shown
    dialog.close()


@pytest.mark.parametrize("damage", ["older version", "truncated", "not numpy"])
def test_results_that_cannot_be_read_are_one_sentence(window, qtbot, tmp_path, damage):
    from PySide6.QtWidgets import QLabel

    models = tmp_path / "models"
    version = fabricated_version(models, "odd", ["a", "b"], 4)
    results = version / RESULTS_FILE
    if damage == "older version":
        results.unlink()
    elif damage == "truncated":
        results.write_bytes(results.read_bytes()[:300])
    else:
        results.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    view = open_models(window, qtbot, models)
    click_row(qtbot, view.tree, view.tree.topLevelItem(0))  # a model row opens its newest version's results
    dialog = open_results(qtbot, view)
    assert dialog.findChild(QLabel, "resultsAccuracy").text() == "Test accuracy 100.0%"  # from metadata.json
    detail = dialog.findChild(QLabel, "resultsDetail").text()
    assert ("older version" in detail) if damage == "older version" else ("cannot be read" in detail)
    assert detail.count(".") >= 1 and "\n" not in detail
    dialog.close()


def test_closing_results_while_thumbnails_load_is_harmless(window, qtbot, tmp_path, capfd):
    """The thumbnails of a closed results window arrive to nobody, without an error on any thread."""
    from PySide6.QtCore import QThreadPool

    models = tmp_path / "models"
    version = fabricated_version(models, "slow", ["a", "b", "c"], 20, wrong=0.5)
    big = tmp_path / "big.png"
    Image.new("RGB", (1500, 1500), (200, 30, 30)).save(big)  # slow to decode: the job outlives the window
    for path in {Path(p) for p in np.load(version / RESULTS_FILE)["paths"]}:
        path.unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.hardlink_to(big)
    view = open_models(window, qtbot, models)
    click_row(qtbot, view.tree, view.tree.topLevelItem(0).child(0))
    for _ in range(3):
        open_results(qtbot, view).close()
        QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)  # deleted now, its thumbnails still loading
    assert QThreadPool.globalInstance().waitForDone(60_000)
    QTest.qWait(100)  # answers delivered (to nobody)
    assert not [d for d in view.findChildren(QDialog, "resultsDialog") if d.isVisible()]
    assert "Error" not in capfd.readouterr().err


def test_a_model_opened_in_classify_is_still_classify_s_after_a_restart(window, qtbot, trained):
    """Found under X: a model chosen by the app (just trained, or opened from Models) and not yet used was
    forgotten when the app restarted: Classify asked to choose a model again."""
    from app.gui.qt_main_window import MainWindow

    view = open_models(window, qtbot, trained["models"])
    click_row(qtbot, view.tree, view.tree.topLevelItem(0).child(0))
    qtbot.mouseClick(button(view, "Open in Classify"), Qt.MouseButton.LeftButton)
    assert window.pages.currentWidget() is window.classify
    window.close()
    again = MainWindow()
    qtbot.addWidget(again)
    again.show()
    assert again.backend.choice().location == str(trained["version_dir"])
    assert again.backend.has_model()
