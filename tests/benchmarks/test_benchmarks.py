"""Benchmarks print numbers; they are slow and not part of the default suite (pytest -m slow)."""
import pytest


@pytest.mark.slow
def test_training_benchmark(capsys):
    from benchmarks.bench_training import main

    result = main([])
    assert result["images"] == 1500 and result["head_holdout_accuracy"] > 0.5
