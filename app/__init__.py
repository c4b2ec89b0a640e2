"""Retrain Studio: folders of photos in, an image classifier out."""
__version__ = "0.1.0"
