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
    assert set(result["cold_start_s"]) == {"tflite", "grpc", "rest"} and max(result["cold_start_s"].values()) < 1.5


@pytest.mark.slow
def test_review_benchmark():
    from benchmarks.bench_review import main

    result = main([])  # 10 classes x 150: 1,500 images (+20 copies)
    assert result["images"] == 1520 and result["warm_wall_s"] < 5
    assert result["copies_found"] >= 18 and result["recall"] >= 0.8


@pytest.mark.slow
def test_classify_benchmark():
    from benchmarks.bench_classify import main

    result = main(["--images", "1000"])
    assert result["large"]["images"] == 1000 and result["rss_growth_mb"] < 50


@pytest.mark.slow
def test_trust_benchmark():
    from benchmarks.bench_trust import main

    rows = main([])
    exported = rows["prototype_cosine (exported)"]
    assert exported["digits"] >= 0.95 and exported["own"] <= 0.10


@pytest.mark.slow
def test_embed_benchmark():
    from benchmarks.bench_embed import main

    result = main([])  # 10 classes x 150: 1,500 images
    assert result["images"] == 1500 and result["embed_vs_bare_forward"] > 0.5 and result["warm"]["wall_s"] > 0
