"""Inference benchmark (issue 3): four backends side by side on held-out Fashion-MNIST.

    .venv/bin/python tests/benchmarks/bench_inference.py [--images 500] [--json]

Trains a model on 10 x 150 training images (features cached after the first time), then
classifies N held-out test images one at a time through TFLite, SavedModel, and TF
Serving over gRPC and REST (the protocol double in a separate process on loopback).
Prints per-image median total ms for each backend and the ratios the targets name.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import fashion_mnist  # noqa: E402

FLOAT_TENSOR_BYTES = 224 * 224 * 3 * 4  # what sending decoded pixels would cost per image


def cold_start(where: list[str], image: Path, runs: int = 3) -> float:
    """Median seconds of ``classify WHERE IMAGE`` as its own process, from start to exit."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "app", "classify", *where, str(image)], check=True, capture_output=True, cwd=REPO
        )
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from app.imaging import load_image
    from app.inference.bench import bench, labeled_files
    from app.inference.factory import open_classifier

    work = Path(tempfile.mkdtemp(prefix="bench-infer-"))
    train_dir = fashion_mnist.write_folders(work / "train", 150)
    held = fashion_mnist.write_folders(work / "held", args.images // 10, split="test")
    subprocess.run(
        [sys.executable, "-m", "app", "train", str(train_dir), "-o", str(work / "models"), "--name", "fm", "--json"],
        check=True,
        capture_output=True,
        cwd=REPO,
    )
    model = work / "models" / "fm"
    files = [path for path, _ in labeled_files(held)]

    server = subprocess.Popen(
        [sys.executable, str(REPO / "tests/serving/double.py"), f"fm={model}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
    )
    try:
        ports = json.loads(server.stdout.readline())
        targets = {
            "tflite": ("tflite", None),
            "savedmodel": ("savedmodel", None),
            "grpc": (None, f"grpc://127.0.0.1:{ports['grpc_port']}/fm"),
            "rest": (None, f"http://127.0.0.1:{ports['rest_port']}/v1/models/fm"),
        }
        rows = {}
        for name, (backend, url) in targets.items():
            classifier = open_classifier(None if url else model, backend, url)
            rows[name] = bench(classifier, files, name)
            if name == "tflite":
                images = [load_image(f.read_bytes(), classifier.size) for f in files]
                invokes = []
                for image in images:
                    start = time.perf_counter()
                    classifier.invoke(image)
                    invokes.append((time.perf_counter() - start) * 1e3)
                bare_invoke = statistics.median(invokes)
        cold = {
            "tflite": cold_start(["--backend", "tflite", "--model", str(model / "1")], files[0]),
            "grpc": cold_start(["--server", targets["grpc"][1]], files[0]),
            "rest": cold_start(["--server", targets["rest"][1]], files[0]),
        }
    finally:
        server.terminate()
        server.wait()

    median = {name: row["total_ms"]["median"] for name, row in rows.items()}
    result = {
        "images": len(files),
        "median_total_ms": median,
        "accuracy": {name: row["accuracy"] for name, row in rows.items()},
        "tflite_bare_invoke_ms": round(bare_invoke, 3),
        "tflite_overhead_pct": round(100 * (median["tflite"] / bare_invoke - 1), 1),
        "grpc_added_ms": round(median["grpc"] - median["savedmodel"], 2),
        "rest_added_ms": round(median["rest"] - median["savedmodel"], 2),
        "request_bytes_mean": {name: rows[name]["request_bytes_mean"] for name in ("grpc", "rest")},
        "float_tensor_vs_request": {
            name: round(FLOAT_TENSOR_BYTES / rows[name]["request_bytes_mean"], 1) for name in ("grpc", "rest")
        },
        "cold_start_s": {name: round(seconds, 3) for name, seconds in cold.items()},
        "rows": rows,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{len(files)} held-out Fashion-MNIST images, one at a time; 2-core CPU; server = protocol double "
            "(Python, separate process, loopback)"
        )
        print(f"{'backend':<11} {'accuracy':>8} {'median total ms':>16} {'p95':>8} {'request bytes':>14} {'img/s':>7}")
        for name, row in rows.items():
            print(
                f"{name:<11} {row['accuracy']:>8.3f} {row['total_ms']['median']:>16.2f} {row['total_ms']['p95']:>8.2f} "
                f"{row['request_bytes_mean']:>14.0f} {row['images_per_s']:>7.1f}"
            )
        print(
            f"TFLite: bare invoke() median {bare_invoke:.2f} ms; total is {result['tflite_overhead_pct']}% more "
            "(target < 30%)"
        )
        print(
            f"gRPC adds {result['grpc_added_ms']} ms (target < 3), REST adds {result['rest_added_ms']} ms "
            "(target < 5) per image over in-process SavedModel"
        )
        print(
            f"decoded float tensor ({FLOAT_TENSOR_BYTES} B) vs request: "
            f"gRPC {result['float_tensor_vs_request']['grpc']}x, "
            f"REST {result['float_tensor_vs_request']['rest']}x smaller (target >= 50x)"
        )
        print(
            "cold start, classify on one image, from process start to exit: "
            + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in result["cold_start_s"].items())
            + " (target < 1.5 each)"
        )
    return result


if __name__ == "__main__":
    main()
