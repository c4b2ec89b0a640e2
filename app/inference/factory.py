"""Open the right backend for a model path or server URL."""
from __future__ import annotations

from .base import Classifier, ModelError

LOCAL_BACKENDS = ("tflite", "savedmodel")


def open_classifier(model: str | None = None, backend: str = "tflite", server: str | None = None) -> Classifier:
    """``open_classifier("models/flowers", "tflite")`` or ``open_classifier(server="grpc://...")``."""
    if server:
        raise ModelError("remote servers are not supported by this build yet")
    if backend == "tflite":
        from .tflite import TFLiteClassifier
        return TFLiteClassifier(model)
    if backend == "savedmodel":
        from .savedmodel import SavedModelClassifier
        return SavedModelClassifier(model)
    raise ModelError(f"unknown backend '{backend}' (use {' or '.join(LOCAL_BACKENDS)})")
