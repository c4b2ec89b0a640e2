"""Feature extractors behind one registry: bundled EfficientNet-Lite, TF Hub handles, local dirs.

All follow TF Hub's image feature-vector contract: float32 RGB [B,H,W,3] in [0,1] -> [B,D].
Example (the first ``load`` of a bundled backbone converts its weights once, into the user cache)::

    info = resolve("efficientnet_lite0")
    extractor = load(info)
    vectors = extractor(images)         # images [B, 224, 224, 3] -> vectors [B, 1280]

To add a backbone: another bundled EfficientNet-Lite size is one ``VARIANTS`` entry in ``efficientnet_lite``;
another bundled architecture also needs its own conversion in ``materialise`` and ``fingerprint``.  Anything
else already works as a TF Hub handle or a local feature-vector SavedModel folder (``resolve``), which
``backbone_safety`` inspects before it is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import events
from .atomic import remove_stale_temps, temp_folder, write_bytes
from .efficientnet_lite import VARIANTS, weights_file

DEFAULT_BACKBONE = "efficientnet_lite0"
LITERT_THREADS = 2  # XNNPACK threads: this many cores run the forward pass; decoding overlaps it
AGREEMENT = 1e-4  # the converted forward pass must match TensorFlow's this closely (so cached vectors stay valid)
# Hub handles are downloaded programs: only over https, only from these hosts (and paths).  The storage
# bucket is TF Hub's own; any other bucket on storage.googleapis.com could hold anyone's model.
HUB_HOSTS = (
    ("tfhub.dev", "/"),
    ("www.kaggle.com", "/models/"),
    ("kaggle.com", "/models/"),
    ("storage.googleapis.com", "/tfhub-modules/"),
)


class BackboneError(ValueError):
    """The backbone cannot be used; ``str()`` says why in one sentence."""


@dataclass(frozen=True)
class BackboneInfo:
    """What the app knows about a backbone before loading it; stored in metadata.json (``to_dict``).

    Attributes:
        id: The registry name, the hub handle or the local folder's absolute path.
        source: ``"bundled"``, ``"hub"`` or ``"local"``.
        image_size: Input height and width in pixels.
        description: One line for people.
        offline: Whether it can be loaded without internet.
        license: The weights' licence, when known.
    """

    id: str
    source: str  # "bundled", "hub" or "local"
    image_size: int
    description: str
    offline: bool
    license: str = ""

    def to_dict(self) -> dict:
        """Returns the fields as a JSON-ready dict."""
        return asdict(self)


_BUNDLED = {
    name: BackboneInfo(
        name,
        "bundled",
        size,
        f"EfficientNet-Lite{name[-1]} with ImageNet weights ({size}x{size}), shipped in a Python package",
        offline=True,
        license="Apache-2.0",
    )
    for name, (_, size) in VARIANTS.items()
}
HUB_EXAMPLES = {  # well-known TF2 feature vectors; need internet the first time
    "https://www.kaggle.com/models/google/mobilenet-v3/TensorFlow2/large-100-224-feature-vector/1": 224,
    "https://www.kaggle.com/models/google/efficientnet-v2/TensorFlow2/imagenet1k-b0-feature-vector/2": 224,
    "https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5": 224,
}


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """Returns where backbones and embeddings are cached.

    Args:
        cache_dir: ``--cache-dir``; without it ``$RETRAIN_STUDIO_CACHE``, then the user cache folder.
    """
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get("RETRAIN_STUDIO_CACHE"):
        return Path(os.environ["RETRAIN_STUDIO_CACHE"]).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("retrain-studio"))


def list_backbones() -> list[BackboneInfo]:
    """Returns the backbones to offer: bundled ones first (offline), then example hub handles (need internet).

    A bundled backbone whose weights package is missing is listed as not offline, saying so.
    """
    out = []
    for name in _BUNDLED:
        try:
            weights_file(name)
            out.append(_BUNDLED[name])
        except FileNotFoundError:
            out.append(
                BackboneInfo(
                    name,
                    "bundled",
                    _BUNDLED[name].image_size,
                    _BUNDLED[name].description + " (package not installed)",
                    offline=False,
                )
            )
    out += [BackboneInfo(h, "hub", s, "TF Hub / Kaggle feature vector", offline=False) for h, s in HUB_EXAMPLES.items()]
    return out


def _size_from_name(text: str, default: int = 224) -> int:
    found = re.findall(r"(?:_|-)(\d{3})(?:[/_-]|$)", text)
    return int(found[-1]) if found else default


def check_hub_handle(handle: str) -> None:
    """Refuse a hub handle that is not https:// on one of ``HUB_HOSTS`` (a model is code: its source matters).

    Args:
        handle: A URL given as the backbone.

    Raises:
        BackboneError: Not https, another host or path prefix, credentials, an odd port or ``..`` segments.

    >>> check_hub_handle("https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5")
    >>> check_hub_handle("http://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5")
    Traceback (most recent call last):
    app.core.backbones.BackboneError: refusing http://... hub handles must use https:// ...
    """
    from urllib.parse import urlparse

    parsed = urlparse(handle)
    if parsed.scheme.lower() != "https":
        raise BackboneError(
            f"refusing {handle}: hub handles must use https:// (a model fetched over plain "
            "http:// can be replaced on the way)"
        )
    try:
        port = parsed.port
    except ValueError:
        port = -1
    host = (parsed.hostname or "").lower()
    dots = any(part in (".", "..") or part.lower().startswith("%2e") for part in parsed.path.split("/"))
    if (
        parsed.username
        or parsed.password
        or port not in (None, 443)
        or dots
        or not any(  # /models/../x leaves /models/
            host == allowed and parsed.path.startswith(prefix) for allowed, prefix in HUB_HOSTS
        )
    ):
        raise BackboneError(
            f"refusing {handle}: hub handles may come only from " + ", ".join(f"https://{h}{p}" for h, p in HUB_HOSTS)
        )


def resolve(spec: str | None, *, trust: bool = False) -> BackboneInfo:
    """Map a registry id, a hub handle or a local SavedModel folder to a BackboneInfo; nothing is loaded.

    A local folder's graph is inspected first (``backbone_safety``): one that reads or writes
    files, runs code or uses the network is refused unless ``trust`` (``--trust-backbone``).

    Args:
        spec: The ``--backbone`` value; None or "" means ``DEFAULT_BACKBONE``.
        trust: Skip the local folder's safety check.

    Returns:
        The backbone's BackboneInfo (a hub handle's image size is read from its name, else 224).

    Raises:
        BackboneError: An unknown name, a refused hub handle, a folder without ``saved_model.pb`` or an
            unsafe graph.

    >>> resolve("efficientnet_lite1").image_size
    240
    """
    spec = (spec or DEFAULT_BACKBONE).strip()
    if spec in _BUNDLED:
        return _BUNDLED[spec]
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", spec):
        check_hub_handle(spec)
        return BackboneInfo(
            spec, "hub", HUB_EXAMPLES.get(spec, _size_from_name(spec)), "TF Hub / Kaggle feature vector", offline=False
        )
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "saved_model.pb").exists():
            raise BackboneError(f"{path} is not a SavedModel folder (no saved_model.pb inside)")
        if not trust:
            from .backbone_safety import UnsafeGraphError, check_savedmodel

            try:
                check_savedmodel(path)
            except UnsafeGraphError as exc:
                raise BackboneError(str(exc)) from None
        return BackboneInfo(
            str(path.resolve()), "local", _size_from_name(path.name), "local feature-vector SavedModel", offline=True
        )
    raise BackboneError(
        f"unknown backbone '{spec}'; use one of {', '.join(_BUNDLED)}, a TF Hub handle or a SavedModel folder"
    )


def fingerprint(info: BackboneInfo) -> str:
    """Returns a short, file-name-safe key that changes when the backbone's weights change.

    It names the backbone's embedding-cache folder and its converted SavedModel, so changed weights
    never reuse stale vectors.  A hub handle's key is the handle itself (the hub versions its models).
    """
    if info.source == "bundled":
        stat = weights_file(info.id).stat()
        basis = f"{info.id}:{weights_file(info.id).name}:{stat.st_size}"
    elif info.source == "local":
        pb = Path(info.id, "saved_model.pb").stat()
        basis = f"{info.id}:{pb.st_size}:{pb.st_mtime_ns}"
    else:
        basis = info.id
    slug = re.sub(r"[^A-Za-z0-9]+", "_", info.id.rstrip("/").split("/")[-1] if info.source != "bundled" else info.id)
    return f"{slug[-40:]}-{hashlib.sha256(basis.encode()).hexdigest()[:10]}"


def materialise(info: BackboneInfo, cache_dir: str | Path | None = None) -> str:
    """Returns where ``hub.load`` finds ``info``, converting bundled weights to a SavedModel once.

    The conversion is written to a temporary folder and renamed into place, so two processes converting at
    once, or one killed half-way, never leave a half-written backbone in the cache.

    Args:
        info: The backbone.
        cache_dir: As for ``cache_root``.
    """
    if info.source != "bundled":
        return info.id
    target = cache_root(cache_dir) / "backbones" / fingerprint(info)
    if (target / "saved_model.pb").exists():
        return str(target)
    from .efficientnet_lite import save_feature_vector

    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target.parent)
    tmp = temp_folder(target.parent)
    try:
        save_feature_vector(info.id, tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first: theirs is as good as ours
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def load(info: BackboneInfo, cache_dir: str | Path | None = None):
    """Load the feature extractor (``hub.load``); imports TensorFlow.

    Args:
        info: The backbone, from ``resolve``.
        cache_dir: As for ``cache_root``.

    Returns:
        A callable TF object mapping float32 [B, H, W, 3] in [0, 1] to [B, D].

    Raises:
        BackboneError: It cannot be downloaded or loaded, or cannot be called on images (a TF1 SavedModel).
    """
    location = materialise(info, cache_dir)
    import tensorflow_hub as hub

    try:
        model = hub.load(location)
    except Exception as exc:  # network, missing files, TF1 hub format...
        first_line = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        if info.source == "hub":
            raise BackboneError(f"could not download {info.id} (no internet?): {first_line}") from None
        raise BackboneError(f"could not load backbone {info.id}: {first_line}") from None
    if not callable(model):  # a TF1 SavedModel or a model without __call__: it would fail at the first image
        raise BackboneError(
            f"the backbone {info.id} cannot be called on images (a TF1 SavedModel, or one saved "
            "without __call__); use a TF2 feature-vector SavedModel"
        )
    return model


def feature_tflite_path(info: BackboneInfo, cache_dir: str | Path | None = None) -> Path:
    """Returns where the backbone's float ``.tflite`` feature extractor is cached: beside its SavedModel.

    Keyed like the SavedModel (``fingerprint``) plus the input size, so changed weights never reuse it.

    Args:
        info: The backbone.
        cache_dir: As for ``cache_root``.
    """
    return cache_root(cache_dir) / "backbones" / f"{fingerprint(info)}-{info.image_size}.tflite"


def convert_to_tflite(model, image_size: int) -> bytes:
    """Convert a loaded feature-vector backbone to a float ``.tflite`` with input [B, S, S, 3]; imports TensorFlow.

    The batch dimension stays dynamic (``resize_tensor_input``); height and width are fixed, which lets
    XNNPACK plan the whole graph.

    Args:
        model: The callable TF object ``load`` returns.
        image_size: S.

    Returns:
        The flatbuffer's bytes.

    Raises:
        Exception: Whatever the converter raises for ops it cannot express (the caller falls back to TF).
    """
    import tensorflow as tf

    forward = tf.function(
        lambda images: model(images), input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.float32)]
    )
    converter = tf.lite.TFLiteConverter.from_concrete_functions([forward.get_concrete_function()], model)
    return converter.convert()


def probe_images(image_size: int, count: int = 4) -> np.ndarray:
    """Returns ``count`` fixed, smooth float32 test images [count, S, S, 3] in [0, 1] (gradients and blobs).

    Used to check a converted backbone against TensorFlow before its vectors are trusted.

    Args:
        image_size: S.
        count: How many images.
    """
    ramp = np.linspace(0.0, 1.0, image_size, dtype=np.float32)
    yy, xx = np.meshgrid(ramp, ramp, indexing="ij")
    out = []
    for n in range(count):
        phase = n * 0.7
        out.append(
            np.stack(
                [
                    xx,
                    yy[::-1] if n % 2 else yy,
                    0.5 + 0.5 * np.sin(6.0 * (xx + yy) + phase) * np.cos(4.0 * xx - phase),
                ],
                axis=-1,
            )
        )
    return np.clip(np.stack(out), 0.0, 1.0).astype(np.float32)


class LiteRTForward:
    """One LiteRT interpreter (XNNPACK, ``LITERT_THREADS`` threads) running a feature-vector ``.tflite``.

    Not thread-safe: call it from one thread only (the embed loop does).  The batch size follows the
    input; the interpreter is resized only when it changes.

    Args:
        model: The ``.tflite`` file, or its bytes.
        threads: Interpreter threads.

    Raises:
        ValueError, RuntimeError: Not a model LiteRT can run.
        ImportError: ``ai-edge-litert`` is not installed.
    """

    def __init__(self, model: Path | bytes, threads: int = LITERT_THREADS):
        from ai_edge_litert.interpreter import Interpreter

        source = {"model_content": model} if isinstance(model, bytes) else {"model_path": str(model)}
        self._interpreter = Interpreter(**source, num_threads=threads)
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._shape: tuple | None = None

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Runs the forward pass on one batch.

        Args:
            images: float32 [B, S, S, 3] in [0, 1].

        Returns:
            float32 [B, D], a copy (the interpreter's buffer is reused by the next call).
        """
        images = np.ascontiguousarray(images, dtype=np.float32)
        if images.shape != self._shape:
            self._interpreter.resize_tensor_input(self._input, list(images.shape))
            self._interpreter.allocate_tensors()
            self._shape = images.shape
        self._interpreter.set_tensor(self._input, images)
        self._interpreter.invoke()
        return np.array(self._interpreter.get_tensor(self._output))


class FeatureExtractor:
    """The frozen backbone's forward pass on the fastest engine that runs it: LiteRT, else TensorFlow.

    Nothing is loaded until first needed: with a warm embedding cache it is never called, so neither
    engine starts.  The first use of a backbone converts it to a float ``.tflite`` (cached atomically
    beside its SavedModel, ``feature_tflite_path``) and checks it against TensorFlow on ``probe_images``
    (max difference ``AGREEMENT``, relative to the features' scale).  A backbone that does not convert or
    does not agree is run in TensorFlow, with one ``warning`` event.  Call from one thread only.

    Example::

        extractor = FeatureExtractor(resolve("efficientnet_lite0"))
        vectors = extractor(images)          # [B, 224, 224, 3] -> [B, 1280], in LiteRT
        extractor.engine                     # "litert"
        backbone = extractor.tf_model()      # the TensorFlow object, for export and fine-tuning

    Args:
        info: The backbone, from ``resolve``.
        cache_dir: As for ``cache_root``.
        on_event: Receives the fallback ``warning``.
        threads: LiteRT threads.
    """

    def __init__(
        self,
        info: BackboneInfo,
        cache_dir: str | Path | None = None,
        on_event: events.EventSink = events.ignore,
        threads: int = LITERT_THREADS,
    ):
        self.info, self.cache_dir, self._on_event, self._threads = info, cache_dir, on_event, threads
        self._forward = None
        self._tf_model = None
        self.engine: str | None = None  # "litert" or "tensorflow" once prepared

    def tf_model(self):
        """Returns the backbone as a TensorFlow object (``load``), loading it once; imports TensorFlow.

        Raises:
            BackboneError: As for ``load``.
        """
        if self._tf_model is None:
            self._tf_model = load(self.info, self.cache_dir)
        return self._tf_model

    def prepare(self) -> str:
        """Choose and start the engine now (converting the backbone if it never was); returns its name.

        Raises:
            BackboneError: The backbone cannot be loaded at all.
        """
        if self._forward is not None:
            return self.engine
        path = feature_tflite_path(self.info, self.cache_dir)
        if path.is_file():
            try:
                self._forward, self.engine = LiteRTForward(path, self._threads), "litert"
                return self.engine
            except (ImportError, ValueError, RuntimeError):
                pass  # a damaged or foreign file: convert again below and replace it
        forward, reason = self._convert(path)
        if forward is not None:
            self._forward, self.engine = forward, "litert"
        else:
            self._on_event(events.warning(f"the backbone runs in TensorFlow, not LiteRT (slower): {reason}"[:300]))
            model = self.tf_model()
            self._forward, self.engine = (lambda images: np.asarray(model(images), np.float32)), "tensorflow"
        return self.engine

    def _convert(self, path: Path) -> tuple[LiteRTForward | None, str | None]:
        """Convert, check and cache the ``.tflite``: (its forward pass, None), or (None, why not in one line)."""
        model = self.tf_model()
        try:
            flatbuffer = convert_to_tflite(model, self.info.image_size)
            forward = LiteRTForward(flatbuffer, self._threads)
            probe = probe_images(self.info.image_size)
            expected = np.asarray(model(probe), np.float32)
            got = forward(probe)
        except Exception as exc:  # noqa: BLE001 -- any converter or runtime failure means: use TensorFlow
            detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            return None, f"{self.info.id} does not convert to TFLite ({detail})"
        if got.shape != expected.shape:
            return None, f"its TFLite conversion gives vectors of shape {got.shape}, not {expected.shape}"
        difference = float(np.abs(got - expected).max())
        if not difference <= AGREEMENT * max(1.0, float(np.abs(expected).max())):
            return None, f"its TFLite conversion differs from TensorFlow by {difference:.2g}"
        with contextlib.suppress(OSError):  # a read-only cache: convert again next time
            write_bytes(path, flatbuffer)
        return forward, None

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Runs the forward pass, preparing the engine on the first call.

        Args:
            images: float32 [B, S, S, 3] in [0, 1].

        Returns:
            float32 [B, D].

        Raises:
            BackboneError: The backbone cannot be loaded at all.
        """
        if self._forward is None:
            self.prepare()
        return self._forward(images)
