"""Embedding at the limit: the LiteRT forward pass, decoding once, and the embedding store.

The store is attacked as a crash or a bad disk would: records cut short, garbage appended, bytes flipped,
a writer killed with SIGKILL mid-append, and old-format shards from earlier versions.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from images import encode

from app.core import backbones, dataset, features
from app.core.training import TrainSettings, run
from app.imaging import load_image

WIDTH = 16


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, WIDTH), dtype=np.float32)


def _keys(n: int, start: int = 0) -> list[str]:
    return [f"{i:064x}" for i in range(start, start + n)]


def _store_files(cache: features.EmbeddingCache) -> tuple[Path, Path]:
    generation = (cache.folder / "CURRENT").read_text().strip()
    return cache.folder / f"index-{generation}.bin", cache.folder / f"vectors-{generation}.f32"


@pytest.fixture
def own_cache(tmp_path, cache_dir) -> Path:
    """An empty embedding cache that shares the session's converted backbone (converting it costs a minute)."""
    backbones.FeatureExtractor(backbones.resolve("efficientnet_lite0"), cache_dir).prepare()
    own = tmp_path / "cache"
    own.mkdir()
    os.symlink(cache_dir / "backbones", own / "backbones")
    return own


def _warnings(seen: list[dict]) -> list[str]:
    return [e["message"] for e in seen if e["event"] == "warning"]


# --- the forward pass ------------------------------------------------------------------------------------------


@pytest.mark.thorough  # over a second: the real weights, in TensorFlow and in LiteRT
def test_litert_features_agree_with_tensorflow_on_real_photos(cache_dir):
    """The converted backbone computes the same vectors as TensorFlow (1e-4), so cached vectors stay valid."""
    info = backbones.resolve("efficientnet_lite0")
    extractor = backbones.FeatureExtractor(info, cache_dir)
    assert extractor.engine is None  # nothing started before it is needed
    assert extractor.prepare() == "litert"
    assert backbones.feature_tflite_path(info, cache_dir).stat().st_size > 1_000_000
    photos = [skimage.data.coffee(), skimage.data.chelsea(), skimage.data.astronaut(), skimage.data.rocket()]
    darknet = sorted(Path("/usr/share/darknet/data").glob("*.jpg"))[:3]
    encoded = [encode(photo, "JPEG", quality=90) for photo in photos] + [p.read_bytes() for p in darknet]
    batch = np.stack([load_image(data, (224, 224)) for data in encoded])
    lite = extractor(batch)
    reference = np.asarray(extractor.tf_model()(batch))
    assert lite.shape == reference.shape == (len(encoded), 1280)
    assert np.abs(lite - reference).max() <= 1e-4
    assert np.abs(reference).max() > 1.0  # real activations, not a degenerate all-zero output
    # an odd batch size after a full one: the interpreter follows the input's shape
    assert np.abs(extractor(batch[:3]) - reference[:3]).max() <= 1e-4


def test_a_backbone_that_does_not_convert_runs_in_tensorflow_with_one_warning(tmp_path):
    """A local SavedModel with an op TFLite lacks (SVD): one warning, and the vectors still come (from TF)."""
    import tensorflow as tf

    class SingularValues(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        def __call__(self, images):
            return tf.linalg.svd(tf.reduce_mean(images, axis=1), compute_uv=False)

    folder = tmp_path / "svd_backbone_224"
    module = SingularValues()
    tf.saved_model.save(module, str(folder))
    info = backbones.resolve(str(folder), trust=True)
    seen = []
    extractor = backbones.FeatureExtractor(info, tmp_path / "cache", on_event=seen.append)
    images = np.random.default_rng(0).random((2, 224, 224, 3), dtype=np.float32)
    vectors = extractor(images)
    assert extractor.engine == "tensorflow" and vectors.shape == (2, 3)
    warnings = _warnings(seen)
    assert len(warnings) == 1 and "TensorFlow" in warnings[0] and "\n" not in warnings[0]
    assert not backbones.feature_tflite_path(info, tmp_path / "cache").exists()
    extractor(images)
    assert len(_warnings(seen)) == 1


# --- decoding once --------------------------------------------------------------------------------------------


@pytest.mark.thorough
def test_each_image_is_decoded_once_in_a_cold_run_and_never_in_a_warm_one(tmp_path, own_cache, monkeypatch):
    import fashion_mnist

    data = fashion_mnist.write_folders(tmp_path / "fm", 8, [1, 8])
    calls: list[tuple[int, int]] = []
    for module in (dataset, features):

        def counted(raw, target, real=module.decode):
            calls.append(target)
            return real(raw, target)

        monkeypatch.setattr(module, "decode", counted)
    settings = TrainSettings(str(data), str(tmp_path / "models"), cache_dir=str(own_cache), epochs=2, tflite="none")
    run(settings)
    model_size = [c for c in calls if c == (224, 224)]  # the review's 32x32 thumbnails are another size
    assert len(model_size) == 16
    calls.clear()
    run(settings)
    assert [c for c in calls if c == (224, 224)] == []


@pytest.mark.thorough
def test_the_scan_still_checks_a_new_file_that_has_the_name_of_a_cached_one(tmp_path, own_cache):
    """Validity is remembered by content, never by name: a damaged replacement is skipped with its reason."""
    import fashion_mnist

    data = fashion_mnist.write_folders(tmp_path / "fm", 4, [1, 8])
    settings = TrainSettings(str(data), str(tmp_path / "models"), cache_dir=str(own_cache), epochs=2, tflite="none")
    run(settings)
    victim = sorted((data / "trouser").glob("*.png"))[0]
    victim.write_bytes(victim.read_bytes()[:60])  # same name, truncated content
    seen = []
    run(settings, on_event=seen.append)
    scanned = next(e for e in seen if e["event"] == "dataset")
    assert [s["path"] for s in scanned["skipped"]] == [str(victim)]


# --- the store ------------------------------------------------------------------------------------------------


def test_store_appends_to_one_file_pair_and_loads_only_what_is_asked(tmp_path):
    cache = features.EmbeddingCache(tmp_path, "b", 224)
    for batch in range(5):
        cache.add(_keys(10, batch * 10), _vectors(10, batch))
        cache.flush()
    names = sorted(p.name for p in cache.folder.iterdir() if not p.name.startswith("."))
    assert names == ["CURRENT", "index-0.bin", "vectors-0.f32"]
    assert (cache.folder / "vectors-0.f32").stat().st_size == 50 * WIDTH * 4
    again = features.EmbeddingCache(tmp_path, "b", 224)
    assert len(again) == 50 and _keys(1, 49)[0] in again
    got = again.load(_keys(3, 20) + ["not-there"])
    assert sorted(got) == _keys(3, 20)
    np.testing.assert_array_equal(got[_keys(1, 21)[0]], _vectors(10, 2)[1])


def test_store_survives_a_cut_tail_and_garbage_losing_only_the_damaged_records(tmp_path):
    cache = features.EmbeddingCache(tmp_path, "b", 224)
    cache.add(_keys(20), _vectors(20))
    cache.flush()
    index, vectors = _store_files(cache)
    with open(index, "r+b") as f:  # the last entry cut mid-record, as kill -9 mid-write leaves it
        f.truncate(index.stat().st_size - 50)
    with open(vectors, "ab") as f:
        f.write(b"\x07" * 1000)  # and garbage after the rows
    with open(index, "ab") as f:
        f.write(np.random.default_rng(1).bytes(700))  # and garbage after the entries
    seen = []
    reopened = features.EmbeddingCache(tmp_path, "b", 224, on_event=seen.append)
    assert len(_warnings(seen)) == 1 and "damaged" in _warnings(seen)[0]
    assert len(reopened) == 19 and _keys(1, 19)[0] not in reopened
    got = reopened.load(_keys(20))
    assert len(got) == 19 and all(np.array_equal(got[k], v) for k, v in zip(_keys(19), _vectors(20)))
    reopened.add(_keys(1, 19), _vectors(20)[19:])  # the lost one is embedded again and appended cleanly
    reopened.flush()
    seen.clear()
    clean = features.EmbeddingCache(tmp_path, "b", 224, on_event=seen.append)
    assert seen == [] and len(clean.load(_keys(20))) == 20


def _png_files(folder: Path, n: int) -> tuple[list[Path], list[str]]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        paths.append(folder / f"{i}.png")
        paths[-1].write_bytes(encode(np.full((20, 20, 3), i * 20, np.uint8), "PNG"))
    return paths, [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


def test_a_flipped_byte_in_a_stored_vector_is_caught_and_that_image_embedded_again(tmp_path):
    paths, digests = _png_files(tmp_path / "images", 8)
    cache = features.EmbeddingCache(tmp_path, "b", 224)
    cache.add(digests, _vectors(8))
    cache.flush()
    _, vectors = _store_files(cache)
    raw = bytearray(vectors.read_bytes())
    raw[3 * WIDTH * 4 + 5] ^= 0x40  # row 3
    vectors.write_bytes(bytes(raw))
    seen, calls = [], []
    reopened = features.EmbeddingCache(tmp_path, "b", 224, on_event=seen.append)
    out = features.embed(paths, digests, lambda batch: calls.append(len(batch)) or _vectors(8)[3:4], reopened, 16)
    assert calls == [1] and len(_warnings(seen)) == 1
    np.testing.assert_array_equal(out, _vectors(8))


def test_an_image_whose_content_changed_is_never_cached_under_its_old_digest(tmp_path):
    paths, digests = _png_files(tmp_path / "images", 3)
    paths[1].write_bytes(encode(np.zeros((30, 30, 3), np.uint8), "PNG"))  # still an image, other content
    cache = features.EmbeddingCache(tmp_path, "b", 224)
    failed = {}
    out = features.embed(paths, digests, lambda batch: _vectors(len(batch)), cache, 16, on_error=failed.setdefault)
    assert list(failed) == [1] and "scanned" in failed[1] and len(out) == 2
    assert digests[1] not in cache and digests[0] in cache


@pytest.mark.thorough  # over a second: embeds twice
def test_a_damaged_index_header_costs_the_vectors_not_the_run(tmp_path, standin_backbone):
    import fashion_mnist

    info, own_cache = backbones.resolve(standin_backbone), tmp_path / "cache"
    data = fashion_mnist.write_folders(tmp_path / "fm", 4, [1, 8])
    settings = TrainSettings(
        str(data),
        str(tmp_path / "models"),
        backbone=standin_backbone,
        cache_dir=str(own_cache),
        epochs=2,
        tflite="none",
        review=False,
    )
    run(settings)
    cache = features.EmbeddingCache(own_cache, backbones.fingerprint(info), info.image_size)
    index, _ = _store_files(cache)
    with open(index, "r+b") as f:
        f.write(b"garbage!")
    seen = []
    done = run(settings, on_event=seen.append)
    assert done["event"] == "done"
    damage = [w for w in _warnings(seen) if "feature cache" in w]
    assert len(damage) == 1
    assert next(e for e in seen if e["event"] == "new_images")["count"] > 0
    seen.clear()
    run(settings, on_event=seen.append)
    assert [w for w in _warnings(seen) if "feature cache" in w] == []
    assert next(e for e in seen if e["event"] == "new_images")["count"] == 0


def test_compaction_keeps_every_live_vector_and_drops_dead_rows(tmp_path):
    cache = features.EmbeddingCache(tmp_path, "b", 224)
    for _ in range(4):  # the same keys four times (e.g. two runs racing): three rows of each are dead
        cache.add(_keys(25), _vectors(25))
        cache.flush()
    before = sum(p.stat().st_size for p in _store_files(cache))
    cache.compact()
    files = _store_files(cache)
    assert files[0].name == "index-1.bin" and not (cache.folder / "vectors-0.f32").exists()
    assert sum(p.stat().st_size for p in files) < before / 3
    got = features.EmbeddingCache(tmp_path, "b", 224).load(_keys(25))
    assert all(np.array_equal(got[k], v) for k, v in zip(_keys(25), _vectors(25)))


def test_a_store_of_mostly_dead_rows_is_compacted_when_opened(tmp_path):
    cache = features.EmbeddingCache(tmp_path, "b", 224)
    for _ in range(features.COMPACT_SLACK_ROWS // 10 + 3):  # 10 images embedded again and again
        cache.add(_keys(10), _vectors(10))
    cache.flush()
    assert _store_files(cache)[1].stat().st_size > features.COMPACT_SLACK_ROWS * WIDTH * 4
    reopened = features.EmbeddingCache(tmp_path, "b", 224)
    index, vectors = _store_files(reopened)
    assert vectors.name == "vectors-1.f32" and vectors.stat().st_size == 10 * WIDTH * 4
    assert all(np.array_equal(reopened[k], v) for k, v in zip(_keys(10), _vectors(10)))


def test_old_npz_shards_are_moved_into_the_store(tmp_path):
    folder = tmp_path / "embeddings" / "b-224x224"
    folder.mkdir(parents=True)
    for n in range(3):  # what earlier versions wrote: one shard per batch
        np.savez(folder / f"{n:032x}.npz", keys=np.array(_keys(10, n * 10)), vectors=_vectors(10, n))
    seen = []
    cache = features.EmbeddingCache(tmp_path, "b", 224, on_event=seen.append)
    assert seen == [] and not list(folder.glob("*.npz"))
    got = features.EmbeddingCache(tmp_path, "b", 224).load(_keys(30))
    assert len(got) == 30 and np.array_equal(got[_keys(1, 25)[0]], _vectors(10, 2)[5])
    assert len(cache) == 30


_WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from app.core import features
    cache = features.EmbeddingCache(sys.argv[1], "b", 224)
    rng = np.random.default_rng(0)
    n = 0
    while True:
        cache.add([f"{i:064x}" for i in range(n, n + 50)], rng.random((50, 1280), dtype=np.float32))
        cache.flush()
        n += 50
        if n == 500:
            print("ready", flush=True)
    """
)


@pytest.mark.timeout(120)
@pytest.mark.thorough  # over a second: a writer process killed
def test_a_writer_killed_mid_append_loses_at_most_its_last_records(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    seen = []
    cache = features.EmbeddingCache(tmp_path, "b", 224, on_event=seen.append)
    stored = len(cache)
    assert stored >= 500
    got = cache.load([f"{i:064x}" for i in range(stored + 50)])
    assert sorted(got) == sorted(f"{i:064x}" for i in range(len(got)))  # a prefix: nothing in between lost
    assert stored - len(got) <= 50 and len(_warnings(seen)) <= 1


# --- fine-tuning input ------------------------------------------------------------------------------------------


@pytest.mark.thorough
def test_fine_tuning_goes_on_when_an_image_turns_to_junk_after_the_embed_stage(tmp_path, standin_backbone):
    """Fine-tuning decodes in the graph (tf.data, parallel calls): a file damaged meanwhile is dropped, not fatal."""
    import fashion_mnist

    data = fashion_mnist.write_folders(tmp_path / "fm", 6, [1, 8])
    victims = sorted((data / "trouser").glob("*.png"))[:2]

    def sink(event):
        if event["event"] == "stage" and event["stage"] == "fine_tune":
            victims[0].write_bytes(b"not an image any more")
            os.remove(victims[1])
            os.mkfifo(victims[1])  # a FIFO would hang a plain read: the safe reader refuses it

    done = run(
        TrainSettings(
            str(data),
            str(tmp_path / "models"),
            backbone=standin_backbone,
            cache_dir=str(tmp_path / "cache"),
            epochs=2,
            fine_tune=True,
            fine_tune_epochs=1,
            batch_size=4,
            tflite="none",
            review=False,
            test_percent=0,
        ),
        on_event=sink,
    )
    assert done["event"] == "done" and done["seconds"]["fine_tune"] > 0
