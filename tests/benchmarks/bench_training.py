"""Training benchmark (issue 2): 10 classes x 150 Fashion-MNIST images, cold and warm cache.

    .venv/bin/python tests/benchmarks/bench_training.py [--per-class 150] [--json]

Prints wall time per stage for a first run (empty feature cache, backbone already
converted) and a rerun (warm cache), a bare backbone forward pass over the same images for
comparison, and test accuracy against a linear probe (logistic regression, C chosen on
the validation split) on the same frozen features — on the run's own test split and on
1000 held-out Fashion-MNIST test images.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import fashion_mnist  # noqa: E402


def train(data: Path, models: Path, cache: Path) -> dict:
    start = time.perf_counter()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "app",
            "train",
            str(data),
            "-o",
            str(models),
            "--name",
            "fm",
            "--cache-dir",
            str(cache),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    done = json.loads(out.splitlines()[-1])
    done["wall_s"] = round(time.perf_counter() - start, 2)
    return done


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-class", type=int, default=150)
    parser.add_argument("--holdout", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from app.core import backbones, dataset, features
    from app.imaging import load_image

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    data = fashion_mnist.write_folders(work / "fm", args.per_class)
    cache = work / "cache"
    info = backbones.resolve("efficientnet_lite0")

    t = time.perf_counter()
    extractor = backbones.load(info, cache)  # converts the bundled weights once
    convert_s = time.perf_counter() - t
    files = sorted(data.rglob("*.png"))
    images = np.stack([load_image(f.read_bytes(), (224, 224)) for f in files])
    extractor(images[:32])  # trace once, as the training run does
    t = time.perf_counter()
    for s in range(0, len(images), 32):
        extractor(images[s : s + 32])
    forward_s = time.perf_counter() - t

    cold = train(data, work / "models", cache)
    warm = train(data, work / "models", cache)

    # linear probe on the very same cached features and splits
    import tensorflow as tf
    from sklearn.linear_model import LogisticRegression

    scanned = dataset.scan(data)
    store = features.EmbeddingCache(cache, backbones.fingerprint(info), 224)
    X = {s: np.stack([store[i.digest] for i in scanned.split(s)]) for s in dataset.SPLITS}
    Y = {s: np.array([i.label for i in scanned.split(s)]) for s in dataset.SPLITS}
    probes = [LogisticRegression(C=c, max_iter=5000).fit(X["train"], Y["train"]) for c in (0.01, 0.03, 0.1, 0.3, 1, 3)]
    probe = max(probes, key=lambda m: m.score(X["validation"], Y["validation"]))
    model = tf.saved_model.load(cold["model_dir"])
    kernel, bias = model.head_kernel.numpy(), model.head_bias.numpy()

    test_images, test_labels = fashion_mnist.load("test")
    pick = np.arange(args.holdout)
    import io

    from PIL import Image

    encoded = []
    for i in pick:
        buf = io.BytesIO()
        Image.fromarray(test_images[i]).save(buf, "PNG")
        encoded.append(load_image(buf.getvalue(), (224, 224)))
    H = np.concatenate([np.asarray(extractor(np.stack(encoded[s : s + 64]))) for s in range(0, len(encoded), 64)])
    # Our folders are in CLASSES order sorted by name; map Fashion-MNIST labels to our indices
    index = {name: i for i, name in enumerate(scanned.classes)}
    truth = np.array([index[fashion_mnist.CLASSES[c]] for c in test_labels[pick]])
    head_holdout = float(np.mean(np.argmax(H @ kernel + bias, 1) == truth))
    probe_holdout = float(probe.score(H, truth))

    result = {
        "images": len(files),
        "backbone_conversion_s": round(convert_s, 2),
        "bare_forward_s": round(forward_s, 2),
        "cold": {"wall_s": cold["wall_s"], **cold["seconds"]},
        "warm": {"wall_s": warm["wall_s"], **warm["seconds"]},
        "cold_vs_forward_plus_10s": round(cold["wall_s"] / (forward_s + 10), 3),
        "test_split_images": len(Y["test"]),
        "head_test_accuracy": cold["metrics"]["test_accuracy"],
        "probe_test_accuracy": round(float(probe.score(X["test"], Y["test"])), 4),
        "probe_C": probe.C,
        "holdout_images": len(pick),
        "head_holdout_accuracy": round(head_holdout, 4),
        "probe_holdout_accuracy": round(probe_holdout, 4),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"images: {result['images']} (10 classes x {args.per_class}), 2-core CPU")
        print(f"one-time backbone conversion: {convert_s:.1f} s")
        print(f"bare backbone forward pass over the same images: {forward_s:.1f} s")
        for name in ("cold", "warm"):
            r = result[name]
            print(
                f"{name:>4} run: wall {r['wall_s']:.1f} s  ("
                + ", ".join(f"{k} {v:.1f}" for k, v in r.items() if k not in ("wall_s",))
                + ")"
            )
        print(f"cold run / (bare forward + 10 s) = {result['cold_vs_forward_plus_10s']:.2f}  (target <= 1.3)")
        print(f"warm rerun: {warm['wall_s']:.1f} s  (target < 15)")
        print(
            f"test split ({len(Y['test'])} images): head {result['head_test_accuracy']:.3f}, "
            f"linear probe {result['probe_test_accuracy']:.3f} (C={probe.C})"
        )
        print(f"held-out Fashion-MNIST test ({len(pick)} images): head {head_holdout:.3f}, probe {probe_holdout:.3f}")
    return result


if __name__ == "__main__":
    main()
