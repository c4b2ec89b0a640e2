"""The hostile corpus: every kind of bad, odd or dangerous file a user's folder can hold, built at test time.

    cases = write_corpus(tmp_path / "data")   # writes data/hostile/..., data/<odd class names>/...
    [(c.kind, c.expect) for c in cases]        # what each file must become

Each Case says what ``classify DIR`` must do with it: "used" (classified), "error" (a row with an error
naming the file; in training a skip with the reason), "skipped" (never opened; listed with a reason)
or "either" (fuzzed bytes: used or an error, but never a crash and never lost).  ``scan`` is what the
training scan must do, where it differs (a class folder whose name cannot be a label is skipped whole).
``word`` is a word the reason must contain.  No binaries are committed: everything is generated here.
"""

from __future__ import annotations

import os
import random
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import skimage.data
from images import encode, png_header_only, with_orientation
from PIL import Image

HOSTILE_CLASS = "hostile"
BAD_CLASS_NAMES = [os.fsdecode(b"classe_\xff\xfe"), "two\nlines", "esc\x1b[2Jape"]


@dataclass(frozen=True)
class Case:
    kind: str
    path: Path
    expect: str  # used | error | skipped | either
    word: str = ""
    scan: str | None = None  # the training scan's outcome when it differs from ``expect``

    @property
    def scan_expect(self) -> str:
        return self.scan or {"error": "skipped"}.get(self.expect, self.expect)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_raw(width: int, height: int, depth: int, colour: int, row: bytes) -> bytes:
    """A PNG of ``height`` identical filtered rows, compressed as a stream (cheap even for 400 MP)."""
    packer = zlib.compressobj(1)
    line = b"\0" + row
    body = b"".join(packer.compress(line) for _ in range(height)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def png_with_ztxt(png: bytes, text_bytes: int = 8_000_000) -> bytes:
    """A valid PNG carrying a zTXt chunk that inflates past Pillow's MAX_TEXT_CHUNK."""
    ztxt = _chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"A" * text_bytes, 9))
    return png[:33] + ztxt + png[33:]  # right after the IHDR chunk


def jpeg_with_damaged_header(jpeg: bytes) -> bytes:
    """The DQT segment claims to run far past the end of the file ("Truncated File Read")."""
    at = jpeg.index(b"\xff\xdb")
    return jpeg[: at + 2] + b"\xff\xf0" + jpeg[at + 4 :]


def jpeg_header_only(width: int, height: int) -> bytes:
    """SOI + a baseline SOF0 claiming width x height, and no pixels at all."""
    sof = struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + b"\xff\xd9"


def bmp_bad_depth(bmp: bytes) -> bytes:
    return bmp[:28] + struct.pack("<H", 7) + bmp[30:]  # biBitCount 7: "Unsupported BMP pixel depth"


def webp_corrupt(webp: bytes) -> bytes:
    """A lossy WebP whose VP8 start code is wiped ("could not create decoder object")."""
    at = webp.index(b"VP8 ") + 11  # chunk header (8) + frame tag (3)
    return webp[:at] + b"\0\0\0" + webp[at + 3 :]


def big_flat_jpeg(width: int = 12000, height: int = 9000) -> bytes:
    """A 108-MP photo-sized JPEG, small on disk because it is one flat grey."""
    return encode(Image.new("L", (width, height), 128), "JPEG", quality=50)


def rgb16_png(width: int = 64, height: int = 48) -> bytes:
    row = np.linspace(0, 65535, width * 3).astype(">u2").tobytes()
    return png_raw(width, height, 16, 2, row)


def base_images() -> dict[str, bytes]:
    """Small real photos in each supported format: the fuzzer's seeds."""
    small = Image.fromarray(skimage.data.chelsea()).resize((96, 64))
    return {
        "jpg": encode(small, "JPEG", quality=85),
        "png": encode(small, "PNG"),
        "gif": encode(small.convert("P"), "GIF"),
        "bmp": encode(small, "BMP"),
        "webp": encode(small, "WEBP", quality=80),
    }


def fuzzed(count: int, seed: int = 1234) -> list[tuple[str, bytes]]:
    """(name, bytes): seeded byte flips, truncations and splices of real images."""
    rng = random.Random(seed)
    seeds = base_images()
    out = []
    for n in range(count):
        ext = rng.choice(sorted(seeds))
        data = bytearray(seeds[ext])
        how = rng.choice(["flip", "flip", "truncate", "both", "splice"])
        if how in ("flip", "both"):
            for _ in range(rng.randint(1, 12)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        if how in ("truncate", "both"):
            data = data[: rng.randrange(1, len(data))]
        if how == "splice":
            at, width = rng.randrange(len(data)), rng.randint(1, 64)
            data[at:at] = bytes(rng.randrange(256) for _ in range(width))
        out.append((f"fuzz_{n:04d}_{how}.{ext}", bytes(data)))
    return out


def write_corpus(root: Path, fuzz: int = 300) -> list[Case]:
    """Write every hostile kind under ``root`` (a dataset root); return what each must become."""
    coffee, chelsea = skimage.data.coffee(), skimage.data.chelsea()
    jpeg = encode(chelsea, "JPEG", quality=90)
    png = encode(coffee, "PNG")
    folder = root / HOSTILE_CLASS
    folder.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []

    def add(kind: str, name: str | bytes | Path, data: bytes | None, expect: str, word: str = "") -> Path:
        path = Path(os.fsdecode(os.path.join(os.fsencode(folder), os.fsencode(name))))
        if data is not None:
            path.write_bytes(data)
        cases.append(Case(kind, path, expect, word))
        return path

    # Damaged files: each an error naming the file, never the run's end.
    add("jpeg-damaged-header", "damaged_header.jpg", jpeg_with_damaged_header(jpeg), "error", "")
    add("jpeg-cut-300-bytes", "cut300.jpg", jpeg[:300], "error", "")
    add("jpeg-truncated-mid-scan", "truncated.jpg", jpeg[: len(jpeg) // 2], "error", "truncated")
    add("png-huge-ztxt", "ztxt.png", png_with_ztxt(encode(chelsea, "PNG")), "error", "")
    add("webp-corrupt", "corrupt.webp", webp_corrupt(encode(coffee, "WEBP")), "error", "")
    add("bmp-bad-depth", "bad_depth.bmp", bmp_bad_depth(encode(coffee, "BMP")), "error", "")
    add("zero-byte", "empty.jpg", b"", "error", "empty")
    add("text-named-jpg", "notes.jpg", b"remember the milk\n" * 40, "error", "not an image")
    add("tiny-1x1", "tiny.png", encode(np.zeros((1, 1, 3), np.uint8), "PNG"), "error", "too small")
    with open(add("oversize-file", "huge.jpg", jpeg, "error", "200 MB"), "r+b") as sparse:
        sparse.truncate(201 * 2**20)  # sparse: costs no disk, but more than the read limit
    add("header-only-giant-jpeg", "giant_header.jpg", jpeg_header_only(60000, 60000), "error", "too large")
    add("header-only-giant-png", "giant_header.png", png_header_only(40000, 40000), "error", "too large")
    add("png-bomb-400mp", "bomb400.png", png_raw(20000, 20000, 1, 0, b"\0" * 2500), "error", "too large")
    # Odd but valid: used.
    add("jpeg-108mp", "photo_108mp.jpg", big_flat_jpeg(), "used")
    add("cmyk-jpeg", "cmyk.jpg", encode(Image.fromarray(coffee).convert("CMYK"), "JPEG"), "used")
    add("rgb-16bit-png", "rgb16.png", rgb16_png(), "used")
    add(
        "grey-I;16-png",
        "grey16.png",
        encode(Image.fromarray(skimage.data.camera().astype(np.uint16) * 257), "PNG"),
        "used",
    )
    palette = Image.fromarray(coffee).convert("P")
    add("palette-transparency-png", "palette_alpha.png", encode(palette, "PNG", transparency=0), "used")
    add("LA-png", "grey_alpha.png", encode(Image.fromarray(coffee).convert("LA"), "PNG"), "used")
    add("1-bit-png", "bilevel.png", encode(Image.fromarray(coffee).convert("1"), "PNG"), "used")
    add("1-bit-bmp", "bilevel.bmp", encode(Image.fromarray(coffee).convert("1"), "BMP"), "used")
    add("exif-rotated", "rotated6.jpg", with_orientation(chelsea, 6), "used")
    # Odd names: used, printed escaped.
    add("non-utf8-name", b"caf\xe9_latin1.jpg", jpeg, "used")
    add("non-utf8-name-2", b"\xff\xfe\xfd.png", png, "used")
    add("escape-sequence-name", "\x1b[31mred\x1b[0m\x1b]0;owned\x07.jpg", jpeg, "used")
    add("control-char-name", "bell\x07tab\tcr\r.jpg", jpeg, "used")
    add("newline-name", "new\nline.jpg", jpeg, "used")
    deep = folder
    for _ in range(300):  # deep, yet shallow enough for shutil.rmtree's recursion when pytest cleans up
        deep = deep / "d"
        os.mkdir(deep)
    add("nested-300-deep", deep.relative_to(folder) / "deep.jpg", jpeg, "used")
    # Not regular files, links, hidden and unsupported: skipped with a reason, never opened.
    os.mkfifo(add("fifo", "pipe.jpg", None, "skipped", "regular"))
    os.symlink("/dev/zero", add("symlink-dev-zero", "zero.jpg", None, "skipped", "regular"))
    os.symlink(folder / "no-such-file.jpg", add("broken-symlink", "gone.jpg", None, "skipped", "broken link"))
    os.symlink("selfloop.jpg", add("symlink-loop", "selfloop.jpg", None, "skipped", "broken link"))
    os.symlink(folder.parent, add("symlink-to-folder", "loop_link", None, "skipped", "link to a folder"))
    add("hidden-file", ".hidden.jpg", jpeg, "skipped", "hidden")
    (folder / ".thumbnails").mkdir()
    add("hidden-folder", ".thumbnails/thumb.jpg", jpeg, "skipped", "hidden")
    add("tiff", "scan.tiff", encode(coffee, "TIFF"), "skipped", "supported")
    add(
        "svg",
        "drawing.svg",
        b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"/>',
        "skipped",
        "supported",
    )
    add("heic", "iphone.heic", b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + bytes(64), "skipped", "supported")
    add("no-extension", "README", jpeg, "skipped", "no extension")
    # Fuzzed: used or an error, never a crash.
    (folder / "fuzz").mkdir()
    for name, data in fuzzed(fuzz):
        add("fuzzed", f"fuzz/{name}", data, "either")
    # Class folders whose names cannot be labels: classify uses their files, training skips the folder.
    for name in BAD_CLASS_NAMES:
        bad = root / name
        bad.mkdir()
        for i in range(2):
            (bad / f"img{i}.jpg").write_bytes(jpeg)
            cases.append(
                Case(
                    "class-name-" + ("non-utf8" if "\udcff" in name else "control-char"),
                    bad / f"img{i}.jpg",
                    "used",
                    "class",
                    scan="skipped",
                )
            )
    return cases


def outcome_of(path: Path, used: set[Path], skipped: dict[Path, str]) -> tuple[str, str]:
    """("used" | "skipped" | "lost", reason) for a path, counting a skipped ancestor folder."""
    if path in used:
        return "used", ""
    for candidate in (path, *path.parents):
        if candidate in skipped:
            return "skipped", skipped[candidate]
    return "lost", ""
