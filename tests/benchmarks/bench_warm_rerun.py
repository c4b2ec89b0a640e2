"""A warm retrain, stage by stage (issue 11): ``train --json`` rerun on a folder kept by ``bench_embed.py --keep``.

    .venv/bin/python tests/benchmarks/bench_warm_rerun.py /tmp/bench-embed-XXXX [--runs 2]

Every embedding is cached there, so this is the "warm rerun" of bench_embed alone, without its cold parts.
Prints each stage event with its arrival second, the done event's stage seconds, the wall time, the child's
CPU seconds (all its threads: steadier than wall time on a shared machine) and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def rerun(work: Path) -> dict:
    before, start = os.times(), time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "train", str(work / "fm"), "-o", str(work / "models"), "--name", "fm"]
        + ["--cache-dir", str(work / "cache"), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    last = {}
    for line in proc.stdout:
        last = json.loads(line)
        if last.get("event") == "stage":
            print(f"{time.perf_counter() - start:7.2f}  {last['stage']}: {last.get('message', '')}")
    if proc.wait() != 0:
        raise RuntimeError(f"train failed: {json.dumps(last)[:500]}")
    after = os.times()
    return {
        "wall_s": round(time.perf_counter() - start, 2),
        "child_cpu_s": round(
            after.children_user + after.children_system - before.children_user - before.children_system, 2
        ),
        "seconds": last["seconds"],
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("work", type=Path, help="a folder kept by bench_embed.py --keep (fm/, models/, cache/)")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args(argv)
    for _ in range(args.runs):
        print(json.dumps(rerun(args.work)))


if __name__ == "__main__":
    main()
