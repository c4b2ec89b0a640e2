"""Models → Retrain: the next version trained in a child process while the user keeps working elsewhere."""

import re

import fashion_mnist
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from test_gui_models import answer_boxes, button, click_row, open_models


def _sidebar_item(window, name: str):
    return next(
        window.sidebar.item(i) for i in range(window.sidebar.count()) if window.sidebar.item(i).text().startswith(name)
    )


def test_retrain_from_models_runs_in_the_background_and_reports_both_accuracies(
    window, qtbot, tmp_path, cache_dir, standin_backbone
):
    from app import cli

    a = fashion_mnist.write_folders(tmp_path / "a", 12, [1, 7], start=3200)
    usb = fashion_mnist.write_folders(tmp_path / "usb", 12, [8], start=3200) / "bag"
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
    fashion_mnist.write_folders(a, 3, [1, 7], start=3300)  # 6 new images

    view = open_models(window, qtbot, models)
    click_row(qtbot, view.tree, view.tree.topLevelItem(0))  # the model's row
    retrain = button(view, "Retrain")
    qtbot.mouseClick(retrain, Qt.MouseButton.LeftButton)
    models_item = _sidebar_item(window, "Models")
    assert re.fullmatch(r"Models  \d+%", models_item.text())  # progress on the sidebar, seen from every page
    assert not retrain.isEnabled()
    QTest.keyClick(window, Qt.Key.Key_2, Qt.KeyboardModifier.ControlModifier)  # keep classifying meanwhile
    assert window.pages.currentWidget() is window.classify
    qtbot.waitUntil(lambda: "6 new images" in window.messages.text.text(), timeout=120_000)
    assert "keep classifying" in window.messages.text.text()
    qtbot.waitUntil(lambda: window.messages.text.text().startswith("Retrained shoes"), timeout=300_000)
    assert re.fullmatch(
        r"Retrained shoes: version 2 has test accuracy (\d+\.\d%|—) \(version 1: (\d+\.\d%|—)\)\.",
        window.messages.text.text(),
    )
    assert models_item.text() == "Models" and (models / "shoes" / "2" / "saved_model.pb").is_file()

    view = open_models(window, qtbot, models)
    assert view.tree.topLevelItem(0).childCount() == 2 and retrain.isEnabled()
    fashion_mnist.write_folders(a, 3, [3], start=3200)  # a new class folder: asked before anything starts
    click_row(qtbot, view.tree, view.tree.topLevelItem(0))
    seen: list = []
    answer_boxes(seen, "Cancel")
    qtbot.mouseClick(retrain, Qt.MouseButton.LeftButton)
    assert seen and "dress, handbag, sneaker, trouser" in seen[0]
    assert models_item.text() == "Models" and not view.retrain.running()
    assert sorted(p.name for p in (models / "shoes").iterdir() if p.name.isdigit()) == ["1", "2"]
