"""Models → Retrain: the recorded folders and settings, editable in a dialog that counts the new images; the next
version trained in a child process while the user keeps classifying; both accuracies and the per-class changes."""

import json
import re
import sys
from pathlib import Path

import fashion_mnist
import pytest
from conftest import answer_next_file_dialog, drop
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QLabel,
    QLineEdit,
    QSpinBox,
    QTableWidget,
)
from test_gui_classify import choose_backend, column, find, wait_done
from test_gui_models import answer_boxes, click_row, fabricated_version, open_models
from test_gui_sources import _cell
from test_gui_wizard import (
    TRAIN_TIMEOUT_MS,
    button,
    click,
    open_advanced,
    open_train,
    page,
    set_spin,
    type_backbone,
    type_into,
)

from app import cli
from app.core.evaluation import load_results, per_class_metrics


@pytest.fixture(autouse=True)
def _no_retraining_left(window, qtbot):
    """A failed test must not leave a retraining running: closing the window would then wait for an answer."""
    yield
    window.models.retrain.cancel()
    qtbot.waitUntil(lambda: not window.models.retrain.running(), timeout=30_000)


def _sidebar_item(window, name: str):
    return next(
        window.sidebar.item(i) for i in range(window.sidebar.count()) if window.sidebar.item(i).text().startswith(name)
    )


def _open_retrain_dialog(window, qtbot, models: Path) -> QDialog:
    view = open_models(window, qtbot, models)
    click_row(qtbot, view.tree, view.tree.topLevelItem(0))  # the model's row
    click(qtbot, button(view, "Retrain"))

    def shown():
        return next((d for d in window.findChildren(QDialog, "retrain_dialog") if d.isVisible()), None)

    qtbot.waitUntil(lambda: shown() is not None, timeout=5_000)
    dialog = shown()
    dialog.activateWindow()  # as a window manager does with a new dialog
    QTest.qWaitForWindowActive(dialog)
    return dialog


def _new_images_text(dialog) -> str:
    return find(dialog, QLabel, "New images").text()


def _wait_counted(qtbot, dialog) -> str:
    qtbot.waitUntil(lambda: bool(re.match(r"\d+ new image", _new_images_text(dialog))), timeout=60_000)
    return _new_images_text(dialog)


def _rows(table: QTableWidget) -> list[tuple[str, ...]]:
    return [tuple(table.item(r, c).text() for c in range(table.columnCount())) for r in range(table.rowCount())]


def _expected_changes(old: Path, new: Path) -> list[tuple[float, str, str, str]]:
    """Per class, (how much it moved, name, old → new accuracy (recall), old → new F1), from the stored results,
    largest change first."""
    before, after = (per_class_metrics(r.confusion, r.classes) for r in (load_results(old), load_results(new)))
    rows = []
    for name in sorted(set(before) | set(after)):
        a, b = before.get(name), after.get(name)
        ma, mb = (r if r and r["support"] else None for r in (a, b))  # measured: test images of it
        if (a is None) != (b is None):
            size = 1.0  # a class added or dropped
        elif ma and mb:
            size = max(abs(mb[k] - ma[k]) for k in ("recall", "f1"))
        else:
            size = 0.0
        accuracy = " → ".join("—" if r is None else f"{r['recall']:.0%}" for r in (ma, mb))
        f1 = " → ".join("—" if r is None else f"{r['f1']:.2f}" for r in (ma, mb))
        rows.append((-size, name, accuracy, f1))
    return [(-size, name, accuracy, f1) for size, name, accuracy, f1 in sorted(rows)]


# --- the journey ------------------------------------------------------------------------------------------------
@pytest.mark.thorough
def test_two_folders_train_then_retrain_from_models_while_classifying(
    window, qtbot, tmp_path, cache_dir, screenshots, standin_backbone
):
    """Add two folders in the wizard, train; add images; Models → Retrain; classify meanwhile; read what changed."""
    from conftest import save_shot

    a = fashion_mnist.write_folders(tmp_path / "a", 14, [1, 7], start=4000)  # trouser, sneaker
    b = fashion_mnist.write_folders(tmp_path / "b", 14, [8, 1], start=4200)  # bag and more trousers, elsewhere
    models = tmp_path / "models"
    open_train(window, qtbot)
    type_into(qtbot, window.wizard.findChild(QLineEdit, "training_folder"), str(a))
    drop(page(window, "folder_page"), [b])
    click(qtbot, button(window.wizard, "Next"))
    review = page(window, "review_page")
    qtbot.waitUntil(review.isComplete, timeout=30_000)
    assert "56 images in 3 classes" in review.findChild(QLabel, "review_summary").text()
    click(qtbot, button(window.wizard, "Next"))
    options = page(window, "options_page")
    type_into(qtbot, options.findChild(QLineEdit, "models_dir"), str(models))
    type_into(qtbot, options.findChild(QLineEdit, "model_name"), "shoes")
    type_backbone(qtbot, options, standin_backbone)
    open_advanced(qtbot, options)
    set_spin(qtbot, options.findChild(QSpinBox, "epochs"), "8")
    click(qtbot, button(window.wizard, "Train"))
    training = page(window, "training_page")
    qtbot.waitUntil(training.isComplete, timeout=TRAIN_TIMEOUT_MS)
    assert (models / "shoes" / "1" / "model.tflite").is_file()

    fashion_mnist.write_folders(a, 3, [1, 7], start=4100)  # 6 new images
    fashion_mnist.write_folders(b, 3, [8, 1], start=4300)  # 6 more
    dialog = _open_retrain_dialog(window, qtbot, models)
    assert _wait_counted(qtbot, dialog).startswith("12 new images of 68 in 3 classes")
    assert [row[1] for row in _rows(dialog.findChild(QTableWidget, "retrain_sources"))] == [str(a), str(b)]
    assert find(dialog, QSpinBox, "Most epochs (early stopping)").value() == 8  # the recorded settings
    save_shot(dialog, screenshots, "models-retrain-dialog")
    click(qtbot, button(dialog, "Retrain"))
    view = window.models
    models_item = _sidebar_item(window, "Models")
    assert re.fullmatch(r"Models  \d+%", models_item.text())  # progress on the sidebar, seen from every page
    assert not button(view, "Retrain").isEnabled()
    qtbot.waitUntil(lambda: "12 new images" in window.messages.text.text(), timeout=120_000)
    assert "keep classifying" in window.messages.text.text()

    window.activateWindow()  # the closed dialog had the focus
    QTest.qWaitForWindowActive(window)
    QTest.keyClick(window, Qt.Key.Key_2, Qt.KeyboardModifier.ControlModifier)  # keep classifying meanwhile
    classify = window.pages.currentWidget()
    assert classify is window.classify
    choose_backend(window, "Local TFLite", models / "shoes" / "1")
    drop(classify, sorted((a / "sneaker").iterdir())[:2])
    assert view.retrain.running()  # the images went in while the retraining runs
    wait_done(qtbot, classify, 2)
    assert column(classify, "Label") == ["sneaker", "sneaker"]

    qtbot.waitUntil(lambda: window.messages.text.text().startswith("Retrained shoes"), timeout=TRAIN_TIMEOUT_MS)
    message = window.messages.text.text()
    expected = _expected_changes(models / "shoes" / "1", models / "shoes" / "2")
    assert re.fullmatch(
        r"Retrained shoes: version 2 has test accuracy (\d+\.\d%|—) \(version 1: (\d+\.\d%|—)\)\. "
        r"(Per class, largest changes first: .+\.|No class changed\.)",
        message,
    ), message
    moved = [row for row in expected if row[0] >= 0.005]
    if moved:  # the largest change is named first, with its numbers
        _, name, accuracy, f1 = moved[0]
        assert f"first: {name} {accuracy} (F1 {f1})" in message
    else:
        assert message.endswith("No class changed.")
    assert models_item.text() == "Models" and (models / "shoes" / "2" / "saved_model.pb").is_file()

    view = open_models(window, qtbot, models)
    table = find(view, QTableWidget, "Per-class changes")
    assert _rows(table) == [row[1:] for row in expected]  # every class, largest change first
    assert view.tree.topLevelItem(0).childCount() == 2 and button(view, "Retrain").isEnabled()
    save_shot(window, screenshots, "models-retrained")


# --- editing before retraining ----------------------------------------------------------------------------------
@pytest.mark.thorough  # over a second: a training in a child process
def test_edited_folders_and_settings_become_the_next_version_s_record(
    window, qtbot, tmp_path, cache_dir, standin_backbone
):
    a = fashion_mnist.write_folders(tmp_path / "a", 12, [1, 7], start=3200)
    usb = fashion_mnist.write_folders(tmp_path / "usb", 12, [8], start=3200) / "bag"
    more = fashion_mnist.write_folders(tmp_path / "more", 4, [1, 7], start=3400)  # not a source yet
    models = tmp_path / "models"
    assert (
        cli.main(
            [
                "train",
                str(a),
                "--class",
                f"handbag={usb}",
                "-o",
                str(models),
                "--name",
                "shoes",
                "--epochs",
                "5",
                "--batch-size",
                "32",
                "--tflite",
                "none",
                "--cache-dir",
                str(cache_dir),
                "--backbone",
                standin_backbone,
            ]
        )
        == 0
    )

    dialog = _open_retrain_dialog(window, qtbot, models)
    sources = dialog.findChild(QTableWidget, "retrain_sources")
    assert _rows(sources) == [("(its sub-folders)", str(a)), ("handbag", str(usb))]
    assert _wait_counted(qtbot, dialog).startswith("0 new images of 36 in 3 classes")
    epochs = find(dialog, QSpinBox, "Most epochs (early stopping)")
    batch = find(dialog, QSpinBox, "Batch size")
    assert (epochs.value(), batch.value()) == (5, 32)
    assert find(dialog, QComboBox, "TFLite export").currentText() == "none"

    chosen: list = []
    answer_next_file_dialog(more, chosen)
    click(qtbot, button(dialog, "Add folder of classes…"))
    assert chosen == ["Add a folder of class folders"]
    assert _rows(sources)[-1] == ("(its sub-folders)", str(more))
    qtbot.waitUntil(lambda: _new_images_text(dialog).startswith("8 new images of 44"), timeout=60_000)
    set_spin(qtbot, epochs, "6")
    set_spin(qtbot, batch, "16")
    set_spin(qtbot, find(dialog, QDoubleSpinBox, "Learning rate"), "0.002")
    click(qtbot, button(dialog, "Retrain"))
    qtbot.waitUntil(lambda: window.messages.text.text().startswith("Retrained shoes"), timeout=TRAIN_TIMEOUT_MS)

    training = json.loads((models / "shoes" / "2" / "metadata.json").read_text())["training"]
    assert (training["epochs"], training["batch_size"], training["learning_rate"]) == (6, 16, 0.002)
    assert training["tflite"] == "none" and not (models / "shoes" / "2" / "model.tflite").exists()
    assert training["sources"] == [
        {"path": str(a), "kind": "folder", "classes": ["sneaker", "trouser"]},
        {"path": str(more), "kind": "folder", "classes": ["sneaker", "trouser"]},  # folders of classes first
        {"path": str(usb), "kind": "class", "name": "handbag", "classes": ["handbag"]},
    ]

    # renaming the one-class folder's class changes the class set: asked before anything starts
    dialog = _open_retrain_dialog(window, qtbot, models)
    sources = dialog.findChild(QTableWidget, "retrain_sources")
    row = [folder for _, folder in _rows(sources)].index(str(usb))
    _cell(qtbot, sources, row, 0, double=True)
    editor = sources.findChild(QLineEdit)  # the cell's editor (offscreen, a second dialog may not get the focus)
    assert editor is not None and editor.isVisible() and editor.text() == "handbag"
    QTest.keyClick(editor, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    QTest.keyClicks(editor, "bag")
    QTest.keyClick(editor, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: sources.item(row, 0).text() == "bag", timeout=2000)
    seen: list = []
    answer_boxes(seen, "Cancel")
    click(qtbot, button(dialog, "Retrain"))
    assert seen and seen[0].startswith(
        "shoes was trained on handbag, sneaker, trouser; its folders now have bag, sneaker"
    )
    assert dialog.isVisible() and not window.models.retrain.running()  # nothing started; the dialog stays
    click(qtbot, button(dialog, "Cancel"))
    assert sorted(p.name for p in (models / "shoes").iterdir() if p.name.isdigit()) == ["1", "2"]


# --- a failing child: its error event is what the user reads ----------------------------------------------------
FAILING_CHILD = r"""
import json, sys
with open(sys.argv[1], "w") as out:
    json.dump(sys.argv[2:], out)
print(json.dumps({"event": "stage", "stage": "scan", "message": "Scanning"}), flush=True)
print("retrain-studio: a misleading line on stderr", file=sys.stderr, flush=True)
print(json.dumps({"event": "error", "message": "the real reason, from the error event"}), flush=True)
sys.exit(1)
"""


def _failing_child(tmp_path, monkeypatch) -> Path:
    """Every training child is this script; it records the arguments it was given in the returned file."""
    script, seen = tmp_path / "child.py", tmp_path / "argv.json"
    script.write_text(FAILING_CHILD)
    monkeypatch.setattr(
        "app.gui.qt_training.child_command", lambda arguments: [sys.executable, str(script), str(seen), *arguments]
    )
    return seen


def test_the_wizard_gives_its_child_every_setting_and_shows_its_error_event(window, qtbot, tmp_path, monkeypatch):
    from app.paths import sample_data_dir

    seen = _failing_child(tmp_path, monkeypatch)
    open_train(window, qtbot)
    click(qtbot, button(window.wizard, "Use sample data"))
    click(qtbot, button(window.wizard, "Next"))
    qtbot.waitUntil(page(window, "review_page").isComplete, timeout=30_000)
    click(qtbot, button(window.wizard, "Next"))
    options = page(window, "options_page")
    type_into(qtbot, options.findChild(QLineEdit, "models_dir"), str(tmp_path / "models"))
    type_into(qtbot, options.findChild(QLineEdit, "model_name"), "sample")
    open_advanced(qtbot, options)
    set_spin(qtbot, find(options, QSpinBox, "Batch size"), "16")
    fine_tune = find(options, type(options.fine_tune), "Fine-tune the backbone (slow; for large data sets)")
    fine_tune.setFocus()
    QTest.keyClick(fine_tune, Qt.Key.Key_Space)
    assert fine_tune.isChecked()
    set_spin(qtbot, find(options, QSpinBox, "Fine-tuning epochs"), "5")
    click(qtbot, button(window.wizard, "Train"))
    training = page(window, "training_page")
    qtbot.waitUntil(lambda: training.process is None, timeout=30_000)
    assert training.findChild(QLabel, "training_stage").text() == "Failed: the real reason, from the error event"
    assert window.messages.text.text() == "The real reason, from the error event."

    settings = cli.train_settings(cli.build_parser().parse_args(json.loads(seen.read_text())))
    assert (settings.batch_size, settings.fine_tune, settings.fine_tune_epochs) == (16, True, 5)
    assert settings.name == "sample" and settings.models_dir == str(tmp_path / "models")
    assert [s.path for s in settings.all_sources()] == [str(sample_data_dir())]


def test_a_failed_retraining_shows_its_error_event(window, qtbot, tmp_path, cache_dir, monkeypatch):
    models = tmp_path / "models"
    version = fabricated_version(models, "flowers", ["bag", "dress"], 5)
    photos = fashion_mnist.write_folders(tmp_path / "photos", 5, [8, 3], start=5000)  # bag, dress
    metadata = json.loads((version / "metadata.json").read_text())
    metadata["training"] = {"sources": [{"path": str(photos), "kind": "folder"}], "epochs": 3}
    (version / "metadata.json").write_text(json.dumps(metadata))
    seen = _failing_child(tmp_path, monkeypatch)
    dialog = _open_retrain_dialog(window, qtbot, models)
    assert _wait_counted(qtbot, dialog).startswith("10 new images of 10 in 2 classes")
    click(qtbot, button(dialog, "Retrain"))
    qtbot.waitUntil(lambda: "failed" in window.messages.text.text(), timeout=30_000)
    assert window.messages.text.text() == "Retraining flowers failed: The real reason, from the error event."
    assert not window.models.retrain.running() and _sidebar_item(window, "Models").text() == "Models"
    args = cli.build_parser().parse_args(json.loads(seen.read_text()))
    assert (args.name, args.epochs, args.image_dirs) == ("flowers", 3, [str(photos)])


def test_folders_that_cannot_be_trained_on_are_said_in_the_dialog(window, qtbot, tmp_path, cache_dir):
    models = tmp_path / "models"
    version = fabricated_version(models, "flowers", ["bag", "dress"], 5)
    metadata = json.loads((version / "metadata.json").read_text())
    metadata["training"] = {"sources": [{"path": str(tmp_path / "gone"), "kind": "folder"}]}
    (version / "metadata.json").write_text(json.dumps(metadata))
    dialog = _open_retrain_dialog(window, qtbot, models)
    assert _new_images_text(dialog).endswith("gone is not a folder.")
    click(qtbot, button(dialog, "Retrain"))
    assert dialog.isVisible() and not window.models.retrain.running()

    photos = fashion_mnist.write_folders(tmp_path / "found", 4, [8, 3], start=5000)  # bag, dress
    drop(dialog, [photos])  # a folder dropped on the dialog is added, as on the wizard's first page
    sources = dialog.findChild(QTableWidget, "retrain_sources")
    assert _rows(sources) == [("(its sub-folders)", str(tmp_path / "gone")), ("(its sub-folders)", str(photos))]
    _cell(qtbot, sources, 0, 1)
    click(qtbot, button(dialog, "Remove folder"))
    assert _rows(sources) == [("(its sub-folders)", str(photos))]
    assert _wait_counted(qtbot, dialog).startswith("8 new images of 8 in 2 classes")
    click(qtbot, button(dialog, "Cancel"))
    assert not window.models.retrain.running()
