"""Encoded test images in every format and mode the pipeline must handle, plus broken ones."""

from __future__ import annotations

import functools
import io
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image


def encode(image: Image.Image | np.ndarray, fmt: str, **kw) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kw)
    return buffer.getvalue()


def with_orientation(image: np.ndarray, orientation: int) -> bytes:
    img = Image.fromarray(image)
    exif = img.getexif()
    exif[0x0112] = orientation
    return encode(img, "JPEG", exif=exif.tobytes(), quality=95)


def with_exif_orientation(jpeg: bytes, orientation: int, byte_order: str) -> bytes:
    """``jpeg`` with an EXIF APP1 segment written by hand, in either TIFF byte order ("II" little-endian, as
    most phones write it, or "MM" big-endian, the only one Pillow writes), holding a Make tag and then
    Orientation, inserted after the JFIF APP0 segment."""
    order = "<" if byte_order == "II" else ">"
    entries = [
        struct.pack(order + "HHI4s", 0x010F, 2, 4, b"Cam\0"),  # Make, ASCII, 4 bytes held in the entry itself
        struct.pack(order + "HHIHH", 0x0112, 3, 1, orientation, 0),  # Orientation, SHORT, left-justified
    ]
    ifd = struct.pack(order + "H", len(entries)) + b"".join(entries) + struct.pack(order + "I", 0)
    tiff = byte_order.encode() + struct.pack(order + "HI", 42, 8) + ifd
    segment = b"\xff\xe1" + struct.pack(">H", 2 + 6 + len(tiff)) + b"Exif\0\0" + tiff
    assert jpeg[:4] == b"\xff\xd8\xff\xe0", "expected a JFIF JPEG"
    end_of_app0 = 4 + struct.unpack(">H", jpeg[4:6])[0]
    return jpeg[:end_of_app0] + segment + jpeg[end_of_app0:]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims to be width x height but holds one compressed row: a bomb's signature."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1)))
        + chunk(b"IEND", b"")
    )


@functools.cache
def good_images() -> dict[str, bytes]:
    coffee, chelsea = skimage.data.coffee(), skimage.data.chelsea()
    return {
        "rgb.jpg": encode(chelsea, "JPEG", quality=90),
        "small.jpg": encode(Image.fromarray(chelsea).resize((96, 64)), "JPEG"),
        "big.jpg": encode(Image.fromarray(coffee).resize((2400, 1600)), "JPEG"),
        "rgb.png": encode(coffee, "PNG"),
        "grey.png": encode(skimage.data.camera(), "PNG"),
        "palette.png": encode(Image.fromarray(coffee).convert("P"), "PNG"),
        "rgba.png": encode(Image.fromarray(coffee).convert("RGBA"), "PNG"),
        "grey16.png": encode(Image.fromarray(skimage.data.camera().astype(np.uint16) * 257), "PNG"),
        "cmyk.jpg": encode(Image.fromarray(coffee).convert("CMYK"), "JPEG"),
        "anim.gif": encode(Image.fromarray(coffee).convert("P"), "GIF"),
        "bitmap.bmp": encode(coffee, "BMP"),
        "photo.webp": encode(coffee, "WEBP", quality=85),
        "rotated6.jpg": with_orientation(chelsea, 6),
        "rotated3.jpg": with_orientation(chelsea, 3),
        "mirrored2.jpg": with_orientation(chelsea, 2),
    }


@functools.cache
def bad_images() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, a word the skip reason must contain)."""
    jpeg = encode(skimage.data.chelsea(), "JPEG")
    return {
        "empty.jpg": (b"", "empty"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "notes.png": (b"these are not the pixels you are looking for\n" * 20, "not an image"),
        "tiny.png": (encode(np.zeros((8, 8, 3), np.uint8), "PNG"), "too small"),
        "bomb.png": (png_header_only(40000, 40000), "too large"),
        "document.tiff": (encode(skimage.data.camera(), "TIFF"), "supported"),
    }


def copy_sample(classes: dict[str, slice], to: Path) -> Path:
    """``to/<class>/`` holding the given slice of the bundled sample data's sorted images of that class."""
    from app.paths import sample_data_dir

    for name, part in classes.items():
        (to / name).mkdir(parents=True)
        for image in sorted((sample_data_dir() / name).iterdir())[part]:
            shutil.copy(image, to / name / image.name)
    return to
