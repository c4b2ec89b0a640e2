"""What the gRPC and REST backends share: target URLs, signature discovery, batching, errors.

    >>> parse_target("grpc://localhost:8500/flowers?version=3")
    RemoteTarget(scheme='grpc', host='localhost', port=8500, model='flowers', version=3, signature='serving_default')

Remote backends send each image's encoded bytes (never decoded pixels) to the model's
bytes signature, discover input and output names from the model's metadata instead of
hard-coding them, and name every top-k class through the ``class_names`` signature that
Retrain Studio exports (other models fall back to their ``classes`` output for top-1).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Sequence
from urllib.parse import parse_qs, urlparse

import numpy as np

from .base import ModelError, Prediction, Timings, check_images, ranked

DEFAULT_PORTS = {"grpc": 8500, "grpcs": 8500, "http": 8501, "https": 8501}
DEFAULT_SIGNATURE = "serving_default"
CLASS_NAMES_SIGNATURE = "class_names"


class RemoteError(ModelError):
    """The server could not be used; ``str()`` is one sentence for the user."""


class BadRequest(RemoteError):
    """The server refused this request's content (for example an image it cannot decode)."""


@dataclass(frozen=True)
class RemoteTarget:
    scheme: str
    host: str
    port: int
    model: str
    version: int | None = None
    signature: str = DEFAULT_SIGNATURE

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def secure(self) -> bool:
        return self.scheme in ("grpcs", "https")

    @property
    def protocol(self) -> str:
        return "grpc" if self.scheme.startswith("grpc") else "rest"


def parse_target(url: str) -> RemoteTarget:
    """grpc[s]://host[:port]/NAME or http[s]://host[:port]/v1/models/NAME[/versions/V], ?version=&signature=."""
    parsed = urlparse(url.strip())
    scheme = parsed.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parsed.hostname:
        raise RemoteError(f"'{url}' is not a server address; use grpc://host:8500/MODEL or "
                         "http://host:8501/v1/models/MODEL")
    try:
        port = parsed.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise RemoteError(f"'{url}' has an invalid port") from None
    query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
    version = query.get("version")
    path = parsed.path.strip("/")
    if scheme.startswith("http"):
        match = re.fullmatch(r"v1/models/([^/]+)(?:/versions/(\d+))?", path)
        if not match:
            raise RemoteError(f"'{url}' should end in /v1/models/MODEL (TF Serving's REST path)")
        path, version = match.group(1), match.group(2) or version
    if not path or "/" in path:
        raise RemoteError(f"'{url}' does not name one model (grpc://host:port/MODEL)")
    if version is not None and not str(version).isdigit():
        raise RemoteError(f"version must be a number, not '{version}'")
    return RemoteTarget(scheme, parsed.hostname, port, path, int(version) if version else None,
                        query.get("signature", DEFAULT_SIGNATURE))


@dataclass(frozen=True)
class SignatureNames:
    """Which input takes image bytes and which outputs hold probabilities and top-1 labels."""
    image_input: str
    probabilities: str
    classes: str | None


def choose_names(signatures: dict[str, dict[str, dict[str, str]]], target: RemoteTarget) -> SignatureNames:
    """``signatures``: {signature: {"inputs": {name: dtype}, "outputs": {name: dtype}}} (dtype like "DT_STRING")."""
    if target.signature not in signatures:
        raise RemoteError(f"model '{target.model}' has no signature '{target.signature}' "
                          f"(it has {', '.join(sorted(signatures)) or 'none'})")
    signature = signatures[target.signature]
    strings = [name for name, dtype in signature["inputs"].items() if dtype == "DT_STRING"]
    if len(strings) != 1 or len(signature["inputs"]) != 1:
        raise RemoteError(f"signature '{target.signature}' of model '{target.model}' does not take encoded image "
                          "bytes (it needs exactly one string input)")
    outputs = signature["outputs"]
    floats = [name for name, dtype in outputs.items() if dtype == "DT_FLOAT"]
    probabilities = "probabilities" if "probabilities" in outputs else (floats[0] if len(floats) == 1 else None)
    if probabilities is None:
        raise RemoteError(f"signature '{target.signature}' has no 'probabilities' output")
    classes = "classes" if outputs.get("classes") == "DT_STRING" else None
    return SignatureNames(strings[0], probabilities, classes)


class RemoteClassifier:
    """Batching, per-image timings and label naming; subclasses move the bytes."""

    name = "remote"
    batch_size = 8

    def __init__(self, target: RemoteTarget):
        self.target = target
        self.names = choose_names(self.signatures(), target)
        self.labels = self._fetch_labels()

    # --- implemented by each protocol -------------------------------------------------
    def signatures(self) -> dict:
        raise NotImplementedError

    def status(self) -> list[tuple[int, str]]:
        """[(version, state)] as the server reports them (the connection check)."""
        raise NotImplementedError

    def predict(self, images: Sequence[bytes]) -> tuple[np.ndarray, list[str] | None, int, float]:
        """-> (probabilities [N,K], top-1 labels or None, request bytes, client-side encode ms)."""
        raise NotImplementedError

    def lookup_class_names(self, count: int) -> list[str] | None:
        raise NotImplementedError

    # --- shared -----------------------------------------------------------------------
    def _fetch_labels(self) -> list[str]:
        if CLASS_NAMES_SIGNATURE in self.signatures():
            try:
                count = self._class_count()
                names = self.lookup_class_names(count)
                if names:
                    return names
            except RemoteError:
                pass
        return []

    def _class_count(self) -> int:
        from .base import warm_up_image
        probabilities, _, _, _ = self.predict([warm_up_image()])
        return int(probabilities.shape[1])

    def classify(self, images: Sequence[bytes], top_k: int = 5) -> list[Prediction]:
        good, predictions = check_images(images)
        for start in range(0, len(good), self.batch_size):
            chunk = good[start:start + self.batch_size]
            try:
                self._classify_batch(images, chunk, predictions, top_k)
            except BadRequest:
                for i in chunk:  # find which image the server could not take
                    try:
                        self._classify_batch(images, [i], predictions, top_k)
                    except BadRequest as exc:
                        predictions[i].error = str(exc)
        return predictions

    def _classify_batch(self, images, chunk: list[int], predictions: list[Prediction], top_k: int) -> None:
        start = time.perf_counter()
        probabilities, top1, request_bytes, encode_ms = self.predict([images[i] for i in chunk])
        elapsed_ms = (time.perf_counter() - start) * 1e3
        n = len(chunk)
        network_ms = max(0.0, elapsed_ms - encode_ms) / n
        for row, i in enumerate(chunk):
            labels = self.labels or [f"class_{j}" for j in range(probabilities.shape[1])]
            ranking = ranked(probabilities[row], labels, top_k)
            if not self.labels and top1:
                ranking[0] = (top1[row], ranking[0][1])
            predictions[i] = Prediction(ranking, Timings(preprocess_ms=encode_ms / n, network_ms=network_ms,
                                                         total_ms=elapsed_ms / n),
                                        request_bytes=round(request_bytes / n))
