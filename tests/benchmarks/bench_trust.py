"""Which out-of-distribution score to export: class prototypes against nearest neighbours and Mahalanobis.

    .venv/bin/python tests/benchmarks/bench_trust.py [--per-class 40]

Real embeddings (bundled EfficientNet-Lite0) of 8 Fashion-MNIST classes (shirt and ankle boot held out):
prototypes / neighbours from ``--per-class`` training images per class, the threshold at the 95th percentile
of 10 validation images per class, then the share flagged of 20 test images per kept class, 30 per held-out
class and 60 digits drawn with Pillow.  Prints one row per score and returns them.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KEPT, HELD_OUT = [0, 1, 2, 3, 4, 5, 7, 8], [6, 9]


def main(argv: list[str] | None = None) -> dict:
    import fashion_mnist
    from PIL import Image, ImageDraw, ImageFont

    from app.core import backbones, trust
    from app.imaging import load_image

    parser = argparse.ArgumentParser()
    parser.add_argument("--per-class", type=int, default=40)
    args = parser.parse_args(argv)
    info = backbones.resolve("efficientnet_lite0")
    extractor = backbones.load(info)
    size = info.image_size

    def png(array):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, "PNG")
        return buffer.getvalue()

    def embed(arrays):
        out = []
        for i in range(0, len(arrays), 32):
            batch = np.stack([load_image(png(a), (size, size)) for a in arrays[i : i + 32]])
            out.append(np.asarray(extractor(batch)))
        return np.concatenate(out)

    x, y = fashion_mnist.load("train")
    xt, yt = fashion_mnist.load("test")

    def pick(images, labels, classes, n, start=0):
        index = np.concatenate([np.flatnonzero(labels == c)[start : start + n] for c in classes])
        return images[index], np.array([KEPT.index(c) if c in KEPT else -1 for c in labels[index]])

    rng = np.random.default_rng(0)
    digits = []
    for i in range(60):
        image = Image.new("L", (28, 28), 0)
        font = ImageFont.load_default(size=int(rng.integers(16, 26)))
        ImageDraw.Draw(image).text((int(rng.integers(2, 10)), int(rng.integers(0, 6))), str(i % 10), 255, font=font)
        digits.append(np.array(image))
    train, train_labels = pick(x, y, KEPT, args.per_class)
    start = time.perf_counter()
    vectors = {
        "train": embed(train),
        "validation": embed(pick(x, y, KEPT, 10, args.per_class)[0]),
        "own": embed(pick(xt, yt, KEPT, 20)[0]),
        "held_out": embed(pick(xt, yt, HELD_OUT, 30)[0]),
        "digits": embed(digits),
    }
    seconds = time.perf_counter() - start
    unit = trust.unit_rows
    bank = unit(vectors["train"])
    prototypes = trust.class_prototypes(vectors["train"], train_labels, len(KEPT))
    means = np.stack([vectors["train"][train_labels == c].mean(0) for c in range(len(KEPT))])
    residual = vectors["train"] - means[train_labels]
    cov = residual.T @ residual / len(residual)
    cov = 0.5 * cov + 0.5 * np.trace(cov) / len(cov) * np.eye(len(cov))  # shrunk: D > N
    precision = np.linalg.inv(cov)

    def mahalanobis(v):
        d = v[:, None, :] - means[None]
        return np.einsum("nkd,de,nke->nk", d, precision, d).min(1)

    scores = {
        "prototype_cosine (exported)": lambda v: trust.ood_scores(v, prototypes),
        "nearest_neighbour_cosine k=1": lambda v: 1 - (unit(v) @ bank.T).max(1),
        "nearest_neighbour_cosine k=5": lambda v: 1 - np.sort(unit(v) @ bank.T, 1)[:, -5],
        "mahalanobis (shrunk, shared)": mahalanobis,
    }
    rows = {}
    print(f"{len(train)} training images embedded with the rest in {seconds:.1f} s")
    print(f"{'score':<32} {'own':>6} {'held-out':>9} {'digits':>7}")
    for name, score in scores.items():
        threshold = trust.unknown_threshold(score(vectors["validation"]), 0.05)
        rows[name] = {k: float(np.mean(score(vectors[k]) > threshold)) for k in ("own", "held_out", "digits")}
        print(f"{name:<32} {rows[name]['own']:>6.2f} {rows[name]['held_out']:>9.2f} {rows[name]['digits']:>7.2f}")
    return rows


if __name__ == "__main__":
    main()
