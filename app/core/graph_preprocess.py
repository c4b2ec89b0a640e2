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
    """The DCT scale index (0-3: 1/1 .. 1/8) ``app.imaging`` decodes a JPEG of ``shape`` at, as arithmetic."""
    fit = tf.minimum(shape[1] // width, shape[0] // height)
    return tf.add_n([tf.cast(fit >= least, tf.int32) for least in (2, 4, 8)])


def _uint(raw, offset, count, little_endian):
    """Unsigned integer of ``count`` (2 or 4) bytes at ``offset`` of uint8 vector ``raw``.

    ``raw`` ends with at least ``count`` zero bytes of padding and ``offset`` is clipped into it, so an offset
    past the end reads zeros instead of failing.
    """
    offset = tf.clip_by_value(tf.cast(offset, tf.int64), 0, tf.shape(raw, out_type=tf.int64)[0] - count)
    chunk = tf.cast(raw[offset : offset + count], tf.int64)
    weights = tf.constant([1, 256, 65536, 16777216][:count], tf.int64)
    return tf.reduce_sum(chunk * tf.where(little_endian, weights, tf.reverse(weights, [0])))


def exif_orientation(data):
    """Returns the EXIF orientation (int64 scalar, 1-8) of a JPEG's bytes, 1 when absent or unreadable.

    Both byte orders ("II" little-endian, "MM" big-endian) are read, only the first 64 KB are searched and
    at most ``_MAX_IFD_ENTRIES`` entries of the first IFD: a hostile header cannot make the graph slow.
    Written without ``tf.cond``: every branch would be one more function in the SavedModel, which TF Serving,
    the app and the export's own check convert one by one when they load it.

    Args:
        data: Scalar tf.string, the file's bytes.
    """
    head = tf.strings.substr(data, 0, _EXIF_SEARCH_BYTES)
    after_header = tf.concat([tf.strings.split(head, _EXIF_HEADER, maxsplit=1), [""]], 0)[1]  # "" without one
    tiff = tf.io.decode_raw(after_header, tf.uint8)
    size = tf.shape(tiff, out_type=tf.int64)[0]
    raw = tf.concat([tiff, tf.zeros([4], tf.uint8)], 0)  # _uint's padding
    little = tf.logical_and(size >= 8, tf.reduce_all(tf.equal(raw[:2], [73, 73])))  # "II"
    ifd = tf.where(size >= 8, _uint(raw, 4, 4, little), tf.constant(0, tf.int64))
    count = tf.where(ifd + 2 <= size, _uint(raw, ifd, 2, little), tf.constant(0, tf.int64))
    count = tf.minimum(count, tf.minimum(tf.constant(_MAX_IFD_ENTRIES, tf.int64), tf.maximum(size - ifd - 2, 0) // 12))
    entries = tf.reshape(tf.cast(tiff[ifd + 2 : ifd + 2 + 12 * count], tf.int64), [-1, 12])
    tags = tf.where(little, entries[:, 0] + 256 * entries[:, 1], 256 * entries[:, 0] + entries[:, 1])
    values = tf.where(little, entries[:, 8] + 256 * entries[:, 9], 256 * entries[:, 8] + entries[:, 9])
    value = tf.concat([tf.boolean_mask(values, tf.equal(tags, EXIF_ORIENTATION_TAG)), tf.constant([1], tf.int64)], 0)[
        0
    ]  # 1: no tag
    return tf.where((value >= 1) & (value <= 8), value, tf.constant(1, tf.int64))


def _orient(image, orientation):
    """``image`` turned upright for EXIF ``orientation`` (1-8): transposed for 5-8, then flipped.

    As data, not branches (see ``exif_orientation``): 5-8 transpose rows and columns; 2, 3, 6, 7 then mirror
    left-right and 3, 4, 7, 8 flip upside down.  An identity transpose or an empty flip returns the input.
    """
    transpose = orientation >= 5
    image = tf.transpose(image, tf.where(transpose, [1, 0, 2], [0, 1, 2]))
    mirror = tf.reduce_any(tf.equal(orientation, [2, 3, 6, 7]))
    flip = tf.reduce_any(tf.equal(orientation, [3, 4, 7, 8]))
    image = tf.reverse(image, tf.boolean_mask([0, 1], tf.stack([flip, mirror])))
    return tf.ensure_shape(image, [None, None, 3])


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
