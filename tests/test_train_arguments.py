"""One command line for training settings: TrainSettings -> argv (what the GUI starts) -> the CLI's parser -> the
same TrainSettings; and a failed train/retrain/review --json says why in its last line, an error event."""

import json
import subprocess
import sys
from dataclasses import fields

import pytest

from app import cli
from app.core.dataset import CLASS, Source
from app.core.training import TrainSettings


def _odd_settings(tmp_path) -> TrainSettings:
    """Every field away from its default (folders with spaces, a flag-like folder name, a renamed class)."""
    first = str(tmp_path / "my photos")
    return TrainSettings(
        image_dir=first,
        models_dir=str(tmp_path / "models dir"),
        name="shoes.v2",
        backbone="efficientnet_lite2",
        epochs=7,
        batch_size=16,
        learning_rate=3e-05,
        validation_percent=12.5,
        test_percent=7.25,
        augment=True,
        augment_copies=3,
        fine_tune=True,
        fine_tune_epochs=5,
        fine_tune_learning_rate=2e-06,
        label_smoothing=0.05,
        dropout=0.35,
        patience=4,
        seed=1234,
        cache_dir=str(tmp_path / "cache"),
        tflite="int8",
        trust_backbone=True,
        unknown_rate=0.125,
        min_accuracy=0.75,
        review=False,
        sources=[
            Source(first),
            Source("-looks-like-a-flag"),
            Source(str(tmp_path / "usb" / "bag"), CLASS, "hand bag"),
        ],
    )


def test_every_setting_survives_the_command_line(tmp_path):
    settings = _odd_settings(tmp_path)
    defaults = TrainSettings("", "")
    unchanged = [f.name for f in fields(TrainSettings) if getattr(settings, f.name) == getattr(defaults, f.name)]
    assert unchanged == []  # the test covers every field, including any added later

    argv = cli.train_arguments(settings, allow_new_classes=True)
    args = cli.build_parser().parse_args(argv)
    assert cli.train_settings(args) == settings
    assert args.json and args.allow_new_classes and args.command == "train"


def test_defaults_survive_too_and_say_no_switches(tmp_path):
    settings = TrainSettings(str(tmp_path), str(tmp_path / "m"), sources=[Source(str(tmp_path))])
    argv = cli.train_arguments(settings, json_events=False)
    assert not {"--augment", "--fine-tune", "--trust-backbone", "--no-review", "--json"} & set(argv)
    assert cli.train_settings(cli.build_parser().parse_args(argv)) == settings


def test_a_class_name_with_an_equals_sign_is_refused_not_mangled(tmp_path):
    settings = TrainSettings(str(tmp_path), "m", sources=[Source(str(tmp_path), CLASS, "a=b")])
    with pytest.raises(ValueError, match="holds '='"):
        cli.train_arguments(settings)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--json", "-o", "MODELS", "--epochs", "many", "IMAGES"], "argument --epochs: invalid int value"),
        (["train", "--json", "-o", "MODELS", "--epochs", "0", "IMAGES"], "--epochs must be a whole number"),
        (["train", "--json", "-o", "MODELS", "MISSING"], "/x is not a folder"),
        (["retrain", "MODELS/nothing", "--json"], "has no model versions to retrain"),
        (["review", "--json", "--class", "oops", "IMAGES"], "--class takes NAME=DIR"),
    ],
)
def test_a_failure_is_the_last_line_an_error_event(tmp_path, argv, message):
    images = tmp_path / "images"
    images.mkdir()
    argv = [
        a.replace("MODELS", str(tmp_path / "models"))
        .replace("IMAGES", str(images))
        .replace("MISSING", str(tmp_path / "x"))
        for a in argv
    ]
    done = subprocess.run([sys.executable, "-m", "app", *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode in (1, 2), done.stderr
    last = json.loads(done.stdout.splitlines()[-1])
    assert last["event"] == "error" and message in last["message"], last
    assert sum('"event": "error"' in line for line in done.stdout.splitlines()) == 1  # said once
    assert message in done.stderr  # and still one sentence on stderr for people
