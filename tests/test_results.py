"""Stored test results: the side file beside each version, and small metadata / done events at 2,000 classes."""

import json

import numpy as np
import pytest

from app.core import events
from app.core.evaluation import (
    ResultsError,
    evaluate,
    load_results,
    save_results,
    summary,
    wilson_interval,
)
from app.store import RESULTS_FILE

SMALL_BYTES = 200_000


def _fabricated(k: int, per_class: int, seed: int = 0):
    """Probabilities for ``k`` classes: mostly right, some confused with the next class."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(k), per_class)
    logits = rng.normal(size=(len(truth), k)).astype(np.float32)
    wrong = rng.random(len(truth)) < 0.2
    logits[np.arange(len(truth)), np.where(wrong, (truth + 1) % k, truth)] += 6
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    classes = [f"class_{i:04d}_with_a_longish_name" for i in range(k)]
    paths = [f"/photos/{classes[t]}/image_{i:05d}.jpg" for i, t in enumerate(truth)]
    return probabilities, truth, classes, paths


def test_2000_classes_keep_metadata_and_done_small_and_the_side_file_complete(tmp_path):
    probabilities, truth, classes, paths = _fabricated(2000, 2)
    report = evaluate(probabilities, truth, classes, paths)
    metrics = summary(report)
    metadata = {"labels": classes, "metrics": {**metrics, "validation_accuracy": 0.5}}
    done = events.done(
        str(tmp_path / "big" / "1"),
        str(tmp_path / "models.config"),
        {**metrics, "validation_accuracy": 0.5, "epochs_run": 12},
        classes,
        {"total": 1.0},
    )
    meta_bytes, done_bytes = len(json.dumps(metadata, indent=2)), len(json.dumps(done))
    print(f"2000 classes: metadata {meta_bytes} bytes, done line {done_bytes} bytes")
    assert meta_bytes < SMALL_BYTES and done_bytes < SMALL_BYTES
    assert metrics["results_file"] == RESULTS_FILE and "per_class" not in metrics
    assert metrics["test_images"] == 4000 and abs(metrics["test_accuracy"] - report["accuracy"]) < 1e-12

    save_results(tmp_path / RESULTS_FILE, probabilities, truth, classes, paths)
    size = (tmp_path / RESULTS_FILE).stat().st_size
    print(f"results.npz: {size} bytes")
    results = load_results(tmp_path)
    assert results.classes == classes and results.paths == paths and results.images == 4000
    assert np.array_equal(results.confusion, np.array(report["confusion_matrix"]))
    assert results.accuracy == report["accuracy"]
    assert len(results.rows(mistakes=True)) == len(report["mistakes"])
    assert results.top_scores.shape == (4000, 5) and np.all(np.diff(results.top_scores, axis=1) <= 0)
    true, predicted, count = results.top_confusions(1)[0]
    assert count == report["confusion_matrix"][true][predicted] and predicted == (true + 1) % 2000


def test_odd_file_names_survive_the_round_trip(tmp_path):
    import os

    names = [os.fsdecode(b"/photos/caf\xe9/1.jpg"), "/photos/日本/2.jpg", "/photos/tab\there/3.jpg"]
    save_results(tmp_path / RESULTS_FILE, np.eye(3)[[0, 1, 1]], [0, 1, 2], ["a", "b", "c"], names)
    results = load_results(tmp_path)
    assert results.paths == names and results.correct == 2 and results.rows(mistakes=True)[0]["path"] == names[2]


def test_small_label_sets_keep_the_per_class_table_in_metadata():
    probabilities, truth, classes, paths = _fabricated(4, 3)
    metrics = summary(evaluate(probabilities, truth, classes, paths))
    assert set(metrics["per_class"]) == set(classes)
    assert "confusion_matrix" not in metrics and "predictions" not in metrics


def test_wilson_interval_is_honest_about_small_samples():
    low, high = wilson_interval(9, 9)
    assert 0.65 < low < 0.75 and high == 1.0  # "100% on 9 images" is really "70% to 100%"
    low, high = wilson_interval(900, 1000)
    assert 0.87 < low < 0.9 < high < 0.92
    assert wilson_interval(0, 0) is None


@pytest.mark.parametrize("damage", ["missing", "truncated", "garbage", "wrong_sizes", "pickled"])
def test_a_damaged_results_file_is_one_error(tmp_path, damage):
    probabilities, truth, classes, paths = _fabricated(3, 2)
    target = tmp_path / RESULTS_FILE
    save_results(target, probabilities, truth, classes, paths)
    if damage == "missing":
        target.unlink()
    elif damage == "truncated":
        target.write_bytes(target.read_bytes()[:200])
    elif damage == "garbage":
        target.write_bytes(b"PK\x03\x04" + b"\xff" * 500)
    elif damage == "wrong_sizes":
        with np.load(target) as data:
            arrays = dict(data)
        arrays["truth"] = np.array([0, 7], np.int32)
        np.savez(target, **arrays)
    else:
        np.savez(target, format=np.array(1), classes=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ResultsError):
        load_results(tmp_path)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evaluate_agrees_with_sklearn(seed):
    """Accuracy, per-class precision/recall/F1/support and the confusion matrix against sklearn.metrics, on random
    labels where one class is never predicted (precision 0, not a division error) and one never occurs."""
    from sklearn import metrics

    rng = np.random.default_rng(seed)
    k, n = 6, 200
    truth = rng.choice(k - 1, n)  # class 5 never occurs in the truth
    probabilities = rng.random((n, k))
    probabilities[:, 2] = 0.0  # class 2 is never predicted
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    predicted = probabilities.argmax(axis=1)
    classes = [f"c{i}" for i in range(k)]
    report = evaluate(probabilities, truth, classes, [f"/x/{i}.png" for i in range(n)])

    assert report["accuracy"] == pytest.approx(metrics.accuracy_score(truth, predicted), abs=1e-12)
    assert report["images"] == n and report["correct"] == int(metrics.accuracy_score(truth, predicted, normalize=False))
    assert report["confusion_matrix"] == metrics.confusion_matrix(truth, predicted, labels=range(k)).tolist()
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        truth, predicted, labels=range(k), zero_division=0
    )
    for c, name in enumerate(classes):
        row = report["per_class"][name]
        assert row["precision"] == pytest.approx(precision[c], abs=1e-12), (name, "precision")
        assert row["recall"] == pytest.approx(recall[c], abs=1e-12), (name, "recall")
        assert row["f1"] == pytest.approx(f1[c], abs=1e-12), (name, "f1")
        assert row["support"] == support[c]
    assert report["per_class"]["c2"]["precision"] == 0.0 and report["per_class"]["c2"]["recall"] == 0.0
    assert report["per_class"]["c5"]["support"] == 0 and report["per_class"]["c5"]["recall"] == 0.0
    assert len(report["mistakes"]) == n - report["correct"]
    assert all(row["true"] != row["predicted"] for row in report["mistakes"])
