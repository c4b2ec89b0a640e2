"""Reuse an earlier export's graph, so a retrain on the same backbone and classes writes only new numbers.

Tracing and saving the SavedModel and converting the float .tflite are most of an export (about 6 s of a
warm retrain with EfficientNet-Lite0) and depend only on the backbone, the input size and the number of
classes: the head's numbers and the labels (``export.head_values``) are all that differ between two
versions.  So after a full export its SavedModel graph, checkpoint and float .tflite are kept in the cache
(``cache_root/export-graphs/KEY``), with where in the .tflite the head's numbers sit; the next export with
the same key copies them and writes the new numbers: the checkpoint with TensorFlow's own writer, the
.tflite in place (same shapes, so the same byte ranges, checked to hold the kept checkpoint's numbers first).

The key includes a hash of the code that builds the graph and TensorFlow's version, so changed code never
reuses an old graph; the export's fidelity check still runs every file against the trained model, and a
reused graph that fails it (or that a library cannot load) is dropped and the export done in full
(``export.export``).  The kept saved_model.pb and .tflite are checked against their SHA-256 first: an
emptied or cut saved_model.pb crashes TensorFlow's fingerprinting (a segmentation fault), not just raises.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from app.store import LABELS_FILE, SAVED_MODEL_FILE, TFLITE_FILES

from .atomic import remove_stale_temps, temp_folder

GRAPHS_DIR = "export-graphs"
TFLITE_FILE = TFLITE_FILES["float"]
PLACES_FILE = "places.json"  # {variable: [offset, transposed]} of the head's numbers in TFLITE_FILE
CHECKSUMS_FILE = "sha256.json"  # {file: sha256} of the kept files TensorFlow's and LiteRT's parsers read
CHECKED_FILES = (SAVED_MODEL_FILE, TFLITE_FILE)  # a damaged one can crash the process, not just raise
TFLITE_NUMBERS = ("head_kernel", "head_bias", "prototypes")  # the head's numbers the .tflite holds
CHECKPOINT = "variables/variables"
KEPT_GRAPHS = 4  # the most recently used are kept (each is about the size of one version without its variants)
_GRAPH_CODE = ("export.py", "graph_preprocess.py")  # the code whose every change makes a new graph
_KEY_RE = re.compile(r"[^.].*-\d+-\d+-[0-9a-f]{10}")  # what ``key`` names


def key(backbone_fingerprint: str, image_size: int, classes: int) -> str:
    """Returns the folder name of the graph kept for this backbone, input size and number of classes.

    Args:
        backbone_fingerprint: ``backbones.fingerprint`` (changes with the weights).
        image_size: the square input side in pixels.
        classes: the number of classes.
    """
    return f"{backbone_fingerprint}-{image_size}-{classes}-{_graph_code()}"


@functools.cache
def _graph_code() -> str:
    """A hash of what the exported graph is made by: TensorFlow's version and the ``_GRAPH_CODE`` sources.

    A desktop bundle may carry neither TensorFlow's package metadata nor our sources; then the app's version
    stands in for what is missing (a bundle pins both), and the fidelity check still proves each export.
    """
    from app import __version__

    try:
        parts = [importlib.metadata.version("tensorflow").encode()]  # without importing TensorFlow (seconds)
    except importlib.metadata.PackageNotFoundError:
        parts = [f"retrain-studio {__version__}".encode()]
    for name in _GRAPH_CODE:
        try:
            parts.append(Path(__file__).with_name(name).read_bytes())
        except OSError:
            parts.append(f"{name} of retrain-studio {__version__}".encode())
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:10]


def reusable(kept: Path | None, tflite: Sequence[str]) -> bool:
    """Whether an export can reuse the graph kept at ``kept``: it exists, and the only .tflite asked for is the
    float one (a quantized one needs the converter, so the graph anyway).

    Args:
        kept: the kept graph's folder, or None (nothing to reuse).
        tflite: the .tflite variants the export writes (``store.tflite_variants``).
    """
    return kept is not None and _real_folder(kept) and not kept.parent.is_symlink() and set(tflite) <= {"float"}


def _real_folder(path: Path) -> bool:
    """A folder, not a link to one: a link in the cache may lead to a user's files, never written or deleted."""
    return path.is_dir() and not path.is_symlink()


def _only_files_and_folders(kept: Path) -> None:
    """Raises ValueError if anything in ``kept`` is not a plain file or folder: a named pipe would hang the
    export (opening it waits for a writer), a link or device could feed it endless or foreign bytes."""
    for parent, folders, files in os.walk(kept):  # never follows links
        for name in folders + files:
            mode = os.lstat(os.path.join(parent, name)).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise ValueError(f"{name} in the kept graph is not a plain file")


def _checkpoint_key(variable: str) -> str:
    return f"{variable}/.ATTRIBUTES/VARIABLE_VALUE"


def write(kept: Path, folder: Path, values: Mapping[str, np.ndarray], labels_text: str, tflite: bool) -> bool:
    """Write a version's model files into ``folder`` from the graph kept in ``kept`` and the new ``values``.

    Args:
        kept: the kept graph's folder (``graphs_dir(...) / key(...)``).
        folder: the version being assembled (empty).
        values: ``export.head_values`` of the new version.
        labels_text: the content of ``store.LABELS_FILE``.
        tflite: also write the float .tflite.

    Returns:
        False when there is no usable kept graph (it is dropped, and nothing is left in ``folder``); True when
        written.
    """
    import tensorflow as tf

    remove_stale_temps(kept.parent)  # a run killed while keeping a graph left one; runs that only reuse clear it
    try:
        _only_files_and_folders(kept)
        places = json.loads((kept / PLACES_FILE).read_text())
        checksums = json.loads((kept / CHECKSUMS_FILE).read_text())
        kept_files = {name: (kept / name).read_bytes() for name in CHECKED_FILES if tflite or name != TFLITE_FILE}
        if any(checksums.get(name) != hashlib.sha256(data).hexdigest() for name, data in kept_files.items()):
            raise ValueError("a kept file is not what was kept")  # cut short, emptied or changed since
        model = bytearray(kept_files[TFLITE_FILE]) if tflite else None
        reader = tf.train.load_checkpoint(str(kept / CHECKPOINT))
        names = sorted(reader.get_variable_to_dtype_map())
        new = {_checkpoint_key(variable): value for variable, value in values.items()}
        shapes = reader.get_variable_to_shape_map()
        if any(name not in shapes or list(shapes[name]) != list(np.shape(value)) for name, value in new.items()):
            raise ValueError("the kept checkpoint's head has other shapes")
        if sorted(places) != sorted(TFLITE_NUMBERS):
            raise ValueError(f"{PLACES_FILE} does not place the head's numbers")
        for variable, (offset, transposed) in places.items() if model is not None else ():
            old, data = (
                np.ascontiguousarray(array.T if transposed else array).tobytes()
                for array in (reader.get_tensor(_checkpoint_key(variable)), values[variable])
            )
            if len(old) != len(data) or model[offset : offset + len(old)] != old:  # the places are not right
                raise ValueError(f"the kept .tflite does not hold {variable} where {PLACES_FILE} says")
            model[offset : offset + len(data)] = data
        (folder / SAVED_MODEL_FILE).write_bytes(kept_files[SAVED_MODEL_FILE])
        (folder / "variables").mkdir()
        tensors = [tf.constant(new[name] if name in new else reader.get_tensor(name)) for name in names]
        tf.raw_ops.SaveV2(
            prefix=str(folder / CHECKPOINT), tensor_names=names, shape_and_slices=[""] * len(names), tensors=tensors
        )
    except Exception:  # noqa: BLE001 (whatever a damaged kept graph makes a library raise costs only the reuse)
        for entry in folder.iterdir():
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        forget(kept)  # damaged or from an incompatible writer: the full export keeps a fresh one
        return False
    (folder / LABELS_FILE).parent.mkdir()
    (folder / LABELS_FILE).write_text(labels_text, encoding="utf-8")
    if model is not None:
        (folder / TFLITE_FILE).write_bytes(model)
    _write_fingerprint(folder)
    with contextlib.suppress(OSError):  # e.g. another user's cache: then only the pruning order is off
        os.utime(kept)  # recently used: kept longest
    return True


def keep(graphs: Path, name: str, version: Path, values: Mapping[str, np.ndarray]) -> bool:
    """Keep a fully exported version's graph for later exports with the same key; never raises.

    Kept only when each of the head's numbers appears exactly once in the float .tflite (then it can be
    rewritten in place); the folder appears whole or not at all.  Never when ``graphs`` is a link (it may
    lead out of the cache); a link or file in the way at ``name`` is removed (the link only, not what it
    leads to).

    Args:
        graphs: the folder of kept graphs (``graphs_dir``).
        name: the key (``key``).
        version: the version folder just written (with its float .tflite).
        values: the ``export.head_values`` it was written with.

    Returns:
        Whether it was kept.
    """
    try:
        model = (version / TFLITE_FILE).read_bytes()
        places = {}
        for variable in TFLITE_NUMBERS:
            for transposed, array in ((False, values[variable]), (True, values[variable].T)):
                data = np.ascontiguousarray(array).tobytes()
                if model.count(data) == 1:
                    places[variable] = [model.find(data), transposed]
                    break
            else:
                return False  # folded into something else, or not unique (e.g. all-zero prototypes)
        if graphs.is_symlink():
            return False
        graphs.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(graphs)
        if os.path.lexists(graphs / name) and not _real_folder(graphs / name):
            (graphs / name).unlink()  # a link or a file in the way (in the cache): it would block keeping forever
        tmp = temp_folder(graphs)
        try:
            tmp.mkdir()
            shutil.copyfile(version / SAVED_MODEL_FILE, tmp / SAVED_MODEL_FILE)
            shutil.copytree(version / "variables", tmp / "variables")
            shutil.copyfile(version / TFLITE_FILE, tmp / TFLITE_FILE)
            (tmp / PLACES_FILE).write_text(json.dumps(places))
            checksums = {file: hashlib.sha256((tmp / file).read_bytes()).hexdigest() for file in CHECKED_FILES}
            (tmp / CHECKSUMS_FILE).write_text(json.dumps(checksums))
            os.rename(tmp, graphs / name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # another process kept the same graph first: as good
        _forget_all_but_newest(graphs, KEPT_GRAPHS)
        return True
    except OSError:
        return False


def forget(kept: Path) -> None:
    """Drop a kept graph that did not answer like its trained model (never raises).

    It is first renamed to a temporary name, so no other export sees it half deleted (and a crash meanwhile
    leaves what ``remove_stale_temps`` clears); a link is removed, never what it leads to.
    """
    try:
        if kept.is_symlink():
            kept.unlink()
            return
        gone = temp_folder(kept.parent)
        os.rename(kept, gone)
    except OSError:
        gone = kept  # read-only, or already gone: delete what can be
    shutil.rmtree(gone, ignore_errors=True)


def graphs_dir(cache_root: Path) -> Path:
    """Returns the folder of kept graphs in the cache."""
    return Path(cache_root) / GRAPHS_DIR


def _forget_all_but_newest(graphs: Path, most: int) -> None:
    """Drop all but the ``most`` most recently used kept graphs: only folders named like a ``key`` (not links,
    nor anything else a user put there)."""
    kept = sorted(
        (entry for entry in graphs.iterdir() if _KEY_RE.fullmatch(entry.name) and _real_folder(entry)),
        key=lambda entry: entry.stat().st_mtime,
        reverse=True,
    )
    for old in kept[most:]:
        forget(old)


def _write_fingerprint(folder: Path) -> None:
    """``fingerprint.pb`` for the new checkpoint, as ``tf.saved_model.save`` writes it (optional: left out on
    failure; TF Serving and ``tf.saved_model.load`` do not need it)."""
    try:
        from tensorflow.python.saved_model import fingerprinting_utils

        fingerprinting_utils.write_fingerprint(str(folder))
    except Exception:  # noqa: BLE001 (a private API of TensorFlow's: any failure only costs the fingerprint)
        (folder / "fingerprint.pb").unlink(missing_ok=True)
