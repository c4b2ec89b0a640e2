"""Which files are images, how to read one safely, and how to print a name.

    >>> entries = find_images(["photos/"])       # every file found, in a stable order
    >>> [e.path for e in entries if e.reason is None]   # the ones worth decoding
    >>> data = read_image_file(entries[0].path)  # bytes, or ImageError with a plain reason

One rule for training's scan, ``classify`` and ``bench``: hidden names (starting with ".") are not
searched, only the image extensions below are tried, links to folders are not followed, and
anything else found is returned with a reason instead of being dropped silently.  Only regular
files are read (a FIFO or a link to /dev/zero would hang or never end), up to ``MAX_FILE_BYTES``.
No TensorFlow and no Qt here.
"""
from __future__ import annotations

import os
import stat
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from app.inference.preprocess import IMAGE_EXTENSIONS, ImageError

MAX_FILE_BYTES = 200 * 1024 * 1024  # no photo is this big; past it, refuse rather than fill memory
_UNSAFE_CATEGORIES = {"Cc", "Cs", "Zl", "Zp"}  # control, lone surrogate (undecodable byte), line breaks
_KEEP_FORMAT = {"\u200c", "\u200d"}  # zero-width (non-)joiners: harmless, part of emoji and Indic names


@dataclass(frozen=True)
class Found:
    """A file or folder met while searching: ``reason`` is None for an image worth trying."""
    path: Path
    reason: str | None = None


def is_hidden(name: str) -> bool:
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
    kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) \
        else "a socket" if stat.S_ISSOCK(mode) else "a folder" if stat.S_ISDIR(mode) else "a special file"
    return f"not a regular file ({kind}); only regular files are read"


def walk(folder: Path) -> list[Found]:
    """Everything under ``folder`` (sorted by name, depth first), each file tried or given a reason.

    An explicit stack rather than recursion, so a folder nested thousands deep cannot overflow it.
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

    Raises FileNotFoundError for a path that does not exist.
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
    """The bytes of a regular file of at most ``limit`` bytes; ImageError (one sentence) otherwise.

    Opened non-blocking and checked again after opening, so a file swapped for a FIFO in between
    still cannot hang the reader.
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
            raise ImageError(f"the file is larger than the {limit // 2 ** 20} MB limit for one image")
        chunks, size = [], 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise ImageError(f"the file is larger than the {limit // 2 ** 20} MB limit for one image")
        return b"".join(chunks)
    except OSError as exc:
        raise ImageError(f"cannot be read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)


def class_name_problem(name: str) -> str | None:
    """Why a folder name cannot be a class label (labels.txt line, TF Serving string), or None."""
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
    """``text`` safe for a terminal: control characters, line breaks and undecodable bytes escaped."""
    out = []
    for ch in str(text):
        category = unicodedata.category(ch)
        if category in _UNSAFE_CATEGORIES or (category == "Cf" and ch not in _KEEP_FORMAT):
            code = ord(ch)
            out.append(f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF  # a surrogate-escaped raw byte
                       else f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)
