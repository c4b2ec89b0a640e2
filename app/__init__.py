"""Retrain Studio: folders of photos in, an image classifier out."""

import os

# The app speaks Keras 2 (``tf_keras``, which TF Hub's layers need). Without this, ``import tensorflow`` also
# loads Keras 3 for ``tf.keras``, and Keras 3 loads scikit-learn when it is installed: about 1 s of CPU in
# every process that trains, for a Keras nobody calls. Set before anything imports TensorFlow.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

__version__ = "0.1.0"


def classify_only() -> bool:
    """Returns True in the lean desktop bundle, which ships without TensorFlow (TFLite and remote backends only).

    The bundle's runtime hook sets ``RETRAIN_STUDIO_VARIANT=classify``; the CLI then refuses to train and the
    GUI shows a notice instead of the training wizard.
    """
    return os.environ.get("RETRAIN_STUDIO_VARIANT") == "classify"


def version_text() -> str:
    """Returns what ``--version`` prints: the program, its version and, in the lean bundle, that it only classifies."""
    return f"retrain-studio {__version__}" + (" (classification only)" if classify_only() else "")
