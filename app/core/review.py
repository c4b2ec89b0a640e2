"""Know your data: likely wrong labels, duplicates (and leaks between splits) and outliers, from cached embeddings.

Example::

    report = review_folder("photos/", on_event=print)      # scan + embed (cached) + find_problems
    report["label_issues"][0]                               # {"path", "given", "suggested", "score"}

Everything here works on the vectors the training run already caches, so with a warm cache no
backbone runs and no TensorFlow is imported.  The checks are plain numpy:

* wrong labels: out-of-sample class probabilities from k-fold cross-validation of a softmax head
  (ridge regression to one-hot targets in closed form, turned into probabilities by a softmax whose
  temperature is fitted on the held-out folds), cut confident-learning style by self-confidence: an
  image is suspicious when its given label gets far less probability than that class's images usually
  get, and another class is the most probable (the suggestion);
* duplicates: the same content digest, or both a near-identical picture (correlation of 32x32 grey
  thumbnails >= ``SAME_PIXELS``) and the same content (cosine similarity of the centred embeddings >=
  ``SAME_CONTENT``); grouped; a group is a *leak* when its members fall in different splits.  Embeddings
  alone cannot tell a re-encoded, resized copy (similarity down to 0.73 on Fashion-MNIST) from two
  distinct look-alike photos (up to 0.91); the thumbnails can (copies >= 0.991, distinct <= 0.990), and
  the embeddings keep flat look-alikes (two blank sheets) apart.  Thumbnails are cached like embeddings;
* outliers: mean cosine distance (raw embeddings: centring would make every image look far) to the
  ``OUTLIER_NEIGHBOURS`` nearest images, relative to the median such distance in the data set.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from . import events

FOLDS = 5
SAME_PIXELS = 0.99  # correlation of 32x32 grey thumbnails; see docs/benchmarks.md (issue 12)
SAME_CONTENT = 0.7  # cosine similarity of centred embeddings
THUMB_SIZE = 32
SELF_CONFIDENCE = 0.2  # a label is suspicious below this share of its class's usual probability
OUTLIER_NEIGHBOURS = 5
OUTLIER_RATIO = 3.0  # k-NN distance this many times the median (Fashion-MNIST: clean <= 2.5, a photo 3.6)
MAX_OUTLIERS = 50
_DIMS = 256  # principal components kept for the head (enough for every class structure we saw; fast)
_RIDGE = 100.0  # on unit-variance components; chosen on Fashion-MNIST (5 and 10 classes)
_BLOCK = 1024  # rows per block of similarities, at most
_BLOCK_ELEMENTS = 2**25  # similarities per block (128 MB of float32), so 60,000 images take ~560 rows at a time
_PAIR_CHUNK = 16384  # candidate pairs whose thumbnails are compared at once (2 x 64 MB of float32)


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    """A float32 copy with rows of length one (non-finite entries zeroed; a zero row stays zero).

    Cosine similarity becomes a dot product.  float32 and in-place steps keep 60,000 x 1,280 at one 300 MB
    copy; each row is scaled by its largest entry first, so huge or tiny values neither overflow nor vanish
    when squared.
    """
    x = np.array(vectors, np.float32)
    np.nan_to_num(x, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    if not x.size:
        return x
    largest = np.maximum(x.max(axis=1), -x.min(axis=1))
    x /= np.where(largest > 0, largest, 1.0)[:, None]
    x /= np.maximum(np.sqrt(np.einsum("ij,ij->i", x, x)), 1e-12)[:, None]
    return x


def _centred_unit_rows(vectors: np.ndarray) -> np.ndarray:
    """``_unit_rows``, centred and made unit-length again: the centred cosine similarity is a dot product."""
    x = _unit_rows(vectors)
    x -= x.mean(axis=0)
    x /= np.maximum(np.sqrt(np.einsum("ij,ij->i", x, x)), 1e-12)[:, None]
    return x


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def out_of_sample_probabilities(
    x: np.ndarray, labels: np.ndarray, k: int, folds: int = FOLDS, seed: int = 0
) -> np.ndarray:
    """Returns [N, k] class probabilities of every row from a head that never saw it (k-fold cross-validation).

    The head is ridge regression to one-hot targets on the top principal components (closed form: one
    small solve per fold), with a softmax temperature fitted on the out-of-fold scores; a class's images
    are spread over the folds so every fold's head knows every class.

    Args:
        x: [N, D] prepared embeddings (centred, unit rows).
        labels: [N] class numbers, each of the k classes present.
        k: Number of classes.
        folds: Cross-validation folds (at most the smallest class's size, or some folds lack a class).
        seed: Chooses the fold assignment.
    """
    n = len(labels)
    z = _components(np.asarray(x, np.float32), _DIMS).astype(np.float64)
    z = np.hstack([z / max(float(z.std()), 1e-12), np.ones((n, 1))])
    targets = np.eye(k)[labels]
    fold_of = np.empty(n, np.int64)
    rng = np.random.default_rng(seed)
    for c in range(k):
        members = np.flatnonzero(labels == c)
        fold_of[rng.permutation(members)] = np.arange(len(members)) % folds
    gram, cross = z.T @ z, z.T @ targets
    scores = np.zeros((n, k))
    for f in range(folds):
        held = fold_of == f
        if not held.any():
            continue
        zh = z[held]
        weights = np.linalg.solve(gram - zh.T @ zh + _RIDGE * np.eye(z.shape[1]), cross - zh.T @ targets[held])
        scores[held] = zh @ weights
    return _softmax(scores * _temperature(scores, labels))


def _components(x: np.ndarray, dims: int) -> np.ndarray:
    """The rows, centred, projected on their top ``dims`` principal components [N, min(dims, N, D)].

    From the eigenvectors of the D x D covariance, accumulated in float64 a block of rows at a time (the
    rows are never copied whole), or of the smaller N x N Gram matrix when N <= D.
    """
    n, d = x.shape
    mean = x.mean(axis=0, dtype=np.float64)
    if n <= d:
        centred = x.astype(np.float64) - mean
        w, u = np.linalg.eigh(centred @ centred.T)
        top = np.argsort(w)[::-1][:dims]
        return u[:, top] * np.sqrt(np.maximum(w[top], 0.0))
    covariance = np.zeros((d, d))
    for start in range(0, n, 8192):
        rows = x[start : start + 8192].astype(np.float64) - mean
        covariance += rows.T @ rows
    w, v = np.linalg.eigh(covariance)
    axes = v[:, np.argsort(w)[::-1][:dims]]
    return x @ axes.astype(x.dtype) - (mean @ axes).astype(x.dtype)


def _temperature(scores: np.ndarray, labels: np.ndarray) -> float:
    """The softmax scale that makes the out-of-fold scores the best probabilities (least log loss)."""

    def loss(t: float) -> float:
        p = _softmax(scores * t)
        return float(-np.log(np.maximum(p[np.arange(len(labels)), labels], 1e-12)).mean())

    low, high = 0.1, 100.0  # golden-section search on log t
    a, b = np.log(low), np.log(high)
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(40):
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        if loss(np.exp(c)) < loss(np.exp(d)):
            b = d
        else:
            a = c
    return float(np.exp((a + b) / 2))


def label_issues(probabilities: np.ndarray, labels: np.ndarray) -> list[tuple[int, int, float]]:
    """Returns (row, suggested class, score) for likely wrong labels, most suspicious first.

    Confident learning's self-confidence: class c's threshold t_c is the mean probability of c over the
    images labelled c; a row is reported when the probability of its given label is below
    ``SELF_CONFIDENCE`` x t_given and another class is the most probable (the suggestion).  Ranked by the
    margin p(suggested) - p(given).  On Fashion-MNIST with 5 % planted errors this cut gave recall 0.93-1.0
    at precision 0.74-0.94 on 5 separable classes and 0.45-0.48 on all 10 (see docs/benchmarks.md).

    Args:
        probabilities: [N, K] out-of-sample probabilities (``out_of_sample_probabilities``).
        labels: [N] given class numbers.

    >>> label_issues(np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.95, 0.05]]), np.array([0, 0, 1, 1]))
    [(3, 0, 0.9)]
    """
    n, k = probabilities.shape
    rows = np.arange(n)
    thresholds = np.array([probabilities[labels == c, c].mean() if (labels == c).any() else 1.0 for c in range(k)])
    given = probabilities[rows, labels]
    others = probabilities.copy()
    others[rows, labels] = -1.0
    suggested = others.argmax(axis=1)
    margin = others[rows, suggested] - given
    found = np.flatnonzero((given < SELF_CONFIDENCE * thresholds[labels]) & (margin > 0))
    found = found[np.argsort(-margin[found], kind="stable")]
    return [(int(i), int(suggested[i]), round(float(margin[i]), 4)) for i in found]


def _neighbours(raw: np.ndarray, thumbs: np.ndarray | None, k: int) -> tuple[np.ndarray, list]:
    """Raw cosine similarities of each row's ``k`` nearest other rows [N, k], and every near-duplicate pair
    (i < j, centred similarity); ``raw`` unit rows (``_unit_rows``), ``thumbs`` as ``thumbnail_vectors``.

    One matrix product per block of rows: the centred similarity of rows i and j is
    (r_i.r_j - r_i.m - r_j.m + m.m) / (|r_i - m| |r_j - m|) with m the mean row, so it comes from the raw
    product at the cost of a few vectors.  Blocks hold at most ``_BLOCK_ELEMENTS`` similarities and
    candidate pairs are checked ``_PAIR_CHUNK`` at a time, so memory stays flat at any number of images.
    """
    n = len(raw)
    k = min(k, n - 1)
    nearest = np.zeros((n, max(k, 0)), np.float32)
    pairs = []
    mean = raw.mean(axis=0)
    to_mean = raw @ mean
    mean_square = float(mean @ mean)
    spread = np.sqrt(np.maximum(np.einsum("ij,ij->i", raw, raw) - 2 * to_mean + mean_square, 0.0))
    inverse = (1.0 / np.maximum(spread, 1e-12)).astype(np.float32)
    block = max(1, min(_BLOCK, _BLOCK_ELEMENTS // max(n, 1)))
    for start in range(0, n, block):
        stop = min(start + block, n)
        rows = np.arange(stop - start)
        near = raw[start:stop] @ raw.T
        near[rows, start + rows] = -np.inf  # not one's own neighbour (nor one's own duplicate)
        if k:
            nearest[start:stop] = np.partition(near, n - k, axis=1)[:, n - k :]
        if thumbs is None:
            continue
        near -= to_mean[start:stop, None]  # in place: the raw products become centred similarities
        near -= to_mean[None, :]
        near += mean_square
        near *= inverse[start:stop, None]
        near *= inverse[None, :]
        i, j = np.nonzero(near >= SAME_CONTENT)
        later = start + i < j
        i, j = i[later], j[later]
        for c in range(0, len(i), _PAIR_CHUNK):
            a, b = i[c : c + _PAIR_CHUNK], j[c : c + _PAIR_CHUNK]
            same = np.einsum("ij,ij->i", thumbs[start + a], thumbs[b]) >= SAME_PIXELS
            pairs += [(int(start + p), int(q), float(near[p, q])) for p, q in zip(a[same], b[same])]
    return nearest.astype(np.float64), pairs


def _groups(n: int, pairs: list[tuple[int, int, float]]) -> list[tuple[list[int], float]]:
    """Connected groups of rows (union-find over the pairs), each with its lowest linking similarity."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in pairs:
        parent[root(i)] = root(j)
    members: dict[int, list[int]] = {}
    lowest: dict[int, float] = {}
    for i, _, s in pairs:
        lowest[root(i)] = min(lowest.get(root(i), 1.0), s)
    for i in sorted({i for pair in pairs for i in pair[:2]}):
        members.setdefault(root(i), []).append(i)
    return [(rows, lowest[r]) for r, rows in members.items()]


def thumbnail_vectors(
    paths: Sequence[Path],
    digests: Sequence[str],
    cache_dir: str | Path | None = None,
    on_event: events.EventSink = events.ignore,
    on_error=None,
) -> np.ndarray:
    """Returns centred, unit-length 32x32 grey thumbnails [N, 1024] (float32), cached by content like the embeddings.

    They tell a re-encoded copy from a look-alike where embeddings cannot (see the module docstring).
    Arguments are as for ``features.embed``; failed images are left out, reported to ``on_error``.
    """
    from . import backbones, features

    cache = features.EmbeddingCache(backbones.cache_root(cache_dir), "grey-thumbnail-v1", THUMB_SIZE, on_event=on_event)
    grey = features.embed(
        paths,
        digests,
        lambda batch: np.asarray(batch).mean(axis=-1).reshape(len(batch), -1),
        cache,
        THUMB_SIZE,
        batch_size=256,
        on_event=on_event,
        stage="thumbnails",
        on_error=on_error,
    ).astype(np.float32)
    grey -= grey.mean(axis=1, keepdims=True)
    return grey / np.maximum(np.linalg.norm(grey, axis=1, keepdims=True), 1e-9)


def find_problems(
    vectors: np.ndarray,
    labels: Sequence[int],
    splits: Sequence[str],
    digests: Sequence[str],
    paths: Sequence,
    classes: Sequence[str],
    thumbs: np.ndarray | None = None,
    *,
    folds: int = FOLDS,
    seed: int = 0,
    seconds: dict | None = None,
) -> dict:
    """Find likely wrong labels, duplicate groups (and leaks) and outliers; plain numpy, no TensorFlow.

    Args:
        vectors: [N, D] backbone embeddings.
        labels: [N] class numbers.
        splits: [N] split names ("train", "validation", "test").
        digests: [N] content digests (equal digests are exact duplicates whatever the vectors).
        paths: [N] image paths, reported back as strings.
        classes: The class names.
        thumbs: [N, 1024] ``thumbnail_vectors``; without them only exact duplicates (same digest) are found.
        folds: Cross-validation folds for the label check.
        seed: Fold assignment seed.
        seconds: Timings so far, extended with this step's.

    Returns:
        The ``review`` event (``events.review``): label issues, duplicate groups (leaks first) and outliers.

    numpy's BLAS runs on one thread here: on two cores shared with TensorFlow's import (the training run
    loads it meanwhile) or other processes, OpenBLAS's threads spin-waited for each other and one ``eigh``
    of the 1,280 x 1,280 covariance took 3-5 s instead of 0.4 s; even the large products ran faster on one
    thread there (see docs/benchmarks.md, issue 11).
    """
    with threadpool_limits(limits=1, user_api="blas"):
        return _find_problems(vectors, labels, splits, digests, paths, classes, thumbs, folds, seed, seconds)


def _find_problems(vectors, labels, splits, digests, paths, classes, thumbs, folds, seed, seconds) -> dict:
    """``find_problems`` with numpy's BLAS on one thread (see there)."""
    seconds = dict(seconds or {})
    labels = np.asarray(labels, np.int64)
    n, k = len(labels), len(classes)
    issues, groups, outliers = [], [], []
    t = time.perf_counter()
    if n >= 2:
        x = _centred_unit_rows(vectors)
        if k >= 2 and np.bincount(labels, minlength=k).min() >= 2:
            probabilities = out_of_sample_probabilities(x, labels, k, min(folds, int(np.bincount(labels).min())), seed)
            issues = [
                {"path": str(paths[i]), "given": classes[labels[i]], "suggested": classes[s], "score": score}
                for i, s, score in label_issues(probabilities, labels)
            ]
        seconds["labels"] = round(time.perf_counter() - t, 3)

        t = time.perf_counter()
        del x  # one [N, D] copy at a time: 60,000 images stay within memory
        raw = _unit_rows(vectors)
        nearest, pairs = _neighbours(
            raw, None if thumbs is None else np.asarray(thumbs, np.float32), OUTLIER_NEIGHBOURS
        )
        by_digest: dict[str, list[int]] = {}
        for i, digest in enumerate(digests):
            by_digest.setdefault(digest, []).append(i)
        pairs += [(rows[0], j, 1.0) for rows in by_digest.values() for j in rows[1:]]  # exact, whatever the vectors
        for rows, similarity in _groups(n, pairs):
            exact = len({digests[i] for i in rows}) == 1
            members = sorted(rows, key=lambda i: str(paths[i]))
            group_splits = [splits[i] for i in members]
            groups.append(
                {
                    "paths": [str(paths[i]) for i in members],
                    "similarity": 1.0 if exact else round(min(similarity, 1.0), 4),
                    "splits": group_splits,
                    "leak": len(set(group_splits)) > 1,
                    "classes": [classes[labels[i]] for i in members],
                    "exact": exact,
                }
            )
        # leaks first, then groups spanning classes (a label is wrong somewhere), then by similarity
        groups.sort(key=lambda g: (not g["leak"], len(set(g["classes"])) == 1, -g["similarity"], g["paths"]))

        if nearest.shape[1]:
            distance = 1.0 - nearest.mean(axis=1)
            score = distance / max(float(np.median(distance)), 1e-9)
            order = [i for i in np.argsort(-score, kind="stable") if score[i] >= OUTLIER_RATIO][:MAX_OUTLIERS]
            outliers = [
                {"path": str(paths[i]), "score": round(float(score[i]), 3), "label": classes[labels[i]]} for i in order
            ]
        seconds["duplicates_and_outliers"] = round(time.perf_counter() - t, 3)
    return events.review(issues, groups, outliers, seconds)


class _LazyExtractor:
    """The backbone, started on its first call: with a warm cache it is never called, so no engine loads."""

    def __init__(self, info, cache_dir, on_event):
        self.info, self.cache_dir, self.on_event, self.model = info, cache_dir, on_event, None

    def __call__(self, batch):
        if self.model is None:
            from . import backbones

            self.on_event(events.stage("backbone", f"Loading backbone {self.info.id}"))
            self.model = backbones.FeatureExtractor(self.info, self.cache_dir, self.on_event)  # LiteRT, else TF
        return self.model(batch)


def review_folder(
    image_dir,
    backbone: str | None = None,
    cache_dir: str | Path | None = None,
    *,
    validation_percent: float = 10,
    test_percent: float = 10,
    trust_backbone: bool = False,
    on_event: events.EventSink = events.ignore,
) -> dict:
    """Scan, embed what the cache lacks, and review the merged set: the wizard's "Find problems" and ``review``.

    With a warm cache the backbone is never loaded (nor TensorFlow imported).  An image changed since the
    scan is left out with a ``warning``.

    Args:
        image_dir: IMAGE_DIR or a list of sources (each one's exclusions honoured).
        backbone: As for ``backbones.resolve``.
        cache_dir: As for ``backbones.cache_root``.
        validation_percent: As for ``dataset.scan`` (the splits tell leaks apart).
        test_percent: As for ``dataset.scan``.
        trust_backbone: Skip a local backbone's safety check.
        on_event: Receives stage, progress, warning and finally the ``review`` event.

    Returns:
        The ``review`` event, with "images" and total seconds added.

    Raises:
        DatasetError: The folder cannot be scanned (see ``dataset.scan``).
        BackboneError: The backbone cannot be resolved or loaded.
    """
    from app.imaging import DecodedImages

    from . import backbones, features
    from .dataset import as_sources, scan

    start = time.perf_counter()
    info = backbones.resolve(backbone, trust=trust_backbone)
    size = info.image_size
    on_event(events.stage("scan", f"Scanning {', '.join(s.path for s in as_sources(image_dir))}"))
    cache = features.EmbeddingCache(
        backbones.cache_root(cache_dir), backbones.fingerprint(info), size, on_event=on_event
    )
    decoded = DecodedImages()  # the scan's pixels, for the embed stage: each image decoded once
    data = scan(
        image_dir,
        validation_percent=validation_percent,
        test_percent=test_percent,
        target=(size, size),
        on_event=on_event,
        known_valid=cache,
        decoded=decoded,
    )
    seconds = {"scan": round(time.perf_counter() - start, 3)}
    for note in data.warnings:
        on_event(events.warning(note))

    t = time.perf_counter()
    on_event(events.stage("embed", "Computing image features"))
    failed: dict[int, str] = {}
    items = data.items
    vectors = features.embed(
        [i.path for i in items],
        [i.digest for i in items],
        _LazyExtractor(info, cache_dir, on_event),
        cache,
        size,
        on_event=on_event,
        on_error=failed.setdefault,
        decoded=decoded,
    )
    del decoded
    if failed:  # changed since the scan: left out of the review, each named
        for i, reason in failed.items():
            on_event(events.warning(f"{items[i].path} was left out: it changed after the scan ({reason})"))
        items = [item for i, item in enumerate(items) if i not in failed]
    thumbs = thumbnail_vectors(
        [i.path for i in items], [i.digest for i in items], cache_dir, on_event, on_error=failed.setdefault
    )
    if len(thumbs) != len(items):  # changed between the two reads: review without near-duplicates
        thumbs = None
    seconds["features"] = round(time.perf_counter() - t, 3)

    on_event(events.stage("review", "Looking for wrong labels, duplicates and outliers"))
    event = find_problems(
        vectors,
        [i.label for i in items],
        [i.split for i in items],
        [i.digest for i in items],
        [i.path for i in items],
        data.classes,
        thumbs,
        seconds=seconds,
    )
    event["seconds"]["total"] = round(time.perf_counter() - start, 3)
    event["images"] = len(items)
    on_event(event)
    return event


def held_out_leaks(event: dict) -> set[str]:
    """Returns the paths to leave out of evaluation, given a ``review`` event.

    In each leaking group, every member in a later split than the group's earliest (train < validation <
    test): a near-copy of a training image would only measure memory.

    >>> group = {"leak": True, "paths": ["a.jpg", "b.jpg", "c.jpg"], "splits": ["test", "train", "validation"]}
    >>> sorted(held_out_leaks({"duplicates": [group]}))
    ['a.jpg', 'c.jpg']
    """
    order = {"train": 0, "validation": 1, "test": 2}
    out = set()
    for group in event["duplicates"]:
        if group["leak"]:
            first = min(order[s] for s in group["splits"])
            out |= {p for p, s in zip(group["paths"], group["splits"]) if order[s] > first}
    return out


def summary(event: dict, left_out: int | None) -> dict:
    """Returns the few numbers metadata.json keeps about a ``review`` event (the full lists stay in the event).

    Args:
        event: The ``review`` event.
        left_out: Test images left out of evaluation as leaks (None when not counted).
    """
    return {
        "label_issues": len(event["label_issues"]),
        "duplicate_groups": len(event["duplicates"]),
        "leaks": sum(g["leak"] for g in event["duplicates"]),
        "outliers": len(event["outliers"]),
        "left_out_of_evaluation": left_out,
        "top_label_issues": [{k: row[k] for k in ("path", "given", "suggested")} for row in event["label_issues"][:10]],
    }


# --- acting on a finding: only ever on the user's click (the GUI's review step) ------------------------------------


def move_to_class(root: str | Path, path: str | Path, class_name: str) -> Path:
    """Move one image of IMAGE_DIR into IMAGE_DIR/<class_name>/ under a free name (only on the user's click).

    Never overwrites: a taken name becomes ``name (2).ext``, ``name (3).ext`` …

    Returns:
        Where the file went.

    Raises:
        DatasetError: The file is not inside IMAGE_DIR or the class is not one of its class folders.
        OSError: The move failed, or no free name was found.
    """
    from .dataset import DatasetError, class_names

    root = Path(root).expanduser().resolve()
    source = Path(path)
    if not source.resolve().is_relative_to(root) or not source.is_file():
        raise DatasetError(f"{source} is not an image inside {root}")
    if class_name not in class_names(root):
        raise DatasetError(f"'{class_name}' is not a class folder of {root}")
    return _move_free(source, root / class_name, source.name)


def move_back(moved: str | Path, original: str | Path) -> Path:
    """Undo ``move_to_class``: the file goes back to its folder, under its old name if still free.

    Returns:
        Where the file went.

    Raises:
        OSError: The move failed, or no free name was found.
    """
    original = Path(original)
    return _move_free(Path(moved), original.parent, original.name)


def _move_free(source: Path, folder: Path, name: str) -> Path:
    """Move ``source`` into ``folder`` as ``name`` or ``name (n)``, never replacing a file (link, then unlink)."""
    stem, suffix = Path(name).stem, Path(name).suffix
    for n in range(1, 1000):
        target = folder / (name if n == 1 else f"{stem} ({n}){suffix}")
        try:
            os.link(source, target)  # fails when the name is taken: nothing is ever overwritten
        except FileExistsError:
            continue
        except OSError:  # no hard links here (FAT, another device): rename, but only onto a free name
            if target.exists() or target.is_symlink():
                continue
            os.rename(source, target)
            return target
        source.unlink()
        return target
    raise OSError(f"no free name for {name} in {folder}")
