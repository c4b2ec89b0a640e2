"""Scan ``IMAGE_DIR/<class>/<image>``, validate every file, and split it stably.

    >>> data = scan("photos/", validation_percent=10, test_percent=10)
    >>> data.classes, len(data.split("train")), data.skipped[:1]

Bad files are listed in ``skipped`` with a reason and never stop the scan: every file under
the folder is either used or skipped, none dropped silently.  A class folder whose name cannot
be a label (not UTF-8, a line break or control character) is skipped whole, with a warning.  The split
follows TensorFlow's retrain.py: a file's split is decided by a hash of its name (with
anything after ``_nohash_`` ignored), so adding images never moves old ones.
"""
from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from app.imaging import class_name_problem, is_hidden, printable, read_image_file, walk
from app.inference.preprocess import IMAGE_EXTENSIONS, ImageError, decode

from . import events

SPLITS = ("train", "validation", "test")
_MAX_PER_CLASS = 2 ** 27 - 1
IMBALANCE_RATIO = 3.0
NOT_A_CLASS = "cannot be a class"


class DatasetError(ValueError):
    """The folder cannot be trained on; ``str()`` says why in one sentence."""


@dataclass(frozen=True)
class ImageItem:
    path: Path
    label: int
    split: str
    digest: str  # sha256 of the file's bytes: the embedding cache key


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str


@dataclass
class Dataset:
    root: Path
    classes: list[str]
    items: list[ImageItem]
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def split(self, name: str) -> list[ImageItem]:
        return [item for item in self.items if item.split == name]

    def counts(self) -> dict[str, dict[str, int]]:
        """{class: {"train": n, "validation": n, "test": n}}"""
        table = {c: dict.fromkeys(SPLITS, 0) for c in self.classes}
        for item in self.items:
            table[self.classes[item.label]][item.split] += 1
        return table

    def summary(self) -> dict:
        return {"class_count": len(self.classes), "images": len(self.items),
                "skipped_count": len(self.skipped),
                **{s: len(self.split(s)) for s in SPLITS}}


def split_of(file_name: str, validation_percent: float, test_percent: float) -> str:
    """retrain.py's rule: a stable percentage from the SHA-1 of the file name."""
    hash_name = re.sub(r"_nohash_.*$", "", file_name)
    digest = hashlib.sha1(os.fsencode(hash_name)).hexdigest()  # the name's bytes, even when not UTF-8
    percent = (int(digest, 16) % (_MAX_PER_CLASS + 1)) * (100.0 / _MAX_PER_CLASS)
    if percent < validation_percent:
        return "validation"
    if percent < validation_percent + test_percent:
        return "test"
    return "train"


def _class_folders(root: Path) -> tuple[list[Path], list[Skipped]]:
    """Sub-folders usable as classes, and the other top-level folders and images with the reason they are not.

    Other top-level files (a README, a licence) are the dataset's documentation, not lost images.
    """
    folders, skipped = [], []
    for path in sorted(root.iterdir(), key=lambda p: p.name):
        if not path.is_dir():
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                skipped.append(Skipped(path, "not inside a class folder"))
        elif is_hidden(path.name):
            skipped.append(Skipped(path, "hidden folder (not searched)"))
        elif problem := class_name_problem(path.name):
            skipped.append(Skipped(path, f"{NOT_A_CLASS}: {problem}; rename the folder"))
        else:
            folders.append(path)
    return folders, skipped


def check_file(path: Path, target: tuple[int, int]) -> tuple[str | None, str | None]:
    """(digest, None) for a usable image, (None, reason) otherwise; never raises for a bad file."""
    try:
        data = read_image_file(path)
        decode(data, target)
    except ImageError as exc:
        return None, str(exc)
    return hashlib.sha256(data).hexdigest(), None


def scan(root: str | Path, *, validation_percent: float = 10, test_percent: float = 10,
         target: tuple[int, int] = (224, 224), on_event: events.EventSink = events.ignore,
         workers: int | None = None) -> Dataset:
    """Scan, validate and split a folder of class folders; raise DatasetError if unusable."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder")
    if not 0 <= validation_percent < 100 or not 0 <= test_percent < 100 \
            or validation_percent + test_percent >= 100:
        raise DatasetError("validation and test percentages must be between 0 and 100 and leave images to train on")
    folders, skipped = _class_folders(root)
    if len(folders) < 2:
        refused = next((s for s in skipped if s.reason.startswith(NOT_A_CLASS)), None)
        raise DatasetError(f"{root} has {len(folders)} class folder{'s' if len(folders) != 1 else ''}; "
                           "put the images in at least 2 sub-folders, one per class"
                           + (f" (folder '{printable(refused.path.name)}' {refused.reason})" if refused else ""))
    classes = [f.name for f in folders]
    files = []
    for label, folder in enumerate(folders):
        for found in walk(folder):
            if found.reason:
                skipped.append(Skipped(found.path, found.reason))
            else:
                files.append((label, found.path))
    files, excluded = without_excluded(root, files)
    skipped += excluded
    items = []
    with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 2) + 2)) as pool:
        checks = pool.map(lambda lp: check_file(lp[1], target), files)
        for done, ((label, path), (digest, reason)) in enumerate(zip(files, checks), 1):
            if reason:
                skipped.append(Skipped(path, reason))
            else:
                items.append(ImageItem(path, label, split_of(path.name, validation_percent, test_percent), digest))
            if done % 50 == 0 or done == len(files):
                on_event(events.progress("scan", done, len(files)))
    per_class = Counter(item.label for item in items)
    for label, name in enumerate(classes):
        if per_class[label] < 2:
            raise DatasetError(f"class '{name}' has {per_class[label]} usable image"
                               f"{'s' if per_class[label] != 1 else ''}; each class needs at least 2")
    items = _ensure_training_examples(items, classes, validation_percent, test_percent)
    data = Dataset(root, classes, items, skipped)
    data.warnings = [f"folder '{printable(s.path.name)}' was left out: {s.reason}"
                     for s in skipped if s.reason.startswith(NOT_A_CLASS)] + _warnings(data, per_class)
    return data


def _ensure_training_examples(items, classes, validation_percent, test_percent):
    """A class whose few images all hashed into held-out splits lends one back to train."""
    out = list(items)
    for label in range(len(classes)):
        own = [i for i, item in enumerate(out) if item.label == label]
        if not any(out[i].split == "train" for i in own):
            i = own[0]
            out[i] = ImageItem(out[i].path, label, "train", out[i].digest)
    return out


def _warnings(data: Dataset, per_class: Counter) -> list[str]:
    notes = []
    most, least = max(per_class.values()), min(per_class.values())
    if least * IMBALANCE_RATIO < most:
        small = [data.classes[c] for c, n in per_class.items() if n * IMBALANCE_RATIO < most]
        notes.append(f"classes are imbalanced ({least} to {most} images); smallest: {', '.join(small[:5])}")
    if least < 20:
        notes.append("some classes have fewer than 20 images; accuracy estimates will be rough")
    labels_by_digest: dict[str, set] = {}
    for item in data.items:
        labels_by_digest.setdefault(item.digest, set()).add(item.label)
    clashes = sum(1 for labels in labels_by_digest.values() if len(labels) > 1)
    if clashes:
        notes.append(f"{clashes} identical image{'s' if clashes > 1 else ''} appear in more than one class")
    for split in ("validation", "test"):
        if not data.split(split):
            notes.append(f"the {split} split is empty; add images or raise --{split}-percent")
    return notes


# --- quick checks and the user's exclusions (kept apart from the scan above) ------------------------------------

EXCLUDED_FILE = Path(".retrain-studio", "excluded.txt")  # one path relative to IMAGE_DIR per line
_QUICK_LOOK = 2000  # directory entries read per class folder by check_root: never a walk of the whole tree


def class_names(root: str | Path) -> list[str]:
    """The class names a scan of ``root`` would use (its sub-folder names), without reading any image."""
    root = Path(root).expanduser().resolve()
    return [f.name for f in _class_folders(root)[0]] if root.is_dir() else []


def loose_images(root: str | Path) -> list[Path]:
    """Image files directly in IMAGE_DIR: only class folders are scanned, so these are not used."""
    try:
        return sorted(p for p in Path(root).expanduser().iterdir()
                      if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file())
    except OSError:
        return []


def _has_images_near(folder: Path) -> bool:
    """An image in ``folder`` or one level below it, looking at no more than _QUICK_LOOK entries."""
    seen, pending = 0, [(folder, 0)]
    while pending:
        current, depth = pending.pop(0)
        try:
            with os.scandir(current) as entries:
                for entry in entries:
                    seen += 1
                    if seen > _QUICK_LOOK:
                        return False
                    if entry.name.startswith("."):
                        continue
                    if Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS:
                        return True
                    if depth == 0 and entry.is_dir(follow_symlinks=False):
                        pending.append((Path(entry.path), 1))
        except OSError:
            continue
    return False


def check_root(root: str | Path) -> None:
    """Refuse at once, without walking the tree, a folder that cannot be a data set (``/``, a folder of
    loose photos, a folder of empty folders): a scan of such a folder could run for minutes to say no."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder")
    if root == Path(root.anchor):
        raise DatasetError(f"{root} is the whole disk; choose the folder that holds one sub-folder of images per class")
    with_images = 0
    for folder in _class_folders(root)[0]:
        with_images += _has_images_near(folder)
        if with_images == 2:
            return
    loose = len(loose_images(root))
    found = f"{root} has {with_images} class folder{'s' if with_images != 1 else ''} with images"
    raise DatasetError(found + (f" (and {loose} loose image{'s' if loose != 1 else ''})" if loose else "")
                       + "; put the images in at least 2 sub-folders, one per class")


def excluded_files(root: str | Path) -> set[Path]:
    """The files the user excluded from training (IMAGE_DIR/.retrain-studio/excluded.txt), as absolute paths.

    A line that does not name a path inside IMAGE_DIR (``..``, an absolute path, a NUL byte) is ignored."""
    root = Path(root).expanduser().resolve()
    try:
        lines = (root / EXCLUDED_FILE).read_bytes().decode("utf-8", "replace").splitlines()
    except OSError:
        return set()
    out = set()
    for line in filter(None, (line.rstrip("\r") for line in lines)):  # names may begin or end with spaces
        try:
            path = (root / line).resolve()
        except (OSError, ValueError):  # a NUL byte, a loop of links: not a file of this data set
            continue
        if path.is_relative_to(root):  # a line never points outside IMAGE_DIR
            out.add(path)
    return out


def set_excluded(root: str | Path, paths) -> None:
    """Record exactly ``paths`` as excluded (atomically; an empty set removes nothing else the user wrote)."""
    from .atomic import write_bytes

    root = Path(root).expanduser().resolve()
    lines = sorted(str(Path(p).resolve().relative_to(root)) for p in paths)
    odd = next((line for line in lines if "\n" in line or "\r" in line), None)
    if odd is not None:
        raise DatasetError(f"{odd!r} has a line break in its name; rename it to exclude it")
    write_bytes(root / EXCLUDED_FILE, "".join(line + "\n" for line in lines).encode("utf-8"))


def without_excluded(root: Path, files: list[tuple[int, Path]]) -> tuple[list[tuple[int, Path]], list[Skipped]]:
    """Drop the user's exclusions from ``files``; they are listed as skipped, "excluded by you"."""
    excluded = excluded_files(root)
    if not excluded:
        return files, []
    kept = [(label, path) for label, path in files if path.resolve() not in excluded]
    return kept, [Skipped(path, "excluded by you") for _, path in files if path.resolve() in excluded]
