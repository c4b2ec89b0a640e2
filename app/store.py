"""The model store: what a model version is on disk, and every name it is read and written by.

Layout (``MODELS_DIR/NAME/VERSION/``)::

    saved_model.pb, variables/      the SavedModel (signatures below)
    assets/labels.txt               one class name a line
    model.tflite (+ variants)       TFLITE_FILES
    assets.extra/tf_serving_warmup_requests
    metadata.json                   Metadata (FORMAT_VERSION)
    results.npz                     the test results the results page reopens (app.core.evaluation)

One rule says which folders are versions (``version_folders``): TF Serving's, every sub-folder
named by ASCII digits.  Export assembles a version under a hidden temporary name and renames it
into place only when complete, so a half-written one never has a digit name.  Export, every
backend, serve-config, the CLI and the GUI ask here.  No TensorFlow and no Qt.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import stat
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.core.atomic import temp_folder, write_json

# --- file names inside a version folder ------------------------------------------------------------------------
SAVED_MODEL_FILE = "saved_model.pb"
METADATA_FILE = "metadata.json"
LABELS_FILE = "assets/labels.txt"
RESULTS_FILE = "results.npz"
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
TFLITE_FILES = {"float": "model.tflite", "dynamic": "model_dynamic.tflite", "int8": "model_int8.tflite"}
MODELS_CONFIG_FILE = "models.config"  # beside the model folders, for TF Serving
BATCHING_PARAMETERS_FILE = "batching_parameters.txt"  # beside them too: TF Serving's --batching_parameters_file

# --- the SavedModel's signatures and their input / output names ------------------------------------------------
SERVING_SIGNATURE = "serving_default"  # encoded image bytes in (what TF Serving clients call)
IMAGES_SIGNATURE = "serving_images"  # decoded float images in
CLASS_NAMES_SIGNATURE = "class_names"  # class index -> label, so remote clients can name every top-k entry
BYTES_INPUT = "image_bytes"
IMAGES_INPUT = "images"
CLASS_INDEX_INPUT = "class_index"
CLASS_NAME_OUTPUT = "class_name"
PROBABILITIES_OUTPUT = "probabilities"
CLASSES_OUTPUT = "classes"
SCORES_OUTPUT = "scores"
UNKNOWN_OUTPUT = "unknown"  # bool [None]: the image looks like none of the classes (app.core.trust)
OOD_SCORE_OUTPUT = "ood_score"  # float [None]: how unlike every class it is; unknown = ood_score > threshold
OUTPUTS = (PROBABILITIES_OUTPUT, CLASSES_OUTPUT, SCORES_OUTPUT, UNKNOWN_OUTPUT, OOD_SCORE_OUTPUT)
# The .tflite files output probabilities [1, K] (output 0) and ood_score [1]; their unknown flag is ood_score above
# metadata.json's unknown.threshold (the same number the SavedModel compares with in its graph).
TFLITE_OUTPUTS = (PROBABILITIES_OUTPUT, OOD_SCORE_OUTPUT)

FORMAT_VERSION = 1  # metadata.json's schema; readers take the fields they know from any version, or none
PREPROCESSING = "decode (JPEG at DCT scale, EXIF-upright), RGB, /255, antialiased bilinear resize (app.imaging)"
_DIGITS = re.compile(r"[0-9]+")


def tflite_variants(mode: str) -> tuple[str, ...]:
    """The TFLite files a version gets for the ``--tflite`` setting: a quantized one comes with the float one.

    Example::

        tflite_variants("int8") == ("float", "int8"); tflite_variants("none") == ()
    """
    return () if mode == "none" else (mode,) if mode == "float" else ("float", mode)


def tflite_outputs(details: Sequence[dict]) -> tuple[dict, dict | None]:
    """Which of a .tflite's output details are the probabilities ([1, K]) and the ood_score ([1]).

    Told apart by rank, not by name (the converter names outputs after graph nodes, not after
    ``TFLITE_OUTPUTS``); ood_score is None for a file exported before it existed.
    """
    by_rank = {len(d["shape"]): d for d in details}
    probabilities = by_rank.get(2, details[0])
    ood = by_rank.get(1) if len(details) > 1 else None
    return probabilities, ood


class ModelError(ValueError):
    """The model cannot be found or used; ``str()`` says why in one sentence."""


class DeleteError(OSError):
    """A version that could not be removed, in one sentence."""


# --- versions ----------------------------------------------------------------------------------------------------
def is_version_name(name: str) -> bool:
    """True for a folder name TF Serving reads as a version number (ASCII digits only, so ``"²"`` is not)."""
    return bool(_DIGITS.fullmatch(name))


def version_folders(base: str | Path) -> list[tuple[int, Path]]:
    """The versions under a model's base folder as (number, folder), lowest first.

    The one rule: a sub-folder whose name is ASCII digits (TF Serving's rule).  Hidden temporary
    folders of an export in progress and any other name are not versions.

    Args:
        base: ``MODELS_DIR/NAME``; need not exist.

    Returns:
        (number, folder) pairs sorted by number; empty when ``base`` is not a folder.
    """
    base = Path(base)
    if not base.is_dir():
        return []
    return sorted((int(p.name), p) for p in base.iterdir() if is_version_name(p.name) and p.is_dir())


def latest_version(base: str | Path) -> Path | None:
    """The highest version folder under ``base``, or None when it holds none."""
    versions = version_folders(base)
    return versions[-1][1] if versions else None


def next_version(base: str | Path) -> int:
    """The number a new version of ``base`` gets: one above every digit-named entry (even a non-folder)."""
    base = Path(base)
    taken = [int(p.name) for p in base.iterdir() if is_version_name(p.name)] if base.is_dir() else []
    return max(taken, default=0) + 1


def user_path(text: str | Path) -> Path:
    """A typed path with ``~`` and ``~user`` expanded; an unknown ``~user`` is left as typed (``expanduser`` raises
    RuntimeError for it, which reached the GUI as a traceback while a path was being typed).

    >>> user_path("~nobody_has_this_name/models")
    PosixPath('~nobody_has_this_name/models')
    """
    try:
        return Path(text).expanduser()
    except RuntimeError:
        return Path(text)


def resolve_version(path: str | Path) -> Path:
    """A version folder as given, or a model's base folder resolved to its highest version (as TF Serving).

    Args:
        path: a version folder (holding ``saved_model.pb``), a ``.tflite`` file, or ``MODELS_DIR/NAME``.

    Returns:
        The version folder (or the ``.tflite`` file as given).

    Raises:
        ModelError: nothing at ``path``, or a folder without any version.
    """
    path = user_path(path)
    if not path.exists():
        raise ModelError(f"model not found: {path}")
    if path.suffix == ".tflite" and not path.is_file():  # a pipe hung the TFLite loader and, with it, the window
        raise ModelError(f"{path} is not a regular file")
    if (path / SAVED_MODEL_FILE).exists() or path.suffix == ".tflite":
        return path
    newest = latest_version(path)
    if newest is None:
        raise ModelError(f"{path} holds no model version (expected NAME/1/{SAVED_MODEL_FILE})")
    return newest


def model_folders(models_dir: str | Path) -> list[Path]:
    """The models in a models folder: sub-folders holding at least one version, sorted by name."""
    root = user_path(models_dir)
    return sorted(p for p in root.iterdir() if p.is_dir() and version_folders(p)) if root.is_dir() else []


# --- labels --------------------------------------------------------------------------------------------------------
def fallback_labels(count: int) -> list[str]:
    """Names for a model that does not say its classes: ``class_0``, ``class_1``, ...

    Example::

        fallback_labels(2) == ["class_0", "class_1"]
    """
    return [f"class_{i}" for i in range(count)]


def labels_for(labels: Sequence[str] | None, count: int) -> list[str]:
    """``labels`` when there are any, else ``fallback_labels(count)`` (a model without metadata)."""
    return list(labels) if labels else fallback_labels(count)


# --- metadata.json -------------------------------------------------------------------------------------------------
@dataclass
class Metadata:
    """metadata.json of one version, typed; ``extra`` keeps keys this app does not know (a newer writer's).

    Every field is optional on reading: versions from before a field existed, and folders with no
    metadata.json at all (labels from ``assets/labels.txt``), still open.
    """

    format_version: int | None = FORMAT_VERSION
    labels: list[str] = field(default_factory=list)
    input: dict = field(default_factory=dict)
    preprocessing: str | None = None
    signatures: dict = field(default_factory=dict)
    backbone: dict = field(default_factory=dict)
    split_sizes: dict = field(default_factory=dict)
    skipped_files: int | None = None
    review: dict | None = None
    metrics: dict = field(default_factory=dict)  # evaluation.summary + validation_accuracy
    calibration: dict | None = None  # trust.calibration_summary: temperature, ECE before/after
    unknown: dict | None = None  # trust.fit_unknown: kind, threshold, target and measured rates
    fidelity: dict | None = None  # per exported file: agreement with the training-time answers (trust.fidelity)
    training: dict = field(default_factory=dict)  # the settings and sources, to retrain from
    created: str | None = None
    app_version: str | None = None
    platform: str | None = None
    name: str | None = None
    version: int | None = None
    files: dict = field(default_factory=dict)  # {what: path inside the version folder}
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> Metadata:
        """The fields of a metadata.json object; a field of the wrong type reads as missing.

        Args:
            data: the parsed JSON object.

        Returns:
            The Metadata (``labels`` empty when they are not a list of strings).
        """
        out = cls(format_version=None)
        known = set()
        for f in fields(cls):
            if f.name == "extra" or f.name not in data:
                continue
            known.add(f.name)
            value = data[f.name]
            kinds = _FIELD_TYPES[f.name]
            if isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds):
                setattr(out, f.name, value)
        if not _is_label_list(out.labels):
            out.labels = []
        out.extra = {k: v for k, v in data.items() if k not in known}
        return out

    def to_dict(self) -> dict:
        """The JSON object written to metadata.json (field order as in the dataclass, unknown keys last)."""
        out = {k: v for k, v in asdict(self).items() if k != "extra" and not (k in _ADDED_LATER and v is None)}
        return {**out, **{k: v for k, v in self.extra.items() if k not in out}}

    @property
    def test_accuracy(self) -> float | None:
        value = self.metrics.get("test_accuracy")
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    @property
    def test_images(self) -> int | None:
        value = self.metrics.get("test_images")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def unknown_threshold(self) -> float | None:
        """The ood_score above which an image is unknown, or None for a version made without one."""
        value = (self.unknown or {}).get("threshold")
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    @property
    def backbone_id(self) -> str:
        """The backbone's short id (``efficientnet_lite0``), ``?`` when not recorded."""
        return str(self.backbone.get("id", "?")).split("/")[-1]


_ADDED_LATER = {"calibration", "unknown", "fidelity"}  # written only when set: older files read back unchanged
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "labels": (list,),
    "format_version": (int,),
    "input": (dict,),
    "preprocessing": (str,),
    "signatures": (dict,),
    "backbone": (dict,),
    "split_sizes": (dict,),
    "skipped_files": (int,),
    "review": (dict,),
    "metrics": (dict,),
    "calibration": (dict,),
    "unknown": (dict,),
    "fidelity": (dict,),
    "training": (dict,),
    "created": (str,),
    "app_version": (str,),
    "platform": (str,),
    "name": (str,),
    "version": (int,),
    "files": (dict,),
}


def _is_label_list(labels: Any) -> bool:
    return isinstance(labels, list) and all(isinstance(label, str) for label in labels)


def signature_specs(image_size: int) -> dict:
    """What metadata.json says about the exported signatures (names from this module)."""
    return {
        SERVING_SIGNATURE: {"inputs": {BYTES_INPUT: "string [None]"}, "outputs": list(OUTPUTS)},
        IMAGES_SIGNATURE: {
            "inputs": {IMAGES_INPUT: f"float32 [None,{image_size},{image_size},3]"},
            "outputs": list(OUTPUTS),
        },
        CLASS_NAMES_SIGNATURE: {"inputs": {CLASS_INDEX_INPUT: "int32 [None]"}, "outputs": [CLASS_NAME_OUTPUT]},
    }


def new_metadata(labels: Sequence[str], image_size: int, **recorded) -> Metadata:
    """The metadata of a version being trained now: the input, preprocessing and signatures it is exported with.

    Args:
        labels: the class names, in output order.
        image_size: the model's square input side in pixels.
        **recorded: the other fields (backbone, split_sizes, skipped_files, review, metrics, training).

    Returns:
        A Metadata stamped with the time (UTC), the app version and the platform; export adds
        ``name``, ``version`` and ``files``.
    """
    from app import __version__

    return Metadata(
        labels=list(labels),
        input={"height": image_size, "width": image_size, "channels": 3, "dtype": "float32", "range": [0.0, 1.0]},
        preprocessing=PREPROCESSING,
        signatures=signature_specs(image_size),
        **recorded,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        app_version=__version__,
        platform=platform.platform(),
    )


def write_metadata(version_dir: str | Path, metadata: Metadata) -> None:
    """Write ``metadata.json`` into ``version_dir`` atomically."""
    write_json(Path(version_dir) / METADATA_FILE, metadata.to_dict())


def read_metadata(version_dir: str | Path) -> Metadata:
    """metadata.json of a version, or what can be said without it (labels from ``assets/labels.txt``).

    Args:
        version_dir: a version folder.

    Returns:
        The Metadata; empty (no labels) for a folder with neither file.

    Raises:
        ModelError: metadata.json (or, without it, assets/labels.txt) is not a regular file or is over
            METADATA_MOST bytes, or metadata.json is not JSON, not an object, or its labels are not a list of
            names (one sentence naming the file).
    """
    version_dir = Path(version_dir)
    meta_file = version_dir / METADATA_FILE
    if meta_file.exists():
        _check_small_file(meta_file)
        try:
            data = json.loads(meta_file.read_text(encoding="utf-8"))
        except (ValueError, OSError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError: ValueErrors
            raise ModelError(
                f"{meta_file} cannot be read ({type(exc).__name__}); the model folder is damaged"
            ) from None
        if not isinstance(data, dict) or not _is_label_list(data.get("labels", [])):
            raise ModelError(f"{meta_file} is not a model's metadata (it needs a list of class names)")
        return Metadata.from_dict(data)
    labels_file = version_dir / LABELS_FILE
    if labels_file.exists():
        _check_small_file(labels_file)
        try:
            return Metadata(labels=labels_file.read_text(encoding="utf-8").splitlines(), format_version=None)
        except (ValueError, OSError) as exc:
            raise ModelError(f"{labels_file} cannot be read ({type(exc).__name__})") from None
    return Metadata(format_version=None)


METADATA_MOST = 64 << 20  # far above any model's (a 100,000-class one is a few MB); read on the GUI thread too


def _check_small_file(path: Path) -> None:
    """A FIFO would hang the reader and a huge file stall it (the backend bar reads this as a path is typed)."""
    if not path.is_file():
        raise ModelError(f"{path} is not a regular file")
    size = path.stat().st_size
    if size > METADATA_MOST:
        raise ModelError(f"{path} is {human_size(size)}, too large for a model's metadata")


def read_metadata_quietly(version_dir: str | Path) -> Metadata:
    """``read_metadata``, with an unreadable or damaged file read as empty (for listings, never for models)."""
    try:
        return read_metadata(version_dir)
    except (ModelError, OSError):
        return Metadata(format_version=None)


# --- versions as the Models page shows them ------------------------------------------------------------------------
def human_size(n: int) -> str:
    """Bytes for people: "512 B", "3.4 KB", "17.2 MB", "1.3 GB" (never "0.00 MB").

    >>> human_size(0), human_size(1536), human_size(17_200_000)
    ('0 B', '1.5 KB', '17.2 MB')
    """
    if n < 1000:
        return f"{n} B"
    for unit in ("KB", "MB", "GB", "TB"):
        n /= 1000
        if n < 999.95 or unit == "TB":
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


def folder_size(path: Path) -> int:
    """Bytes of the regular files under ``path`` (links are not followed)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            total += st.st_size if stat.S_ISREG(st.st_mode) else 0
    return total


@dataclass
class VersionInfo:
    """One version folder's facts, read from its metadata.json (missing facts are None)."""

    path: Path
    model: str
    version: str
    classes: int | None = None
    accuracy: float | None = None
    test_images: int | None = None
    created: str = ""
    backbone: str = "?"
    size: int = 0
    tflite: dict[str, int] = field(default_factory=dict)
    has_results: bool = False
    metadata: Metadata = field(default_factory=Metadata)

    def accuracy_text(self) -> str:
        """The test accuracy as a percentage, or a dash when it is not known."""
        return f"{self.accuracy:.1%}" if self.accuracy is not None else "—"


def read_version(version: str | Path) -> VersionInfo:
    """The facts the Models page lists about one version folder; a damaged metadata.json leaves them unknown.

    Args:
        version: a version folder ``MODELS_DIR/NAME/N``.

    Returns:
        Its VersionInfo (creation time in local time, sizes from the disk).
    """
    version = Path(version)
    meta = read_metadata_quietly(version)
    created = meta.created or ""
    with contextlib.suppress(ValueError):  # not a time: shown as written
        created = datetime.fromisoformat(created).astimezone().strftime("%Y-%m-%d %H:%M")
    tflite = {p.name: p.stat().st_size for p in sorted(version.glob("*.tflite")) if p.is_file()}
    return VersionInfo(
        path=version,
        model=version.parent.name,
        version=version.name,
        classes=len(meta.labels) if meta.labels else None,
        accuracy=meta.test_accuracy,
        test_images=meta.test_images,
        created=created,
        backbone=meta.backbone_id,
        size=folder_size(version),
        tflite=tflite,
        has_results=(version / RESULTS_FILE).is_file(),
        metadata=meta,
    )


def delete_version(version: str | Path, trash: Callable[[Path], bool] | None) -> bool:
    """Remove one version folder ``MODELS_DIR/NAME/N``; True if it went to the trash.

    A permanent delete first renames the folder to a hidden name, so TF Serving never sees half
    a version, then removes it.

    Args:
        version: the version folder.
        trash: moves a path to the system trash and says whether it could (the GUI passes
            QFile.moveToTrash); it returns False where there is no trash, and then nothing has happened.
            None deletes permanently (call so only after asking).

    Returns:
        True if the folder went to the trash, False if it was not moved (no trash) or deleted permanently.

    Raises:
        DeleteError: ``version`` is not a version folder, or it could not be renamed away.
    """
    version = Path(version)
    if not is_version_name(version.name) or version.is_symlink() or not version.is_dir():
        raise DeleteError(f"{version} is not a model version folder")
    if trash is not None:
        return bool(trash(version))
    hidden = temp_folder(version.parent)
    try:
        version.rename(hidden)
    except OSError as exc:
        raise DeleteError(f"{version} could not be deleted ({exc.strerror or exc})") from None
    shutil.rmtree(hidden, ignore_errors=True)
    return False
