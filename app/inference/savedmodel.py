"""Local SavedModel backend: raw bytes into ``serving_default``, through the concrete signature."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from app.store import (
    OOD_SCORE_OUTPUT,
    PROBABILITIES_OUTPUT,
    SERVING_SIGNATURE,
    UNKNOWN_OUTPUT,
    ModelError,
    labels_for,
    read_metadata,
    resolve_version,
)

from .base import Prediction, Timings, check_images, ranked, warm_up_image


class SavedModelClassifier:
    """``tf.saved_model.load`` once, then call the bytes signature per batch (never ``predict``).

    Args:
        model: a version folder or a model's base folder (its highest version).
        signature: the signature taking encoded image bytes.

    Raises:
        ModelError: no such model or signature, a signature without a string input, a damaged folder.
    """

    name = "savedmodel"

    def __init__(self, model: str | Path, signature: str = SERVING_SIGNATURE):
        import tensorflow as tf

        self.version_dir = resolve_version(model)
        self.metadata = read_metadata(self.version_dir)
        try:
            self._model = tf.saved_model.load(str(self.version_dir))
        except Exception as exc:
            raise ModelError(f"cannot load SavedModel {self.version_dir}: {str(exc).splitlines()[0]}") from None
        if signature not in self._model.signatures:
            raise ModelError(
                f"the model has no signature '{signature}' (it has {', '.join(self._model.signatures) or 'none'})"
            )
        self._fn = self._model.signatures[signature]
        inputs = self._fn.structured_input_signature[1]
        string_inputs = [k for k, spec in inputs.items() if spec.dtype == tf.string]
        if not string_inputs:
            raise ModelError(f"signature '{signature}' does not take encoded image bytes")
        self._input = string_inputs[0]
        self.labels = list(self.metadata.labels)
        self._tf = tf
        self.classify([warm_up_image()])

    def classify(self, images: Sequence[bytes], top_k: int = 5) -> list[Prediction]:
        """One Prediction per encoded image, in order; a batch the model cannot decode is retried one by one."""
        good, predictions = check_images(images)
        if good:
            start = time.perf_counter()
            try:
                out = self._fn(**{self._input: self._tf.constant([images[i] for i in good])})
            except Exception:
                out = None
            if out is None:  # one undecodable image fails the batch: retry one by one
                for i in good:
                    predictions[i] = self._classify_one(images[i], top_k)
                return predictions
            elapsed = (time.perf_counter() - start) * 1000 / len(good)
            probabilities = out[PROBABILITIES_OUTPUT].numpy()
            labels = labels_for(self.labels, probabilities.shape[1])
            unknown, ood = _trust_outputs(out)
            for row, i in enumerate(good):
                predictions[i].top_k = ranked(probabilities[row], labels, top_k)
                predictions[i].timings = Timings(inference_ms=elapsed, total_ms=elapsed)
                predictions[i].unknown, predictions[i].ood_score = unknown[row], ood[row]
        return predictions

    def _classify_one(self, data: bytes, k: int) -> Prediction:
        start = time.perf_counter()
        try:
            out = self._fn(**{self._input: self._tf.constant([data])})
        except Exception as exc:
            return Prediction(
                request_bytes=len(data), error=f"the model could not decode this image ({type(exc).__name__})"
            )
        elapsed = (time.perf_counter() - start) * 1000
        probabilities = out[PROBABILITIES_OUTPUT].numpy()[0]
        timings = Timings(inference_ms=elapsed, total_ms=elapsed)
        unknown, ood = _trust_outputs(out)
        ranking = ranked(probabilities, labels_for(self.labels, len(probabilities)), k)
        return Prediction(ranking, timings, len(data), unknown=unknown[0], ood_score=ood[0])


def _trust_outputs(out: dict) -> tuple[list, list]:
    """Per image (unknown flag, ood_score) from a signature's outputs; Nones for a model without them."""
    rows = len(out[PROBABILITIES_OUTPUT])
    if UNKNOWN_OUTPUT not in out or OOD_SCORE_OUTPUT not in out:
        return [None] * rows, [None] * rows
    return [bool(v) for v in out[UNKNOWN_OUTPUT].numpy()], [float(v) for v in out[OOD_SCORE_OUTPUT].numpy()]
