"""The training engine: no Qt; TensorFlow is imported lazily, inside functions."""
