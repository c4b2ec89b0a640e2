"""`bench` as a load generator (issue 11): concurrency levels, batches, windows, warm-up, stability.

The sweep's rules are checked with stand-in classifiers whose timing is known (fast, exact); the command
is then run for real against TFLite and the TF Serving double.
"""

from __future__ import annotations

import csv
import json
import threading
import time

import pytest
from commands import cli

from app.inference.base import Prediction, Timings
from app.inference.bench import CSV_COLUMNS, LoadSettings, sweep

# `trained` is the stand-in's: these tests check the load sweep, not the answers' quality


class Sleeper:
    """A classifier taking ``seconds(call)`` per request, recording which threads call it and whether two overlap."""

    name = "sleeper"
    labels = ["a"]
    opened: list = []

    def __init__(self, seconds=lambda call: 0.005, fail_every: int = 0):
        self.seconds, self.fail_every = seconds, fail_every
        self.calls, self.threads, self.overlaps, self.busy = 0, set(), 0, False
        self.opened_on = threading.get_ident()
        self.closed_on = None
        Sleeper.opened.append(self)

    def classify(self, images, top_k=5):
        if self.busy:
            self.overlaps += 1
        self.busy = True
        self.threads.add(threading.get_ident())
        self.calls += 1
        try:
            time.sleep(self.seconds(self.calls))
            if self.fail_every and self.calls % self.fail_every == 0:
                raise ConnectionError("the server went away")
            return [Prediction([("a", 1.0)], Timings(inference_ms=1.0, total_ms=1.0), len(b)) for b in images]
        finally:
            self.busy = False

    def close(self):
        self.closed_on = threading.get_ident()


@pytest.fixture(autouse=True)
def fresh():
    Sleeper.opened = []


def test_levels_scale_and_each_classifier_stays_on_its_own_thread():
    rows = sweep(Sleeper, [b"x"], LoadSettings(concurrency=(1, 4), count=12, max_windows=4), "sleeper")
    assert [r["concurrency"] for r in rows] == [1, 4]
    one, four = rows
    assert four["images_per_s"] > 2 * one["images_per_s"]  # sleeping releases the GIL: 4 in flight, ~4x
    assert len(Sleeper.opened) == 4  # workers are kept between levels: max(concurrency) classifiers
    for clf in Sleeper.opened:
        assert len(clf.threads) == 1 and clf.overlaps == 0
        assert clf.threads == {clf.opened_on} == {clf.closed_on}  # opened, used and closed on one thread
    for row in rows:
        assert set(CSV_COLUMNS) <= set(row)
        assert row["p50_ms"] <= row["p90_ms"] <= row["p95_ms"] <= row["p99_ms"] <= row["max_ms"]
        assert row["p50_ms"] >= 5.0  # at least the 5 ms each request sleeps
        assert row["errors"] == 0 and row["inference_ms"] == 1.0


def test_warm_up_is_thrown_away_and_windows_count_requests():
    rows = sweep(Sleeper, [b"x"], LoadSettings(concurrency=(2,), count=10, warmup=7, max_windows=3), "s")
    row = rows[0]
    assert row["warmup_requests"] == 7 and row["windows"] == 3
    assert row["requests"] >= 30  # the three windows measured, each of at least 10 requests
    calls = sum(c.calls for c in Sleeper.opened)
    assert calls >= row["requests"] + 7


def test_batch_sends_several_images_per_request():
    row = sweep(Sleeper, [b"a", b"b", b"c"], LoadSettings(batch=3, count=10, max_windows=3), "s")[0]
    assert row["images_per_s"] == pytest.approx(3 * row["requests_per_s"], rel=0.02)
    assert row["inference_ms"] == 3.0  # summed over the request's three images


def test_a_level_that_never_settles_says_so():
    """Each request 1 ms slower than the last: throughput and p95 drift, so no three windows agree."""
    row = sweep(
        lambda: Sleeper(seconds=lambda call: call / 1000), [b"x"], LoadSettings(count=6, warmup=0, max_windows=4), "s"
    )[0]
    assert row["stable"] is False and row["windows"] == 4
    assert row["window_p95_ms"][-1] > 1.5 * row["window_p95_ms"][0]


def test_a_steady_level_stops_at_three_windows():
    """10 ms per request every time; the tolerance is wide (x4) so a loaded machine's scheduling jitter cannot
    keep the level from settling: what is tested is that a settled level stops at the third window."""
    settings = LoadSettings(duration_s=0.3, max_windows=6, tolerance=3.0)
    row = sweep(lambda: Sleeper(seconds=lambda call: 0.01), [b"x"], settings, "s")[0]
    assert row["stable"] is True and row["windows"] == 3


def test_failed_requests_are_counted_not_fatal():
    row = sweep(lambda: Sleeper(fail_every=3), [b"x"], LoadSettings(count=9, warmup=0, max_windows=3), "s")[0]
    assert row["errors"] == pytest.approx(row["requests"] / 3, abs=1)
    assert row["error_examples"] == ["the server went away"]
    assert row["requests_per_s"] < row["requests"] / (row["requests"] * 0.005)  # only the good ones count


def test_a_backend_that_cannot_open_is_one_error():
    from app.inference.base import ModelError

    def refuse():
        raise ModelError("no such model")

    with pytest.raises(ModelError, match="no such model"):
        sweep(refuse, [b"x"], LoadSettings(concurrency=(1, 2), count=5), "s")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"concurrency": (0,)},
        {"batch": 0},
        {"count": 5, "duration_s": 1.0},  # both
        {"count": 0},
        {"max_windows": 2},
        {"duration_s": float("nan")},
    ],
)
def test_settings_refuse_nonsense(kwargs):
    with pytest.raises(ValueError):
        LoadSettings(**kwargs)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--concurrency", "1,x"], "--concurrency takes whole numbers"),
        (["--concurrency", "0"], "at least 1"),
        (["--batch", "0"], "batch must be at least 1"),
        (["--count", "5", "--duration", "1"], "not allowed with"),
        (["--max-windows", "2"], "at least 3 windows"),
        (["--duration", "-1"], "--duration must be"),
    ],
)
def test_bench_load_flags_are_checked(tmp_path, flags, message):
    (tmp_path / "a").mkdir()
    result = cli("bench", tmp_path, "--model", tmp_path, *flags)
    assert result.returncode == 2 and message in result.stderr


@pytest.mark.thorough  # over a second: a load sweep
def test_bench_sweeps_tflite_and_a_server_and_writes_csv(trained, server, fm_dir, tmp_path):
    rest = server.rest_url("clothes")
    out = tmp_path / "sweep.csv"
    args = ["bench", fm_dir, "--model", trained["models"] / "clothes", "--backends", f"tflite,{rest}"]
    load = ["--concurrency", "1,2", "--batch", "2", "--count", "6", "--max-windows", "3", "--limit", "20"]
    result = cli(*args, *load, "--json", "--csv", out)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["backend"], r["concurrency"]) for r in rows] == [("tflite", 1), ("tflite", 2), (rest, 1), (rest, 2)]
    for row in rows:
        assert row["batch"] == 2 and row["errors"] == 0 and row["requests"] >= 18
        assert row["images_per_s"] == pytest.approx(2 * row["requests_per_s"], rel=0.02)
    local, remote = rows[0], rows[2]
    assert local["inference_ms"] > 0 and local["network_ms"] == 0
    assert remote["network_ms"] > 0 and remote["preprocess_ms"] > 0 and remote["reply_ms"] > 0
    with open(out, newline="") as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0]) == list(CSV_COLUMNS)
    assert [(r["backend"], int(r["concurrency"])) for r in table] == [(r["backend"], r["concurrency"]) for r in rows]
    assert float(table[3]["p95_ms"]) == rows[3]["p95_ms"]

    human = cli(*args[:-1], "tflite", *load)
    assert human.returncode == 0, human.stderr[-2000:]
    lines = human.stdout.splitlines()
    assert lines[0].startswith("Load sweep: 20 images cycled, 2 per request, windows of 6 requests")
    assert "p95" in lines[1] and lines[2].split()[:2] == ["tflite", "1"] and "inference" in lines[2]


def test_classic_bench_writes_csv_too(trained, fm_dir, tmp_path):
    out = tmp_path / "bench.csv"
    result = cli(
        "bench", fm_dir, "--model", trained["models"] / "clothes", "--backends", "tflite", "--limit", "5", "--csv", out
    )
    assert result.returncode == 0, result.stderr[-2000:]
    with open(out, newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["backend"] == "tflite" and row["images"] == "5"
    assert float(row["total_ms_min"]) <= float(row["total_ms_median"]) <= float(row["total_ms_max"])
