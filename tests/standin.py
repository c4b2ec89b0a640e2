"""A tiny stand-in backbone for tests that do not test the real weights.

It keeps TF Hub's image feature-vector contract (float32 RGB ``[B, H, W, 3]`` in ``[0, 1]`` -> ``[B, D]``), as
TF Hub's own ``make_image_classifier`` tests do with a small local SavedModel: a coarse 16x16 colour grid of the
image (average pooling) beside two strided convolutions with fixed, seeded weights and a global average.  About
10 M multiply-adds per 224 px image where EfficientNet-Lite0 needs about 400 M, and it saves, loads and converts
to TFLite in a few seconds.  It uses only pure ops, so ``backbone_safety`` passes it without ``--trust-backbone``.

The folder is named ``..._224`` because the app reads a local backbone's input size from its name: 224 keeps the
exported model's input the same as the bundled default's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FOLDER_NAME = "standin_feature_vector_224"
IMAGE_SIZE = 224
GRID = 16  # the colour grid's side: 16 x 16 x 3 = 768 features
CHANNELS = (16, 32)  # the two convolutions' widths: 32 more features
FEATURES = GRID * GRID * 3 + CHANNELS[-1]


def build(parent: Path, seed: int = 0) -> Path:
    """Write the stand-in SavedModel into ``parent / FOLDER_NAME`` and return that folder.

    The weights are trainable variables, so a fine-tuning run trains them as it would a real backbone's.
    """
    import tensorflow as tf

    rng = np.random.default_rng(seed)

    def he(shape):
        fan_in = int(np.prod(shape[:-1]))
        return tf.Variable(rng.normal(0.0, np.sqrt(2.0 / fan_in), shape).astype(np.float32), trainable=True)

    class StandIn(tf.Module):
        # plain attributes, not tf.Module's computed properties, so that they are saved: TF Hub's reusable
        # SavedModel has them, and hub.KerasLayer(trainable=True) fine-tunes ``trainable_variables``
        variables = trainable_variables = regularization_losses = None

        def __init__(self):
            super().__init__()
            self.conv1 = he((3, 3, 3, CHANNELS[0]))
            self.conv2 = he((3, 3, CHANNELS[0], CHANNELS[1]))

        @tf.function(input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32)])
        def __call__(self, images):
            cell = IMAGE_SIZE // GRID
            grid = (
                tf.nn.avg_pool2d(images, cell, cell, "VALID") * 4.0
            )  # [B, 16, 16, 3], scaled near the convolutions' range
            x = tf.nn.relu(tf.nn.conv2d(images * 2.0 - 1.0, self.conv1, 4, "SAME"))
            x = tf.nn.relu(tf.nn.conv2d(x, self.conv2, 4, "SAME"))
            pooled = tf.reduce_mean(x, axis=[1, 2])
            return tf.concat([tf.reshape(grid, [-1, GRID * GRID * 3]), pooled], axis=1)

    module = StandIn()
    module.variables = [module.conv1, module.conv2]
    module.trainable_variables = [module.conv1, module.conv2]
    module.regularization_losses = []
    folder = Path(parent) / FOLDER_NAME
    tf.saved_model.save(module, str(folder))
    return folder
