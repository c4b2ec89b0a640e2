"""The Classifier protocol every backend implements, and what it returns.

Example::

    clf = open_classifier("models/flowers")          # highest version, like TF Serving
    [p.label for p in clf.classify([Path("rose.jpg").read_bytes()])]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

from app.store import ModelError


@dataclass
class Timings:
    """Milliseconds one image spent in each step; a step a backend does not have stays 0.

    For remote backends ``preprocess_ms`` is the client encoding the request (serialising the bytes),
    ``network_ms`` the network and the server, and ``reply_ms`` the client decoding and checking the reply.
    """

    decode_ms: float = 0.0
    preprocess_ms: float = 0.0
    inference_ms: float = 0.0
    network_ms: float = 0.0
    reply_ms: float = 0.0
    total_ms: float = 0.0

    def to_dict(self) -> dict:
        """The timings rounded to a microsecond, for JSON."""
        return {k: round(v, 3) for k, v in asdict(self).items()}


@dataclass
class Prediction:
    """One image's answer: the top-k (label, probability), best first, or ``error`` (one sentence).

    ``unknown`` says the image looks like none of the model's classes (``label`` stays the closest class);
    ``ood_score`` is how unlike them it is.  Both are None for a model exported without the detector.
    """

    top_k: list[tuple[str, float]] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)
    request_bytes: int = 0
    error: str | None = None
    unknown: bool | None = None
    ood_score: float | None = None

    @property
    def label(self) -> str | None:
        """The best label, or None when the image failed."""
        return self.top_k[0][0] if self.top_k else None

    @property
    def score(self) -> float | None:
        """The best label's probability, or None when the image failed."""
        return self.top_k[0][1] if self.top_k else None


class Classifier(Protocol):
    """What every backend is: a name, its class names, and ``classify``."""

    name: str
    labels: list[str]

    def classify(self, images: Sequence[bytes], top_k: int = 5) -> list[Prediction]:
        """One Prediction per encoded image, in order; a bad image gets ``error`` set."""


def check_images(images: Sequence[bytes]) -> tuple[list[int], list[Prediction]]:
    """Read each header first, so one corrupt file gets its own error instead of failing a batch.

    Args:
        images: encoded images.

    Returns:
        (indices worth sending, one Prediction per image with the header errors already filled in).
    """
    from app.imaging import ImageError, image_size

    predictions = [Prediction(request_bytes=len(data)) for data in images]
    good = []
    for i, data in enumerate(images):
        try:
            image_size(data)
            good.append(i)
        except ImageError as exc:
            predictions[i].error = str(exc)
    return good, predictions


def ranked(probabilities, labels: Sequence[str], k: int) -> list[tuple[str, float]]:
    """The top ``k`` (label, probability), best first.

    Args:
        probabilities: one image's K probabilities.
        labels: the K class names.
        k: how many to keep.

    Returns:
        Up to ``k`` (label, probability) pairs.

    Raises:
        ModelError: the output and the labels disagree in number, or a probability is not finite.
    """
    if len(probabilities) != len(labels):
        raise ModelError(
            f"the model gives {len(probabilities)} probabilities but has {len(labels)} class names; "
            "its folder is damaged or mixed up"
        )
    if not all(math.isfinite(float(p)) for p in probabilities):
        raise ModelError("the model gave probabilities that are not finite numbers; its file may be damaged")
    order = sorted(range(len(probabilities)), key=lambda i: -float(probabilities[i]))[:k]
    return [(labels[i], float(probabilities[i])) for i in order]


def warm_up_image() -> bytes:
    """A tiny PNG that each backend classifies once when opened, so timings exclude tracing."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (128, 128, 128)).save(buffer, "PNG")
    return buffer.getvalue()
