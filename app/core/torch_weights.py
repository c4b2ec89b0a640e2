"""Read a legacy (non-zip) ``torch.save`` state dict with numpy, safely.

A pickle can run arbitrary code, so ``pickle.load``/``torch.load`` are never used on
weight files.  The unpickler below resolves only the handful of names a plain state
dict needs and refuses everything else; tensors come back as numpy arrays.

>>> from app.core.efficientnet_lite import weights_file
>>> state = read_state_dict(weights_file("efficientnet_lite0"))   # the real ImageNet weights, ~0.2 s
>>> state["_conv_stem.weight"].shape
(32, 3, 3, 3)
"""

from __future__ import annotations

import collections
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class UnsafeWeightsError(ValueError):
    """The file asks for something a plain state dict never needs (a global, a view past its storage)."""


@dataclass(frozen=True)
class _StorageType:
    dtype: type


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: type


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple
    stride: tuple


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, hooks=None, *rest):
    """Only records the arguments; ``read_state_dict`` checks them against the storage before any view."""
    return _TensorRef(storage, storage_offset, tuple(size), tuple(stride))


class _RestrictedUnpickler(pickle.Unpickler):
    """Allows OrderedDict, tensor rebuilds and storage types; refuses every other global."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise UnsafeWeightsError(f"refusing to load '{module}.{name}' from a weights file")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise UnsafeWeightsError(f"unexpected persistent id in weights file: {pid!r}")
        return _StorageRef(str(pid[2]), pid[1].dtype)


MAX_DIMS = 8
MAX_ELEMENTS = 1 << 31  # far more than any backbone's largest tensor; refuses overflowing sizes early


def _load(stream: BinaryIO, path):
    """One pickle from ``stream``; a malformed one is a ValueError naming the file, never a library error."""
    try:
        return _RestrictedUnpickler(stream).load()
    except UnsafeWeightsError:
        raise
    except EOFError:
        raise ValueError(f"{path} is truncated") from None
    except (
        pickle.UnpicklingError,
        TypeError,
        ValueError,
        AttributeError,
        IndexError,
        KeyError,
        OverflowError,
        MemoryError,
        RecursionError,
        struct.error,
    ) as exc:
        raise ValueError(f"{path} is not a legacy torch weights file ({type(exc).__name__})") from None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_view(name: str, ref: _TensorRef, length: int) -> None:
    """Refuse any view that would read outside its storage of ``length`` elements (as_strided trusts us)."""
    size, stride, offset = ref.size, ref.stride, ref.offset
    if not (_is_int(offset) and all(map(_is_int, size)) and all(map(_is_int, stride))):
        raise UnsafeWeightsError(f"tensor {name!r} has a size, stride or offset that is not a whole number")
    if len(size) != len(stride):
        raise UnsafeWeightsError(f"tensor {name!r} has {len(size)} sizes but {len(stride)} strides")
    if len(size) > MAX_DIMS:
        raise UnsafeWeightsError(f"tensor {name!r} has {len(size)} dimensions, more than any real weight")
    if offset < 0 or any(n < 0 for n in size) or any(s < 0 for s in stride):
        raise UnsafeWeightsError(f"tensor {name!r} has a negative size, stride or offset")
    elements = 1
    for n in size:
        elements *= n  # Python ints: no overflow
    if elements > MAX_ELEMENTS:
        raise UnsafeWeightsError(f"tensor {name!r} claims {elements} elements, more than any real weight")
    if any(v > MAX_ELEMENTS for v in (offset, *size, *stride)):  # numpy needs each in a C long (in bytes)
        raise UnsafeWeightsError(f"tensor {name!r} has a size, stride or offset larger than any real weight")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if elements else offset - 1
    if last >= length or (elements == 0 and offset > length):
        raise UnsafeWeightsError(f"tensor {name!r} reaches past the end of its storage ({length} elements)")


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Read a legacy (non-zip) ``torch.save`` state dict without running any of its code.

    Every tensor's offset, sizes and strides are checked against its storage before the
    view is made: ``as_strided`` would otherwise read whatever memory the file points at.

    Args:
        path: The ``.pth`` file.

    Returns:
        ``{name: ndarray}``, each array owning its memory.

    Raises:
        UnsafeWeightsError: The pickle names a global other than a state dict's, or a tensor reaches outside
            its storage or claims impossible sizes.
        ValueError: The file is truncated, not a legacy torch file, or not a state dict of tensors.
        OSError: The file cannot be read.
    """
    with open(path, "rb") as stream:
        file_size = Path(path).stat().st_size
        if _load(stream, path) != LEGACY_MAGIC:
            raise ValueError(f"{path} is not a legacy torch weights file")
        _load(stream, path)  # protocol version
        _load(stream, path)  # sys info (endianness, type sizes)
        state = _load(stream, path)
        keys = _load(stream, path)
        if not isinstance(state, dict) or not isinstance(keys, list):
            raise ValueError(f"{path} does not hold a state dict")
        dtypes: dict[str, type] = {}
        for name, ref in state.items():
            if not isinstance(ref, _TensorRef) or not isinstance(ref.storage, _StorageRef):
                raise ValueError(f"{path}: entry {name!r} is not a tensor")
            if dtypes.setdefault(ref.storage.key, ref.storage.dtype) is not ref.storage.dtype:
                raise UnsafeWeightsError(f"{path}: storage {ref.storage.key!r} is used with two element types")
        storages: dict[str, np.ndarray] = {}
        for key in keys:
            header = stream.read(8)
            if len(header) != 8:
                raise ValueError(f"{path} is truncated")
            (count,) = struct.unpack("<q", header)
            dtype = np.dtype(dtypes.get(str(key), np.float32))
            if count < 0 or count * dtype.itemsize > file_size:
                raise UnsafeWeightsError(f"{path}: storage {key!r} claims {count} elements, more than the file holds")
            raw = stream.read(count * dtype.itemsize)
            if len(raw) != count * dtype.itemsize:
                raise ValueError(f"{path} is truncated")
            storages[str(key)] = np.frombuffer(raw, dtype=dtype)
    out = {}
    for name, ref in state.items():
        flat = storages.get(ref.storage.key)
        if flat is None:
            raise ValueError(f"{path}: tensor {name!r} has no storage in the file")
        try:
            _check_view(name, ref, len(flat))
        except UnsafeWeightsError as exc:
            raise UnsafeWeightsError(f"{path}: {exc}") from None
        itemsize = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[ref.offset :], shape=ref.size, strides=[s * itemsize for s in ref.stride]
        )
        out[name] = np.array(view)  # own the memory
    return out
