"""``app.imaging``'s decoding written in TensorFlow ops, for the exported SavedModel.

Same steps, same maths (see that module's docstring): JPEGs decoded at the same DCT scale
with the accurate integer IDCT and turned upright by their EXIF orientation; other formats
decoded whole (first frame); RGB uint8 -> float [0, 1] -> antialiased bilinear resize.
"""

from __future__ import annotations

import tensorflow as tf

from app.imaging import EXIF_ORIENTATION_TAG

_EXIF_HEADER = b"Exif\x00\x00"
_EXIF_SEARCH_BYTES = 65536
_MAX_IFD_ENTRIES = 64


def _jpeg_scale(shape, height: int, width: int):
    fit = tf.minimum(shape[1] // width, shape[0] // height)
    return tf.case([(fit >= 8, lambda: 3), (fit >= 4, lambda: 2), (fit >= 2, lambda: 1)], default=lambda: 0)


def _uint(raw, offset, count, little_endian):
    """Unsigned integer of ``count`` (2 or 4) bytes at ``offset`` of uint8 vector ``raw``."""
    chunk = tf.cast(raw[offset : offset + count], tf.int64)
    weights = tf.constant([1, 256, 65536, 16777216][:count], tf.int64)
    weights = tf.cond(little_endian, lambda: weights, lambda: tf.reverse(weights, [0]))
    return tf.reduce_sum(chunk * weights)


def exif_orientation(data):
    """Returns the EXIF orientation (int64 scalar, 1-8) of a JPEG's bytes, 1 when absent or unreadable.

    Both byte orders ("II" little-endian, "MM" big-endian) are read, only the first 64 KB are searched and
    at most ``_MAX_IFD_ENTRIES`` entries of the first IFD: a hostile header cannot make the graph slow.

    Args:
        data: Scalar tf.string, the file's bytes.
    """
    head = tf.strings.substr(data, 0, _EXIF_SEARCH_BYTES)
    parts = tf.strings.split(head, _EXIF_HEADER, maxsplit=1)

    def parse():
        tiff = tf.io.decode_raw(parts[1], tf.uint8)
        size = tf.shape(tiff, out_type=tf.int64)[0]
        little = tf.logical_and(size >= 8, tf.reduce_all(tf.equal(tiff[:2], [73, 73])))  # "II"
        ifd = tf.cond(size >= 8, lambda: _uint(tiff, 4, 4, little), lambda: tf.constant(0, tf.int64))
        count = tf.cond(ifd + 2 <= size, lambda: _uint(tiff, ifd, 2, little), lambda: tf.constant(0, tf.int64))
        count = tf.minimum(
            count, tf.minimum(tf.constant(_MAX_IFD_ENTRIES, tf.int64), tf.maximum(size - ifd - 2, 0) // 12)
        )
        entries = tf.reshape(tf.cast(tiff[ifd + 2 : ifd + 2 + 12 * count], tf.int64), [-1, 12])
        tags = tf.where(little, entries[:, 0] + 256 * entries[:, 1], 256 * entries[:, 0] + entries[:, 1])
        values = tf.where(little, entries[:, 8] + 256 * entries[:, 9], 256 * entries[:, 8] + entries[:, 9])
        found = tf.boolean_mask(values, tf.equal(tags, EXIF_ORIENTATION_TAG))
        value = tf.cond(tf.size(found) > 0, lambda: found[0], lambda: tf.constant(1, tf.int64))
        return tf.where((value >= 1) & (value <= 8), value, 1)

    return tf.cond(tf.size(parts) == 2, parse, lambda: tf.constant(1, tf.int64))


def _orient(image, orientation):
    transpose = lambda x: tf.transpose(x, [1, 0, 2])  # noqa: E731
    branches = [
        lambda: image,  # 1
        lambda: tf.reverse(image, [1]),  # 2 mirror
        lambda: tf.reverse(image, [0, 1]),  # 3 rotate 180
        lambda: tf.reverse(image, [0]),  # 4 flip
        lambda: transpose(image),  # 5 transpose
        lambda: tf.image.rot90(image, 3),  # 6 rotate 90 clockwise
        lambda: tf.reverse(transpose(image), [0, 1]),  # 7 transverse
        lambda: tf.image.rot90(image, 1),  # 8 rotate 90 counter-clockwise
    ]
    return tf.switch_case(tf.cast(orientation - 1, tf.int32), branches)


def decode(data, height: int, width: int):
    """Decode an image in the graph, with the same pixels as the host's ``preprocess.decode``.

    Args:
        data: Scalar tf.string, the file's bytes.
        height: Target height (chooses the JPEG DCT scale).
        width: Target width.

    Returns:
        uint8 [h, w, 3], upright; at least ``height`` x ``width`` for JPEGs large enough, not yet resized.
    """
    is_jpeg = tf.equal(tf.strings.substr(data, 0, 3), b"\xff\xd8\xff")

    def jpeg():
        scale = _jpeg_scale(tf.io.extract_jpeg_shape(data), height, width)
        image = tf.switch_case(
            scale,
            [
                lambda r=r: tf.io.decode_jpeg(data, channels=3, ratio=r, dct_method="INTEGER_ACCURATE")
                for r in (1, 2, 4, 8)
            ],
        )
        return _orient(image, exif_orientation(data))

    def other():
        image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
        return tf.ensure_shape(image, [None, None, 3])

    return tf.cond(is_jpeg, jpeg, other)


def load_image(data, height: int, width: int):
    """Decode and resize an image in the graph (the exported SavedModel's preprocessing).

    Args:
        data: Scalar tf.string, the file's bytes.
        height: Output height.
        width: Output width.

    Returns:
        float32 [height, width, 3] in [0, 1] (antialiased bilinear resize).
    """
    image = tf.image.convert_image_dtype(decode(data, height, width), tf.float32)
    return tf.image.resize(image, (height, width), method="bilinear", antialias=True)
