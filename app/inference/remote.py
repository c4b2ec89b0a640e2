"""What the gRPC and REST backends share: target URLs, signature discovery, batching, errors.

    >>> parse_target("grpc://localhost:8500/flowers?version=3")
    RemoteTarget(scheme='grpc', host='localhost', port=8500, model='flowers', version=3, signature='serving_default')

Remote backends send each image's encoded bytes (never decoded pixels) to the model's
bytes signature, discover input and output names from the model's metadata instead of
hard-coding them, and name every top-k class through the ``class_names`` signature that
Retrain Studio exports (other models fall back to their ``classes`` output for top-1).

A server is not trusted to answer sensibly: every reply is checked against what the model
said about itself (class count and names from ``class_names``, one row per image, finite
probabilities summing to 1) and anything else is a one-sentence ``ReplyError``.  Failures
that belong to one request (too large, too slow, refused, a bad reply) are that image's
error in ``classify``; only a server that cannot be used at all ends a run.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import parse_qs, urlparse

import numpy as np

from app.store import (
    CLASS_NAMES_SIGNATURE,
    CLASSES_OUTPUT,
    OOD_SCORE_OUTPUT,
    PROBABILITIES_OUTPUT,
    SERVING_SIGNATURE,
    UNKNOWN_OUTPUT,
    ModelError,
    labels_for,
)

from .base import Prediction, Timings, check_images, ranked

DEFAULT_PORTS = {"grpc": 8500, "grpcs": 8500, "http": 8501, "https": 8501}
DEFAULT_SIGNATURE = SERVING_SIGNATURE
MAX_REPLY_BYTES = 64 * 1024 * 1024  # replies hold probabilities and names: 64 MB is thousands of times enough
SOFTMAX_TOLERANCE = 1e-3


class RemoteError(ModelError):
    """The server could not be used; ``str()`` is one sentence for the user."""


class RequestError(RemoteError):
    """This one request failed (too large, too slow, refused, or answered wrongly); others may still work."""


class BadRequest(RequestError):
    """The server refused this request's content (for example an image it cannot decode)."""


class ReplyError(RequestError):
    """The server answered, but not with what the model's own metadata says it must."""


def wrong_protocol(target: RemoteTarget) -> RemoteError:
    """The error for a REST client on a gRPC port or the converse, naming the URL that would work."""
    if target.protocol == "rest":
        return RemoteError(
            f"{target.address} answered in HTTP/2: this port speaks gRPC; use "
            f"grpc://{target.host}:{target.port}/{target.model} or the REST port (8501)"
        )
    return RemoteError(
        f"{target.address} answered in HTTP/1.1: this port speaks REST; use "
        f"http://{target.host}:{target.port}/v1/models/{target.model} or the gRPC port (8500)"
    )


def check_token(token: str | None) -> str | None:
    """A bearer token as sent in a header.

    Args:
        token: as typed (surrounding space is dropped).

    Returns:
        The token, or None when empty.

    Raises:
        RemoteError: not one line of printable ASCII without spaces.
    """
    token = (token or "").strip()
    if not token:
        return None
    if not all(33 <= ord(c) <= 126 for c in token):
        raise RemoteError("the token must be one line of printable ASCII characters without spaces")
    return token


def checked_args(target: RemoteTarget | str, token: str | None) -> tuple[RemoteTarget, str | None]:
    """What every client's constructor starts with: the target parsed (when a URL) and the token checked.

    Raises:
        RemoteError: a URL ``parse_target`` refuses or a token ``check_token`` refuses.
    """
    return (parse_target(target) if isinstance(target, str) else target), check_token(token)


_TOKEN_WARNED: set[str] = set()


def token_warning(target: RemoteTarget, token: str | None) -> str | None:
    """The sentence to show when a bearer token would travel unencrypted (None when it would not)."""
    if not token or target.secure:
        return None
    secure = "grpcs" if target.protocol == "grpc" else "https"
    return (
        f"the token is sent unencrypted to {target.scheme}://{target.address}; anyone on the network can "
        f"read it (use {secure}://)"
    )


@dataclass(frozen=True)
class RemoteTarget:
    """A parsed server URL: where to connect and which model, version and signature to ask for."""

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
    """A server URL, parsed.

    Args:
        url: ``grpc[s]://host[:port]/NAME`` or ``http[s]://host[:port]/v1/models/NAME[/versions/V]``,
            optionally with ``?version=V&signature=S``.

    Returns:
        The RemoteTarget (default ports 8500 for gRPC, 8501 for REST).

    Raises:
        RemoteError: not such a URL, a bad port, no single model name or a non-numeric version.
    """
    parsed = urlparse(url.strip())
    scheme = parsed.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parsed.hostname:
        raise RemoteError(
            f"'{url}' is not a server address; use grpc://host:8500/MODEL or http://host:8501/v1/models/MODEL"
        )
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
    return RemoteTarget(
        scheme,
        parsed.hostname,
        port,
        path,
        int(version) if version else None,
        query.get("signature", DEFAULT_SIGNATURE),
    )


@dataclass(frozen=True)
class SignatureNames:
    """Which input takes image bytes and which outputs hold probabilities, top-1 labels and the unknown flag."""

    image_input: str
    probabilities: str
    classes: str | None
    unknown: str | None = None  # bool per image (models exported with the unknown-input detector)
    ood_score: str | None = None  # float per image

    @property
    def wanted(self) -> list[str]:
        """The outputs a request asks for."""
        return [n for n in (self.probabilities, self.classes, self.unknown, self.ood_score) if n]


class Reply(NamedTuple):
    """One checked predict answer: per-image rows, what the request cost, and the trust outputs if any."""

    probabilities: np.ndarray
    top1: list[str] | None
    request_bytes: int
    encode_ms: float
    reply_ms: float = 0.0  # decoding the reply on the client, after it arrived
    unknown: list[bool] | None = None
    ood_score: list[float] | None = None


def choose_names(signatures: dict[str, dict[str, dict[str, str]]], target: RemoteTarget) -> SignatureNames:
    """Which input takes the image bytes and which outputs hold the probabilities and top-1 labels.

    Args:
        signatures: {signature: {"inputs": {name: dtype}, "outputs": {name: dtype}}} (dtype like "DT_STRING").
        target: says which signature is asked for.

    Returns:
        The SignatureNames.

    Raises:
        RemoteError: no such signature, not exactly one string input, or no probabilities output.
    """
    if target.signature not in signatures:
        raise RemoteError(
            f"model '{target.model}' has no signature '{target.signature}' "
            f"(it has {', '.join(sorted(signatures)) or 'none'})"
        )
    signature = signatures[target.signature]
    strings = [name for name, dtype in signature["inputs"].items() if dtype == "DT_STRING"]
    if len(strings) != 1 or len(signature["inputs"]) != 1:
        raise RemoteError(
            f"signature '{target.signature}' of model '{target.model}' does not take encoded image "
            "bytes (it needs exactly one string input)"
        )
    outputs = signature["outputs"]
    floats = [name for name, dtype in outputs.items() if dtype == "DT_FLOAT"]
    probabilities = (
        PROBABILITIES_OUTPUT if PROBABILITIES_OUTPUT in outputs else (floats[0] if len(floats) == 1 else None)
    )
    if probabilities is None:
        raise RemoteError(f"signature '{target.signature}' has no '{PROBABILITIES_OUTPUT}' output")
    classes = CLASSES_OUTPUT if outputs.get(CLASSES_OUTPUT) == "DT_STRING" else None
    trusted = outputs.get(UNKNOWN_OUTPUT) == "DT_BOOL" and outputs.get(OOD_SCORE_OUTPUT) == "DT_FLOAT"
    return SignatureNames(
        strings[0], probabilities, classes, *((UNKNOWN_OUTPUT, OOD_SCORE_OUTPUT) if trusted else (None, None))
    )


class RemoteClassifier:
    """Batching, per-image timings, label naming and reply checks; subclasses move the bytes.

    ``warnings`` holds sentences worth showing once (a token sent over plain text); the
    ``on_warning`` callback gets each the first time in this process.
    """

    name = "remote"
    batch_size = 8

    def __init__(self, target: RemoteTarget, *, token: str | None = None, on_warning=None):
        self.target = target
        self.warnings = [note for note in [token_warning(target, token)] if note]
        for note in self.warnings:
            if on_warning is not None and note not in _TOKEN_WARNED:
                _TOKEN_WARNED.add(note)
                on_warning(note)
        self.class_count: int | None = None  # known from class_names, or from the first good reply
        self.labels: list[str] = []
        self.names = choose_names(self.signatures(), target)
        self.labels = self._fetch_labels()
        self.class_count = len(self.labels) or None

    @property
    def where(self) -> str:
        return f"{self.target.scheme}://{self.target.address}"

    # --- implemented by each protocol -------------------------------------------------
    def signatures(self) -> dict:
        raise NotImplementedError

    def status(self) -> list[tuple[int, str]]:
        """[(version, state)] as the server reports them (the connection check)."""
        raise NotImplementedError

    def predict(self, images: Sequence[bytes]) -> Reply:
        """The checked answer for ``images`` (``checked_reply``): request size, encode and reply-decode times."""
        raise NotImplementedError

    def lookup_class_names(self, count: int) -> list:
        """The ``class_names`` signature's answer for indices 0..count-1 (str or bytes; checked by the caller)."""
        raise NotImplementedError

    # --- shared -----------------------------------------------------------------------
    def _fetch_labels(self) -> list[str]:
        if CLASS_NAMES_SIGNATURE not in self.signatures():
            return []
        from .base import warm_up_image

        count = int(self.predict([warm_up_image()]).probabilities.shape[1])
        try:
            names = self.lookup_class_names(count)
        except BadRequest:  # a class_names signature this client does not understand: fall back to indices
            return []
        names = self.checked_names(names, count, "class names")
        if len(set(names)) != len(names):
            raise ReplyError(f"{self.where} answered with the same class name twice for model '{self.target.model}'")
        return names

    def checked_names(self, names, count: int, what: str) -> list[str]:
        """Class names from a reply: ``count`` of them, each non-empty UTF-8 text without control characters."""
        if not isinstance(names, list) or len(names) != count:
            got = len(names) if isinstance(names, list) else "no list of"
            raise ReplyError(f"{self.where} answered with {got} {what} where {count} were expected")
        out = []
        for name in names:
            try:
                name = name.decode("utf-8") if isinstance(name, bytes) else name
                if isinstance(name, str):
                    name.encode("utf-8")  # a lone surrogate from JSON's \udcxx is not UTF-8
            except UnicodeError:
                raise ReplyError(f"{self.where} answered with {what} that are not valid UTF-8") from None
            if not isinstance(name, str) or not name:
                raise ReplyError(f"{self.where} answered with {what} that are not text")
            if any(unicodedata.category(c) == "Cc" for c in name):
                raise ReplyError(f"{self.where} answered with {what} that contain control characters")
            out.append(name)
        return out

    def checked_probabilities(self, values, rows: int) -> np.ndarray:
        """``values`` as a float32 [rows, K] array, or a ReplyError saying what is wrong with it."""
        where = self.where
        try:
            array = np.array(values)
        except (ValueError, TypeError):
            raise ReplyError(f"{where} answered with probability rows of uneven length") from None
        if array.size == 0:
            raise ReplyError(f"{where} answered with no predictions")
        if array.dtype.kind not in "fiu":
            raise ReplyError(f"{where} answered with probabilities that are not numbers")
        if array.ndim != 2 or array.shape[0] != rows:
            raise ReplyError(
                f"{where} answered with probabilities of shape {list(array.shape)} for {rows} "
                f"image{'s' if rows != 1 else ''}"
            )
        if self.class_count is not None and array.shape[1] != self.class_count:
            raise ReplyError(
                f"{where} answered with {array.shape[1]} probabilities per image, but model "
                f"'{self.target.model}' has {self.class_count} classes"
            )
        if not np.isfinite(array).all():
            raise ReplyError(f"{where} answered with probabilities that are not finite (NaN or infinity)")
        if self.labels and (
            (array < -SOFTMAX_TOLERANCE).any()
            or (array > 1 + SOFTMAX_TOLERANCE).any()
            or (np.abs(array.sum(axis=1) - 1) > SOFTMAX_TOLERANCE).any()
        ):
            raise ReplyError(f"{where} answered with probabilities that are not between 0 and 1 or do not sum to 1")
        return array.astype(np.float32)

    def checked_reply(
        self, values, top1, rows: int, request_bytes: int, encode_ms: float, unknown=None, ood_score=None
    ) -> Reply:
        """A reply's outputs, each checked (``ReplyError`` when wrong): probabilities, top-1 labels, trust."""
        probabilities = self.checked_probabilities(values, rows)
        if top1 is not None:
            top1 = self.checked_names(top1, rows, "top-1 classes")
        if self.names.unknown:
            unknown, ood_score = self.checked_trust(unknown, ood_score, rows)
        return Reply(probabilities, top1, request_bytes, encode_ms, unknown=unknown, ood_score=ood_score)

    def checked_trust(self, unknown, ood_score, rows: int) -> tuple[list[bool], list[float]]:
        """The ``unknown`` flags (booleans) and ``ood_score`` values (finite numbers), one per image."""
        flags = list(unknown) if isinstance(unknown, (list, tuple, np.ndarray)) else None
        if flags is None or len(flags) != rows or not all(isinstance(f, (bool, np.bool_)) for f in flags):
            raise ReplyError(f"{self.where} answered without one true/false '{UNKNOWN_OUTPUT}' per image")
        scores = list(ood_score) if isinstance(ood_score, (list, tuple, np.ndarray)) else None
        if (
            scores is None
            or len(scores) != rows
            or not all(
                isinstance(v, (int, float, np.floating)) and not isinstance(v, bool) and np.isfinite(v) for v in scores
            )
        ):
            raise ReplyError(f"{self.where} answered without one finite '{OOD_SCORE_OUTPUT}' per image")
        return [bool(f) for f in flags], [float(v) for v in scores]

    def classify(self, images: Sequence[bytes], top_k: int = 5) -> list[Prediction]:
        """One Prediction per image, batched by ``batch_size``.

        A request that fails alone (too large, too slow, refused, answered wrongly) becomes that image's
        error and the others go on; a server that cannot be used at all raises RemoteError.
        """
        good, predictions = check_images(images)
        for start in range(0, len(good), self.batch_size):
            chunk = good[start : start + self.batch_size]
            try:
                self._classify_batch(images, chunk, predictions, top_k)
            except RequestError as exc:
                if len(chunk) == 1:
                    predictions[chunk[0]].error = str(exc)
                    continue
                for i in chunk:  # find which image the server could not take
                    try:
                        self._classify_batch(images, [i], predictions, top_k)
                    except RequestError as exc:
                        predictions[i].error = str(exc)
        return predictions

    def _classify_batch(self, images, chunk: list[int], predictions: list[Prediction], top_k: int) -> None:
        start = time.perf_counter()
        reply = self.predict([images[i] for i in chunk])
        probabilities, top1, request_bytes, encode_ms, reply_ms = reply[:5]
        elapsed_ms = (time.perf_counter() - start) * 1e3
        if self.class_count is None:  # a model without class_names: later replies must agree with the first
            self.class_count = int(probabilities.shape[1])
        n = len(chunk)
        network_ms = max(0.0, elapsed_ms - encode_ms - reply_ms) / n
        for row, i in enumerate(chunk):
            labels = labels_for(self.labels, probabilities.shape[1])
            ranking = ranked(probabilities[row], labels, top_k)
            if not self.labels and top1:
                ranking[0] = (top1[row], ranking[0][1])
            predictions[i] = Prediction(
                ranking,
                Timings(
                    preprocess_ms=encode_ms / n, network_ms=network_ms, reply_ms=reply_ms / n, total_ms=elapsed_ms / n
                ),
                request_bytes=round(request_bytes / n),
                unknown=reply.unknown[row] if reply.unknown is not None else None,
                ood_score=reply.ood_score[row] if reply.ood_score is not None else None,
            )
