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

import hashlib
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from .atomic import remove_stale_temps, temp_folder
from .efficientnet_lite import VARIANTS, weights_file

DEFAULT_BACKBONE = "efficientnet_lite0"
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
