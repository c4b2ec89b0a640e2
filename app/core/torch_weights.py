"""Read a legacy (non-zip) ``torch.save`` state dict with numpy, safely.

A pickle can run arbitrary code, so ``pickle.load``/``torch.load`` are never used on
weight files.  The unpickler below resolves only the handful of names a plain state
dict needs and refuses everything else; tensors come back as numpy arrays.

    >>> state = read_state_dict("efficientnet-lite0.pth")
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
    """The file asks the unpickler for something a plain state dict never needs."""


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
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


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
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise UnsafeWeightsError(f"unexpected persistent id in weights file: {pid!r}")
        return _StorageRef(str(pid[2]), pid[1].dtype)


def _load(stream: BinaryIO):
    return _RestrictedUnpickler(stream).load()


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Return ``{name: ndarray}`` from a legacy torch pickle, refusing anything unsafe."""
    with open(path, "rb") as stream:
        try:
            magic = _load(stream)
        except (pickle.UnpicklingError, EOFError) as exc:
            raise ValueError(f"{path} is not a legacy torch weights file") from exc
        if magic != LEGACY_MAGIC:
            raise ValueError(f"{path} is not a legacy torch weights file")
        _load(stream)  # protocol version
        _load(stream)  # sys info (endianness, type sizes)
        try:
            state = _load(stream)
            keys = _load(stream)
        except EOFError:
            raise ValueError(f"{path} is truncated") from None
        if not isinstance(state, dict) or not isinstance(keys, list):
            raise ValueError(f"{path} does not hold a state dict")
        storages: dict[str, np.ndarray] = {}
        dtypes = {ref.storage.key: ref.storage.dtype for ref in state.values()
                  if isinstance(ref, _TensorRef)}
        for key in keys:
            header = stream.read(8)
            if len(header) != 8:
                raise ValueError(f"{path} is truncated")
            (count,) = struct.unpack("<q", header)
            dtype = np.dtype(dtypes.get(key, np.float32))
            raw = stream.read(count * dtype.itemsize)
            if len(raw) != count * dtype.itemsize:
                raise ValueError(f"{path} is truncated")
            storages[key] = np.frombuffer(raw, dtype=dtype)
    out = {}
    for name, ref in state.items():
        if not isinstance(ref, _TensorRef):
            raise ValueError(f"{path}: entry {name!r} is not a tensor")
        flat = storages[ref.storage.key]
        itemsize = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[ref.offset:], shape=ref.size, strides=[s * itemsize for s in ref.stride])
        out[name] = np.array(view)  # own the memory
    return out
