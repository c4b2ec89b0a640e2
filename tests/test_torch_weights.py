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
