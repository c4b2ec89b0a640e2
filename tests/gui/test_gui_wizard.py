"""The training wizard, end to end through the real child process, on the bundled sample data."""
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QWizard

from app.core.export import version_folders
from app.paths import sample_data_dir
from conftest import GapMeter, save_shot

TRAIN_TIMEOUT_MS = 300_000
MAX_STALL_MS = 150


def _to_training(window, qtbot, models_dir: Path, **advanced):
    wizard = window.wizard
    window.show_page(0)
    wizard.restart()
    wizard.page(0).folder.setText(str(sample_data_dir()))
    wizard.next()
    review = wizard.page(1)
    qtbot.waitUntil(review.isComplete, timeout=30_000)
    options = wizard.page(2)
    wizard.next()
    options.models_dir.setText(str(models_dir))
    options.name.setText("sample")
    for name, value in advanced.items():
        getattr(options, name).setValue(value)
    return wizard


def test_wizard_trains_the_sample_end_to_end(window, qtbot, tmp_path, cache_dir, screenshots):
    save_shot(window, screenshots, "train-1-folder")
    wizard = _to_training(window, qtbot, tmp_path / "models")
    review = wizard.page(1)
    assert review.dataset.classes == ["bag", "dress", "sneaker", "trouser"]
    assert review.thumbs.count() == 4 * 5 and not review.skipped.isVisible()
    assert "120 images in 4 classes" in review.summary.text()
    wizard.back()
    save_shot(window, screenshots, "train-2-review")
    wizard.next()
    save_shot(window, screenshots, "train-3-options")

    meter = GapMeter()
    meter.start()
    wizard.next()  # "Train": starts the child process
    training = wizard.page(3)
    qtbot.waitUntil(lambda: len(training.history["loss"]) >= 3, timeout=TRAIN_TIMEOUT_MS)
    save_shot(window, screenshots, "train-4-training")
    qtbot.waitUntil(training.isComplete, timeout=TRAIN_TIMEOUT_MS)
    meter.stop()
    print(f"longest event-loop gap during training: {meter.longest_ms:.0f} ms over {meter.ticks} ticks")
    assert meter.longest_ms < MAX_STALL_MS
    assert training.done_event["metrics"]["test_accuracy"] >= 0.75
    assert len(training.history["val_loss"]) == len(training.history["loss"])

    wizard.next()
    results = wizard.page(4)
    assert results.accuracy.text().startswith("Test accuracy")
    assert results.matrix.rowCount() == results.matrix.columnCount() == 4
    diagonal = int(results.matrix.item(0, 0).text())
    results.matrix.cellClicked.emit(0, 0)
    assert results.images.count() == diagonal and "True bag, predicted bag" in results.cell_title.text()
    qtbot.waitUntil(lambda: not results.images.item(0).icon().isNull(), timeout=10_000)  # thumbnails arrive
    save_shot(window, screenshots, "train-5-results")

    wizard.next()
    export = wizard.page(5)
    version = Path(export.version_dir)
    assert version == tmp_path / "models" / "sample" / "1" and (version / "model.tflite").exists()
    assert "tensorflow/serving" in export.docker.toPlainText() and "-e MODEL_NAME=sample" in export.docker.toPlainText()
    assert 'name: "sample"' in export.config.toPlainText()
    save_shot(window, screenshots, "train-6-export")

    qtbot.mouseClick(export.open_button, Qt.MouseButton.LeftButton)
    assert window.pages.currentWidget() is window.classify
    assert window.backend.choice().location == str(version)


def test_cancel_leaves_no_version(window, qtbot, tmp_path, cache_dir):
    models = tmp_path / "models"
    wizard = _to_training(window, qtbot, models, epochs=400)
    options = wizard.page(2)
    options.learning_rate.setValue(0.00002)  # slow to converge: still training when we cancel
    wizard.next()
    training = wizard.page(3)
    qtbot.waitUntil(lambda: len(training.history["loss"]) >= 2, timeout=TRAIN_TIMEOUT_MS)
    qtbot.mouseClick(training.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not training.running(), timeout=10_000)
    assert "Cancelled" in training.stage.text()
    assert version_folders(models / "sample") == []
    assert not training.isComplete()
    assert wizard.button(QWizard.WizardButton.NextButton).isEnabled() is False


def test_bad_folder_is_one_sentence(window, qtbot, tmp_path):
    (tmp_path / "photos" / "only").mkdir(parents=True)
    wizard = window.wizard
    window.show_page(0)
    wizard.restart()
    wizard.page(0).folder.setText(str(tmp_path / "photos"))
    wizard.next()
    review = wizard.page(1)
    qtbot.waitUntil(lambda: review.summary.text() != "Scanning…", timeout=10_000)
    assert "has 1 class folder" in review.summary.text() and not review.isComplete()


def test_a_failing_child_shows_its_error(window, qtbot, tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "hub"))
    wizard = _to_training(window, qtbot, tmp_path / "models")
    wizard.page(2).backbone.setCurrentText("https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5")
    wizard.next()
    training = wizard.page(3)
    qtbot.waitUntil(lambda: training.process is None, timeout=TRAIN_TIMEOUT_MS)
    assert training.stage.text().startswith("Failed: could not download")
    assert window.messages.isVisible() and "Could not download" in window.messages.text.text()
    assert not training.isComplete()
