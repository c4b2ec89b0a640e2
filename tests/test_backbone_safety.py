"""Backbones are programs: local SavedModels are inspected before they run; hub handles are https-only.

The hostile backbones are tiny SavedModels built here, each following the feature-vector
contract ([B,H,W,3] -> [B,3]) while doing something a feature extractor never needs.
"""

import subprocess
import sys

import pytest

from app.core import backbones
from app.core.backbones import BackboneError


def _save(folder, body, secret="/dev/null", out="/dev/null"):
    """A SavedModel whose __call__ averages the pixels, after running ``body(images, secret, out)``."""
    import tensorflow as tf

    class Extractor(tf.Module):
        def __init__(self):
            super().__init__()
            self.scale = tf.Variable(1.0)

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        def __call__(self, images):
            images = body(images, secret, out)
            return tf.reduce_mean(images, axis=[1, 2]) * self.scale

    tf.saved_model.save(Extractor(), str(folder))
    return folder


def _reads(images, secret, out):
    import tensorflow as tf

    return images + tf.cast(tf.strings.length(tf.io.read_file(secret)), tf.float32) * 0


def _writes(images, secret, out):
    import tensorflow as tf

    with tf.control_dependencies([tf.io.write_file(out, "pwned")]):
        return tf.identity(images)


def _steals(images, secret, out):  # read a file and write it elsewhere, as the report's crafted backbone did
    import tensorflow as tf

    with tf.control_dependencies([tf.io.write_file(out, tf.io.read_file(secret))]):
        return tf.identity(images)


def _hides_in_a_branch(images, secret, out):  # the read sits in a cond branch: another library function
    import tensorflow as tf

    size = tf.cond(tf.reduce_sum(images) > -1, lambda: tf.strings.length(tf.io.read_file(secret)), lambda: 0)
    return images + tf.cast(size, tf.float32) * 0


def _runs_python(images, secret, out):
    import tensorflow as tf

    return tf.py_function(lambda x: x, [images], tf.float32)


def _prints_to_a_file(images, secret, out):
    import tensorflow as tf

    with tf.control_dependencies([tf.print("pwned", output_stream=f"file://{out}")]):
        return tf.identity(images)


def _restores_another_checkpoint(images, secret, out):  # a saver op outside the saver
    import tensorflow as tf

    value = tf.raw_ops.RestoreV2(prefix=secret, tensor_names=["x"], shape_and_slices=[""], dtypes=[tf.float32])
    return images + tf.reduce_sum(value[0]) * 0


@pytest.mark.parametrize(
    "body, op",
    [
        (_reads, "ReadFile"),
        (_writes, "WriteFile"),
        (_hides_in_a_branch, "ReadFile"),
        (_runs_python, "EagerPyFunc"),
        (_prints_to_a_file, "PrintV2"),
        (_restores_another_checkpoint, "RestoreV2"),
    ],
)
def test_a_backbone_that_touches_files_or_code_is_refused(tmp_path, body, op):
    folder = _save(tmp_path / "crafted_224", body)
    with pytest.raises(BackboneError) as info:
        backbones.resolve(str(folder))
    message = str(info.value)
    assert f"uses {op} " in message and "--trust-backbone" in message and "\n" not in message
    assert backbones.resolve(str(folder), trust=True).source == "local"  # the explicit override


def test_a_clean_backbone_and_the_bundled_one_are_accepted(tmp_path, cache_dir):
    clean = _save(tmp_path / "clean_224", lambda images, secret, out: images)
    info = backbones.resolve(str(clean))
    assert (info.source, info.image_size) == ("local", 224)
    bundled = backbones.materialise(backbones.resolve("efficientnet_lite0"), cache_dir)
    assert backbones.resolve(bundled).source == "local"  # a real network with its checkpoint saver passes


@pytest.mark.thorough  # over a second: TensorFlow in two child processes
def test_train_refuses_a_stealing_backbone_before_any_work(tmp_path):
    secret, stolen = tmp_path / "secret.txt", tmp_path / "stolen.txt"
    secret.write_text("password")
    folder = _save(tmp_path / "evil_224", _steals, str(secret), str(stolen))
    images = tmp_path / "images"
    (images / "a").mkdir(parents=True)
    result = subprocess.run(
        [sys.executable, "-m", "app", "train", str(images), "-o", str(tmp_path / "models"), "--backbone", str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"retrain-studio: the backbone {folder} uses ") and "--trust-backbone" in last
    assert "ReadFile" in last and "WriteFile" in last
    assert not stolen.exists() and not (tmp_path / "models").exists()
    trusted = subprocess.run(
        [
            sys.executable,
            "-m",
            "app",
            "train",
            str(images),
            "-o",
            str(tmp_path / "models"),
            "--backbone",
            str(folder),
            "--trust-backbone",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "uses ReadFile" not in trusted.stderr  # the backbone passed; the empty image folder is what stops it
    assert trusted.returncode == 1 and "class" in trusted.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "handle, message",
    [
        ("http://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5", "must use https://"),
        ("HTTP://tfhub.dev/google/x/5", "must use https://"),
        ("gs://tfhub-modules/google/x/5", "must use https://"),
        ("https://evil.example/models/x/1", "may come only from"),
        ("https://tfhub.dev.evil.example/google/x/5", "may come only from"),
        ("https://tfhub.dev@evil.example/google/x/5", "may come only from"),
        ("https://tfhub.dev:8443/google/x/5", "may come only from"),
        ("https://storage.googleapis.com/someone-elses-bucket/model.tar.gz", "may come only from"),
        ("https://www.kaggle.com/datasets/x", "may come only from"),
        ("https://www.kaggle.com/models/../datasets/x", "may come only from"),  # dot segments leave the prefix
        ("https://www.kaggle.com/models/%2e%2e/datasets/x", "may come only from"),
    ],
)
def test_hub_handles_are_https_from_allowed_hosts_only(handle, message):
    with pytest.raises(BackboneError, match=message):
        backbones.resolve(handle)


def test_allowed_hub_handles_still_resolve():
    for handle in backbones.HUB_EXAMPLES:
        assert backbones.resolve(handle).source == "hub"
    assert backbones.resolve("https://storage.googleapis.com/tfhub-modules/google/x/5.tar.gz").source == "hub"


def _tf1_saved_model(folder, write_to=None):
    """A TF1 SavedModel (graph + Saver); with ``write_to``, its restore op also runs a SaveV2 writing there.

    Loading a TF1 model runs ``saver_def.restore_op_name``: a write hidden in that chain ran at load time.
    """
    import tensorflow as tf

    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        images = tf1.placeholder(tf.float32, [None, 224, 224, 3], name="images")
        weights = tf1.get_variable("w", initializer=tf.ones([3, 8]))
        features = tf.matmul(tf.reduce_mean(images, [1, 2]), weights)
        saver = tf1.train.Saver()
        if write_to:
            evil = tf.raw_ops.SaveV2(
                prefix=tf.constant(str(write_to)),
                tensor_names=tf.constant(["stolen"]),
                shape_and_slices=tf.constant([""]),
                tensors=[tf.constant([42.0])],
            )
            restore = tf.group(graph.get_operation_by_name(saver.saver_def.restore_op_name), evil)
            saver.saver_def.restore_op_name = restore.name
        signature = tf1.saved_model.predict_signature_def({"images": images}, {"default": features})
        builder = tf1.saved_model.Builder(str(folder))
        with tf1.Session(graph=graph) as session:
            session.run(tf1.global_variables_initializer())
            builder.add_meta_graph_and_variables(
                session, ["serve"], signature_def_map={"default": signature}, saver=saver
            )
        builder.save()
    return folder


def test_a_write_hidden_in_a_tf1_restore_op_is_refused(tmp_path):
    from app.core.backbone_safety import UnsafeGraphError, check_savedmodel

    check_savedmodel(_tf1_saved_model(tmp_path / "clean"))  # a plain TF1 saver only reads its variables
    target = tmp_path / "written" / "ckpt"
    with pytest.raises(UnsafeGraphError, match="uses SaveV2 "):
        check_savedmodel(_tf1_saved_model(tmp_path / "evil", write_to=target))
    assert not target.parent.exists()


def test_a_backbone_that_cannot_be_called_is_one_sentence(tmp_path, cache_dir):
    """A TF1 SavedModel loads but is not callable: a plain BackboneError, not a TypeError at the first image."""
    info = backbones.resolve(str(_tf1_saved_model(tmp_path / "tf1_224")))
    with pytest.raises(BackboneError, match="cannot be called on images"):
        backbones.load(info, cache_dir)
