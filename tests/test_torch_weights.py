import pickle
import struct

import numpy as np
import pytest

from app.core.efficientnet_lite import weights_file
from app.core.torch_weights import LEGACY_MAGIC, UnsafeWeightsError, read_state_dict


def _legacy_file(path, state_pickle: bytes, keys=(), storages=()):
    with open(path, "wb") as f:
        for obj in (LEGACY_MAGIC, 1001, {"little_endian": True}):
            pickle.dump(obj, f, protocol=2)
        f.write(state_pickle)
        pickle.dump(list(keys), f, protocol=2)
        for data in storages:
            f.write(struct.pack("<q", len(data) // 4) + data)


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/retrain_studio_pwned",))


def test_reads_real_efficientnet_weights():
    state = read_state_dict(weights_file("efficientnet_lite0"))
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert sum(v.size for k, v in state.items() if not k.endswith("num_batches_tracked")) == 4694024
    assert np.isfinite(state["_conv_head.weight"]).all() and state["_conv_head.weight"].std() > 0


def test_refuses_a_pickle_that_runs_code(tmp_path):
    import os

    marker = "/tmp/retrain_studio_pwned"
    if os.path.exists(marker):
        os.remove(marker)
    evil = tmp_path / "evil.pth"
    _legacy_file(evil, pickle.dumps({"w": _Evil()}, protocol=2))
    with pytest.raises(UnsafeWeightsError, match="posix.system|os.system"):
        read_state_dict(evil)
    assert not os.path.exists(marker)


def test_refuses_plain_files_and_truncation(tmp_path):
    bogus = tmp_path / "bogus.pth"
    bogus.write_bytes(pickle.dumps(12345))
    with pytest.raises(ValueError, match="not a legacy torch"):
        read_state_dict(bogus)
    real = weights_file("efficientnet_lite0").read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(real[: len(real) // 2])
    with pytest.raises(ValueError, match="truncated"):
        read_state_dict(cut)


# --- crafted state dicts: the pickle is written opcode by opcode, as an attacker would -----------------


def _op(value) -> bytes:
    """One plain value as pickle opcodes (no PROTO/STOP), to splice into a hand-built pickle."""
    return pickle.dumps(value, protocol=2)[2:-1]


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _tensor(name, key, offset, size, stride, storage="FloatStorage") -> bytes:
    """Pickle ops for ``name``: a tensor rebuilt by torch's ``_rebuild_tensor_v2`` from its storage key, offset,
    size and stride (then ``False`` and an empty OrderedDict), as ``torch.save`` writes one."""
    storage_id = b"(" + _op("storage") + _global("torch", storage) + _op(key) + _op("cpu") + _op(0) + b"tQ"
    return (
        _op(name)
        + _global("torch._utils", "_rebuild_tensor_v2")
        + b"("
        + storage_id
        + _op(offset)
        + _op(size)
        + _op(stride)
        + b"\x89"
        + _global("collections", "OrderedDict")
        + b")Rt"
        + b"R"
    )


def _crafted(path, tensors: list[bytes], storages: dict[str, int], counts: dict[str, int] | None = None):
    """A legacy file: the state dict of ``tensors``, then each storage with ``n`` float32 values 0..n-1."""
    state = b"\x80\x02" + _global("collections", "OrderedDict") + b")R(" + b"".join(tensors) + b"u."
    with open(path, "wb") as f:
        for obj in (LEGACY_MAGIC, 1001, {"little_endian": True}):
            pickle.dump(obj, f, protocol=2)
        f.write(state)
        pickle.dump(list(storages), f, protocol=2)
        for key, n in storages.items():
            f.write(struct.pack("<q", (counts or {}).get(key, n)) + np.arange(n, dtype="<f4").tobytes())
    return path


def test_a_crafted_file_that_is_honest_reads_back(tmp_path):
    path = _crafted(
        tmp_path / "ok.pth",
        [_tensor("w", "0", 2, (2, 3), (3, 1)), _tensor("t", "0", 5, (3,), (0,)), _tensor("e", "0", 16, (0, 4), (4, 1))],
        {"0": 16},
    )
    state = read_state_dict(path)
    assert state["w"].tolist() == [[2, 3, 4], [5, 6, 7]]
    assert state["t"].tolist() == [5, 5, 5] and state["e"].shape == (0, 4)


@pytest.mark.parametrize(
    "offset, size, stride, why",
    [
        (14, (4,), (1,), "past the end"),  # 2 elements beyond the buffer: old code read the heap
        (0, (4, 4), (4, 2), "past the end"),  # a stride that walks off the end
        (15, (2,), (1,), "past the end"),
        (4, (3,), (-1,), "negative"),  # a negative stride reads before the buffer
        (-2, (3,), (1,), "negative"),  # a negative offset
        (0, (-1,), (1,), "negative"),
        (0, (2**32, 2**32), (0, 0), "elements"),  # element count that overflows 64-bit arithmetic
        (0, (1,), (2**62,), "larger than"),  # a size-1 dim's stride never reads, but overflowed numpy
        (0, (0, 4), (2**70, 1), "larger than"),  # no elements at all: the same OverflowError
        (0, (2**70, 0), (1, 1), "larger than"),
        (0, (1,) * 9, (1,) * 9, "9 dimensions"),
        (0, (4,), (1, 1), "sizes but"),
        (0.5, (2,), (1,), "whole number"),
        (0, ("a",), (1,), "whole number"),
    ],
)
def test_a_crafted_view_outside_its_storage_is_refused(tmp_path, offset, size, stride, why):
    path = _crafted(tmp_path / "evil.pth", [_tensor("w", "0", offset, size, stride)], {"0": 16})
    with pytest.raises(UnsafeWeightsError, match=why) as info:
        read_state_dict(path)
    assert "'w'" in str(info.value) and "\n" not in str(info.value)


def test_crafted_storages_are_refused(tmp_path):
    missing = _crafted(tmp_path / "missing.pth", [_tensor("w", "7", 0, (2,), (1,))], {"0": 16})
    with pytest.raises(ValueError, match="'w' has no storage"):
        read_state_dict(missing)
    negative = _crafted(tmp_path / "negative.pth", [_tensor("w", "0", 0, (2,), (1,))], {"0": 16}, {"0": -1})
    with pytest.raises(UnsafeWeightsError, match="claims -1 elements"):
        read_state_dict(negative)
    huge = _crafted(tmp_path / "huge.pth", [_tensor("w", "0", 0, (2,), (1,))], {"0": 16}, {"0": 2**40})
    with pytest.raises(UnsafeWeightsError, match="more than the file holds"):
        read_state_dict(huge)
    two_types = _crafted(
        tmp_path / "types.pth",
        [_tensor("a", "0", 0, (2,), (1,)), _tensor("b", "0", 0, (2,), (1,), "DoubleStorage")],
        {"0": 16},
    )
    with pytest.raises(UnsafeWeightsError, match="two element types"):
        read_state_dict(two_types)


def test_a_malformed_pickle_is_one_sentence(tmp_path):
    bad_size = _crafted(tmp_path / "bad.pth", [_tensor("w", "0", 0, 5, (1,))], {"0": 16})  # size is not a tuple
    with pytest.raises(ValueError, match="not a legacy torch weights file") as info:
        read_state_dict(bad_size)
    assert type(info.value) in (ValueError, UnsafeWeightsError)
