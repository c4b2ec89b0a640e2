"""`classify` of a big folder (issue 11): memory stays flat from 1,000 to 10,000 images, with throughput.

    .venv/bin/python tests/benchmarks/bench_classify.py [--images 10000] [--model MODELS_DIR/NAME] [--json]

Fashion-MNIST training images written as PNG class folders; each run is a separate
`retrain-studio classify --model M DIR --json` process (TFLite), whose peak RSS it reports itself.
Without --model, a model is trained first on 10 x 150 other images. Then, in this process, the same
1,000 files are classified serially (read, decode, infer, one after another: what `classify` did before)
and through `inference.pipeline.classify_files` (reading and decoding on 2 worker threads), side by side.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

import fashion_mnist  # noqa: E402

PEAK = (
    "import resource, sys; from app.cli import main; rc = main(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, file=sys.stderr); sys.exit(rc)"
)


def classify_run(model: Path, folder: Path, *flags: str) -> dict:
    """One classify process: wall seconds, images/s, peak RSS MB, rows printed."""
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", PEAK, "classify", "--model", str(model), str(folder), "--json", *flags],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    rows = result.stdout.count("\n")
    return {
        "images": rows,
        "wall_s": round(wall, 1),
        "images_per_s": round(rows / wall, 1),
        "peak_rss_mb": round(float(result.stderr.strip().splitlines()[-1]), 1),
    }


def serial_vs_pipelined(model: Path, files: list[Path]) -> dict:
    """Images/s of the serial loop and of the read-ahead pipeline on the same files, alternating twice."""
    from app.imaging import read_image_file
    from app.inference.factory import open_classifier
    from app.inference.pipeline import classify_files

    classifier = open_classifier(str(model), "tflite")
    rates: dict[str, list[float]] = {"serial": [], "pipelined": []}
    for _ in range(2):
        start = time.perf_counter()
        for path in files:
            classifier.classify([read_image_file(path)], top_k=3)
        rates["serial"].append(len(files) / (time.perf_counter() - start))
        start = time.perf_counter()
        for _prediction in classify_files(classifier, files, top_k=3):
            pass
        rates["pipelined"].append(len(files) / (time.perf_counter() - start))
    best = {name: round(max(values), 1) for name, values in rates.items()}
    return {
        "images": len(files),
        "serial_images_per_s": best["serial"],
        "pipelined_images_per_s": best["pipelined"],
        "speedup": round(best["pipelined"] / best["serial"], 2),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-classify-"))
    model = args.model
    if model is None:
        train = fashion_mnist.write_folders(work / "train", 150, start=5000)
        subprocess.run(
            [sys.executable, "-m", "app", "train", str(train), "-o", str(work / "models"), "--name", "fm", "--json"],
            check=True,
            capture_output=True,
            cwd=REPO,
        )
        model = work / "models" / "fm"
    small = fashion_mnist.write_folders(work / "small", max(1, args.images // 100))
    large = fashion_mnist.write_folders(work / "large", args.images // 10)
    result = {"small": classify_run(model, small), "large": classify_run(model, large)}
    result["rss_growth_mb"] = round(result["large"]["peak_rss_mb"] - result["small"]["peak_rss_mb"], 1)
    result["in_process"] = serial_vs_pipelined(model, sorted(small.glob("*/*.png")))
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
