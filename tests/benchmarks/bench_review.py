"""Data review benchmark (issue 12): Fashion-MNIST with planted wrong labels and copies; quality and warm-cache time.

    .venv/bin/python tests/benchmarks/bench_review.py [--per-class 150] [--classes all|separable] [--json]

Writes N images per class, reviews the clean folder (the cache is filled here), then copies it, moves 5 % of
the images into a wrong class folder and adds 20 re-encoded (JPEG), 1.5x resized copies under new names, and
reviews that twice with ``retrain-studio review --json`` (each a separate process, as a user runs it); the
second run is the warm-cache time.  Prints recall/precision of the label issues, copies found, leaks, the clean
set's false alarms, and the seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import fashion_mnist  # noqa: E402


def review(folder: Path, cache: Path) -> tuple[dict, float]:
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "app", "review", str(folder), "--cache-dir", str(cache), "--json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.splitlines()[-1]), round(time.perf_counter() - start, 2)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-class", type=int, default=150)
    parser.add_argument("--classes", choices=["all", "separable"], default="all")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    classes = None if args.classes == "all" else [1, 3, 7, 8, 9]

    work = Path(tempfile.mkdtemp(prefix="bench-review-"))
    cache = work / "cache"
    clean = fashion_mnist.write_folders(work / "clean", args.per_class, classes)
    clean_report, cold_s = review(clean, cache)
    noisy = work / "noisy"
    shutil.copytree(clean, noisy)
    truth = fashion_mnist.plant_noise(noisy, 0.05, 20, seed=3)
    review(noisy, cache)  # embeds the 20 new copies
    report, warm_s = review(noisy, cache)

    wrong = {str(p) for p in truth["wrong"]}
    flagged = [row["path"] for row in report["label_issues"]]
    right = len(wrong & set(flagged))
    found = sum(
        1
        for original, copy in truth["copies"]
        if any(str(copy) in g["paths"] and str(original) in g["paths"] for g in report["duplicates"])
    )
    result = {
        "images": report["images"],
        "clean_images": clean_report["images"],
        "wrong_planted": len(wrong),
        "label_issues": len(flagged),
        "recall": round(right / len(wrong), 3),
        "precision": round(right / max(1, len(flagged)), 3),
        "copies_found": found,
        "copies_planted": len(truth["copies"]),
        "leaks": sum(g["leak"] for g in report["duplicates"]),
        "duplicate_groups": len(report["duplicates"]),
        "outliers": len(report["outliers"]),
        "clean_label_issues": len(clean_report["label_issues"]),
        "clean_duplicate_groups": len(clean_report["duplicates"]),
        "clean_outliers": len(clean_report["outliers"]),
        "cold_clean_wall_s": cold_s,
        "warm_wall_s": warm_s,
        "warm_seconds": report["seconds"],
    }
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return result


if __name__ == "__main__":
    main()
