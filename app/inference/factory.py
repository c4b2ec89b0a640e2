"""Open the right backend for a model path or server URL."""

from __future__ import annotations

from .base import Classifier, ModelError

LOCAL_BACKENDS = ("tflite", "savedmodel")


def open_classifier(
    model: str | None = None, backend: str = "tflite", server: str | None = None, **options
) -> Classifier:
    """The right backend for a model path or a server URL.

    Example::

        open_classifier("models/flowers", "tflite")
        open_classifier(server="grpc://host:8500/flowers")

    Args:
        model: a version folder or a model's base folder (local backends).
        backend: ``"tflite"`` or ``"savedmodel"`` (ignored with ``server``).
        server: a TF Serving URL (``grpc[s]://`` or ``http[s]://``); it decides the protocol.
        **options: timeout_s, ca_file, token and on_warning (called once with a sentence when a token
            would travel unencrypted; also kept in the classifier's ``warnings``) for the gRPC and REST
            backends; threads for TFLite.

    Returns:
        A Classifier, already warmed up.

    Raises:
        ModelError: the model or server cannot be used (RemoteError for servers), one sentence.
    """
    if server:
        from .remote import parse_target

        target = parse_target(server)
        if target.protocol == "grpc":
            from .serving_grpc import GrpcClassifier

            return GrpcClassifier(target, **options)
        from .serving_rest import RestClassifier

        return RestClassifier(target, **options)
    if backend == "tflite":
        from .tflite import TFLiteClassifier

        return TFLiteClassifier(model, threads=options.get("threads"))
    if backend == "savedmodel":
        from app import classify_only

        if classify_only():
            raise ModelError("this build has no TensorFlow: use the TFLite backend or a server")
        from .savedmodel import SavedModelClassifier

        return SavedModelClassifier(model)
    raise ModelError(f"unknown backend '{backend}' (use {' or '.join(LOCAL_BACKENDS)})")
