"""Honest numbers on the held-out test split: accuracy, per-class P/R/F1, confusion, mistakes."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def evaluate(probabilities: np.ndarray, labels: Sequence[int], classes: Sequence[str],
             paths: Sequence[Path] = ()) -> dict:
    """Metrics for predictions ``probabilities`` [N, K] against true ``labels`` [N].

    >>> evaluate(np.array([[0.9, 0.1], [0.2, 0.8]]), [0, 0], ["cat", "dog"])["accuracy"]
    0.5
    """
    k = len(classes)
    truth = np.asarray(labels, dtype=np.int64)
    if len(truth) == 0:
        return {"accuracy": None, "images": 0, "per_class": {}, "confusion_matrix": [[0] * k for _ in range(k)],
                "mistakes": [], "predictions": []}
    predicted = np.argmax(probabilities, axis=1)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    per_class = {}
    for c, name in enumerate(classes):
        tp = int(confusion[c, c])
        support, claimed = int(confusion[c].sum()), int(confusion[:, c].sum())
        precision = tp / claimed if claimed else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    rows = [
        {"path": str(paths[i]) if len(paths) else None, "true": classes[truth[i]],
         "predicted": classes[predicted[i]], "score": float(probabilities[i, predicted[i]])}
        for i in range(len(truth))
    ]
    return {"accuracy": float(np.mean(predicted == truth)), "images": int(len(truth)),
            "per_class": per_class, "confusion_matrix": confusion.tolist(),
            "mistakes": [r for r in rows if r["true"] != r["predicted"]], "predictions": rows}
