"""End to end on real Fashion-MNIST images: train, evaluate, export, and read the model back."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from images import encode
from PIL import Image

from app.core.evaluation import load_results
from app.imaging import load_image
from app.store import version_folders

STATED_TEST_ACCURACY = 0.85  # 5 Fashion-MNIST classes, 40 images each, frozen EfficientNet-Lite0
TFLITE_TOLERANCE = 1e-5


@pytest.mark.thorough
def test_the_real_weights_train_to_the_stated_accuracy(efficientnet_trained):
    done = efficientnet_trained["done"]
    assert done["metrics"]["test_accuracy"] >= STATED_TEST_ACCURACY
    meta = json.loads(efficientnet_trained["version_dir"].joinpath("metadata.json").read_text())
    assert meta["backbone"]["id"] == "efficientnet_lite0" and meta["input"]["height"] == 224


def test_training_keeps_its_evaluation_for_reopening(trained):
    done = trained["done"]
    assert done["metrics"]["test_images"] >= 30
    assert sorted(done["classes"]) == done["classes"] and len(done["classes"]) == 5
    results = load_results(trained["version_dir"])  # the side file written with the version
    confusion = results.confusion
    assert confusion.sum() == done["metrics"]["test_images"] == len(results.paths)
    assert len(results.rows(mistakes=True)) == confusion.sum() - np.trace(confusion)
    assert results.accuracy == done["metrics"]["test_accuracy"] and results.classes == done["classes"]
    assert all(Path(p).is_file() for p in results.paths)
    assert not {"confusion_matrix", "predictions", "mistakes"} & set(done["metrics"])  # small: see test_results
    kinds = {e["event"] for e in trained["events"]}
    assert {"stage", "progress", "dataset", "epoch", "done"} <= kinds


def test_each_stage_is_announced_once_in_order_and_timed(trained):
    """The GUI's progress reads these: one ``stage`` event per stage entered, in the run's order (export also
    says its steps), the scan's ``dataset`` and the embed's ``new_images`` events in place, and every stage
    timed in ``done``'s seconds."""
    seen = trained["events"]
    stages = [e["stage"] for e in seen if e["event"] == "stage"]
    assert list(dict.fromkeys(stages)) == [
        "scan",
        "backbone",
        "embed",
        "review",
        "train",
        "calibrate",
        "evaluate",
        "export",
    ]
    assert stages.count("export") > 2 and all(stages.count(name) == 1 for name in set(stages) - {"export"})
    kinds = [
        e["event"] if e["event"] != "stage" else e["stage"] for e in seen if e["event"] not in ("progress", "epoch")
    ]
    assert (
        kinds.index("scan")
        < kinds.index("dataset")
        < kinds.index("backbone")
        < kinds.index("new_images")
        < kinds.index("embed")
        < kinds.index("review")
        and kinds[-1] == "done"
    )
    seconds = trained["done"]["seconds"]
    assert set(seconds) == {
        "scan",
        "load_backbone",
        "embed",
        "review",
        "train",
        "calibrate",
        "evaluate",
        "export",
        "total",
    }
    assert all(value >= 0 for value in seconds.values()) and seconds["total"] >= sum(seconds.values()) / 2


def test_version_folder_has_everything_tf_serving_needs(trained, standin_backbone):
    version = trained["version_dir"]
    assert version.parent.name == "clothes" and version.name == "1"
    for name in (
        "saved_model.pb",
        "variables/variables.index",
        "assets/labels.txt",
        "model.tflite",
        "assets.extra/tf_serving_warmup_requests",
        "metadata.json",
        "results.npz",
    ):
        assert (version / name).is_file(), name
    assert (version / "assets/labels.txt").read_text().split() == trained["done"]["classes"]
    meta = json.loads((version / "metadata.json").read_text())
    assert meta["labels"] == trained["done"]["classes"] and meta["version"] == 1
    assert meta["input"]["height"] == 224 and meta["backbone"]["id"] == standin_backbone
    assert meta["metrics"]["test_accuracy"] == trained["done"]["metrics"]["test_accuracy"]
    assert meta["files"]["results"] == meta["metrics"]["results_file"] == "results.npz"
    assert "confusion_matrix" not in meta["metrics"] and len(meta["metrics"]["per_class"]) == 5
    assert sum(meta["split_sizes"].values()) == 200
    assert not [p for p in version.parent.iterdir() if p.name.startswith(".tmp")]
    modes = {p.stat().st_mode & 0o777 for p in version.rglob("*") if p.is_file()}
    assert modes == {0o666 & ~_umask()}, [oct(m) for m in modes]  # metadata.json too (it was owner-only 0600)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_warmup_record_is_a_valid_prediction_log(trained):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = trained["version_dir"] / "assets.extra/tf_serving_warmup_requests"
    records = list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
    log = prediction_log_pb2.PredictionLog.FromString(records[0])
    assert log.predict_log.request.model_spec.signature_name == "serving_default"
    encoded = log.predict_log.request.inputs["image_bytes"].string_val[0]
    assert Image.open(__import__("io").BytesIO(encoded)).size == (224, 224)


@pytest.fixture(scope="module")
def loaded(trained):
    import tensorflow as tf

    return tf.saved_model.load(str(trained["version_dir"]))


def test_savedmodel_answers_raw_jpeg_and_png_bytes(trained, loaded, fm_dir):
    import tensorflow as tf

    classes = trained["done"]["classes"]
    png = sorted((fm_dir / "trouser").glob("*.png"))[0].read_bytes()
    jpeg = encode(Image.open(sorted((fm_dir / "bag").glob("*.png"))[0]).resize((96, 96)), "JPEG", quality=95)
    out = loaded.signatures["serving_default"](image_bytes=tf.constant([png, jpeg]))
    assert out["probabilities"].shape == (2, len(classes))
    np.testing.assert_allclose(out["probabilities"].numpy().sum(axis=1), 1.0, atol=1e-5)
    assert [c.decode() for c in out["classes"].numpy()] == ["trouser", "bag"]
    assert (out["scores"].numpy() > 0.5).all()
    images = np.stack([load_image(png, (224, 224)), load_image(jpeg, (224, 224))])
    by_pixels = loaded.signatures["serving_images"](images=tf.constant(images))
    np.testing.assert_allclose(by_pixels["probabilities"], out["probabilities"], atol=1e-5)
    names = loaded.signatures["class_names"](class_index=tf.range(len(classes)))["class_name"].numpy()
    assert [n.decode() for n in names] == classes


def test_tflite_agrees_with_savedmodel(trained, loaded, fm_dir):
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(trained["version_dir"] / "model.tflite"))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]  # output 0: probabilities
    files = [sorted((fm_dir / c).glob("*.png"))[-1] for c in trained["done"]["classes"]]
    worst = 0.0
    for path in files:
        data = path.read_bytes()
        interpreter.set_tensor(inp["index"], load_image(data, (224, 224))[None])
        interpreter.invoke()
        lite = interpreter.get_tensor(out["index"])[0]
        saved = loaded.signatures["serving_default"](image_bytes=tf.constant([data]))["probabilities"].numpy()[0]
        worst = max(worst, float(np.abs(lite - saved).max()))
        assert np.argmax(lite) == np.argmax(saved)
    assert worst < TFLITE_TOLERANCE


def test_second_run_reuses_cached_features(trained, fm_dir, cache_dir, standin_backbone, tmp_path):
    from app.core.training import TrainSettings, run

    seen = []
    done = run(
        TrainSettings(
            str(fm_dir),
            str(tmp_path / "models"),  # not the shared model's folder: other tests list its models
            name="again",
            backbone=standin_backbone,  # the shared model's
            cache_dir=str(cache_dir),
            validation_percent=15,
            test_percent=25,
            epochs=3,
            tflite="none",
        ),
        on_event=seen.append,
    )
    embeds = [e for e in seen if e["event"] == "progress" and e["stage"].startswith("embed")]
    assert embeds and all(e["done"] == e["total"] for e in embeds)  # nothing left to compute, ever
    assert done["seconds"]["embed"] < 2.0
    assert not (Path(done["model_dir"]) / "model.tflite").exists()


def _train_cli(*args, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "app", "train", *map(str, args), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


@pytest.mark.thorough
def test_killed_run_leaves_no_version(fm_dir, tmp_path, standin_backbone):
    # a cache of its own: no graph kept from another test's export, so this one traces and saves the SavedModel
    models, where = tmp_path / "models", ("--cache-dir", tmp_path / "cache", "--backbone", standin_backbone)
    proc = _train_cli(fm_dir, "-o", models, "--name", "killed", *where)
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == "stage" and event.get("message") == "saving SavedModel":
            time.sleep(0.2)  # in the middle of writing the SavedModel
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert version_folders(models / "killed") == []
    leftovers = [p.name for p in (models / "killed").iterdir()]
    assert all(name.startswith(".tmp-") for name in leftovers)
    # the next run sweeps the dead run's temporary folder and publishes version 1
    proc = _train_cli(fm_dir, "-o", models, "--name", "killed", *where, "--epochs", "2", "--tflite", "none")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    events = [json.loads(line) for line in out.splitlines()]
    assert events[-1]["event"] == "done" and events[-1]["model_dir"].endswith("killed/1")
    assert [p.name for p in (models / "killed").iterdir()] == ["1"]


@pytest.mark.thorough
def test_augment_and_fine_tune_run(tmp_path, cache_dir, standin_backbone):
    import fashion_mnist

    from app.core.training import TrainSettings, run

    data = fashion_mnist.write_folders(tmp_path / "two", 10, [1, 8])
    seen = []
    done = run(
        TrainSettings(
            str(data),
            str(tmp_path / "models"),
            cache_dir=str(cache_dir),
            backbone=standin_backbone,
            augment=True,
            augment_copies=1,
            fine_tune=True,
            fine_tune_epochs=1,
            epochs=5,
            batch_size=8,
            validation_percent=20,
            test_percent=20,
            tflite="float",  # int8: test_int8_export_calibrates_on_every_class_and_agrees_with_float
        ),
        on_event=seen.append,
    )
    stages = {e["stage"] for e in seen if e["event"] == "stage"}
    assert "fine_tune" in stages
    assert done["seconds"]["fine_tune"] > 0
    train_embeds = [e for e in seen if e["event"] == "progress" and e["stage"] == "embed_train"]
    assert train_embeds[-1]["total"] == 2 * next(e for e in seen if e["event"] == "dataset")["train"]
    version = Path(done["model_dir"])
    from app.inference.tflite import TFLiteClassifier

    files = sorted(data.rglob("*.png"))
    answers = TFLiteClassifier(version).classify([p.read_bytes() for p in files])  # the fine-tuned backbone
    assert np.mean([a.label == p.parent.name for a, p in zip(answers, files)]) >= 0.9  # trousers from bags
    meta = json.loads((version / "metadata.json").read_text())
    assert meta["training"]["fine_tune"] and meta["training"]["augment"]


def test_local_savedmodel_folder_as_backbone(tmp_path, cache_dir, standin_backbone):
    import fashion_mnist

    from app.core.training import TrainSettings, run

    local = standin_backbone
    data = fashion_mnist.write_folders(tmp_path / "two", 12, [1, 8])
    done = run(
        TrainSettings(
            str(data),
            str(tmp_path / "models"),
            backbone=local,
            cache_dir=str(cache_dir),
            epochs=20,
            test_percent=30,  # a test split of several images: the accuracy is a number, never None
            tflite="none",
        )
    )
    meta = json.loads((Path(done["model_dir"]) / "metadata.json").read_text())
    assert meta["backbone"]["source"] == "local" and meta["backbone"]["image_size"] == 224
    assert done["metrics"]["test_images"] >= 4
    assert done["metrics"]["test_accuracy"] >= 0.75  # trousers from bags: chance would be 0.5


def _features(seed: int = 0):
    """Two classes of 16-wide synthetic features (fixed seed: the divergence below is reproducible)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 3, (40, 16)).astype(np.float32), np.repeat([0, 1], 20)


def test_early_stopping_ends_with_the_best_epochs_weights():
    """Noise the head can memorise: the validation loss falls for a few epochs, then rises.  The run stops
    ``patience`` epochs after the lowest one and returns that epoch's head, not the last one's."""
    from app.core.training import TrainSettings, train_head

    def two_classes(n, seed):  # one weak informative feature among 64 noisy ones
        rng = np.random.default_rng(seed)
        y = np.repeat([0, 1], n // 2)
        x = rng.normal(0, 1, (n, 64)).astype(np.float32)
        x[:, 0] += np.where(y == 1, 1.0, -1.0)
        return x, y

    (x, y), (x_val, y_val) = two_classes(40, 1), two_classes(200, 2)
    settings = dict(learning_rate=0.01, dropout=0.0, label_smoothing=0.0, batch_size=8, patience=10)
    seen = []
    kernel, bias, epochs = train_head(
        x, y, x_val, y_val, 2, TrainSettings("a", "b", epochs=300, **settings), on_event=seen.append
    )
    losses = [e["val_loss"] for e in seen if e["event"] == "epoch"]
    best = int(np.argmin(losses)) + 1
    assert 1 < best < epochs == best + 10 == len(losses)  # it improved, then waited `patience` epochs
    assert losses[-1] > losses[best - 1] + 0.02  # ... while the validation loss rose

    def val_loss(k, b):  # the returned head, scored as the exported model would score it
        logits = x_val @ k + b
        log_p = logits - logits.max(axis=1, keepdims=True)
        log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
        return float(-log_p[np.arange(len(y_val)), y_val].mean())

    assert val_loss(kernel, bias) == pytest.approx(min(losses), abs=1e-5)
    at_best, bias_at_best, _ = train_head(x, y, x_val, y_val, 2, TrainSettings("a", "b", epochs=best, **settings))
    np.testing.assert_allclose(kernel, at_best, rtol=1e-5)  # the same seed, stopped by hand at the best epoch
    np.testing.assert_allclose(bias, bias_at_best, rtol=1e-5, atol=1e-7)


def test_nan_validation_loss_keeps_the_first_epochs_weights():
    from app.core.training import TrainSettings, train_head

    x, y = _features()
    nan_val = np.full((10, 16), np.nan, np.float32)  # every validation loss is NaN: it never improves
    seen = []
    kernel, bias, epochs = train_head(
        x, y, nan_val, y[:10], 2, TrainSettings("a", "b", epochs=50, patience=4), on_event=seen.append
    )
    assert epochs == 5  # the first epoch, then `patience` without improvement
    assert all(np.isnan(e["val_loss"]) for e in seen if e["event"] == "epoch")
    first_kernel, first_bias, _ = train_head(x, y, nan_val, y[:10], 2, TrainSettings("a", "b", epochs=1))
    np.testing.assert_allclose(kernel, first_kernel, rtol=1e-5)
    np.testing.assert_allclose(bias, first_bias, rtol=1e-5)
    assert np.isfinite(kernel).all() and np.isfinite(bias).all()


def test_diverging_training_keeps_finite_weights_or_says_so():
    import tensorflow as tf

    from app.core.training import TrainingError, TrainSettings, train_head

    x, y = _features()
    seen = []
    # 1e37: epoch 1 leaves huge but finite weights (validation loss inf), epoch 2 overflows to NaN
    kernel, bias, epochs = train_head(
        x, y, x[:10], y[:10], 2, TrainSettings("a", "b", learning_rate=1e37, batch_size=8), on_event=seen.append
    )
    assert epochs == 2 and np.isfinite(kernel).all() and np.isfinite(bias).all()
    assert not np.isfinite(next(e for e in seen if e["event"] == "epoch")["val_loss"])
    assert [e["message"] for e in seen if e["event"] == "warning"] == [
        "training diverged at epoch 2 (the weights are no longer finite numbers); keeping the best earlier weights"
    ]
    probabilities = tf.nn.softmax(x @ kernel + bias).numpy()  # as the exported model computes them
    assert np.isfinite(probabilities).all()
    # 1e38: nothing finite is left even after the first epoch -- one sentence, no model
    with pytest.raises(TrainingError, match="^training diverged in the first epoch .* try a smaller learning rate$"):
        train_head(x, y, x[:10], y[:10], 2, TrainSettings("a", "b", learning_rate=1e38, batch_size=8))


@pytest.mark.thorough
def test_diverging_cli_run_is_one_sentence_and_writes_no_version(tmp_path, cache_dir, standin_backbone):
    import fashion_mnist

    data = fashion_mnist.write_folders(tmp_path / "two", 6, [1, 8], start=300)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "app",
            "train",
            str(data),
            "-o",
            str(tmp_path / "models"),
            "--cache-dir",
            str(cache_dir),
            "--learning-rate",
            "1e38",
            "--tflite",
            "none",
            "--backbone",
            standin_backbone,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "retrain-studio: training diverged in the first epoch (the weights are no longer finite numbers); "
        "try a smaller learning rate"
    )
    assert version_folders(tmp_path / "models" / "two") == []


@pytest.mark.thorough
def test_diverging_fine_tune_exports_the_frozen_model(tmp_path, cache_dir, standin_backbone):
    import fashion_mnist
    import tensorflow as tf

    from app.core.training import TrainSettings, run

    data = fashion_mnist.write_folders(tmp_path / "two", 5, [1, 8], start=400)
    seen = []
    done = run(
        TrainSettings(
            str(data),
            str(tmp_path / "models"),
            cache_dir=str(cache_dir),
            backbone=standin_backbone,
            epochs=5,
            batch_size=4,
            fine_tune=True,
            fine_tune_epochs=1,
            fine_tune_learning_rate=1e38,
            tflite="none",
        ),
        on_event=seen.append,
    )
    assert [e["message"] for e in seen if e["event"] == "warning" and "fine-tuning" in e["message"]] == [
        "fine-tuning diverged (the weights are no longer finite numbers); exporting the model without it"
    ]
    model = tf.saved_model.load(done["model_dir"])
    images = [p.read_bytes() for p in sorted(data.rglob("*.png"))]
    probabilities = model.signatures["serving_default"](image_bytes=tf.constant(images))["probabilities"].numpy()
    assert probabilities.shape == (10, 2) and np.isfinite(probabilities).all()
    reader = tf.train.load_checkpoint(str(Path(done["model_dir"]) / "variables" / "variables"))
    weights = [reader.get_tensor(n) for n, dtype in reader.get_variable_to_dtype_map().items() if dtype.is_floating]
    # the stand-in's 2 convolutions, the head, the class prototypes and the unknown threshold
    assert len(weights) == 6 and all(np.isfinite(w).all() for w in weights)


INT8_VS_FLOAT_TOP1 = 0.9  # full-integer TFLite against the float TFLite, same images (measured: see the printout)


def test_int8_calibration_takes_every_class_in_turn(fm_dir):
    """The split lists images in class order: its first 100 were 24, 24, 24, 24 and 4 images of 5 classes."""
    from app.core.dataset import scan
    from app.core.training import calibration_items

    train = scan(str(fm_dir), validation_percent=15, test_percent=25).split("train")
    assert [item.label for item in train] == sorted(item.label for item in train) and len(train) == 120
    picked = [item.label for item in calibration_items(train)]
    assert len(picked) == 100 and sorted(Counter(picked).values()) == [20] * 5
    assert [item.label for item in calibration_items(train, least=2)] == [0, 1, 2, 3, 4]  # more classes than asked


@pytest.mark.thorough
def test_int8_export_calibrates_on_every_class_and_agrees_with_float(tmp_path, cache_dir, monkeypatch):
    """A whole run: the converter is given images of the classes in turn, and the int8 model answers as the
    float one does."""
    import hashlib

    import fashion_mnist

    from app.core import export
    from app.core.training import TrainSettings, run
    from app.inference.tflite import TFLiteClassifier

    data = fashion_mnist.write_folders(tmp_path / "three", 12, [1, 7, 8], start=500)
    files = sorted(data.rglob("*.png"))
    class_of = {hashlib.sha256(load_image(p.read_bytes(), (224, 224)).tobytes()).digest(): p.parent.name for p in files}
    calibrated: list[str] = []
    real_export = export.export

    def watching(*args, representative, **kwargs):  # which images does the converter calibrate on?
        def images():
            for image in representative():
                calibrated.append(class_of[hashlib.sha256(image.tobytes()).digest()])
                yield image

        return real_export(*args, representative=images, **kwargs)

    monkeypatch.setattr(export, "export", watching)
    seen = []
    done = run(
        TrainSettings(str(data), str(tmp_path / "models"), cache_dir=str(cache_dir), review=False, tflite="int8"),
        on_event=seen.append,
    )
    train = next(e for e in seen if e["event"] == "dataset")["train"]
    assert len(calibrated) == train and calibrated[:6] == ["bag", "sneaker", "trouser"] * 2  # not bag, bag, bag...
    version = Path(done["model_dir"])
    images = [p.read_bytes() for p in files]
    float_labels = [p.label for p in TFLiteClassifier(version).classify(images)]
    int8_labels = [p.label for p in TFLiteClassifier(version, variant="int8").classify(images)]
    agreement = float(np.mean([a == b for a, b in zip(float_labels, int8_labels)]))
    print(f"\nint8 vs float TFLite top-1 agreement: {agreement:.3f} on {len(images)} images")
    assert agreement >= INT8_VS_FLOAT_TOP1


def test_tensorflow_s_keras_is_the_keras_2_the_app_uses():
    """``import tensorflow`` after ``import app`` gives tf.keras = tf_keras: Keras 3 (and the scikit-learn it
    loads) would cost every training process a second for nothing."""
    import importlib

    importlib.import_module("app")  # first, as every entry point does
    import tensorflow as tf

    assert "tf_keras" in Path(tf.keras.__file__).parts, tf.keras.__file__
