"""Benchmarks print numbers; they are slow and not part of the default suite (pytest -m slow)."""
import pytest


@pytest.mark.slow
def test_training_benchmark(capsys):
    from benchmarks.bench_training import main

    result = main([])
    assert result["images"] == 1500 and result["head_holdout_accuracy"] > 0.5


@pytest.mark.slow
def test_inference_benchmark():
    from benchmarks.bench_inference import main

    result = main(["--images", "100"])
    assert result["images"] == 100 and set(result["median_total_ms"]) == {"tflite", "savedmodel", "grpc", "rest"}
