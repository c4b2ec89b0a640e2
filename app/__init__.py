"""Retrain Studio: folders of photos in, an image classifier out."""
import os

__version__ = "0.1.0"


def classify_only() -> bool:
    """True in the lean desktop bundle, which ships without TensorFlow (TFLite and remote backends only)."""
    return os.environ.get("RETRAIN_STUDIO_VARIANT") == "classify"


def version_text() -> str:
    return f"retrain-studio {__version__}" + (" (classification only)" if classify_only() else "")
