"""One preprocessing definition: the host (Pillow) and graph (TensorFlow) versions agree."""

import io

import numpy as np
import pytest
import skimage.data
from images import bad_images, encode, good_images, with_exif_orientation, with_orientation
from PIL import Image

from app import imaging as preprocess

SIZE = (224, 224)
HOST_GRAPH_TOLERANCE = 5e-5  # float32 rounding of the same maths


@pytest.fixture(scope="module")
def graph_load():
    import tensorflow as tf

    from app.core.graph_preprocess import load_image

    return tf.function(lambda data: load_image(data, *SIZE), input_signature=[tf.TensorSpec([], tf.string)])


@pytest.mark.parametrize("name", sorted(good_images()))
def test_host_and_graph_agree(name, graph_load):
    data = good_images()[name]
    host = preprocess.load_image(data, SIZE)
    graph = graph_load(data).numpy()
    assert host.shape == graph.shape == (224, 224, 3) and host.dtype == np.float32
    assert host.min() >= 0.0 and host.max() <= 1.0
    assert np.abs(host - graph).max() < HOST_GRAPH_TOLERANCE


def test_exif_orientation_makes_photos_upright():
    chelsea = skimage.data.chelsea()  # 300 x 451, landscape
    upright = preprocess.decode(with_orientation(chelsea, 1), SIZE)
    turned = preprocess.decode(with_orientation(chelsea, 6), SIZE)  # "rotate 90 CW to view"
    assert upright.shape == (300, 451, 3) and turned.shape == (451, 300, 3)
    np.testing.assert_allclose(np.rot90(upright, -1).astype(int), turned.astype(int), atol=2)


# What each EXIF orientation asks a viewer to do to the stored pixels (EXIF 2.32, tag 0x0112), in numpy.
UPRIGHT = {
    1: lambda p: p,
    2: lambda p: p[:, ::-1],  # mirror left-right
    3: lambda p: p[::-1, ::-1],  # rotate 180
    4: lambda p: p[::-1, :],  # mirror top-bottom
    5: lambda p: np.rot90(p[:, ::-1], 1),  # mirror left-right, then rotate 90 counter-clockwise (transpose)
    6: lambda p: np.rot90(p, -1),  # rotate 90 clockwise
    7: lambda p: np.rot90(p[:, ::-1], -1),  # mirror left-right, then rotate 90 clockwise (transverse)
    8: lambda p: np.rot90(p, 1),  # rotate 90 counter-clockwise
    0: lambda p: p,  # not an orientation: left as stored
    9: lambda p: p,
}


@pytest.fixture(scope="module")
def graph_decode():
    import tensorflow as tf

    from app.core.graph_preprocess import decode

    return tf.function(lambda data: decode(data, *SIZE), input_signature=[tf.TensorSpec([], tf.string)])


@pytest.mark.parametrize("byte_order", ["II", "MM"])
@pytest.mark.parametrize("orientation", sorted(UPRIGHT))
def test_every_exif_orientation_in_both_byte_orders_stands_upright(graph_decode, byte_order, orientation):
    """Host (Pillow) and graph (TensorFlow) decoders both turn the stored pixels as the tag says, whether the
    EXIF block is little-endian ("II", as phones write it) or big-endian ("MM"): the same pixels as the
    untagged image turned by hand."""
    plain = encode(Image.fromarray(skimage.data.chelsea()).resize((96, 64)), "JPEG", quality=95)  # landscape
    tagged = with_exif_orientation(plain, orientation, byte_order)
    expected_host = UPRIGHT[orientation](preprocess.decode(plain, SIZE))
    expected_graph = UPRIGHT[orientation](graph_decode(plain).numpy())
    host, graph = preprocess.decode(tagged, SIZE), graph_decode(tagged).numpy()
    assert host.shape == graph.shape == ((96, 64, 3) if orientation in (5, 6, 7, 8) else (64, 96, 3))
    np.testing.assert_array_equal(host, expected_host)
    np.testing.assert_array_equal(graph, expected_graph)
    np.testing.assert_array_equal(host, graph)


def test_modes_are_converted_faithfully():
    images = good_images()
    camera = skimage.data.camera()
    grey16 = preprocess.decode(images["grey16.png"], SIZE)
    np.testing.assert_array_equal(grey16[..., 0], camera)  # high byte kept, not clipped to white
    assert (grey16[..., 0] == grey16[..., 2]).all()
    grey = preprocess.decode(images["grey.png"], SIZE)
    np.testing.assert_array_equal(grey[..., 1], camera)
    cmyk = preprocess.decode(images["cmyk.jpg"], SIZE).astype(int)
    assert np.abs(cmyk.mean(axis=(0, 1)) - skimage.data.coffee().mean(axis=(0, 1))).max() < 8
    indexed = Image.open(io.BytesIO(images["palette.png"]))
    lookup = np.array(indexed.getpalette(), dtype=np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(preprocess.decode(images["palette.png"], SIZE), lookup[np.asarray(indexed)])


def test_big_jpeg_is_decoded_at_reduced_scale():
    big = good_images()["big.jpg"]  # 2400 x 1600
    assert preprocess.jpeg_scale(2400, 1600, SIZE) == 4
    assert preprocess.decode(big, SIZE).shape == (400, 600, 3)


@pytest.mark.parametrize("name", sorted(bad_images()))
def test_bad_images_raise_one_clear_sentence(name):
    data, word = bad_images()[name]
    with pytest.raises(preprocess.ImageError) as info:
        preprocess.load_image(data, SIZE)
    message = str(info.value)
    assert word in message and "\n" not in message
