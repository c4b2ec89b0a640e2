"""A tiny stand-in backbone for tests that do not test the real weights.

It keeps TF Hub's image feature-vector contract (float32 RGB ``[B, H, W, 3]`` in ``[0, 1]`` -> ``[B, D]``), as
TF Hub's own ``make_image_classifier`` tests do with a small local SavedModel: a 16 x 16 colour grid of the image
(average pooling) beside two strided 3 x 3 convolutions with fixed, seeded weights, average-pooled to 7 x 7.
About 2.3 M multiply-adds per 224 px image where EfficientNet-Lite0 needs about 400 M, and it saves, loads and
converts to TFLite in a second or two.  It uses only pure ops, so ``backbone_safety`` passes it without
``--trust-backbone``.  On the tests' 200 Fashion-MNIST images (5 classes) its head gets about 0.85 test
accuracy (0.94 on all 200), against 0.85+ for EfficientNet-Lite0: good enough for tests that check which class
an obvious image gets, never for claims about accuracy.

The folder is named ``..._224`` because the app reads a local backbone's input size from its name: 224 keeps the
exported model's input the same as the bundled default's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FOLDER_NAME = "standin_feature_vector_224"
IMAGE_SIZE = 224
GRID = 16  # the colour grid's side
CHANNELS = (16, 32)  # the two convolutions' widths; each has stride 4: 224 -> 56 -> 14
POOLED = 7  # the convolutions' output, average-pooled to 7 x 7
FEATURES = GRID * GRID * 3 + POOLED * POOLED * CHANNELS[1]  # 2336


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
            grid = tf.nn.avg_pool2d(images, cell, cell, "VALID") * 2.0  # [B, 16, 16, 3], near the convs' scale
            x = tf.nn.relu(tf.nn.conv2d(images * 2.0 - 1.0, self.conv1, 4, "SAME"))
            x = tf.nn.relu(tf.nn.conv2d(x, self.conv2, 4, "SAME"))  # [B, 14, 14, 32]
            side = IMAGE_SIZE // 16 // POOLED
            pooled = tf.nn.avg_pool2d(x, side, side, "VALID")  # [B, 7, 7, 32]
            flat = [tf.reshape(grid, [-1, GRID * GRID * 3]), tf.reshape(pooled, [-1, POOLED * POOLED * CHANNELS[1]])]
            return tf.concat(flat, axis=1)

    module = StandIn()
    module.variables = [module.conv1, module.conv2]
    module.trainable_variables = [module.conv1, module.conv2]
    module.regularization_losses = []
    folder = Path(parent) / FOLDER_NAME
    tf.saved_model.save(module, str(folder))
    return folder
