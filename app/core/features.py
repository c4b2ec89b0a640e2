"""Embed images once: the bottleneck cache and the batched feature extraction.

Vectors are keyed by (backbone fingerprint, image size) -> folder, and by the file's
content hash (plus an augmentation variant) -> row.  Each batch of new vectors is written
as its own small shard, atomically, so a run killed half-way keeps what it finished and
a second run on the same data never calls the backbone.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from app.imaging import ImageError, load_image, read_image_file

from . import events
from .atomic import write_bytes

AUGMENT_VERSION = 1  # bump when augmentation maths change, so old variants are not reused
DECODE_WORKERS = 2  # TF already uses every core; more threads only contend


class EmbeddingCache:
    """Append-only store of float32 vectors under ``root/embeddings/<backbone>-<H>x<W>/``.

    Opening it reads every shard; a damaged shard, or one whose vectors have another width than most
    (a foreign backbone's), is deleted with a ``warning`` event and its images are embedded again.  A cache
    that cannot be written only costs speed: one warning, and the run goes on.

    Args:
        root: The cache root (``backbones.cache_root``).
        backbone_key: ``backbones.fingerprint`` of the backbone (or another producer's name, e.g. thumbnails).
        image_size: Input size the vectors were computed at.
        on_event: Receives ``warning`` events about the cache.
    """

    def __init__(
        self, root: str | Path, backbone_key: str, image_size: int, on_event: events.EventSink = events.ignore
    ):
        self.folder = Path(root) / "embeddings" / f"{backbone_key}-{image_size}x{image_size}"
        self.vectors: dict[str, np.ndarray] = {}
        self._pending: dict[str, np.ndarray] = {}
        self._on_event = on_event
        self._unwritable = False  # warned once; later batches are not written either
        shards = {}
        for shard in sorted(self.folder.glob("*.npz")):
            if shard.is_symlink() or not shard.is_file():  # a folder or FIFO is not ours to read or delete
                on_event(events.warning(f"ignored {shard.name} in the feature cache: not a regular file"))
                continue
            try:
                shards[shard] = _read_shard(shard)
            except Exception as exc:  # noqa: BLE001 -- whatever numpy or zipfile raise, the shard is bad
                self._drop(shard, f"{type(exc).__name__}: {exc}".splitlines()[0][:200], on_event)
        widths = [vectors.shape[1] for _, vectors in shards.values()]
        width = max(set(widths), key=widths.count, default=None)  # the backbone's; odd shards are foreign
        for shard, (keys, vectors) in shards.items():
            if vectors.shape[1] != width:
                self._drop(shard, f"vectors of width {vectors.shape[1]}, not {width}", on_event)
            else:
                self.vectors.update(zip(keys, vectors))

    @staticmethod
    def _drop(shard: Path, reason: str, on_event: events.EventSink) -> None:
        """Delete a shard that cannot be used (its vectors are recomputed) and say so."""
        try:
            shard.unlink(missing_ok=True)
            done = "deleted"
        except OSError as exc:  # a read-only cache: still train, just without that file
            done = f"could not delete ({exc.strerror or exc}) and ignored"
        on_event(
            events.warning(
                f"{done} the unreadable feature cache file {shard.name} ({reason}); its images will be embedded again"
            )
        )

    def __contains__(self, key: str) -> bool:
        return key in self.vectors

    def __getitem__(self, key: str) -> np.ndarray:
        return self.vectors[key]

    def add(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Remember ``vectors`` [N, D] under ``keys`` (``cache_key``); written to disk by the next ``flush``."""
        for key, vector in zip(keys, vectors):
            self.vectors[key] = vector
            self._pending[key] = vector

    def flush(self) -> None:
        """Write the vectors added since the last flush as one new shard, atomically (a no-op when none)."""
        if not self._pending:
            return
        buffer = io.BytesIO()
        np.savez(buffer, keys=np.array(list(self._pending)), vectors=np.stack(list(self._pending.values())))
        try:
            if not self._unwritable:
                write_bytes(self.folder / f"{uuid.uuid4().hex}.npz", buffer.getvalue())
        except OSError as exc:  # a read-only or full cache only costs speed next time: the run goes on
            self._unwritable = True
            self._on_event(
                events.warning(
                    f"could not save image features in the cache {self.folder} "
                    f"({exc.strerror or exc}); they will be computed again next time"
                )
            )
        self._pending.clear()


def _read_shard(path: Path) -> tuple[list[str], np.ndarray]:
    """(keys, vectors [N, D] float32) of one shard, or an exception if it is anything else."""
    with np.load(path, allow_pickle=False) as data:
        keys, vectors = data["keys"], data["vectors"]
    if (
        keys.ndim != 1
        or keys.dtype.kind != "U"
        or vectors.ndim != 2
        or len(keys) != len(vectors)
        or vectors.dtype != np.float32
        or not np.isfinite(vectors).all()
    ):
        raise ValueError(f"keys {keys.dtype}{keys.shape} and vectors {vectors.dtype}{vectors.shape} do not match")
    return keys.tolist(), vectors


def augment(image: np.ndarray, seed: int) -> np.ndarray:
    """Returns a random but reproducible variant of ``image``: mirror, crop-and-zoom up to 20%, brightness/contrast.

    Reproducible so that its embedding can be cached (``cache_key``) and reused by the next run.

    Args:
        image: float32 [H, W, 3] in [0, 1].
        seed: Chooses the variant; the same seed gives the same pixels.

    Returns:
        float32 [H, W, 3] in [0, 1], the same size.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = image[:, ::-1] if rng.random() < 0.5 else image
    height, width, _ = out.shape
    zoom = rng.uniform(0.8, 1.0)
    ch, cw = int(height * zoom), int(width * zoom)
    top, left = rng.integers(0, height - ch + 1), rng.integers(0, width - cw + 1)
    crop = out[top : top + ch, left : left + cw]
    resized = np.stack(
        [
            np.asarray(
                Image.fromarray(np.ascontiguousarray(crop[..., c]), mode="F").resize(
                    (width, height), Image.Resampling.BILINEAR
                )
            )
            for c in range(3)
        ],
        -1,
    )
    contrast, brightness = rng.uniform(0.8, 1.2), rng.uniform(-0.1, 0.1)
    return np.clip((resized - 0.5) * contrast + 0.5 + brightness, 0.0, 1.0).astype(np.float32)


def cache_key(digest: str, variant: int) -> str:
    """Returns the cache key of an image's variant: its content digest, plus the augmentation for variant > 0.

    >>> cache_key("3fa9", 0), cache_key("3fa9", 2)
    ('3fa9', '3fa9:aug1.2')
    """
    return digest if variant == 0 else f"{digest}:aug{AUGMENT_VERSION}.{variant}"


def embed(
    paths: Sequence[Path],
    digests: Sequence[str],
    extractor: Callable,
    cache: EmbeddingCache,
    image_size: int,
    *,
    variants: int = 0,
    batch_size: int = 32,
    on_event: events.EventSink = events.ignore,
    stage: str = "embed",
    on_error: Callable[[int, str], None] | None = None,
) -> np.ndarray:
    """Vectors for every (image, variant) pair, computing only those the cache lacks.

    Only images missing from the cache are decoded and run through ``extractor``;
    decoding happens on worker threads while the backbone runs on the previous batch.
    An image that can no longer be read or decoded (changed since the scan) is reported to
    ``on_error(index, reason)`` and left out of the result.

    Args:
        paths: The image files.
        digests: Their content digests (``ImageItem.digest``), the cache keys.
        extractor: Maps float32 [B, S, S, 3] in [0, 1] to [B, D] (the backbone).
        cache: Where vectors are looked up and added (flushed after every batch).
        image_size: S, the side images are resized to.
        variants: Augmented variants per image besides the original.
        batch_size: Images per ``extractor`` call.
        on_event: Receives ``progress`` events of ``stage``.
        stage: The stage name in those events.
        on_error: Called with (index into ``paths``, reason) for an image that cannot be read.

    Returns:
        float32 [len(paths) * (1 + variants), D], image-major, without the rows of failed images
        (``[0, 0]`` when nothing is left).

    Raises:
        ImageError: An image cannot be read and ``on_error`` is None.
    """
    target = (image_size, image_size)
    wanted = [(i, v) for i in range(len(paths)) for v in range(variants + 1)]
    if not wanted:  # an empty split (a tiny folder): nothing to stack
        return np.zeros((0, 0), np.float32)
    missing_images = sorted({i for i, v in wanted if cache_key(digests[i], v) not in cache})
    total, done = len(wanted), len(wanted) - sum(1 for i, v in wanted if cache_key(digests[i], v) not in cache)
    on_event(events.progress(stage, done, total))

    failed: set[int] = set()

    def prepare(i: int) -> list[tuple[str, np.ndarray]]:
        try:
            base = load_image(read_image_file(paths[i]), target)
        except ImageError as exc:
            if on_error is None:
                raise
            failed.add(i)
            on_error(i, str(exc))
            return []
        out = []
        for v in range(variants + 1):
            key = cache_key(digests[i], v)
            if key not in cache:
                out.append((key, base if v == 0 else augment(base, int(digests[i][:8], 16) * 64 + v)))
        return out

    chunks = [missing_images[s : s + batch_size] for s in range(0, len(missing_images), batch_size)]
    with ThreadPoolExecutor(max_workers=DECODE_WORKERS) as pool:
        pending = [pool.map(prepare, chunk) for chunk in chunks[:2]]
        for n in range(len(chunks)):
            prepared = [pair for pairs in pending.pop(0) for pair in pairs]
            if n + 2 < len(chunks):
                pending.append(pool.map(prepare, chunks[n + 2]))
            done += sum(
                1
                for i in chunks[n]
                if i in failed
                for v in range(variants + 1)
                if cache_key(digests[i], v) not in cache
            )
            for s in range(0, len(prepared), batch_size):
                part = prepared[s : s + batch_size]
                vectors = np.asarray(extractor(np.stack([img for _, img in part])), dtype=np.float32)
                cache.add([key for key, _ in part], vectors)
                done += len(part)
            cache.flush()
            on_event(events.progress(stage, done, total))
    rows = [cache[cache_key(digests[i], v)] for i, v in wanted if i not in failed]
    return np.stack(rows) if rows else np.zeros((0, 0), np.float32)
