"""Local TFLite backend: LiteRT (``ai_edge_litert``), falling back to ``tflite_runtime``.

Decoding and resizing happen on the host with ``preprocess`` (a .tflite cannot decode
JPEG), and this module never imports TensorFlow, so classification starts fast.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.imaging import ImageError, decode, resize
from app.store import (
    TFLITE_FILES,
    ModelError,
    labels_for,
    read_metadata,
    resolve_version,
    tflite_outputs,
    user_path,
)

from .base import Prediction, Timings, ranked, warm_up_image


def interpreter_class():
    """LiteRT's Interpreter, or tflite_runtime's where only that is installed.

    Raises:
        ModelError: neither is installed.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise ModelError("no TFLite runtime installed: pip install ai-edge-litert") from None
    return Interpreter


class TFLiteClassifier:
    """One interpreter, images classified one at a time (batch 1 is what TFLite is built for).

    Args:
        model: a version folder, a model's base folder (its highest version) or a ``.tflite`` file.
        variant: which of ``store.TFLITE_FILES`` to load from a version folder.
        threads: interpreter threads (None: the runtime's default).

    Raises:
        ModelError: no such model or variant, a damaged file or metadata.json, no TFLite runtime.
    """

    name = "tflite"

    def __init__(self, model: str | Path, variant: str = "float", threads: int | None = None):
        path = user_path(model)
        if path.suffix == ".tflite":
            model_file = resolve_version(path)
            version_dir = path.parent
        else:
            version_dir = resolve_version(path)
            model_file = version_dir / TFLITE_FILES.get(variant, variant)
            if not model_file.exists():
                raise ModelError(f"{version_dir} has no {model_file.name}; export it with --tflite {variant}")
        if not model_file.is_file():  # LiteRT opens it holding the GIL: a pipe froze every thread, the GUI's too
            raise ModelError(f"{model_file} is not a regular file")
        self.metadata = read_metadata(version_dir)
        try:
            self._interpreter = interpreter_class()(model_path=str(model_file), num_threads=threads)
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"cannot load {model_file.name}: {str(exc).splitlines()[0]}") from None
        self._input = self._interpreter.get_input_details()[0]
        self._output, self._ood = tflite_outputs(self._interpreter.get_output_details())
        self.unknown_threshold = self.metadata.unknown_threshold  # the .tflite gives ood_score; the flag is this
        _, height, width, _ = self._input["shape"]
        self.size = (int(height), int(width))
        self.labels = labels_for(self.metadata.labels, int(self._output["shape"][-1]))
        self.model_file = model_file
        self.classify([warm_up_image()])

    def invoke(self, image) -> object:
        """Bare inference on one preprocessed [H, W, 3] float image: its K probabilities (for benchmarks)."""
        self._interpreter.set_tensor(self._input["index"], image[None])
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output["index"])[0]

    def classify(self, images: Sequence[bytes], top_k: int = 5) -> list[Prediction]:
        """One Prediction per encoded image, in order; a bad image gets ``error`` set."""
        return self.classify_prepared([self.prepare(data) for data in images], top_k)

    def prepare(self, data: bytes) -> Prepared | Prediction:
        """Decode and resize one image on the host, for ``classify_prepared``.

        It uses no interpreter state, so worker threads may run it while the model thread runs
        ``invoke`` (``pipeline.classify_files`` overlaps them).

        Args:
            data: an encoded image.

        Returns:
            The model-size pixels with their timings, or a Prediction carrying the decode error.
        """
        t0 = time.perf_counter()
        try:
            pixels = decode(data, self.size)
        except ImageError as exc:
            return Prediction(request_bytes=len(data), error=str(exc))
        t1 = time.perf_counter()
        image = resize(pixels, self.size)
        t2 = time.perf_counter()
        return Prepared(image, len(data), (t1 - t0) * 1e3, (t2 - t1) * 1e3)

    def classify_prepared(self, items: Sequence[Prepared | Prediction], top_k: int = 5) -> list[Prediction]:
        """Run the model on ``prepare``'s results, on the thread that owns the interpreter.

        Args:
            items: ``prepare``'s results; an error Prediction passes through unchanged.
            top_k: labels kept per image.

        Returns:
            One Prediction per item, in order, with decode, preprocess and inference timings.
        """
        out = []
        for item in items:
            if isinstance(item, Prediction):
                out.append(item)
                continue
            start = time.perf_counter()
            probabilities = self.invoke(item.image)
            ood = float(self._interpreter.get_tensor(self._ood["index"])[0]) if self._ood is not None else None
            inference_ms = (time.perf_counter() - start) * 1e3
            timings = Timings(
                decode_ms=item.decode_ms,
                preprocess_ms=item.preprocess_ms,
                inference_ms=inference_ms,
                total_ms=item.decode_ms + item.preprocess_ms + inference_ms,
            )
            unknown = None if ood is None or self.unknown_threshold is None else ood > self.unknown_threshold
            out.append(
                Prediction(
                    ranked(probabilities, self.labels, top_k),
                    timings,
                    item.request_bytes,
                    unknown=unknown,
                    ood_score=ood,
                )
            )
        return out


@dataclass(frozen=True)
class Prepared:
    """One image decoded and resized on the host, waiting for the interpreter."""

    image: np.ndarray
    request_bytes: int
    decode_ms: float
    preprocess_ms: float
