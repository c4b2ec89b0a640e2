"""Real test images: Fashion-MNIST from Debian's ``dataset-fashion-mnist`` written as class folders."""

from __future__ import annotations

import functools
import gzip
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"]


def available() -> bool:
    return (ROOT / "train-images-idx3-ubyte.gz").exists()


@functools.cache  # 44 callers; un-gzipping the 47 MB of train images takes ~0.5 s each time (read-only arrays)
def load(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    with gzip.open(ROOT / f"{prefix}-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(ROOT / f"{prefix}-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return images, labels


def write_folders(
    out: Path, per_class: int, classes: list[int] | None = None, split: str = "train", start: int = 0
) -> Path:
    """Write ``per_class`` PNGs for each class (the first ones from ``start``) under ``out/<class>/``."""
    images, labels = load(split)
    for c in classes if classes is not None else range(10):
        folder = out / CLASSES[c]
        folder.mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(labels == c)[start : start + per_class]:
            Image.fromarray(images[i]).save(folder / f"{split}_{i:05d}.png")
    return out


def plant_noise(root: Path, wrong_fraction: float = 0.05, copies: int = 20, seed: int = 0) -> dict:
    """Corrupt a folder written by ``write_folders`` the way real data sets are corrupted.

    ``wrong_fraction`` of the images are moved into another (random) class folder under their own name,
    and ``copies`` images get a re-encoded, resized copy (JPEG, 1.5x larger) under a new name in their
    own class folder.  Returns {"wrong": {moved path: true class}, "copies": [(original, copy), ...]}.
    """
    rng = np.random.default_rng(seed)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = sorted(root.glob("*/*.png"))
    picked = rng.permutation(len(files))
    wrong_count = round(len(files) * wrong_fraction)
    wrong = {}
    for i in picked[:wrong_count]:
        source = files[i]
        others = [c for c in classes if c != source.parent.name]
        target = root / others[rng.integers(len(others))] / source.name
        source.rename(target)
        wrong[target] = source.parent.name
    pairs = []
    for i in picked[wrong_count : wrong_count + copies]:
        source = files[i]
        image = Image.open(source).convert("L")
        size = round(image.width * 1.5)
        copy = source.parent / f"copy_of_{source.stem}_x.jpg"
        image.resize((size, size), Image.Resampling.BICUBIC).save(copy, quality=85)
        pairs.append((source, copy))
    return {"wrong": wrong, "copies": pairs}
