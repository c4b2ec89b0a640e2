"""Progress and metric events shared by the CLI (``--json`` lines) and the GUI.

Every event is a plain JSON-ready dict with an ``"event"`` key, so the CLI can print it
and the GUI can read it back from the child process line by line.
"""
from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .dataset import Dataset

EventSink = Callable[[dict], None]


def progress(stage: str, done: int, total: int) -> dict:
    return {"event": "progress", "stage": stage, "done": done, "total": total}


def stage(name: str, message: str) -> dict:
    return {"event": "stage", "stage": name, "message": message}


def epoch(number: int, metrics: dict) -> dict:
    return {"event": "epoch", "epoch": number, **{k: float(v) for k, v in metrics.items()}}


def warning(message: str) -> dict:
    return {"event": "warning", "message": message}


def error(message: str) -> dict:
    return {"event": "error", "message": message}


def dataset(data: Dataset) -> dict:
    """What the scan found: classes, per-split counts, skipped files with reasons, sources and their origins."""
    return {"event": "dataset", "root": str(data.root), "classes": data.classes, "counts": data.counts(),
            "skipped": [{"path": str(x.path), "reason": x.reason} for x in data.skipped],
            "warnings": data.warnings, "sources": data.source_records(), "origins": data.origins(),
            **data.summary()}


def new_images(count: int, images: int) -> dict:
    """How many of the ``images`` scanned the backbone has to embed (the rest are in the cache)."""
    return {"event": "new_images", "count": count, "images": images}


def done(model_dir: str, models_config: str | None, metrics: dict, classes: list[str], seconds: dict) -> dict:
    """The last event of a training run. Kept small (one line for the GUI to read): ``metrics`` are the
    headline numbers (``evaluation.summary``); the full results are in the version's ``results.npz``."""
    return {"event": "done", "model_dir": model_dir, "models_config": models_config, "metrics": metrics,
            "classes": classes, "seconds": seconds}


def review(label_issues: list, duplicates: list, outliers: list, seconds: dict, **extra) -> dict:
    """The data review: likely wrong labels, duplicate groups (with leaks) and outliers, each list ranked."""
    return {"event": "review", "label_issues": label_issues, "duplicates": duplicates, "outliers": outliers,
            "seconds": {k: float(v) for k, v in seconds.items()}, **extra}


def ignore(_event: dict) -> None:
    """An EventSink that drops everything."""


def json_lines(stream=None) -> EventSink:
    """An EventSink that writes one JSON object per line and flushes (for a reading parent)."""
    def emit(event: dict) -> None:
        out = stream or sys.stdout
        out.write(json.dumps(event) + "\n")
        out.flush()
    return emit
