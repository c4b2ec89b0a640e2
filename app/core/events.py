"""Progress and metric events shared by the CLI (``--json`` lines) and the GUI.

Every event is a plain JSON-ready dict with an ``"event"`` key, so the CLI can print it
and the GUI can read it back from the child process line by line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .dataset import Dataset

EventSink = Callable[[dict], None]


def progress(stage: str, done: int, total: int) -> dict:
    """How far a counted stage is: ``done`` of ``total`` (embedding images, epochs)."""
    return {"event": "progress", "stage": stage, "done": done, "total": total}


def stage(name: str, message: str) -> dict:
    """A stage begins, or says its next step: ``name`` as in ``done``'s seconds, ``message`` for people."""
    return {"event": "stage", "stage": name, "message": message}


def epoch(number: int, metrics: dict) -> dict:
    """One epoch's metrics (loss, accuracy, val_loss, val_accuracy), as floats."""
    return {"event": "epoch", "epoch": number, **{k: float(v) for k, v in metrics.items()}}


def warning(message: str) -> dict:
    """Something the user should know that does not stop the run, in one sentence."""
    return {"event": "warning", "message": message}


def error(message: str) -> dict:
    """Why the run stopped, in one sentence (the GUI shows this, not stderr)."""
    return {"event": "error", "message": message}


def dataset(data: Dataset) -> dict:
    """What the scan found.

    Args:
        data: the scanned ``app.core.dataset.Dataset``.

    Returns:
        The ``dataset`` event: root, classes, per-split counts, skipped files with their reasons, scan
        warnings, the sources and what each gave, and the split sizes (``Dataset.summary``).
    """
    return {
        "event": "dataset",
        "root": str(data.root),
        "classes": data.classes,
        "counts": data.counts(),
        "skipped": [{"path": str(x.path), "reason": x.reason} for x in data.skipped],
        "warnings": data.warnings,
        "sources": data.source_records(),
        "origins": data.origins(),
        **data.summary(),
    }


def new_images(count: int, images: int) -> dict:
    """How many of the scanned images the backbone has to embed.

    Args:
        count: images with at least one vector not in the embedding cache yet.
        images: images scanned.

    Returns:
        The ``new_images`` event (sent before the embed stage starts).
    """
    return {"event": "new_images", "count": count, "images": images}


def done(model_dir: str, models_config: str | None, metrics: dict, classes: list[str], seconds: dict) -> dict:
    """The last event of a training run, kept small (one line for the GUI to read).

    Args:
        model_dir: the new version folder.
        models_config: the models.config written beside the models, or None when it could not be.
        metrics: the headline numbers (``evaluation.summary`` + validation accuracy + epochs run); the
            full results are in the version's ``store.RESULTS_FILE``.
        classes: the class names, in output order.
        seconds: wall time per stage and ``total``.

    Returns:
        The ``done`` event.
    """
    return {
        "event": "done",
        "model_dir": model_dir,
        "models_config": models_config,
        "metrics": metrics,
        "classes": classes,
        "seconds": seconds,
    }


def review(label_issues: list, duplicates: list, outliers: list, seconds: dict, **extra) -> dict:
    """The data review: likely wrong labels, duplicate groups (with leaks) and outliers, each list ranked."""
    return {
        "event": "review",
        "label_issues": label_issues,
        "duplicates": duplicates,
        "outliers": outliers,
        "seconds": {k: float(v) for k, v in seconds.items()},
        **extra,
    }


def ignore(_event: dict) -> None:
    """An EventSink that drops everything."""


def json_lines(stream=None) -> EventSink:
    """An EventSink that writes one JSON object per line and flushes (for a reading parent).

    Args:
        stream: where to write; ``sys.stdout`` as it is at each event when None.

    Returns:
        The sink.
    """

    def emit(event: dict) -> None:
        out = stream or sys.stdout
        out.write(json.dumps(event) + "\n")
        out.flush()

    return emit
