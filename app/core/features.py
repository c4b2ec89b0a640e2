"""Embed images once: the bottleneck cache and the batched feature extraction.

Vectors are keyed by (backbone fingerprint, image size) -> folder, and by the file's
content hash (plus an augmentation variant) -> row.  Each batch of new vectors is written
as its own small shard, atomically, so a run killed half-way keeps what it finished and
a second run on the same data never calls the backbone.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import stat
import struct
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from app.imaging import DecodedImages, ImageError, decode, read_image_file, resize

from . import events
from .atomic import write_bytes

AUGMENT_VERSION = 1  # bump when augmentation maths change, so old variants are not reused
COMPACT_SLACK_ROWS = 4096  # dead rows (superseded, or a killed writer's) tolerated before the store is rewritten
DECODE_WORKERS = 2  # LiteRT already runs on 2 threads; more decoders only contend for the cores


class EmbeddingCache:
    """One append-only, indexed store of float32 vectors per backbone: ``root/embeddings/<backbone>-<H>x<W>/``.

    Two files make a generation ``g`` (named in the file ``CURRENT``): ``vectors-g.f32``, the rows of D
    float32 values one after another, and ``index-g.bin``, a header then one 128-byte entry per row (key,
    row number, CRC-32 of the row, CRC-32 of the entry).  ``flush`` appends both under an exclusive lock;
    opening reads only the index, and ``load`` reads (memory-mapped) only the rows a run asks for, checking
    each row's CRC.  So a cache of 60,000 images costs a run only the vectors it uses.

    Nothing a crash or a damaged disk leaves behind stops a run: a record cut short (``kill -9`` mid-write),
    garbage appended, an entry or row whose CRC does not match -- each is dropped, one ``warning`` says how
    many, the images are embedded again, and the store is compacted (rewritten without the damage as a new
    generation, published by an atomic write of ``CURRENT``).  Old-format shards (``*.npz``, one per batch,
    from earlier versions) are moved into the store when it is opened; a damaged one, or one of another
    width (a foreign backbone's), is deleted with a warning.  A cache that cannot be written only costs
    speed: one warning, and the run goes on.

    Example::

        cache = EmbeddingCache(cache_root(), fingerprint(info), 224)
        have = cache.load(["3fa9...", "77c0..."])      # {key: vector} for the keys stored and intact
        cache.add(["9d01..."], vectors)                # kept in memory ...
        cache.flush()                                  # ... and appended to the store

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
        self.width: int | None = None
        self._index: dict[str, tuple[int, int]] = {}  # key -> (row, CRC-32 of the row's bytes)
        self._fresh: dict[str, np.ndarray] = {}  # added by this process (this run needs them: kept in memory)
        self._pending: list[str] = []
        self._on_event = on_event
        self._unwritable = False  # warned once; later batches are not written either
        self._generation = 0
        self._rows = 0  # complete rows in the vector file when last read
        self._map: np.ndarray | None = None
        self._damage_warned = False
        damaged = 0
        if self.folder.is_dir():
            with self._locked(exclusive=False):
                damaged = self._read_index()
            self._migrate_shards()
        if damaged:
            self._warn_damage(damaged)
        if damaged or self._rows > 2 * len(self._index) + COMPACT_SLACK_ROWS:  # damage, or mostly dead rows
            self.compact()

    # --- reading ------------------------------------------------------------------------------------------

    def _paths(self, generation: int) -> tuple[Path, Path]:
        return self.folder / f"index-{generation}.bin", self.folder / f"vectors-{generation}.f32"

    def _read_generation(self) -> int:
        try:
            text = (self.folder / "CURRENT").read_text(encoding="ascii").strip()
            return int(text) if text.isdigit() and len(text) < 12 else 0
        except (OSError, ValueError):
            return 0

    def _read_index(self) -> int:
        """Load the current generation's index; returns how many records are damaged (0 for a clean store)."""
        self._generation = self._read_generation()
        self._index, self._map, self.width, self._rows = {}, None, None, 0
        index_path, vector_path = self._paths(self._generation)
        try:
            raw = _read_regular(index_path)
        except FileNotFoundError:
            return 0
        except OSError as exc:
            self._on_event(events.warning(f"ignored the feature cache index {index_path.name}: {exc}"[:300]))
            return 0
        width = _header_width(raw[:_ENTRY_BYTES])
        if width is None:  # nothing in it can be trusted: all of it is embedded again
            return max(1, len(raw) // _ENTRY_BYTES)
        self.width = width
        try:
            vector_bytes = vector_path.stat().st_size if vector_path.is_file() else 0
        except OSError:
            vector_bytes = 0
        self._rows = vector_bytes // (4 * width)
        body = raw[_ENTRY_BYTES:]
        complete = len(body) // _ENTRY_BYTES
        damaged = int(len(body) % _ENTRY_BYTES != 0)  # a record cut short
        entries = np.frombuffer(body, _ENTRY, count=complete)
        for n, entry in enumerate(entries):
            key = _entry_key(entry, body[n * _ENTRY_BYTES : (n + 1) * _ENTRY_BYTES])
            if key is None or int(entry["row"]) >= self._rows:
                damaged += 1
                continue
            self._index[key] = (int(entry["row"]), int(entry["vcrc"]))
        return damaged

    def _vectors(self) -> np.ndarray:
        """The vector file, memory-mapped read-only ([rows, D]); mapped again when it has grown."""
        _, vector_path = self._paths(self._generation)
        if self._map is None or len(self._map) < self._rows:
            self._map = np.memmap(vector_path, np.float32, "r", shape=(self._rows, self.width)) if self._rows else None
        return self._map

    def __contains__(self, key: str) -> bool:
        return key in self._fresh or key in self._index

    def __len__(self) -> int:
        return len(self._index.keys() | self._fresh.keys())

    def __getitem__(self, key: str) -> np.ndarray:
        found = self.load([key])
        if key not in found:
            raise KeyError(key)
        return found[key]

    def load(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """Returns {key: vector} for those of ``keys`` that are stored and intact, reading only their rows.

        A row whose CRC does not match is left out (its image is embedded again), with one warning.

        Args:
            keys: Cache keys (``cache_key``); unknown ones are simply absent from the result.

        Returns:
            {key: float32 [D]} for the keys found intact.
        """
        out = {key: self._fresh[key] for key in keys if key in self._fresh}
        wanted = sorted({key for key in keys if key not in out and key in self._index}, key=lambda k: self._index[k])
        if not wanted:
            return out
        rows = np.array([self._index[key][0] for key in wanted], np.int64)
        try:
            vectors = np.array(self._vectors()[rows])
        except (OSError, ValueError, TypeError) as exc:  # the file shrank or vanished under us
            self._warn_damage(len(wanted), f"{type(exc).__name__}: {exc}")
            for key in wanted:
                self._index.pop(key, None)
            return out
        bad = 0
        for key, vector in zip(wanted, vectors):
            if zlib.crc32(vector.tobytes()) == self._index[key][1] and np.isfinite(vector).all():
                out[key] = vector
            else:
                bad += 1
                del self._index[key]
        if bad:
            self._warn_damage(bad)
        return out

    def _warn_damage(self, count: int, detail: str = "") -> None:
        if self._damage_warned:
            return
        self._damage_warned = True
        self._on_event(
            events.warning(
                f"the feature cache {self.folder} had {count} damaged record{'s' if count != 1 else ''} "
                f"(a run stopped mid-write, or the disk changed them{'; ' + detail[:120] if detail else ''}); "
                "their images will be embedded again"
            )
        )

    # --- writing ------------------------------------------------------------------------------------------

    def add(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Remember ``vectors`` under ``keys``; they are appended to the store by the next ``flush``.

        Args:
            keys: Cache keys (``cache_key``), one per row.
            vectors: float32 [N, D].
        """
        for key, vector in zip(keys, np.asarray(vectors, np.float32)):
            self._fresh[key] = vector
            self._pending.append(key)

    def flush(self) -> None:
        """Append the vectors added since the last flush to the store, under its lock (a no-op when none)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        if self._unwritable:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with self._locked(exclusive=True):
                if self._read_generation() != self._generation or self.width is None:
                    self._read_index()  # compacted by another process meanwhile, or a new store
                self._append([(key, self._fresh[key]) for key in pending])
        except OSError as exc:  # a read-only or full cache only costs speed next time: the run goes on
            self._unwritable = True
            self._on_event(
                events.warning(
                    f"could not save image features in the cache {self.folder} "
                    f"({exc.strerror or exc}); they will be computed again next time"
                )
            )

    def _append(self, records: list[tuple[str, np.ndarray]]) -> None:
        """Append ``records`` (caller holds the exclusive lock); rows first, then their index entries."""
        records = [(k, v) for k, v in records if len(k.encode("utf-8")) <= _KEY_BYTES]
        if self.width is None:
            self.width = len(records[0][1]) if records else None
        records = [(k, v) for k, v in records if v.shape == (self.width,)]
        if not records:
            return
        index_path, vector_path = self._paths(self._generation)
        if not index_path.exists():
            write_bytes(index_path, _header(self.width))
            write_bytes(self.folder / "CURRENT", f"{self._generation}\n".encode())
        row_bytes = 4 * self.width
        nofollow = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)  # a planted link is not followed
        vec_fd = os.open(vector_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | nofollow, 0o644)
        with os.fdopen(vec_fd, "ab") as vec, os.fdopen(os.open(index_path, os.O_RDWR | nofollow), "r+b") as idx:
            rows = os.fstat(vec.fileno()).st_size // row_bytes
            vec.truncate(rows * row_bytes)  # a dead writer's partial row
            idx_size = os.fstat(idx.fileno()).st_size
            idx.truncate(idx_size - (idx_size % _ENTRY_BYTES))  # a dead writer's partial entry
            block = np.stack([v for _, v in records]).astype("<f4", copy=False)
            vec.write(block.tobytes())
            vec.flush()
            crcs = [zlib.crc32(row.tobytes()) for row in block]
            idx.seek(0, os.SEEK_END)
            idx.write(b"".join(_entry(key, rows + n, crcs[n]) for n, (key, _) in enumerate(records)))
        for n, (key, _) in enumerate(records):
            self._index[key] = (rows + n, crcs[n])
        self._rows = rows + len(records)

    def compact(self) -> None:
        """Rewrite the store without dead rows or damaged records, as a new generation; old files are removed.

        Readers of the old generation keep their (unlinked) files; writers notice the new ``CURRENT`` under
        the lock.  A failure leaves the old generation in use.
        """
        if self._unwritable or not self.folder.is_dir():
            return
        try:
            with self._locked(exclusive=True):
                self._read_index()
                keys = list(self._index)
                live = self.load(keys)
                old = self._generation
                self._generation = old + 1
                self._index, self._map, self._rows = {}, None, 0
                for path in self._paths(self._generation):
                    path.unlink(missing_ok=True)
                if self.width is None and live:
                    self.width = len(next(iter(live.values())))
                if self.width is not None:
                    write_bytes(self._paths(self._generation)[0], _header(self.width))
                    self._append(list(live.items()))
                write_bytes(self.folder / "CURRENT", f"{self._generation}\n".encode())
                for stale in self.folder.glob("*-*.*"):
                    generation = stale.stem.rpartition("-")[2]
                    if (
                        stale.suffix in (".bin", ".f32")
                        and generation.isdigit()
                        and int(generation) != self._generation
                    ):
                        stale.unlink(missing_ok=True)
        except OSError as exc:
            self._on_event(events.warning(f"could not compact the feature cache {self.folder} ({exc.strerror or exc})"))
            with contextlib.suppress(OSError):
                self._read_index()

    @contextlib.contextmanager
    def _locked(self, exclusive: bool):
        """Holds ``folder/.lock`` across processes (shared to read, exclusive to write); none where none can be made."""
        create = os.O_CREAT if exclusive else 0  # a reader never creates it: no writer, nothing to wait for
        try:
            flags = os.O_RDWR | create | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
            fd = os.open(self.folder / ".lock", flags, 0o644)
        except OSError:
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    # --- old-format shards -----------------------------------------------------------------------------------

    def _migrate_shards(self) -> None:
        """Move old ``*.npz`` shards into the store (then delete them); drop damaged or foreign-width ones."""
        shards = {}
        for shard in sorted(self.folder.glob("*.npz")):
            if shard.is_symlink() or not shard.is_file():  # a folder or FIFO is not ours to read or delete
                self._on_event(events.warning(f"ignored {shard.name} in the feature cache: not a regular file"))
                continue
            try:
                shards[shard] = _read_shard(shard)
            except Exception as exc:  # noqa: BLE001 -- whatever numpy or zipfile raise, the shard is bad
                self._drop(shard, f"{type(exc).__name__}: {exc}".splitlines()[0][:200])
        if not shards:
            return
        widths = [vectors.shape[1] for _, vectors in shards.values()]
        width = self.width or max(set(widths), key=widths.count)  # the backbone's; odd shards are foreign
        moved = []
        for shard, (keys, vectors) in shards.items():
            if vectors.shape[1] != width:
                self._drop(shard, f"vectors of width {vectors.shape[1]}, not {width}")
            else:
                self.add(keys, vectors)
                moved.append(shard)
        self.flush()
        if not self._unwritable:
            for shard in moved:
                with contextlib.suppress(OSError):
                    shard.unlink()

    def _drop(self, shard: Path, reason: str) -> None:
        """Delete a shard that cannot be used (its vectors are recomputed) and say so."""
        try:
            shard.unlink(missing_ok=True)
            done = "deleted"
        except OSError as exc:  # a read-only cache: still train, just without that file
            done = f"could not delete ({exc.strerror or exc}) and ignored"
        self._on_event(
            events.warning(
                f"{done} the unreadable feature cache file {shard.name} ({reason}); its images will be embedded again"
            )
        )


_KEY_BYTES = 104
_ENTRY = np.dtype(
    [
        ("magic", "<u4"),
        ("crc", "<u4"),
        ("row", "<u8"),
        ("vcrc", "<u4"),
        ("klen", "<u2"),
        ("pad", "<u2"),
        ("key", f"S{_KEY_BYTES}"),
    ]
)
_ENTRY_BYTES = _ENTRY.itemsize  # 128
_ENTRY_MAGIC = 0x31455352  # "RSE1"
_HEADER_MAGIC = b"RSEMBIDX"
_FORMAT = 1


def _header(width: int) -> bytes:
    """The index file's first 128 bytes: magic, format, vector width, and their CRC."""
    body = _HEADER_MAGIC + struct.pack("<II", _FORMAT, width)
    return (body + struct.pack("<I", zlib.crc32(body))).ljust(_ENTRY_BYTES, b"\0")


def _header_width(raw: bytes) -> int | None:
    """The vector width an index header declares, or None if it is not a valid header."""
    if len(raw) < _ENTRY_BYTES or raw[:8] != _HEADER_MAGIC:
        return None
    fmt, width = struct.unpack("<II", raw[8:16])
    if struct.unpack("<I", raw[16:20])[0] != zlib.crc32(raw[:16]) or fmt != _FORMAT or not 0 < width < 1 << 20:
        return None
    return width


def _entry(key: str, row: int, vector_crc: int) -> bytes:
    encoded = key.encode("utf-8")
    body = struct.pack("<QIHH", row, vector_crc, len(encoded), 0) + encoded.ljust(_KEY_BYTES, b"\0")
    return struct.pack("<II", _ENTRY_MAGIC, zlib.crc32(body)) + body


def _entry_key(entry: np.void, raw: bytes) -> str | None:
    """An index entry's key, or None if the entry is damaged (magic, CRC or key length wrong)."""
    if int(entry["magic"]) != _ENTRY_MAGIC or zlib.crc32(raw[8:]) != int(entry["crc"]):
        return None
    length = int(entry["klen"])
    if length > _KEY_BYTES:
        return None
    try:
        return raw[24 : 24 + length].decode("utf-8")
    except UnicodeDecodeError:
        return None


def _read_regular(path: Path) -> bytes:
    """A regular file's bytes (never a FIFO or device: those would hang or never end)."""
    info = path.lstat()
    if not stat.S_ISREG(info.st_mode):
        raise OSError(f"{path.name} is not a regular file")
    return path.read_bytes()


def _read_shard(path: Path) -> tuple[list[str], np.ndarray]:
    """(keys, vectors [N, D] float32) of one old-format shard, or an exception if it is anything else."""
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
    decoded: DecodedImages | None = None,
) -> np.ndarray:
    """Vectors for every (image, variant) pair, computing only those the cache lacks.

    Only the vectors this call needs are read from the cache (``EmbeddingCache.load``).  Images missing
    from it are read, checked against their digest and decoded on ``DECODE_WORKERS`` threads while
    ``extractor`` runs on the batch before (one thread calls ``extractor``: never two at once); pixels the
    scan already decoded (``decoded``) are not decoded again.  An image that can no longer be read or
    decoded, or whose content changed since the scan (its vector would be cached under the old content's
    digest), is reported to ``on_error(index, reason)`` and left out of the result.

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
        decoded: Pixels decoded by the scan, by digest (each is taken out once used).

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
    have = cache.load([cache_key(digests[i], v) for i, v in wanted])
    missing_images = sorted({i for i, v in wanted if cache_key(digests[i], v) not in have})
    total, done = len(wanted), sum(1 for i, v in wanted if cache_key(digests[i], v) in have)
    on_event(events.progress(stage, done, total))

    failed: set[int] = set()

    def prepare(i: int) -> list[tuple[str, np.ndarray]]:
        try:
            data = read_image_file(paths[i])
            if hashlib.sha256(data).hexdigest() != digests[i]:  # its vector would be stored under the old content
                raise ImageError("the file's content is not what was scanned")
            pixels = decoded.take(digests[i]) if decoded is not None else None
            base = resize(pixels if pixels is not None else decode(data, target), target)
        except ImageError as exc:
            if on_error is None:
                raise
            failed.add(i)
            on_error(i, str(exc))
            return []
        out = []
        for v in range(variants + 1):
            key = cache_key(digests[i], v)
            if key not in have:
                out.append((key, base if v == 0 else augment(base, int(digests[i][:8], 16) * 64 + v)))
        return out

    chunks = [missing_images[s : s + batch_size] for s in range(0, len(missing_images), batch_size)]
    with ThreadPoolExecutor(max_workers=DECODE_WORKERS) as pool:
        ahead = [pool.submit(lambda chunk=chunk: [p for i in chunk for p in prepare(i)]) for chunk in chunks[:2]]
        queued: list[tuple[str, np.ndarray]] = []
        for n in range(len(chunks)):
            queued += ahead.pop(0).result()
            if n + 2 < len(chunks):
                chunk = chunks[n + 2]
                ahead.append(pool.submit(lambda chunk=chunk: [p for i in chunk for p in prepare(i)]))
            done += sum(
                1 for i in chunks[n] if i in failed for v in range(variants + 1) if cache_key(digests[i], v) not in have
            )
            last = n == len(chunks) - 1
            while len(queued) >= batch_size or (last and queued):  # full batches: one interpreter shape
                part, queued = queued[:batch_size], queued[batch_size:]
                vectors = np.asarray(extractor(np.stack([img for _, img in part])), dtype=np.float32)
                cache.add([key for key, _ in part], vectors)
                have.update(zip((key for key, _ in part), vectors))
                done += len(part)
            cache.flush()
            on_event(events.progress(stage, done, total))
    rows = [have[cache_key(digests[i], v)] for i, v in wanted if i not in failed]
    return np.stack(rows) if rows else np.zeros((0, 0), np.float32)
