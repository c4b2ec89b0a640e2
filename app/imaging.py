"""Image files: which ones are found, how one is read safely, how its bytes become a model's input.

One module both layers import (training in ``app.core``, the backends in ``app.inference``, the CLI
and the GUI).  No TensorFlow and no Qt here: the TFLite backend uses it in processes without
TensorFlow.

Finding and reading::

    entries = find_images(["photos/"])                  # every file found, in a stable order
    [e.path for e in entries if e.reason is None]       # the ones worth decoding
    data = read_image_file(entries[0].path)             # bytes, or ImageError with a plain reason

One rule for training's scan, ``classify`` and ``bench``: hidden names (starting with ".") are not
searched, only the image extensions below are tried, links to folders are not followed, and
anything else found is returned with a reason instead of being dropped silently.  Only regular
files are read (a FIFO or a link to /dev/zero would hang or never end), up to ``MAX_FILE_BYTES``.

Decoding (the one definition of how encoded image bytes become a model's input tensor)::

    pixels = decode(data, (224, 224))        # uint8 [h, w, 3], upright, RGB
    image = resize(pixels, (224, 224))       # float32 [224, 224, 3] in [0, 1]

1. Decode JPEG, PNG, GIF (first frame), BMP or WebP.  A large JPEG is decoded at the
   largest DCT scale 1/2, 1/4 or 1/8 that keeps it at least the target size (libjpeg's
   scaled IDCT, "accurate integer" method): much faster for photos, same pixels as the
   graph's ``decode_jpeg(ratio=...)``.
2. A JPEG's EXIF orientation is applied, so phone photos stand upright.
3. Grey, palette, CMYK and 16-bit images become 8-bit RGB; alpha is dropped.
   Whatever the image library raises on a damaged file becomes an ``ImageError`` with one
   plain sentence: a bad file is that file's error, never the caller's crash.
4. Scale to [0, 1] and resize with antialiased bilinear filtering (half-pixel centres).

``app.core.graph_preprocess`` is the same procedure written in TensorFlow ops, baked into
every exported SavedModel; a test proves the two agree to about 1e-5.
"""

from __future__ import annotations

import io
import os
import stat
import threading
import unicodedata
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

SUPPORTED_FORMATS = {"JPEG", "PNG", "GIF", "BMP", "WEBP"}
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp"}
MAX_PIXELS = 150_000_000  # a 150-megapixel photo is huge; past that assume a decompression bomb
# Pillow's own guard warns past 89.5 MP and refuses past twice its limit. Set to ours, real photos up to
# MAX_PIXELS decode and ``_open``'s explicit size check decides; Pillow's warning for the band it would
# still let through is silenced, since that check refuses those (``catch_warnings`` is not thread-safe).
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
MIN_SIDE = 16
MAX_FILE_BYTES = 200 * 1024 * 1024  # no photo is this big; past it, refuse rather than fill memory
_UNSAFE_CATEGORIES = {"Cc", "Cs", "Zl", "Zp"}  # control, lone surrogate (undecodable byte), line breaks
_KEEP_FORMAT = {"\u200c", "\u200d"}  # zero-width (non-)joiners: harmless, part of emoji and Indic names
EXIF_ORIENTATION_TAG = 0x0112
_ORIENTATION_OPS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageError(ValueError):
    """A file that cannot be used as an image; ``str()`` is one sentence for the user."""


def jpeg_scale(width: int, height: int, target: tuple[int, int]) -> int:
    """The DCT scale denominator (1, 2, 4 or 8) for a JPEG of this size, as Pillow's draft picks it.

    Args:
        width: the JPEG's width.
        height: its height.
        target: (height, width) the image will be resized to.

    Returns:
        The largest scale that keeps the decoded image at least ``target``.

    >>> jpeg_scale(2400, 1600, (224, 224)), jpeg_scale(300, 300, (224, 224))
    (4, 1)
    """
    target_h, target_w = target
    fit = min(width // target_w, height // target_h)
    return next((s for s in (8, 4, 2) if fit >= s), 1)


def _reason(exc: Exception) -> str:
    """One plain sentence for whatever the image library raised (OSError, SyntaxError, struct.error, ...)."""
    if isinstance(exc, Image.DecompressionBombError):
        return "the image is too large to decode safely (decompression bomb?)"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image, or in a format that is not supported"
    if isinstance(exc, MemoryError):
        return "the image needs more memory than is available to decode"
    detail = " ".join(str(exc).split())[:120] or type(exc).__name__
    if "truncated" in detail.lower():
        return "the file is truncated"
    return f"the image data is damaged and cannot be decoded ({detail})"


def _open(data: bytes) -> Image.Image:
    if not data:
        raise ImageError("the file is empty")
    try:
        img = Image.open(io.BytesIO(data))
    except Exception as exc:  # any decoder failure is this file's problem, never the run's
        raise ImageError(_reason(exc)) from None
    if img.format not in SUPPORTED_FORMATS:
        raise ImageError(f"{img.format} images are not supported (use JPEG, PNG, GIF, BMP or WebP)")
    width, height = img.size
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"the image is too large ({width}x{height} pixels; the limit is {MAX_PIXELS // 1_000_000} megapixels)"
        )
    if min(width, height) < MIN_SIDE:
        raise ImageError(f"the image is too small ({width}x{height}; at least {MIN_SIDE} pixels a side)")
    return img


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the header alone, with the same checks as ``decode``.

    Raises:
        ImageError: empty, not an image, unsupported, too large or too small.
    """
    return _open(data).size


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey: keep the high byte, as libpng does
        grey = (np.asarray(img).astype(np.uint32) >> 8).clip(0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img)


def decode(data: bytes, target: tuple[int, int]) -> np.ndarray:
    """Encoded bytes -> upright uint8 RGB pixels.

    Args:
        data: the file's bytes (JPEG, PNG, GIF, BMP or WebP).
        target: (height, width) the pixels will be resized to (a large JPEG decodes at a DCT scale).

    Returns:
        uint8 [h, w, 3], EXIF orientation applied.

    Raises:
        ImageError: the file cannot be used, with the reason in one sentence.
    """
    img = _open(data)
    try:
        orientation = 1
        if img.format == "JPEG":
            scale = jpeg_scale(*img.size, target)
            img.draft(img.mode, (img.size[0] // scale, img.size[1] // scale))
            orientation = img.getexif().get(EXIF_ORIENTATION_TAG, 1)
        img.load()
        pixels = _to_rgb(img)
    except Exception as exc:  # any decoder failure is this file's problem, never the run's
        raise ImageError(_reason(exc)) from None
    if isinstance(orientation, int) and orientation in _ORIENTATION_OPS:
        pixels = np.asarray(Image.fromarray(pixels).transpose(_ORIENTATION_OPS[orientation]))
    return pixels


def resize(pixels: np.ndarray, target: tuple[int, int]) -> np.ndarray:
    """uint8 [h, w, 3] -> float32 [H, W, 3] in [0, 1], antialiased bilinear, ``target`` = (H, W)."""
    height, width = target
    channels = [
        np.asarray(
            Image.fromarray(pixels[..., c].astype(np.float32) * np.float32(1 / 255), mode="F").resize(
                (width, height), Image.Resampling.BILINEAR
            )
        )
        for c in range(3)
    ]
    return np.stack(channels, axis=-1)


def load_image(data: bytes, target: tuple[int, int]) -> np.ndarray:
    """Bytes -> model input float32 [H, W, 3] in [0, 1] (``decode`` + ``resize``); ImageError as ``decode``."""
    return resize(decode(data, target), target)


class DecodedImages:
    """Pixels already decoded (``decode``), by content digest, kept within ``budget_bytes``, for one run.

    The scan decodes every new image to validate it; the embed stage takes the pixels from here instead
    of reading and decoding the file again.  Past the budget nothing more is kept (those images are
    decoded again later): memory stays bounded however many images there are.  Thread-safe.

    Args:
        budget_bytes: The most pixel bytes held at once.
    """

    def __init__(self, budget_bytes: int = 256 * 2**20):
        self.budget_bytes = budget_bytes
        self._pixels: dict[str, np.ndarray] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def keep(self, digest: str, pixels: np.ndarray) -> None:
        """Hold ``pixels`` under ``digest`` if the budget allows (else they are not kept, and decoded again later).

        Args:
            digest: The image file's content digest.
            pixels: Its decoded pixels (``decode``).
        """
        with self._lock:
            if digest not in self._pixels and self._bytes + pixels.nbytes <= self.budget_bytes:
                self._pixels[digest] = pixels
                self._bytes += pixels.nbytes

    def take(self, digest: str) -> np.ndarray | None:
        """Returns and forgets the pixels held under ``digest`` (None when not held).

        Args:
            digest: The image file's content digest.
        """
        with self._lock:
            pixels = self._pixels.pop(digest, None)
            if pixels is not None:
                self._bytes -= pixels.nbytes
            return pixels

    def __len__(self) -> int:
        return len(self._pixels)


@dataclass(frozen=True)
class Found:
    """A file or folder met while searching: ``reason`` is None for an image worth trying."""

    path: Path
    reason: str | None = None


def is_hidden(name: str) -> bool:
    """The one hidden-name rule (training, classify, bench): a name starting with "."."""
    return name.startswith(".")


def _skip_reason(path: Path) -> str | None:
    """Why a non-folder entry is not tried, or None (lstat/stat only: never opens the file)."""
    if is_hidden(path.name):
        return "hidden file (names starting with '.' are ignored)"
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return f"not a supported image file ({path.suffix or 'no extension'})"
    try:
        mode = path.stat().st_mode
    except OSError:
        return "a broken link" if path.is_symlink() else "cannot be read"
    return None if stat.S_ISREG(mode) else _not_regular(mode)


def _not_regular(mode: int) -> str:
    kind = (
        "a FIFO"
        if stat.S_ISFIFO(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "a folder"
        if stat.S_ISDIR(mode)
        else "a special file"
    )
    return f"not a regular file ({kind}); only regular files are read"


def walk(folder: Path) -> list[Found]:
    """Everything under ``folder``, each file tried or given a reason.

    An explicit stack rather than recursion, so a folder nested thousands deep cannot overflow it.

    Args:
        folder: the folder to search.

    Returns:
        Found entries sorted by name, depth first; hidden folders and links to folders are listed
        with a reason, not entered.
    """
    out: list[Found] = []
    stack: list[Path] = [Path(folder)]
    while stack:
        current = stack.pop()
        try:
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except OSError as exc:
            out.append(Found(current, f"folder cannot be read ({exc.strerror or exc})"))
            continue
        subfolders = []
        for entry in entries:
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir and is_hidden(entry.name):
                out.append(Found(path, "hidden folder (not searched)"))
            elif is_dir:
                subfolders.append(path)
            elif entry.is_symlink() and path.is_dir():
                out.append(Found(path, "a link to a folder (not followed)"))
            else:
                out.append(Found(path, _skip_reason(path)))
        stack += reversed(subfolders)
    return out


def find_images(paths: Iterable[str | Path]) -> list[Found]:
    """Folders searched with ``walk``; a file named directly is always tried (its decoder decides).

    Args:
        paths: files and folders, as the user gave them.

    Returns:
        Every entry found, in order; ``reason`` None for the ones worth decoding.

    Raises:
        FileNotFoundError: a path does not exist.
    """
    out: list[Found] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            out += walk(path)
        elif path.exists() or path.is_symlink():
            out.append(Found(path))
        else:
            raise FileNotFoundError(f"no such file or folder: {raw}")
    return out


def read_image_file(path: str | Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes.

    Opened non-blocking and checked again after opening, so a file swapped for a FIFO in between
    still cannot hang the reader.

    Args:
        path: the file.
        limit: the most bytes to read.

    Returns:
        The file's bytes.

    Raises:
        ImageError: not a regular file, too big, or unreadable (one sentence).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ImageError(f"cannot be read ({exc.strerror or exc})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ImageError(_not_regular(info.st_mode))
        if info.st_size > limit:
            raise ImageError(f"the file is larger than the {limit // 2**20} MB limit for one image")
        chunks, size = [], 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise ImageError(f"the file is larger than the {limit // 2**20} MB limit for one image")
        return b"".join(chunks)
    except OSError as exc:
        raise ImageError(f"cannot be read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)


def class_name_problem(name: str) -> str | None:
    """Why a folder name cannot be a class label (labels.txt line, TF Serving string), or None.

    >>> class_name_problem("cat"), class_name_problem("a\\nb")
    (None, 'its name contains a line break or control character')
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not valid UTF-8"
    if any(unicodedata.category(ch) in _UNSAFE_CATEGORIES for ch in name):
        return "its name contains a line break or control character"
    if "/" in name or name in (".", ".."):  # never a folder's name; a --class NAME must not be a path either
        return "its name is a path ('/', '.' or '..')"
    return None


def printable(text: object) -> str:
    """``text`` safe for a terminal: control characters, line breaks and undecodable bytes escaped.

    >>> printable("bad\\x1b[2Jname")
    'bad\\\\x1b[2Jname'
    """
    out = []
    for ch in str(text):
        category = unicodedata.category(ch)
        if category in _UNSAFE_CATEGORIES or (category == "Cf" and ch not in _KEEP_FORMAT):
            code = ord(ch)
            out.append(
                f"\\x{code - 0xDC00:02x}"
                if 0xDC80 <= code <= 0xDCFF  # a surrogate-escaped raw byte
                else f"\\x{code:02x}"
                if code < 0x100
                else f"\\u{code:04x}"
            )
        else:
            out.append(ch)
    return "".join(out)
