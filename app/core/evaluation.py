"""Honest numbers on the held-out test split: accuracy, per-class P/R/F1, confusion, mistakes.

What the results page shows is stored with each model version in one side file, ``store.RESULTS_FILE``
(``results.npz``, see ``save_results``), written inside the atomic export; metadata.json and the ``done`` event carry
only the headline numbers (``summary``), so 2,000 classes do not make either of them megabytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.store import RESULTS_FILE

RESULTS_FORMAT = 1
SMALL_CLASSES = 50  # up to this many classes, metadata.json and the done event repeat the per-class numbers
TOP_K = 5  # probabilities kept per test image (the full [N, K] matrix would be N*K floats)


def per_class_metrics(confusion: np.ndarray, classes: Sequence[str]) -> dict:
    """Returns {class: {precision, recall, f1, support}} from a confusion matrix.

    A class never predicted (or never present) gets precision (or recall) 0.0 rather than a division error.

    Args:
        confusion: [K, K] counts, rows true, columns predicted.
        classes: The K class names, in label order.

    >>> per_class_metrics([[3, 1], [0, 4]], ["cat", "dog"])["cat"]
    {'precision': 1.0, 'recall': 0.75, 'f1': 0.857..., 'support': 4}
    """
    confusion = np.asarray(confusion)
    tp, support, claimed = np.diag(confusion), confusion.sum(axis=1), confusion.sum(axis=0)
    out = {}
    for c, name in enumerate(classes):
        precision = float(tp[c] / claimed[c]) if claimed[c] else 0.0
        recall = float(tp[c] / support[c]) if support[c] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[name] = {"precision": precision, "recall": recall, "f1": f1, "support": int(support[c])}
    return out


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    """Returns the [k, k] count matrix, rows true class, columns predicted class.

    >>> confusion_matrix([0, 1, 1], [0, 0, 1], 2).tolist()
    [[1, 0], [1, 1]]
    """
    return np.bincount(np.asarray(truth, np.int64) * k + np.asarray(predicted, np.int64), minlength=k * k).reshape(k, k)


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """Returns the 95% confidence interval (low, high) of an accuracy of ``correct``/``n``; None when n is 0.

    Wilson's interval, because it stays sound at 0%, 100% and small n, where the textbook one collapses.

    >>> [round(x, 3) for x in wilson_interval(9, 9)]
    [0.701, 1.0]
    """
    if n <= 0:
        return None
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def evaluate(
    probabilities: np.ndarray, labels: Sequence[int], classes: Sequence[str], paths: Sequence[Path] = ()
) -> dict:
    """Score predictions against the true labels (the full report; ``summary`` is its small part).

    Args:
        probabilities: [N, K] class probabilities (the prediction is the argmax).
        labels: [N] true class numbers.
        classes: The K class names.
        paths: The N image paths, for the rows (optional).

    Returns:
        {"accuracy" (None without images), "images", "correct", "per_class", "confusion_matrix",
        "mistakes", "predictions"}; each row is {"path", "true", "predicted", "score"}.

    >>> evaluate(np.array([[0.9, 0.1], [0.2, 0.8]]), [0, 0], ["cat", "dog"])["accuracy"]
    0.5
    """
    k = len(classes)
    truth = np.asarray(labels, dtype=np.int64)
    if len(truth) == 0:
        return {
            "accuracy": None,
            "images": 0,
            "correct": 0,
            "per_class": {},
            "confusion_matrix": [[0] * k for _ in range(k)],
            "mistakes": [],
            "predictions": [],
        }
    predicted = np.argmax(probabilities, axis=1)
    confusion = confusion_matrix(truth, predicted, k)
    rows = [
        {
            "path": str(paths[i]) if len(paths) else None,
            "true": classes[truth[i]],
            "predicted": classes[predicted[i]],
            "score": float(probabilities[i, predicted[i]]),
        }
        for i in range(len(truth))
    ]
    return {
        "accuracy": float(np.mean(predicted == truth)),
        "images": int(len(truth)),
        "correct": int(np.sum(predicted == truth)),
        "per_class": per_class_metrics(confusion, classes),
        "confusion_matrix": confusion.tolist(),
        "mistakes": [r for r in rows if r["true"] != r["predicted"]],
        "predictions": rows,
    }


def summary(report: dict) -> dict:
    """Returns the small part of an ``evaluate`` report for metadata.json and the ``done`` event.

    Headline accuracy with its test-image count and 95% interval, the per-class table only up to
    ``SMALL_CLASSES`` classes, and the name of the side file holding everything else.
    """
    interval = wilson_interval(report.get("correct", 0), report["images"])
    out = {
        "test_accuracy": report["accuracy"],
        "test_images": report["images"],
        "test_correct": report.get("correct", 0),
        "test_accuracy_95": [round(x, 4) for x in interval] if interval else None,
        "results_file": RESULTS_FILE,
    }
    if len(report["per_class"]) <= SMALL_CLASSES:
        out["per_class"] = {
            name: {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
            for name, row in report["per_class"].items()
        }
    return out


def save_results(
    path: str | Path,
    probabilities: np.ndarray,
    labels: Sequence[int],
    classes: Sequence[str],
    paths: Sequence[str | Path],
) -> None:
    """Write the results page's data as a compressed ``.npz`` (plain arrays, no pickles: safe to reopen).

    Args:
        path: The file to write (inside the version's temporary export folder: the export makes it atomic).
        probabilities: [N, K] class probabilities of the test images.
        labels: [N] true class numbers.
        classes: The K class names.
        paths: The N test images.

    Arrays: ``format`` (1), ``classes`` [K] str, ``paths`` [N] str (test images, absolute),
    ``truth`` [N] int32, ``top_classes`` / ``top_scores`` [N, min(K, 5)] int32 / float32 (best first,
    so ``top_classes[:, 0]`` is the prediction), ``true_scores`` [N] float32 (probability of the true
    class), ``confusion`` [K, K] int32 (rows true, columns predicted).
    """
    probabilities = np.asarray(probabilities, np.float32).reshape(len(labels), len(classes))
    truth = np.asarray(labels, np.int32)
    k = min(TOP_K, len(classes))
    if len(truth):
        top = np.argpartition(-probabilities, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(probabilities, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
    else:
        top = np.zeros((0, k), np.int64)
    with open(path, "wb") as f:
        np.savez_compressed(
            f,
            format=np.array(RESULTS_FORMAT),
            classes=np.array(list(classes), dtype=str),
            paths=np.array([str(p) for p in paths], dtype=str).reshape(len(truth)),
            truth=truth,
            top_classes=top.astype(np.int32),
            top_scores=np.take_along_axis(probabilities, top, axis=1),
            true_scores=probabilities[np.arange(len(truth)), truth] if len(truth) else np.zeros(0, np.float32),
            confusion=confusion_matrix(truth, top[:, 0], len(classes)).astype(np.int32),
        )


class ResultsError(ValueError):
    """A results file that is missing, damaged or from an unknown format; ``str()`` says which, in one sentence."""


@dataclass
class Results:
    """A version's stored test results (``load_results``), with what the results page asks of them."""

    classes: list[str]
    paths: list[str]
    truth: np.ndarray
    top_classes: np.ndarray
    top_scores: np.ndarray
    true_scores: np.ndarray
    confusion: np.ndarray

    @property
    def predicted(self) -> np.ndarray:
        """[N] predicted class numbers (the best of ``top_classes``)."""
        return self.top_classes[:, 0] if len(self.truth) else self.truth

    @property
    def images(self) -> int:
        """Number of test images."""
        return int(len(self.truth))

    @property
    def correct(self) -> int:
        """Number of test images predicted right."""
        return int(np.sum(self.predicted == self.truth))

    @property
    def accuracy(self) -> float | None:
        """Share predicted right, None without test images."""
        return self.correct / self.images if self.images else None

    def per_class(self) -> dict:
        """Returns {class: {precision, recall, f1, support}} (``per_class_metrics``)."""
        return per_class_metrics(self.confusion, self.classes)

    def rows(self, true: int | None = None, predicted: int | None = None, mistakes: bool = False) -> list[dict]:
        """Returns the test images as {"path", "true", "predicted", "score"} rows, in stored order.

        Args:
            true: Only images of this true class number.
            predicted: Only images predicted as this class number.
            mistakes: Only images predicted wrong.
        """
        keep = np.ones(self.images, bool)
        if true is not None:
            keep &= self.truth == true
        if predicted is not None:
            keep &= self.predicted == predicted
        if mistakes:
            keep &= self.truth != self.predicted
        return [
            {
                "path": self.paths[i],
                "true": self.classes[self.truth[i]],
                "predicted": self.classes[self.predicted[i]],
                "score": float(self.top_scores[i, 0]),
            }
            for i in np.flatnonzero(keep)
        ]

    def top_confusions(self, limit: int = 100) -> list[tuple[int, int, int]]:
        """Returns (true, predicted, count) of the ``limit`` most frequent confusions, most first (ties: row order)."""
        off = self.confusion.copy()
        np.fill_diagonal(off, 0)
        flat = np.flatnonzero(off)
        flat = flat[np.argsort(-off.ravel()[flat], kind="stable")][:limit]
        k = len(self.classes)
        return [(int(i // k), int(i % k), int(off.ravel()[i])) for i in flat]


def load_results(path: str | Path) -> Results:
    """Read a version's stored test results.

    Args:
        path: A ``results.npz``, or a version folder holding one.

    Returns:
        The Results, checked for consistent sizes and class numbers before anything indexes with them.

    Raises:
        ResultsError: The file is missing (a version trained before results were stored), unreadable,
            of an unknown format or inconsistent.
    """
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    try:
        with np.load(path, allow_pickle=False) as data:
            if int(data["format"]) != RESULTS_FORMAT:
                raise ResultsError(f"{path} is a results file of an unknown format")
            arrays = {
                name: data[name]
                for name in ("classes", "paths", "truth", "top_classes", "top_scores", "true_scores", "confusion")
            }
    except FileNotFoundError:
        raise ResultsError(f"{path.parent} has no stored test results (it was trained by an older version)") from None
    except ResultsError:
        raise
    except Exception as exc:  # a damaged file is that file's error, never the app's
        raise ResultsError(f"{path} cannot be read ({type(exc).__name__})") from None
    k, n = len(arrays["classes"]), len(arrays["truth"])
    if (
        arrays["confusion"].shape != (k, k)
        or len(arrays["paths"]) != n
        or arrays["top_classes"].ndim != 2
        or arrays["top_classes"].shape != arrays["top_scores"].shape
        or arrays["top_classes"].shape[0] != n
        or (
            n
            and (
                arrays["truth"].max() >= k
                or arrays["top_classes"].max() >= k
                or min(arrays["truth"].min(), arrays["top_classes"].min()) < 0
            )
        )
    ):
        raise ResultsError(f"{path} is inconsistent (sizes or class numbers do not match)")
    return Results(
        classes=[str(c) for c in arrays["classes"]],
        paths=[str(p) for p in arrays["paths"]],
        truth=arrays["truth"].astype(np.int64),
        top_classes=arrays["top_classes"].astype(np.int64),
        top_scores=arrays["top_scores"],
        true_scores=arrays["true_scores"],
        confusion=arrays["confusion"].astype(np.int64),
    )
