"""Run a labeled folder through one or more backends and summarise accuracy and timings.

Example::

    files = labeled_files("test_images/", limit=200)
    bench(open_classifier("models/flowers", "tflite"), files)["total_ms"]["median"]

Ground truth is each file's class folder (the top one under the root, as in training).  Images go
one at a time so every timing is a single image's, as a user dropping files on the window would see
them.  Each file is read just before it is classified (never all up front), and a file that cannot be
read or decoded is counted and listed in ``failures`` while the run goes on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from itertools import zip_longest
from pathlib import Path

import numpy as np

from app.imaging import Found, ImageError, find_images, read_image_file

from .base import Classifier, Prediction


def labeled_files(root: str | Path, limit: int | None = None, skipped: list | None = None) -> list[tuple[Path, str]]:
    """(image file, its class) under ``root``, interleaved across class folders so ``limit`` samples every class.

    The class is the top-level folder under ``root``, however deep the file sits (as training reads
    it: ``cat/2019/a.jpg`` is a cat), by the same discovery rule as training and ``classify``
    (``app.imaging.find_images``).

    Args:
        root: a folder of class folders.
        limit: at most this many files (None: all).
        skipped: when given, gets what was not used (hidden, unsupported, links, FIFOs, files directly in
            ``root``) as ``Found`` entries with reasons.

    Returns:
        (path, class) pairs.

    Raises:
        FileNotFoundError: ``root`` does not exist.
    """
    root = Path(root).expanduser()
    by_class: dict[str, list[tuple[Path, str]]] = {}
    for found in find_images([root]):
        parts = found.path.relative_to(root).parts
        if found.reason is None and len(parts) > 1:
            by_class.setdefault(parts[0], []).append((found.path, parts[0]))
        elif skipped is not None:
            skipped.append(found if found.reason else Found(found.path, "not inside a class folder"))
    interleaved = [p for group in zip_longest(*by_class.values()) for p in group if p is not None]
    return interleaved[:limit] if limit else interleaved


def summary(values: Sequence[float]) -> dict:
    """Mean, median, 95th percentile, min and max of timings, rounded to 0.001 ms (all None without values).

    The one definition of these numbers (the CLI, the Classify page and Compare use it): numpy's median and
    its ``"nearest"`` percentile, which is always one of the measured values, never a blend of two.

    Args:
        values: timings in ms.

    Returns:
        {"mean", "median", "p95", "min", "max"}: floats, or None each when ``values`` is empty.

    >>> summary([4.0, 1.0, 2.0, 3.0])
    {'mean': 2.5, 'median': 2.5, 'p95': 4.0, 'min': 1.0, 'max': 4.0}
    """
    if not len(values):
        return {"mean": None, "median": None, "p95": None, "min": None, "max": None}
    array = np.asarray(values, dtype=np.float64)
    stats = {
        "mean": array.mean(),
        "median": np.median(array),
        "p95": np.percentile(array, 95, method="nearest"),
        "min": array.min(),
        "max": array.max(),
    }
    return {name: round(float(value), 3) for name, value in stats.items()}


def bench(classifier: Classifier, files: Sequence[Path | tuple[Path, str]], backend: str | None = None) -> dict:
    """Classify ``files`` one at a time and summarise accuracy and timings.

    Args:
        classifier: any backend.
        files: ``labeled_files``' (path, class) pairs, or bare paths whose folder names the class.
        backend: the row's name (default: the classifier's).

    Returns:
        One JSON-ready row: backend, images, errors, accuracy (None when nothing was classified),
        unknown_rate (the share called none of the classes; None when the model cannot say),
        preprocess/inference/network/total ms ``summary``, mean request bytes, images/s, and
        ``failures`` [{path, error}].
    """
    labeled = [(Path(f[0]), f[1]) if isinstance(f, tuple) else (Path(f), Path(f).parent.name) for f in files]
    files = [path for path, _ in labeled]
    start = time.perf_counter()
    predictions = [_classify_file(classifier, path) for path in files]
    wall = time.perf_counter() - start
    ok = [(truth, p) for (_, truth), p in zip(labeled, predictions, strict=True) if p.error is None]
    correct = sum(1 for truth, p in ok if p.label == truth)
    return {
        "backend": backend or classifier.name,
        "images": len(files),
        "errors": len(files) - len(ok),
        "accuracy": round(correct / len(ok), 4) if ok else None,
        "unknown_rate": _unknown_rate([p for _, p in ok]),
        "preprocess_ms": summary([p.timings.decode_ms + p.timings.preprocess_ms for _, p in ok]),
        "inference_ms": summary([p.timings.inference_ms for _, p in ok]),
        "network_ms": summary([p.timings.network_ms for _, p in ok]),
        "total_ms": summary([p.timings.total_ms for _, p in ok]),
        "request_bytes_mean": round(float(np.mean([p.request_bytes for _, p in ok])), 1) if ok else None,
        "images_per_s": round(len(files) / wall, 2) if wall > 0 else None,
        "failures": [
            {"path": str(f), "error": p.error} for f, p in zip(files, predictions, strict=True) if p.error is not None
        ],
    }


def _unknown_rate(predictions: Sequence[Prediction]) -> float | None:
    """The share of ``predictions`` flagged unknown, or None when none of them carries the flag."""
    flags = [p.unknown for p in predictions if p.unknown is not None]
    return round(sum(flags) / len(flags), 4) if flags else None


def _classify_file(classifier: Classifier, path: Path) -> Prediction:
    """Read one file (only now, so memory stays at one image) and classify it; errors stay this file's."""
    try:
        data = read_image_file(path)
    except ImageError as exc:
        return Prediction(error=str(exc))
    return classifier.classify([data], top_k=1)[0]
