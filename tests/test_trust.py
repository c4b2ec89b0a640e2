"""Trust in each answer, on real data: "none of these", calibrated confidence, and proof that every file agrees.

One real training run on 8 Fashion-MNIST classes (shirt and ankle boot held out); then images it never saw
go through every backend: its own classes (Fashion-MNIST's test set), the two held-out classes, and
images from another domain (digits drawn here with Pillow, and photos from skimage).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import fashion_mnist
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from serving.double import TFServingDouble

from app.core import trust
from app.inference.factory import open_classifier
from app.store import read_metadata

KEPT = [0, 1, 2, 3, 4, 5, 7, 8]  # t-shirt, trouser, pullover, dress, coat, sandal, sneaker, bag
HELD_OUT = [6, 9]  # shirt, ankle boot: never trained on
PER_CLASS = 50

pytestmark = pytest.mark.thorough  # a training of its own on the real weights: CI's run, not the quick one


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def drawn_digits(count: int, seed: int = 0) -> list[bytes]:
    """White digits on black, 28x28 like Fashion-MNIST, in random sizes and places."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        image = Image.new("L", (28, 28), 0)
        font = ImageFont.load_default(size=int(rng.integers(16, 26)))
        ImageDraw.Draw(image).text((int(rng.integers(2, 10)), int(rng.integers(0, 6))), str(i % 10), 255, font=font)
        out.append(_png(np.array(image)))
    return out


def photos() -> list[bytes]:
    import skimage.data

    names = ["astronaut", "chelsea", "coffee", "rocket", "camera", "cat", "hubble_deep_field", "immunohistochemistry"]
    return [_png(np.asarray(getattr(skimage.data, name)())) for name in names]


@pytest.fixture(scope="module")
def eight(tmp_path_factory, cache_dir) -> dict:
    """A model of 8 Fashion-MNIST classes, and the images to judge it with (each a list of encoded bytes)."""
    from app.core.training import TrainSettings, run

    root = tmp_path_factory.mktemp("fm8")
    fashion_mnist.write_folders(root / "clothes", PER_CLASS, KEPT)
    done = run(
        TrainSettings(
            str(root / "clothes"),
            str(root / "models"),
            name="eight",
            cache_dir=str(cache_dir),
            validation_percent=20,
            test_percent=20,
            tflite="dynamic",
        )
    )
    images, labels = fashion_mnist.load("test")
    pick = lambda classes, n: [_png(images[i]) for c in classes for i in np.flatnonzero(labels == c)[:n]]  # noqa: E731
    own_truth = [fashion_mnist.CLASSES[c] for c in KEPT for _ in range(15)]
    return {
        "done": done,
        "base": root / "models" / "eight",
        "sets": {
            "own": pick(KEPT, 15),
            "held_out": pick(HELD_OUT, 20),
            "other_domain": drawn_digits(40) + photos(),
        },
        "own_truth": own_truth,
    }


def unknown_rates(predictions: dict) -> dict:
    return {name: float(np.mean([p.unknown for p in rows])) for name, rows in predictions.items()}


def test_unknown_inputs_are_flagged_alike_by_every_backend(eight):
    sets = eight["sets"]
    with TFServingDouble({"eight": eight["base"]}) as server:
        backends = {
            "tflite": open_classifier(eight["base"], "tflite"),
            "savedmodel": open_classifier(eight["base"], "savedmodel"),
            "grpc": open_classifier(server=server.grpc_url("eight")),
            "rest": open_classifier(server=server.rest_url("eight")),
        }
        answers = {
            name: {s: clf.classify(images, top_k=3) for s, images in sets.items()} for name, clf in backends.items()
        }
    for name, by_set in answers.items():
        for rows in by_set.values():
            assert all(p.error is None and isinstance(p.unknown, bool) for p in rows), name
            assert all(isinstance(p.ood_score, float) for p in rows), name
    rates = {name: unknown_rates(by_set) for name, by_set in answers.items()}
    print("\nunknown rates per backend:", json.dumps(rates, indent=1))
    flags = {name: [p.unknown for s in sets for p in by_set[s]] for name, by_set in answers.items()}
    assert flags["tflite"] == flags["savedmodel"] == flags["grpc"] == flags["rest"]
    reference = rates["savedmodel"]
    assert reference["other_domain"] >= 0.95
    assert reference["own"] <= 0.10
    own = answers["savedmodel"]["own"]
    accuracy = np.mean([p.label == truth for p, truth in zip(own, eight["own_truth"])])
    print(f"own-class accuracy {accuracy:.3f}; held-out classes flagged {reference['held_out']:.2%}")
    assert accuracy >= 0.7
    # the label stays the closest class, even when unknown
    assert all(p.label in eight["done"]["classes"] for p in answers["rest"]["other_domain"])


def test_metadata_records_calibration_threshold_and_fidelity(eight):
    meta = read_metadata(eight["done"]["model_dir"])
    calibration = meta.calibration
    print("\ncalibration:", json.dumps(calibration))
    assert calibration["temperature"] > 0 and calibration["temperature"] != 1.0
    assert calibration["validation_ece_after"] <= calibration["validation_ece_before"]
    assert 0 <= calibration["test_ece_after"] < 0.2
    unknown = meta.unknown
    assert unknown["kind"] == trust.OOD_KIND and unknown["target_unknown_rate"] == 0.05
    assert 0 < unknown["threshold"] < 2 and unknown["chosen_on_unknown_rate"] <= 0.05
    table = meta.fidelity["artifacts"]
    print("fidelity:", json.dumps(table, indent=1))
    assert set(table) == {
        "saved_model:serving_default",
        "saved_model:serving_images",
        "model.tflite",
        "model_dynamic.tflite",
    }
    tested = meta.split_sizes["test"]
    assert tested > trust.FIDELITY_FLOAT_IMAGES
    for name, row in table.items():  # a quantized file on the whole (small) split, a float file on a sample of it
        quantized = name == "model_dynamic.tflite"
        assert row["images"] == (tested if quantized else trust.FIDELITY_FLOAT_IMAGES), name
        assert row["within_tolerance"] is True, name
    assert table["model.tflite"]["max_abs_diff"] <= trust.TOLERANCES["float"]["max_abs_diff"]
    assert table["saved_model:serving_images"]["top1_agreement"] == 1.0


def test_served_probabilities_are_the_calibrated_ones(eight):
    """What a backend returns is softmax(logits / T): on 120 unseen images of its classes it is better calibrated
    than the same answers with T taken out again (the head as trained)."""
    meta = read_metadata(eight["done"]["model_dir"])
    temperature = meta.calibration["temperature"]
    clf = open_classifier(eight["base"], "savedmodel")
    answers = clf.classify(eight["sets"]["own"], top_k=8)
    served = np.array([[dict(p.top_k)[label] for label in clf.labels] for p in answers])
    truth = np.array([clf.labels.index(name) for name in eight["own_truth"]])
    uncalibrated = trust.softmax(np.log(served) * temperature)  # log p = logits / T + const
    after = trust.expected_calibration_error(served, truth)
    before = trust.expected_calibration_error(uncalibrated, truth)
    print(f"\nECE on unseen own-class images: {before:.3f} uncalibrated, {after:.3f} as served (T = {temperature})")
    assert after < before - 0.03
    assert np.array_equal(served.argmax(1), uncalibrated.argmax(1))  # calibration never changes the answer


def test_temperature_and_ece_maths():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1.5, (4000, 4))
    truth = trust.softmax(logits)  # labels drawn from these probabilities: calibrated at T = 1
    labels = (rng.random((4000, 1)) > truth.cumsum(axis=1)).sum(axis=1)
    overconfident = logits * 4  # the same ranking, far too sure: T = 4 undoes it
    before = trust.expected_calibration_error(trust.softmax(overconfident), labels)
    t = trust.fit_temperature(overconfident, labels)
    after = trust.expected_calibration_error(trust.softmax(overconfident / t), labels)
    assert 3.0 < t < 5.0
    assert after < 0.03 < before
    assert trust.fit_temperature(np.zeros((0, 4)), []) == 1.0


def test_threshold_meets_the_target_rate_on_held_out_scores():
    scores = np.random.default_rng(1).random(1000)
    threshold = trust.unknown_threshold(scores, 0.05)
    assert np.mean(scores > threshold) == pytest.approx(0.05, abs=0.002)
    assert trust.unknown_threshold(np.zeros(0), 0.05) == float("inf")


def _cli(*args, timeout=600):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "app", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def test_classify_json_and_human_output_say_unknown(eight, tmp_path):
    digit = tmp_path / "digit.png"
    digit.write_bytes(drawn_digits(1, seed=3)[0])
    coat = tmp_path / "coat.png"
    coat.write_bytes(eight["sets"]["own"][4 * 15])  # a coat from the test set: one of its classes
    result = _cli("classify", "--model", eight["base"], digit, coat, "--json")
    assert result.returncode == 0, result.stderr
    rows = {Path(row["path"]).name: row for row in map(json.loads, result.stdout.splitlines())}
    assert rows["digit.png"]["unknown"] is True and rows["coat.png"]["unknown"] is False
    assert rows["digit.png"]["label"] in eight["done"]["classes"]  # the label stays the top class
    assert rows["digit.png"]["ood_score"] > rows["coat.png"]["ood_score"]
    human = _cli("classify", "--model", eight["base"], digit, coat)
    lines = human.stdout.splitlines()
    assert "UNKNOWN" in lines[0] and "none of the classes; closest:" in lines[0]
    assert "UNKNOWN" not in lines[1] and "(1 unknown)" in lines[2]


def test_min_accuracy_refuses_to_publish_and_leaves_no_version(fm_dir, cache_dir, tmp_path):
    models = tmp_path / "models"
    common = ("train", fm_dir, "-o", models, "--name", "gated", "--cache-dir", cache_dir, "--tflite", "none")
    result = _cli(*common, "--epochs", "3", "--min-accuracy", "0.999", "--test-percent", "25", "--json")
    assert result.returncode == 1
    last = json.loads(result.stdout.splitlines()[-1])
    assert last["event"] == "error" and last["message"].endswith(
        "below --min-accuracy 0.999, so no version was published"
    )
    assert result.stderr.strip().splitlines()[-1] == f"retrain-studio: {last['message']}"
    assert not (models / "gated").exists() or not any((models / "gated").iterdir())
    bad = _cli(*common, "--min-accuracy", "1.5")
    assert bad.returncode == 2 and "--min-accuracy must be a finite number" in bad.stderr


def test_classify_warns_when_the_file_it_runs_disagreed_at_export(eight, tmp_path):
    import shutil

    version = tmp_path / "eight" / "1"
    shutil.copytree(eight["done"]["model_dir"], version)
    meta = json.loads((version / "metadata.json").read_text())
    row = meta["fidelity"]["artifacts"]["model.tflite"]
    row.update(top1_agreement=0.5, within_tolerance=False)  # as if the float file had been converted wrongly
    (version / "metadata.json").write_text(json.dumps(meta))
    image = tmp_path / "coat.png"
    image.write_bytes(eight["sets"]["own"][60])
    warned = _cli("classify", "--model", version, image)
    assert warned.returncode == 0
    assert "warning: model.tflite answers differently from the trained model beyond its tolerance" in warned.stderr
    quiet = _cli("classify", "--model", eight["base"], image)
    assert "warning" not in quiet.stderr


def _object_in_corner(corner: str) -> Image.Image:
    """A trouser from Fashion-MNIST's test set, 90 px, pasted into one corner of a black 300 x 200 canvas."""
    images, labels = fashion_mnist.load("test")
    trouser = Image.fromarray(images[np.flatnonzero(labels == 1)[0]]).resize((90, 90), Image.Resampling.BILINEAR)
    canvas = Image.new("L", (300, 200), 0)
    canvas.paste(trouser, (0, 0) if corner == "top_left" else (300 - 90, 200 - 90))
    return canvas


def test_explain_puts_the_saliency_on_the_object(eight, tmp_path):
    for corner in ("top_left", "bottom_right"):
        _object_in_corner(corner).save(tmp_path / f"{corner}.png")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / "top_left.png").write_bytes((tmp_path / "top_left.png").read_bytes())  # the same stem
    out = tmp_path / "why"
    result = _cli(
        "explain", "--model", eight["base"], tmp_path / "top_left.png", tmp_path / "bottom_right.png", broken,
        tmp_path / "again" / "top_left.png", "-o", out, "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    listed = [json.loads(line) for line in result.stdout.splitlines()]
    assert listed[-1]["npy"] == str(out / "top_left-2.npy")  # a second image of one stem does not overwrite the first
    rows = {Path(row["path"]).stem: row for row in listed[:3]}
    assert rows["broken"]["error"] and rows["broken"]["png"] is None
    for corner in ("top_left", "bottom_right"):
        assert rows[corner]["error"] is None and rows[corner]["label"] == "trouser"
        saliency = np.load(out / f"{corner}.npy")
        assert saliency.dtype == np.float32 and saliency.shape == (200, 300) and saliency.min() >= 0
        box = saliency[:100, :150] if corner == "top_left" else saliency[100:, 150:]
        share = box.sum() / saliency.sum()
        print(f"\n{corner}: {share:.0%} of the saliency in its quarter of the canvas")
        assert share > 0.75
        overlay = Image.open(out / f"{corner}.png")
        assert overlay.width == 600 and overlay.height > 400  # enlarged x2 to be read, a caption bar above


def test_every_tflite_variant_carries_the_ood_score_and_agrees(tmp_path):
    """A tiny backbone (fast): float, dynamic-range and int8 files each output probabilities and ood_score, and
    the fidelity table compares each with the numpy reference (trust.py's arithmetic, as training has it)."""
    import tensorflow as tf

    from app.core.export import export, measure_fidelity
    from app.imaging import load_image
    from app.store import TFLITE_FILES, new_metadata

    rng = np.random.default_rng(0)
    size, dims, k = 32, 16, 3
    projection = rng.normal(0, 1, (3, dims)).astype(np.float32)

    class Tiny(tf.Module):
        def __init__(self):
            self.w = tf.Variable(projection)

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
        def __call__(self, images):
            return tf.nn.relu(tf.matmul(tf.reduce_mean(images, axis=[1, 2]), self.w))

    backbone = Tiny()
    encoded = [_png(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(12)]
    pixels = np.stack([load_image(data, (size, size)) for data in encoded])
    vectors = backbone(pixels).numpy()
    kernel, bias = rng.normal(0, 1, (dims, k)).astype(np.float32), np.zeros(k, np.float32)
    prototypes = trust.class_prototypes(vectors, np.arange(12) % k, k)
    scores = trust.ood_scores(vectors, prototypes)
    threshold = float(np.median(scores))  # half the images unknown: both answers occur
    version = export(
        tmp_path,
        "tiny",
        load_backbone=lambda: backbone,
        head=(kernel, bias),
        labels=["a", "b", "c"],
        image_size=size,
        metadata=new_metadata(["a", "b", "c"], size, unknown={"threshold": threshold}),
        tflite=("float", "dynamic", "int8"),
        representative=lambda: iter(pixels),
        prototypes=prototypes,
        unknown_threshold=threshold,
        verify=lambda folder, files: measure_fidelity(
            folder, files, encoded, pixels, trust.softmax(vectors @ kernel + bias), scores > threshold, threshold
        ),
    )
    table = read_metadata(version).fidelity["artifacts"]
    assert set(table) == {"saved_model:serving_default", "saved_model:serving_images", *TFLITE_FILES.values()}
    for name in ("saved_model:serving_images", "model.tflite"):
        assert table[name]["max_abs_diff"] < 1e-5 and table[name]["unknown_agreement"] == 1.0, name
    assert table["model_int8.tflite"]["unknown_agreement"] is not None  # the int8 file has the ood_score output
    from ai_edge_litert.interpreter import Interpreter

    for name in TFLITE_FILES.values():  # output 0 stays the probabilities, as apps reading a .tflite expect
        interpreter = Interpreter(model_path=str(version / name))
        assert [len(d["shape"]) for d in interpreter.get_output_details()] == [2, 1], name
        runner = interpreter.get_signature_runner()
        assert runner(images=pixels[:1])["output_0"].shape == (1, k)
    answer = open_classifier(version / "model_int8.tflite").classify(encoded[:2])
    assert all(isinstance(p.ood_score, float) and isinstance(p.unknown, bool) for p in answer)


def test_bench_reports_the_unknown_rate(eight, tmp_path):
    from app.inference.bench import bench, labeled_files

    for i, data in enumerate(drawn_digits(6, seed=5)):
        (tmp_path / "digits").mkdir(exist_ok=True)
        (tmp_path / "digits" / f"{i}.png").write_bytes(data)
    for i, data in enumerate(eight["sets"]["own"][:30:5]):
        (tmp_path / "clothes").mkdir(exist_ok=True)
        (tmp_path / "clothes" / f"{i}.png").write_bytes(data)
    clf = open_classifier(eight["base"], "tflite")
    files = labeled_files(tmp_path)
    flags = [p.unknown for p in clf.classify([path.read_bytes() for path, _ in files])]
    row = bench(clf, files)
    assert row["unknown_rate"] == round(sum(flags) / len(flags), 4) and row["unknown_rate"] >= 0.5


def test_train_says_how_calibrated_it_is_and_how_often_it_says_unknown(fm_dir, cache_dir, tmp_path):
    import re

    result = _cli("train", fm_dir, "-o", tmp_path, "--name", "said", "--cache-dir", cache_dir, "--tflite", "none")
    assert result.returncode == 0, result.stderr[-2000:]
    calibration = re.search(
        r"Calibration: temperature ([\d.]+), expected calibration error ([\d.]+) -> ([\d.]+)", result.stdout
    )
    assert calibration and float(calibration.group(1)) > 0
    assert re.search(r"Unknown inputs: [\d.]+% of the test images are called none of the classes", result.stdout)
    assert "answers differently" not in result.stderr  # both signatures agreed with training


def test_a_small_image_s_overlay_is_enlarged_and_its_caption_never_covers_it():
    """A 28 px image: the caption used to cover half of it (seen by a tester); now it sits in a bar above."""
    import io

    from PIL import Image

    from app.core.explain import overlay_png

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)
    saliency = np.zeros((28, 28), np.float32)  # no heat: the picture shows as it is
    overlay = np.asarray(Image.open(io.BytesIO(overlay_png(pixels, saliency, "unknown (closest: bag 0.51)"))))
    bar = overlay.shape[0] - 280
    assert overlay.shape[1] == 280 and 12 <= bar <= 60  # x10, readable; a one-line caption bar
    assert np.array_equal(overlay[bar:], np.repeat(np.repeat(pixels, 10, axis=0), 10, axis=1))
    assert overlay[:bar].max() == 255 and overlay[:bar].min() == 0  # white text on black, above the picture


def test_the_export_checks_a_bounded_sample_spread_over_every_class():
    from app.core.trust import fidelity_sample

    assert fidelity_sample(40) == list(range(40))  # a small split: every test image
    picks = fidelity_sample(6000)  # 60,000 images' test split, listed class by class (600 each)
    assert len(picks) == trust.FIDELITY_IMAGES and picks == sorted(set(picks))
    assert picks[0] == 0 and picks[-1] == 5999
    assert {i // 600 for i in picks} == set(range(10))
