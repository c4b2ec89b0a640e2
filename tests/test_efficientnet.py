"""The converted EfficientNet-Lite is the real ImageNet network: real photos get the right classes."""

from pathlib import Path

import numpy as np
import pytest
import skimage.data

from app.core import backbones
from app.core.efficientnet_lite import make_module
from app.imaging import resize

LABELS = (Path(__file__).parent / "data" / "imagenet_classes.txt").read_text().splitlines()
CATS = {"tabby, tabby cat", "tiger cat", "Egyptian cat"}


@pytest.fixture(scope="module")
def lite0():
    return make_module("efficientnet_lite0", with_imagenet_head=True)


def _top(module, photo, size=224):
    logits = module.imagenet_logits(resize(photo, (size, size))[None]).numpy()[0]
    p = np.exp(logits - logits.max())
    p /= p.sum()
    return LABELS[int(np.argmax(p))], float(p.max())


def test_coffee_is_espresso(lite0):
    label, score = _top(lite0, skimage.data.coffee())
    assert label == "espresso" and score > 0.7


def test_chelsea_is_a_cat(lite0):
    label, _ = _top(lite0, skimage.data.chelsea())
    assert label in CATS


def test_lite2_also_converts():
    label, _ = _top(make_module("efficientnet_lite2", with_imagenet_head=True), skimage.data.coffee(), 260)
    assert label == "espresso"


def test_materialised_feature_vector_follows_hub_contract(cache_dir):
    info = backbones.resolve("efficientnet_lite0")
    extractor = backbones.load(info, cache_dir)
    images = np.stack([resize(skimage.data.coffee(), (224, 224)), resize(skimage.data.chelsea(), (224, 224))])
    vectors = extractor(images).numpy()
    assert vectors.shape == (2, 1280)
    assert len(extractor.trainable_variables) > 50  # fine-tunable through hub.KerasLayer
    # same features as the in-memory module: the SavedModel round trip lost nothing
    direct = make_module("efficientnet_lite0")(images).numpy()
    np.testing.assert_allclose(vectors, direct, atol=1e-5)
    assert Path(backbones.materialise(info, cache_dir)).name == backbones.fingerprint(info)


def test_backbone_registry():
    ids = [b.id for b in backbones.list_backbones()]
    assert ids[:3] == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    assert all(b.offline for b in backbones.list_backbones()[:3])
    assert backbones.resolve("efficientnet_lite1").image_size == 240
    hub = backbones.resolve("https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5")
    assert hub.source == "hub" and not hub.offline and hub.image_size == 224
    with pytest.raises(backbones.BackboneError, match="unknown backbone"):
        backbones.resolve("resnet9000")


def test_hub_handle_offline_gives_a_clear_error(tmp_path, monkeypatch):
    """What a machine without internet sees, wherever the test runs: every URL fails to resolve."""
    import socket
    import urllib.error
    import urllib.request

    asked = []

    def offline(request, *args, **kwargs):
        asked.append(getattr(request, "full_url", request))
        raise urllib.error.URLError(socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"))

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "hub"))  # empty: nothing cached from an earlier run
    handle = "https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5"
    with pytest.raises(backbones.BackboneError) as info:
        backbones.load(backbones.resolve(handle), tmp_path)
    assert asked and all(url.startswith("https://") for url in asked)  # hub's own download was tried, and failed
    assert str(info.value) == (
        f"could not download {handle} (no internet?): <urlopen error [Errno -3] Temporary failure in name resolution>"
    )
