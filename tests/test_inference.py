"""Local backends behind one interface: same answers, per-image timings, bad images isolated."""

import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from images import bad_images

from app.inference.base import ModelError
from app.inference.factory import open_classifier

TFLITE_VS_SAVEDMODEL = 1e-5  # float TFLite, same host/graph preprocessing (see test_preprocess)
DYNAMIC_VS_SAVEDMODEL = 0.05  # dynamic-range quantized weights: probabilities move by a few hundredths


@pytest.fixture(scope="module")
def sample(trained, fm_dir):
    files = [p for c in trained["done"]["classes"] for p in sorted((fm_dir / c).glob("*.png"))[:4]]
    return [p.read_bytes() for p in files], [p.parent.name for p in files]


@pytest.mark.parametrize("backend", ["tflite", "savedmodel"])
def test_backend_classifies_with_timings(trained, sample, backend):
    images, truth = sample
    classifier = open_classifier(trained["models"] / "clothes", backend)
    predictions = classifier.classify(images, top_k=3)
    assert np.mean([p.label == t for p, t in zip(predictions, truth)]) >= 0.8
    for p, data in zip(predictions, images):
        assert p.error is None and len(p.top_k) == 3 and p.top_k[0][1] >= p.top_k[1][1]
        assert p.request_bytes == len(data) and p.timings.inference_ms > 0
        t = p.timings
        assert t.total_ms == pytest.approx(t.decode_ms + t.preprocess_ms + t.inference_ms + t.network_ms, abs=0.05)
    if backend == "tflite":
        assert all(p.timings.decode_ms > 0 and p.timings.preprocess_ms > 0 for p in predictions)


def test_backends_agree(trained, sample):
    images, _ = sample
    lite = open_classifier(trained["models"] / "clothes", "tflite").classify(images, top_k=5)
    saved = open_classifier(trained["models"] / "clothes", "savedmodel").classify(images, top_k=5)
    for a, b in zip(lite, saved):
        assert a.label == b.label
        assert (
            np.abs(np.array([s for _, s in a.top_k]) - np.array([s for _, s in b.top_k])).max() < TFLITE_VS_SAVEDMODEL
        )


@pytest.mark.parametrize("backend", ["tflite", "savedmodel"])
def test_bad_image_in_a_batch_gets_its_own_error(trained, sample, backend):
    images, _ = sample
    batch = [images[0], bad_images()["truncated.jpg"][0], bad_images()["notes.png"][0], images[1]]
    out = open_classifier(trained["models"] / "clothes", backend).classify(batch)
    assert [p.error is None for p in out] == [True, False, False, True]
    assert "not an image" in out[2].error


def test_tflite_path_never_imports_tensorflow(trained, sample):
    script = textwrap.dedent(f"""
        import sys
        from app.inference.factory import open_classifier
        c = open_classifier({str(trained["models"] / "clothes")!r}, "tflite")
        print(c.classify([{sample[0][0]!r}])[0].label)
        assert "tensorflow" not in sys.modules, "TensorFlow was imported"
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == sample[1][0]


def test_model_errors_are_clear(tmp_path, trained):
    with pytest.raises(ModelError, match="holds no model version"):
        open_classifier(tmp_path, "tflite")
    with pytest.raises(ModelError, match="no model_int8.tflite"):
        from app.inference.tflite import TFLiteClassifier

        TFLiteClassifier(trained["models"] / "clothes", variant="int8")
    with pytest.raises(ModelError, match="no signature 'nope'"):
        from app.inference.savedmodel import SavedModelClassifier

        SavedModelClassifier(trained["models"] / "clothes", signature="nope")


def test_quantized_tflite_stays_close(trained, sample):
    from app.inference.tflite import TFLiteClassifier

    images, _ = sample
    quantized = TFLiteClassifier(trained["models"] / "clothes", variant="dynamic").classify(images, top_k=5)
    reference = open_classifier(trained["models"] / "clothes", "savedmodel").classify(images, top_k=5)
    agree = np.mean([q.label == r.label for q, r in zip(quantized, reference)])
    worst = max(abs(dict(q.top_k)[label] - score) for q, r in zip(quantized, reference) for label, score in r.top_k)
    assert agree >= 0.9 and worst < DYNAMIC_VS_SAVEDMODEL, (agree, worst)


def test_falls_back_to_tflite_runtime(monkeypatch, trained):
    import types

    from ai_edge_litert.interpreter import Interpreter

    from app.inference import tflite

    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # as if LiteRT were not installed
    fake = types.ModuleType("tflite_runtime.interpreter")
    fake.Interpreter = Interpreter
    monkeypatch.setitem(sys.modules, "tflite_runtime", types.ModuleType("tflite_runtime"))
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", fake)
    assert tflite.interpreter_class() is Interpreter
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)
    with pytest.raises(ModelError, match="no TFLite runtime installed"):
        tflite.interpreter_class()


def test_thread_count_is_honoured(trained, sample):
    """``--threads N`` gives the interpreter N threads: its pool adds N - 1 workers to the calling thread, counted
    in /proc/self/task of a fresh process (no TensorFlow there, so no other thread pool starts meanwhile)."""
    script = textwrap.dedent(f"""
        import json, os
        from app.inference.factory import open_classifier
        from app.inference.tflite import interpreter_class
        interpreter_class()  # loading the runtime starts one thread of its own, whatever the setting
        threads = lambda: len(os.listdir("/proc/self/task"))
        counts = {{}}
        for n in (1, 3):
            before = threads()
            c = open_classifier({str(trained["models"] / "clothes")!r}, "tflite", threads=n)
            label = c.classify([{sample[0][0]!r}])[0].label
            counts[n] = [threads() - before, label]
            del c
        print(json.dumps(counts))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    counts = json.loads(result.stdout)
    assert counts == {"1": [0, sample[1][0]], "3": [2, sample[1][0]]}


@pytest.mark.parametrize("backend", ["tflite", "savedmodel"])
@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda m: {**m, "labels": m["labels"][:1]}, "probabilities but has 1 class names"),
        (lambda m: [1, 2], "is not a model's metadata"),
        (lambda m: {**m, "labels": [1, None]}, "is not a model's metadata"),
        (None, "cannot be read (JSONDecodeError)"),
        ("fifo", "is not a regular file"),
    ],
)
def test_a_damaged_model_folder_is_one_sentence(trained, tmp_path, backend, damage, message):
    """metadata.json that is not JSON, not an object, labels that are not names or do not match the output:
    a ModelError naming the problem (was IndexError / AttributeError / a raw JSON message; a FIFO hung)."""
    import shutil

    version = shutil.copytree(trained["version_dir"], tmp_path / "1")
    meta_file = version / "metadata.json"
    if damage == "fifo":
        meta_file.unlink()
        os.mkfifo(meta_file)
    elif damage is None:
        meta_file.write_text("{not json")
    else:
        meta_file.write_text(json.dumps(damage(json.loads(meta_file.read_text()))))
    with pytest.raises(ModelError, match=re.escape(message)) as info:
        open_classifier(version, backend)
    assert "\n" not in str(info.value)


def test_probabilities_that_are_not_finite_are_refused():
    """A damaged .tflite answered NaN and `classify` printed 'cat nan' as a result."""
    from app.inference.base import ranked

    assert ranked([0.25, 0.75], ["a", "b"], 1) == [("b", 0.75)]
    for bad in ([float("nan"), 0.5], [float("inf"), 0.0]):
        with pytest.raises(ModelError, match="not finite"):
            ranked(bad, ["a", "b"], 1)


def test_timing_summary_is_numpys_median_and_nearest_percentile():
    """One definition of the timing statistics (bench, the CLI's classify line, the GUI), numpy's."""
    from app.inference.bench import summary

    values = [5.0, 1.0, 4.0, 2.0, 3.0, 100.0]
    stats = summary(values)
    assert stats["median"] == float(np.median(values)) == 3.5  # the middle two's mean, not the upper one
    assert stats["p95"] == 100.0 == float(np.percentile(values, 95, method="nearest"))  # a measured value
    assert (stats["min"], stats["max"], stats["mean"]) == (1.0, 100.0, round(float(np.mean(values)), 3))
    assert summary([]) == dict.fromkeys(("mean", "median", "p95", "min", "max"))
    assert summary(np.array([2.0]))["p95"] == 2.0
