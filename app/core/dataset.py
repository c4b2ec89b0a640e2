"""Scan ``IMAGE_DIR/<class>/<image>``, validate every file, and split it stably.

Example::

    data = scan("photos/", validation_percent=10, test_percent=10)
    data.classes, len(data.split("train")), data.skipped[:1]

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
from collections.abc import Container
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from app.imaging import (
    IMAGE_EXTENSIONS,
    DecodedImages,
    ImageError,
    class_name_problem,
    decode,
    is_hidden,
    printable,
    read_image_file,
    walk,
)

from . import events

SPLITS = ("train", "validation", "test")
_MAX_PER_CLASS = 2**27 - 1
IMBALANCE_RATIO = 3.0
NOT_A_CLASS = "cannot be a class"


class DatasetError(ValueError):
    """The folder cannot be trained on; ``str()`` says why in one sentence."""


@dataclass(frozen=True)
class ImageItem:
    """One usable image: its file, class number (index into ``Dataset.classes``) and split."""

    path: Path
    label: int
    split: str
    digest: str  # sha256 of the file's bytes: the embedding cache key


@dataclass(frozen=True)
class Skipped:
    """A file or folder the scan did not use, with the plain reason shown to the user."""

    path: Path
    reason: str


@dataclass
class Dataset:
    """What ``scan`` found: the sorted class names, every usable image with its split, and what was left out.

    ``warnings`` are sentences for the user (imbalance, tiny classes, identical images in two classes,
    empty splits); they never stop training.
    """

    root: Path
    classes: list[str]
    items: list[ImageItem]
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sources: list = field(default_factory=list)  # the Source list scanned (root is the first one's folder)

    def origins(self) -> dict[str, dict[str, int]]:
        """Returns {class: {source folder: images}}: where each class's images come from."""
        table: dict[str, dict[str, int]] = {c: {} for c in self.classes}
        for item in self.items:
            source = self.source_of(item.path)
            where = str(source.root()) if source else str(item.path.parent)
            row = table[self.classes[item.label]]
            row[where] = row.get(where, 0) + 1
        return table

    def source_of(self, path: str | Path) -> Source | None:
        """Returns the source ``path`` was found through (the deepest source folder holding it; its exclusions
        live there), or None for a file of no source."""
        path = Path(path)
        holding = [s for s in self.sources if path.is_relative_to(s.root())]
        return max(holding, key=lambda s: len(s.root().parts), default=None)

    def class_of(self, path: str | Path) -> str | None:
        """Returns the class a file of a source belongs to by where it lies (used or excluded), or None."""
        source = self.source_of(path)
        if source is None:
            return None
        if source.kind == CLASS:
            return source.class_name()
        parts = Path(path).relative_to(source.root()).parts
        return parts[0] if len(parts) > 1 else None

    def source_records(self) -> list[dict]:
        """Returns the sources as metadata.json records them, each with the classes it gave (for retraining)."""
        used = set(self.classes)
        out = []
        for source in self.sources:
            try:
                names = [n for n, _ in _source_classes(source)[0] if n in used]
            except (DatasetError, OSError):
                names = []
            out.append(source.to_dict(names))
        return out

    def split(self, name: str) -> list[ImageItem]:
        """Returns the images of split ``name`` ("train", "validation" or "test"), in scan order."""
        return [item for item in self.items if item.split == name]

    def counts(self) -> dict[str, dict[str, int]]:
        """Returns {class: {"train": n, "validation": n, "test": n}}, every class and split present."""
        table = {c: dict.fromkeys(SPLITS, 0) for c in self.classes}
        for item in self.items:
            table[self.classes[item.label]][item.split] += 1
        return table

    def summary(self) -> dict:
        """Returns the counts the ``dataset`` event and metadata.json carry (classes, images, skipped, splits)."""
        return {
            "class_count": len(self.classes),
            "images": len(self.items),
            "skipped_count": len(self.skipped),
            **{s: len(self.split(s)) for s in SPLITS},
        }


def split_of(file_name: str, validation_percent: float, test_percent: float) -> str:
    """Returns the split of a file by retrain.py's rule: a stable percentage from the SHA-1 of its name.

    The name alone decides, so adding images never moves old ones; anything after ``_nohash_`` is ignored,
    so ``cat_nohash_1.jpg`` and ``cat_nohash_2.jpg`` (crops of one photo) never straddle train and test.

    Args:
        file_name: The file's name (not its path).
        validation_percent: Share of names that go to "validation", 0-100.
        test_percent: Share of names that go to "test", 0-100.

    >>> split_of("cat_nohash_1.jpg", 10, 10) == split_of("cat_nohash_2.jpg", 10, 10)
    True
    >>> split_of("cat.jpg", 0, 0)
    'train'
    """
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
        elif path.name == EXCLUDED_FILE.parts[0]:
            continue  # the app's own notes about this data set (the user's exclusions), not images
        elif is_hidden(path.name):
            skipped.append(Skipped(path, "hidden folder (not searched)"))
        elif problem := class_name_problem(path.name):
            skipped.append(Skipped(path, f"{NOT_A_CLASS}: {problem}; rename the folder"))
        else:
            folders.append(path)
    return folders, skipped


def check_file(
    path: Path,
    target: tuple[int, int],
    known_valid: Container[str] = (),
    decoded: DecodedImages | None = None,
) -> tuple[str | None, str | None]:
    """Read and decode one image as training will, so a bad file is found now, not mid-run.

    An image whose content digest is in ``known_valid`` (it decoded before: its vector is cached) is only
    read and hashed, never decoded again.

    Args:
        path: The image file.
        target: (height, width) the image is decoded for (JPEGs are decoded at a matching scale).
        known_valid: Digests of images known to decode (e.g. an ``EmbeddingCache``).
        decoded: Where the decoded pixels are kept for the embed stage (within its budget).

    Returns:
        (sha256 hex digest of the bytes, None) for a usable image, (None, reason) otherwise; never raises for
        a bad file.
    """
    try:
        data = read_image_file(path)
        digest = hashlib.sha256(data).hexdigest()
        if digest in known_valid:
            return digest, None
        pixels = decode(data, target)
    except ImageError as exc:
        return None, str(exc)
    if decoded is not None:
        decoded.keep(digest, pixels)
    return digest, None


def _file_identity(path: Path):
    """What makes two paths one file: its device and inode (one ``stat``, where ``resolve`` walks every folder)."""
    try:
        info = path.stat()
    except OSError:
        return path  # vanished or unreadable: its read fails later, with a reason
    return info.st_dev, info.st_ino


FOLDER, CLASS = "folder", "class"  # a folder of class folders; a folder that is one class


@dataclass(frozen=True)
class Source:
    """One place images come from: a folder of class folders, or one folder that is the class ``name``."""

    path: str
    kind: str = FOLDER
    name: str | None = None  # the class of a CLASS source (default: the folder's name)

    def root(self) -> Path:
        """Returns the source's folder, absolute and with links resolved."""
        return Path(self.path).expanduser().resolve()

    def class_name(self) -> str:
        """Returns the class of a CLASS source: its given name, else the folder's name."""
        return self.name if self.name is not None else self.root().name

    def to_dict(self, classes: list[str] | None = None) -> dict:
        """What metadata.json records: enough to scan it again, and which classes it gave."""
        out = {"path": str(self.root()), "kind": self.kind}
        if self.kind == CLASS:
            out["name"] = self.class_name()
        if classes is not None:
            out["classes"] = classes
        return out

    @staticmethod
    def from_dict(row: dict) -> Source:
        """Read a source back from metadata.json (``to_dict``'s output).

        Raises:
            DatasetError: ``row`` is not a recorded source (a damaged or hand-edited file).
        """
        if not isinstance(row, dict) or not isinstance(row.get("path"), str) or row.get("kind") not in (FOLDER, CLASS):
            raise DatasetError(f"a recorded source is not understood: {row!r:.100}")
        name = row.get("name") if row["kind"] == CLASS else None
        return Source(row["path"], row["kind"], name if isinstance(name, str) else None)


def as_sources(sources) -> list[Source]:
    """Returns ``sources`` as a list of Source, whatever form the caller has.

    Args:
        sources: One folder of class folders (str or Path), or a list of Source objects and folders.

    >>> as_sources("photos")
    [Source(path='photos', kind='folder', name=None)]
    """
    if isinstance(sources, (str, Path)):
        return [Source(str(sources))]
    return [s if isinstance(s, Source) else Source(str(s)) for s in sources]


def _source_classes(source: Source) -> tuple[list[tuple[str, Path]], list[Skipped]]:
    """(class name, folder) pairs a source gives, and what it leaves out; DatasetError if it cannot be read."""
    root = source.root()
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder")
    if source.kind == CLASS:
        name = source.class_name()
        if problem := class_name_problem(name):
            raise DatasetError(f"class name {printable(name)!r} {NOT_A_CLASS}: {problem}")
        if not name.strip():
            raise DatasetError(f"the class of {root} has an empty name; give it a name")
        return [(name, root)], []
    folders, skipped = _class_folders(root)
    return [(f.name, f) for f in folders], skipped


def source_class_names(sources) -> list[str]:
    """Returns the merged, sorted class names a scan of ``sources`` would use, without reading any image.

    A source that cannot be read adds nothing (``[]`` when none can).
    """
    names = set()
    for source in as_sources(sources):
        try:
            names.update(name for name, _ in _source_classes(source)[0])
        except (DatasetError, OSError):
            continue
    return sorted(names)


def scan(
    root,
    *,
    validation_percent: float = 10,
    test_percent: float = 10,
    target: tuple[int, int] = (224, 224),
    on_event: events.EventSink = events.ignore,
    workers: int | None = None,
    known_valid: Container[str] = (),
    decoded: DecodedImages | None = None,
) -> Dataset:
    """Scan, validate and split one folder of class folders, or a list of sources merged by class name.

    Classes are sorted by name whatever the sources' order.  The split depends on the class's images' file names
    only, so adding or reordering sources never moves an image between splits; two sources holding the same file
    name in one class keep both files, in the same split (a copy never straddles train and test).  A file reached
    through two sources is used once.  Each source folder's own exclusions (``.retrain-studio/excluded.txt``) apply.

    Args:
        root: A folder of class folders, or a list of sources (see ``as_sources``).
        validation_percent: Share of file names held out for validation.
        test_percent: Share of file names held out for the final test.
        target: (height, width) each image is test-decoded for (the backbone's input size).
        on_event: Receives ``progress`` events of stage "scan".
        workers: Decoding threads (default: a few more than the cores).
        known_valid: Content digests known to decode (the embedding cache): those files are read and
            hashed but not decoded, so a cached image is never decoded again.
        decoded: Keeps the pixels decoded here for the embed stage, which then does not decode them again.

    Returns:
        The Dataset; unusable files are in ``skipped`` with a reason, never dropped silently.

    Raises:
        DatasetError: No sources, bad percentages, fewer than 2 classes, a class with fewer than 2 usable
            images, or a source that is not a folder.
    """
    sources = as_sources(root)
    if not sources:
        raise DatasetError("no image folders were given; add at least one")
    if not 0 <= validation_percent < 100 or not 0 <= test_percent < 100 or validation_percent + test_percent >= 100:
        raise DatasetError("validation and test percentages must be between 0 and 100 and leave images to train on")
    folders: dict[str, list[tuple[Source, Path]]] = {}
    skipped: list[Skipped] = []
    for source in sources:
        pairs, left_out = _source_classes(source)
        skipped += left_out
        for name, folder in pairs:
            folders.setdefault(name, []).append((source, folder))
    if len(folders) < 2:
        refused = next((s for s in skipped if s.reason.startswith(NOT_A_CLASS)), None)
        where = str(sources[0].root()) if len(sources) == 1 else "the chosen folders"
        raise DatasetError(
            f"{where} {'has' if len(sources) == 1 else 'have'} {len(folders)} class "
            f"folder{'s' if len(folders) != 1 else ''}; "
            "put the images in at least 2 sub-folders, one per class"
            + (f" (folder '{printable(refused.path.name)}' {refused.reason})" if refused else "")
        )
    classes = sorted(folders)
    files, seen = [], set()
    for label, name in enumerate(classes):
        for source, folder in folders[name]:
            found_here = []
            for found in walk(folder):
                if found.path == folder / EXCLUDED_FILE.parts[0]:
                    continue  # a one-class source's own notes (its exclusions), not images
                if found.reason:
                    skipped.append(Skipped(found.path, found.reason))
                elif (key := _file_identity(found.path)) not in seen:  # the same file through two sources: once
                    seen.add(key)
                    found_here.append((label, found.path))
            kept, excluded = without_excluded(source.root(), found_here)
            files += kept
            skipped += excluded
    items = []
    with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 2) + 2)) as pool:
        checks = pool.map(lambda lp: check_file(lp[1], target, known_valid, decoded), files)
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
            raise DatasetError(
                f"class '{name}' has {per_class[label]} usable image"
                f"{'s' if per_class[label] != 1 else ''}; each class needs at least 2"
            )
    items = _ensure_training_examples(items, classes, validation_percent, test_percent)
    data = Dataset(sources[0].root(), classes, items, skipped, sources=sources)
    data.warnings = [
        f"folder '{printable(s.path.name)}' was left out: {s.reason}"
        for s in skipped
        if s.reason.startswith(NOT_A_CLASS)
    ] + _warnings(data, per_class)
    return data


def _ensure_training_examples(items, classes, validation_percent, test_percent):
    """A class whose few images all hashed into held-out splits lends one back to train."""
    out = list(items)
    for label in range(len(classes)):
        own = [i for i, item in enumerate(out) if item.label == label]
        if own and not any(out[i].split == "train" for i in own):
            i = min(own, key=lambda n: (out[n].path.name, str(out[n].path)))  # not the sources' order
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


def class_names(root) -> list[str]:
    """Returns the class names a scan of ``root`` (a folder or a list of sources) would use, reading no image."""
    return source_class_names(root)


def loose_images(root: str | Path) -> list[Path]:
    """Returns the image files directly in IMAGE_DIR, sorted: only class folders are scanned, so these go unused.

    Hidden files are not listed; a folder that cannot be read gives ``[]``.
    """
    try:
        return sorted(
            p
            for p in Path(root).expanduser().iterdir()
            if p.suffix.lower() in IMAGE_EXTENSIONS and not is_hidden(p.name) and p.is_file()
        )
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
                    if is_hidden(entry.name):
                        continue
                    if Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS:
                        return True
                    if depth == 0 and entry.is_dir(follow_symlinks=False):
                        pending.append((Path(entry.path), 1))
        except OSError:
            continue
    return False


def check_root(root: str | Path) -> None:
    """Refuse at once, without walking the tree, a folder that cannot be a data set.

    ``/``, a folder of loose photos or a folder of empty folders: a scan of such a folder could run for
    minutes to say no.  At most ``_QUICK_LOOK`` entries per class folder are read.

    Raises:
        DatasetError: Not a folder, the whole disk, or fewer than 2 class folders with images near the top.
    """
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
    raise DatasetError(
        found
        + (f" (and {loose} loose image{'s' if loose != 1 else ''})" if loose else "")
        + "; put the images in at least 2 sub-folders, one per class"
    )


def excluded_files(root: str | Path) -> set[Path]:
    """Returns the files the user excluded from training (IMAGE_DIR/.retrain-studio/excluded.txt), absolute.

    A line that does not name a path inside IMAGE_DIR (``..``, an absolute path, a NUL byte) is ignored,
    and a missing or unreadable list means no exclusions.
    """
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
    """Record exactly ``paths`` as IMAGE_DIR's exclusions, replacing the list atomically.

    Args:
        root: IMAGE_DIR.
        paths: Files inside ``root`` to leave out of training (an empty set clears the list).

    Raises:
        DatasetError: A name holds a line break (the list is one path per line).
        ValueError: A path is not inside ``root``.
        OSError: The list cannot be written.
    """
    from .atomic import write_bytes

    root = Path(root).expanduser().resolve()
    lines = sorted(str(Path(p).resolve().relative_to(root)) for p in paths)
    odd = next((line for line in lines if "\n" in line or "\r" in line), None)
    if odd is not None:
        raise DatasetError(f"{odd!r} has a line break in its name; rename it to exclude it")
    write_bytes(root / EXCLUDED_FILE, "".join(line + "\n" for line in lines).encode("utf-8"))


def without_excluded(root: Path, files: list[tuple[int, Path]]) -> tuple[list[tuple[int, Path]], list[Skipped]]:
    """Drop IMAGE_DIR's exclusions from ``files`` (``(label, path)`` pairs).

    Returns:
        (the pairs kept, a Skipped "excluded by you" for each pair dropped).
    """
    excluded = excluded_files(root)
    if not excluded:
        return files, []
    kept = [(label, path) for label, path in files if path.resolve() not in excluded]
    return kept, [Skipped(path, "excluded by you") for _, path in files if path.resolve() in excluded]
