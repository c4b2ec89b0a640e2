"""The one definition of how encoded image bytes become a model's input tensor.

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
every exported SavedModel; a test proves the two agree to about 1e-5.  This module must
never import TensorFlow: the TFLite backend uses it in processes without TensorFlow.
"""
from __future__ import annotations

import io
import warnings

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
EXIF_ORIENTATION_TAG = 0x0112
_ORIENTATION_OPS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageError(ValueError):
    """A file that cannot be used as an image; ``str()`` is one sentence for the user."""


def jpeg_scale(width: int, height: int, target: tuple[int, int]) -> int:
    """DCT scale denominator (1, 2, 4 or 8) for a JPEG of this size, as Pillow's draft picks it."""
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
        raise ImageError(f"the image is too large ({width}x{height} pixels; the limit is "
                         f"{MAX_PIXELS // 1_000_000} megapixels)")
    if min(width, height) < MIN_SIDE:
        raise ImageError(f"the image is too small ({width}x{height}; at least {MIN_SIDE} pixels a side)")
    return img


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the header alone, with the same checks as ``decode``."""
    return _open(data).size


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey: keep the high byte, as libpng does
        grey = (np.asarray(img).astype(np.uint32) >> 8).clip(0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img)


def decode(data: bytes, target: tuple[int, int]) -> np.ndarray:
    """Encoded bytes -> upright uint8 RGB array [h, w, 3]; raises ImageError with a reason."""
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
    """uint8 [h, w, 3] -> float32 [H, W, 3] in [0, 1], antialiased bilinear."""
    height, width = target
    channels = [
        np.asarray(Image.fromarray(pixels[..., c].astype(np.float32) * np.float32(1 / 255), mode="F")
                   .resize((width, height), Image.Resampling.BILINEAR))
        for c in range(3)
    ]
    return np.stack(channels, axis=-1)


def load_image(data: bytes, target: tuple[int, int]) -> np.ndarray:
    """Bytes -> model input [H, W, 3] float32 (decode + resize)."""
    return resize(decode(data, target), target)
