"""Embedding benchmark (issue 11): the embed stage against the bare LiteRT forward pass, cold and warm runs.

    .venv/bin/python tests/benchmarks/bench_embed.py [--per-class 150] [--sample N] [--json]

In one run, on Fashion-MNIST PNG folders (10 classes x ``--per-class``):

1. the bare forward pass: the same backbone's ``.tflite`` in LiteRT (XNNPACK, 2 threads), batches of 32,
   over every image already decoded and resized (one warm-up batch first);
2. ``features.embed`` into an empty store, reading and decoding the files itself: ms/image and the ratio
   to (1) (target <= 1.3, goal 1.1);
3. a cold ``retrain-studio train --json`` process (empty embedding store, backbone already converted)
   against 1.3 x (1) + 12 s (``--allowance``; 20 s for 8,000 images), then a warm rerun (target <= 6 s,
   ``--warm-target``; 20 s for 8,000), each with its stages' seconds, its peak RSS (``--rss-target-mb``: 3 GB
   for 8,000, 4 GB for 60,000), and the store's size on disk; each target printed as met or how far over.

``--sample N`` times (1) and (2) on N images spread over the set and scales them to the whole set (printed as
extrapolated): for 60,000 images (``--per-class 6000``) they alone would take most of an hour.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import fashion_mnist  # noqa: E402


def _train(data: Path, models: Path, cache: Path) -> dict:
    """One ``train --json`` child process: its done event, wall seconds, peak RSS and first-event latency."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "train", str(data), "-o", str(models), "--name", "fm"]
        + ["--cache-dir", str(cache), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    first_event_s, last, peak_kb = None, "", 0
    for line in proc.stdout:
        if first_event_s is None:
            first_event_s = time.perf_counter() - start
        last = line
        peak_kb = max(peak_kb, _high_water_kb(proc.pid))
    status = proc.wait()
    wall = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"train failed: {last[-500:]}")
    done = json.loads(last)
    return {
        "wall_s": round(wall, 2),
        "startup_s": round(first_event_s or 0.0, 2),  # process start, imports, settings: before the scan
        "peak_rss_mb": round(peak_kb / 1024),
        "seconds": done["seconds"],
        "test_accuracy": done["metrics"]["test_accuracy"],
    }


def _high_water_kb(pid: int) -> int:
    """The process's peak resident set so far (VmHWM; ``ru_maxrss`` would count the forking parent's)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)


def _size_mb(folder: Path) -> float:
    return round(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20, 1)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-class", type=int, default=150)
    parser.add_argument("--allowance", type=float, default=12.0, help="seconds allowed beyond 1.3 x bare forward")
    parser.add_argument("--sample", type=int, default=0, help="time (1) and (2) on this many images, extrapolated")
    parser.add_argument("--warm-target", type=float, default=6.0, help="seconds for the warm rerun (20 for 8,000)")
    parser.add_argument("--rss-target-mb", type=float, help="peak RSS allowed (3072 for 8,000, 4096 for 60,000)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)

    from app.core import backbones, features
    from app.imaging import load_image

    work = Path(tempfile.mkdtemp(prefix="bench-embed-"))
    data = fashion_mnist.write_folders(work / "fm", args.per_class)
    cache = work / "cache"
    info = backbones.resolve("efficientnet_lite0")
    files = sorted(data.rglob("*.png"))
    timed = files
    if 0 < args.sample < len(files):
        timed = [files[int(i)] for i in np.linspace(0, len(files) - 1, args.sample).round()]
    scale = len(files) / len(timed)  # (1) and (2) extrapolated to the whole set when sampled

    t = time.perf_counter()
    extractor = backbones.FeatureExtractor(info, cache)
    assert extractor.prepare() == "litert"
    conversion_s = time.perf_counter() - t

    # 1. the bare forward pass: each batch decoded first (not timed), so memory stays one batch
    forward = backbones.LiteRTForward(backbones.feature_tflite_path(info, cache))
    forward_s = forward_cpu_s = 0.0
    for s in range(-32, len(timed), 32):  # the first batch twice: once as warm-up
        batch = np.stack([load_image(f.read_bytes(), (224, 224)) for f in timed[max(s, 0) : max(s, 0) + 32]])
        t, cpu = time.perf_counter(), time.process_time()
        forward(batch)
        if s >= 0:
            forward_s, forward_cpu_s = forward_s + time.perf_counter() - t, forward_cpu_s + time.process_time() - cpu
    del batch
    forward_s, forward_cpu_s = forward_s * scale, forward_cpu_s * scale

    # 2. the embed stage (files read and decoded on worker threads while LiteRT runs)
    store = features.EmbeddingCache(work / "embed-only", "bench", 224)
    extractor(np.zeros((32, 224, 224, 3), np.float32))  # the same warm-up as (1)
    digests = [hashlib.sha256(f.read_bytes()).hexdigest() for f in timed]  # the scan's work, not timed
    t, cpu = time.perf_counter(), time.process_time()
    features.embed(timed, digests, extractor, store, 224, batch_size=32)
    embed_s, embed_cpu_s = (time.perf_counter() - t) * scale, (time.process_time() - cpu) * scale
    shutil.rmtree(work / "embed-only")

    # 3. whole runs in child processes
    cold = _train(data, work / "models", cache)
    store_mb = _size_mb(cache / "embeddings")
    warm = _train(data, work / "models", cache)
    load = os.getloadavg()

    n = len(files)
    result = {
        "images": n,
        "timed_images_for_bare_forward_and_embed": len(timed),  # fewer than images: those two extrapolated
        "load_average_1_5_15": [round(x, 2) for x in load],
        "backbone_conversion_s": round(conversion_s, 2),
        "bare_forward_s": round(forward_s, 2),
        "bare_forward_ms_per_image": round(1000 * forward_s / n, 2),
        "embed_s": round(embed_s, 2),
        "embed_ms_per_image": round(1000 * embed_s / n, 2),
        "embed_vs_bare_forward": round(embed_s / forward_s, 3),
        "bare_forward_cpu_s": round(forward_cpu_s, 2),
        "embed_cpu_s": round(embed_cpu_s, 2),
        "embed_vs_bare_forward_cpu": round(embed_cpu_s / forward_cpu_s, 3),
        "cold": cold,
        "cold_limit_s": round(1.3 * forward_s + args.allowance, 2),  # the target: 1.3 x bare forward + 12 s
        "cold_minus_bare_forward_s": round(cold["wall_s"] - forward_s, 2),
        "warm": warm,
        "store_mb_on_disk": store_mb,
    }
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
        return result
    print(f"images: {n} (10 Fashion-MNIST classes x {args.per_class}), load average {load[0]:.2f} {load[1]:.2f}")
    if len(timed) < n:
        print(f"bare forward pass and embed stage timed on {len(timed)} images, extrapolated x {scale:.2f}")
    print(f"one-time conversion to LiteRT (and SavedModel, when first): {conversion_s:.1f} s")
    print(f"bare LiteRT forward pass: {forward_s:.1f} s = {result['bare_forward_ms_per_image']:.2f} ms/image")
    print(
        f"embed stage (read + decode + resize + LiteRT + store): {embed_s:.1f} s = "
        f"{result['embed_ms_per_image']:.2f} ms/image; ratio {result['embed_vs_bare_forward']:.2f} "
        f"(target <= 1.3: {_verdict(result['embed_vs_bare_forward'], 1.3, 'x')}; goal 1.1)"
    )
    print(
        f"CPU time (robust to other processes' load): bare forward {forward_cpu_s:.1f} s, embed {embed_cpu_s:.1f} s; "
        f"ratio {result['embed_vs_bare_forward_cpu']:.2f}"
    )
    for name, r in (("cold", cold), ("warm", warm)):
        stages = ", ".join(f"{k} {v:.1f}" for k, v in r["seconds"].items() if k != "total")
        print(
            f"{name} run: wall {r['wall_s']:.1f} s (start-up {r['startup_s']:.1f}, {stages}), "
            f"peak RSS {r['peak_rss_mb']} MB, test accuracy {r['test_accuracy']:.3f}"
        )
    print(
        f"cold run {cold['wall_s']:.1f} s; target 1.3 x bare forward + {args.allowance:g} s = "
        f"{result['cold_limit_s']:.1f} s: {_verdict(cold['wall_s'], result['cold_limit_s'])}; "
        f"cold - bare forward = {result['cold_minus_bare_forward_s']:.1f} s"
    )
    warm_verdict = _verdict(warm["wall_s"], args.warm_target)
    print(f"warm run {warm['wall_s']:.1f} s; target <= {args.warm_target:g} s: {warm_verdict}")
    if args.rss_target_mb:
        most = max(cold["peak_rss_mb"], warm["peak_rss_mb"])
        print(f"peak RSS {most} MB; target <= {args.rss_target_mb:g} MB: {_verdict(most, args.rss_target_mb, 'MB')}")
    print(f"embedding store on disk {store_mb} MB")
    return result


def _verdict(value: float, target: float, unit: str = "s") -> str:
    """ "met", or how far over the target."""
    return "met" if value <= target else f"NOT met, {value - target:.1f} {unit} over"


if __name__ == "__main__":
    main()
