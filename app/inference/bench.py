"""Run a labeled folder through one or more backends and summarise accuracy and timings.

Example::

    files = labeled_files("test_images/", limit=200)
    bench(open_classifier("models/flowers", "tflite"), files)["total_ms"]["median"]

Ground truth is each file's class folder (the top one under the root, as in training).  Images go
one at a time so every timing is a single image's, as a user dropping files on the window would see
them.  Each file is read just before it is classified (never all up front), and a file that cannot be
read or decoded is counted and listed in ``failures`` while the run goes on.

``sweep`` is the load generator (``bench --concurrency 1,2,4``), modelled on Triton's perf_analyzer:
several requests in flight at once, each of ``batch`` images, warm-up thrown away, then measurement
windows (a duration or a request count) until the last three agree within 10 %::

    sweep(lambda: open_classifier(server="grpc://host:8500/flowers"), payloads,
          LoadSettings(concurrency=(1, 2, 4, 8), batch=4, count=50))
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path

import numpy as np

from app.imaging import Found, ImageError, find_images, read_image_file

from .base import Classifier, Prediction


def labeled_files(root: str | Path, limit: int | None = None, skipped: list | None = None) -> list[tuple[Path, str]]:
    """(image file, its class) under ``root``, interleaved across class folders so ``limit`` samples every class.

    The class is the top-level folder under ``root``, however deep the file sits (as training reads
    it: ``cat/2019/a.jpg`` is a cat), by the same discovery rule as training and ``classify``
    (``app.imaging.find_images``).

    Args:
        root: a folder of class folders.
        limit: at most this many files (None: all).
        skipped: when given, gets what was not used (hidden, unsupported, links, FIFOs, files directly in
            ``root``) as ``Found`` entries with reasons.

    Returns:
        (path, class) pairs.

    Raises:
        FileNotFoundError: ``root`` does not exist.
    """
    root = Path(root).expanduser()
    by_class: dict[str, list[tuple[Path, str]]] = {}
    for found in find_images([root]):
        parts = found.path.relative_to(root).parts
        if found.reason is None and len(parts) > 1:
            by_class.setdefault(parts[0], []).append((found.path, parts[0]))
        elif skipped is not None:
            skipped.append(found if found.reason else Found(found.path, "not inside a class folder"))
    interleaved = [p for group in zip_longest(*by_class.values()) for p in group if p is not None]
    return interleaved[:limit] if limit else interleaved


def summary(values: Sequence[float]) -> dict:
    """Mean, median, 95th percentile, min and max of timings, rounded to 0.001 ms (all None without values).

    The one definition of these numbers (the CLI, the Classify page and Compare use it): numpy's median and
    its ``"nearest"`` percentile, which is always one of the measured values, never a blend of two.

    Args:
        values: timings in ms.

    Returns:
        {"mean", "median", "p95", "min", "max"}: floats, or None each when ``values`` is empty.

    >>> summary([4.0, 1.0, 2.0, 3.0])
    {'mean': 2.5, 'median': 2.5, 'p95': 4.0, 'min': 1.0, 'max': 4.0}
    """
    if not len(values):
        return {"mean": None, "median": None, "p95": None, "min": None, "max": None}
    array = np.asarray(values, dtype=np.float64)
    stats = {
        "mean": array.mean(),
        "median": np.median(array),
        "p95": np.percentile(array, 95, method="nearest"),
        "min": array.min(),
        "max": array.max(),
    }
    return {name: round(float(value), 3) for name, value in stats.items()}


def bench(classifier: Classifier, files: Sequence[Path | tuple[Path, str]], backend: str | None = None) -> dict:
    """Classify ``files`` one at a time and summarise accuracy and timings.

    Args:
        classifier: any backend.
        files: ``labeled_files``' (path, class) pairs, or bare paths whose folder names the class.
        backend: the row's name (default: the classifier's).

    Returns:
        One JSON-ready row: backend, images, errors, accuracy (None when nothing was classified),
        unknown_rate (the share called none of the classes; None when the model cannot say),
        preprocess/inference/network/total ms ``summary``, mean request bytes, images/s, and
        ``failures`` [{path, error}].
    """
    labeled = [(Path(f[0]), f[1]) if isinstance(f, tuple) else (Path(f), Path(f).parent.name) for f in files]
    files = [path for path, _ in labeled]
    start = time.perf_counter()
    predictions = [_classify_file(classifier, path) for path in files]
    wall = time.perf_counter() - start
    ok = [(truth, p) for (_, truth), p in zip(labeled, predictions, strict=True) if p.error is None]
    correct = sum(1 for truth, p in ok if p.label == truth)
    return {
        "backend": backend or classifier.name,
        "images": len(files),
        "errors": len(files) - len(ok),
        "accuracy": round(correct / len(ok), 4) if ok else None,
        "unknown_rate": _unknown_rate([p for _, p in ok]),
        "preprocess_ms": summary([p.timings.decode_ms + p.timings.preprocess_ms for _, p in ok]),
        "inference_ms": summary([p.timings.inference_ms for _, p in ok]),
        "network_ms": summary([p.timings.network_ms for _, p in ok]),
        "total_ms": summary([p.timings.total_ms for _, p in ok]),
        "request_bytes_mean": round(float(np.mean([p.request_bytes for _, p in ok])), 1) if ok else None,
        "images_per_s": round(len(files) / wall, 2) if wall > 0 else None,
        "failures": [
            {"path": str(f), "error": p.error} for f, p in zip(files, predictions, strict=True) if p.error is not None
        ],
    }


def _unknown_rate(predictions: Sequence[Prediction]) -> float | None:
    """The share of ``predictions`` flagged unknown, or None when none of them carries the flag."""
    flags = [p.unknown for p in predictions if p.unknown is not None]
    return round(sum(flags) / len(flags), 4) if flags else None


def _classify_file(classifier: Classifier, path: Path) -> Prediction:
    """Read one file (only now, so memory stays at one image) and classify it; errors stay this file's."""
    try:
        data = read_image_file(path)
    except ImageError as exc:
        return Prediction(error=str(exc))
    return classifier.classify([data], top_k=1)[0]


# --- the load generator (``bench --concurrency ...``), after Triton's perf_analyzer -----------------------

PERCENTILES = (50, 90, 95, 99)
STAGES = ("decode", "preprocess", "inference", "network", "reply")
STABLE_WINDOWS = 3  # perf_analyzer's rule: the last three windows agree
DEFAULT_WINDOW_S = 2.0


def percentiles(values: Sequence[float]) -> dict:
    """p50, p90, p95, p99 (numpy's ``"nearest"``, always a measured value, as in ``summary``), max and mean.

    Args:
        values: latencies in ms.

    Returns:
        {"p50", "p90", "p95", "p99", "max", "mean"} rounded to 0.001 ms (all None without values).

    >>> percentiles([1.0, 2.0, 3.0, 4.0, 100.0])
    {'p50': 3.0, 'p90': 100.0, 'p95': 100.0, 'p99': 100.0, 'max': 100.0, 'mean': 22.0}
    """
    keys = [f"p{p}" for p in PERCENTILES] + ["max", "mean"]
    if not len(values):
        return dict.fromkeys(keys)
    array = np.asarray(values, dtype=np.float64)
    numbers = [*np.percentile(array, PERCENTILES, method="nearest"), array.max(), array.mean()]
    return {key: round(float(value), 3) for key, value in zip(keys, numbers, strict=True)}


def stable(windows: Sequence[dict], tolerance: float = 0.10) -> bool:
    """perf_analyzer's stability rule: the last three windows' throughput and p95 each within ``tolerance``.

    "Within" is max / min <= 1 + tolerance over the three; a window without a successful request is never stable.

    Args:
        windows: ``_measure_level``'s windows, each with ``images_per_s`` and ``p95_ms``.
        tolerance: 0.10 is 10 %.

    Returns:
        Whether the level may stop measuring.

    >>> stable([{"images_per_s": 100, "p95_ms": 10}, {"images_per_s": 105, "p95_ms": 10.5},
    ...         {"images_per_s": 99, "p95_ms": 10.9}])
    True
    >>> stable([{"images_per_s": 100, "p95_ms": 10}, {"images_per_s": 80, "p95_ms": 10},
    ...         {"images_per_s": 99, "p95_ms": 10}])
    False
    """
    last = windows[-STABLE_WINDOWS:]
    if len(last) < STABLE_WINDOWS:
        return False
    for key in ("images_per_s", "p95_ms"):
        values = [w[key] for w in last]
        if any(v is None or v <= 0 for v in values) or max(values) / min(values) > 1 + tolerance:
            return False
    return True


@dataclass(frozen=True)
class LoadSettings:
    """How ``sweep`` loads a backend (perf_analyzer's flags in brackets).

    Attributes:
        concurrency: requests in flight at once, one level after another (``--concurrency-range``).
        batch: images per request.
        duration_s: each measurement window lasts this long (time windows, ``--measurement-interval``) ...
        count: ... or ends once this many requests completed (count windows, ``--measurement-request-count``);
            with neither, windows of ``DEFAULT_WINDOW_S`` seconds.
        warmup: requests completed and thrown away before a level's first window (None: 2 per worker).
        max_windows: a level that is not stable after this many windows is reported as not stable
            (``--max-trials``); at least 3, the windows the stability rule compares.
        tolerance: the stability rule's allowance (``--stability-percentage`` / 100).
    """

    concurrency: tuple[int, ...] = (1,)
    batch: int = 1
    duration_s: float | None = None
    count: int | None = None
    warmup: int | None = None
    max_windows: int = 10
    tolerance: float = 0.10

    def __post_init__(self):
        if not self.concurrency or any(int(c) < 1 for c in self.concurrency):
            raise ValueError("concurrency levels must be whole numbers of at least 1")
        if self.batch < 1:
            raise ValueError("the batch must be at least 1 image")
        if self.duration_s is not None and self.count is not None:
            raise ValueError("give either a window duration or a request count, not both")
        if self.duration_s is None and self.count is None:
            object.__setattr__(self, "duration_s", DEFAULT_WINDOW_S)
        if self.duration_s is not None and not 0 < self.duration_s < float("inf"):
            raise ValueError("the window duration must be a positive number of seconds")
        if self.count is not None and self.count < 1:
            raise ValueError("the request count per window must be at least 1")
        if self.max_windows < STABLE_WINDOWS:
            raise ValueError(f"at least {STABLE_WINDOWS} windows are needed to judge stability")
        if self.warmup is not None and self.warmup < 0:
            raise ValueError("warm-up requests cannot be negative")


@dataclass
class _Level:
    """One concurrency level in progress: the workers append a record per finished request."""

    stop: threading.Event = field(default_factory=threading.Event)
    changed: threading.Condition = field(default_factory=threading.Condition)
    records: list = field(default_factory=list)  # (end time, latency ms, images ok, images, stage ms..., error)
    finished: int = 0


class _Worker:
    """One thread owning one classifier for the whole sweep (never two threads in one TensorFlow object).

    It opens the classifier itself, runs each level it is given until told to stop, and closes it at the end.
    """

    def __init__(self, opener: Callable[[], Classifier], index: int, payloads: Sequence[bytes], batch: int):
        self.payloads, self.batch, self.offset = payloads, batch, index * batch
        self.commands: queue.SimpleQueue = queue.SimpleQueue()
        self.opened = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, args=(opener,), name=f"load-{index}", daemon=True)
        self.thread.start()

    def _loop(self, opener) -> None:
        try:
            classifier = opener()
        except BaseException as exc:  # reported by sweep as the backend's one sentence
            self.error = exc
            self.opened.set()
            return
        self.opened.set()
        try:
            while (level := self.commands.get()) is not None:
                self._drive(classifier, level)
        finally:
            close = getattr(classifier, "close", None)
            if callable(close):
                with contextlib.suppress(Exception):  # a broken connection: nothing left to release
                    close()

    def _drive(self, classifier: Classifier, level: _Level) -> None:
        try:
            while not level.stop.is_set():
                images = [self.payloads[(self.offset + i) % len(self.payloads)] for i in range(self.batch)]
                self.offset += self.batch
                start = time.perf_counter()
                try:
                    predictions = classifier.classify(images, top_k=1)
                    error = next((p.error for p in predictions if p.error is not None), None)
                except Exception as exc:  # a server gone mid-run: this request's error, the sweep goes on
                    predictions, error = [], str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                end = time.perf_counter()
                ok = [p for p in predictions if p.error is None]
                stages = [sum(getattr(p.timings, f"{s}_ms") for p in ok) for s in STAGES]
                with level.changed:
                    level.records.append((end, (end - start) * 1e3, len(ok), len(images), *stages, error))
                    level.changed.notify_all()
                if error is not None and not predictions:
                    time.sleep(0.01)  # a refused connection fails at once: do not spin
        finally:
            with level.changed:
                level.finished += 1
                level.changed.notify_all()


def _window(records: Sequence[tuple], seconds: float) -> dict:
    """Throughput and latency of the requests that finished in one window."""
    good = [r for r in records if r[-1] is None]
    images = sum(r[2] for r in records)
    return {
        "seconds": round(seconds, 3),
        "requests": len(records),
        "images_per_s": round(images / seconds, 2) if seconds > 0 else None,
        "requests_per_s": round(len(good) / seconds, 2) if seconds > 0 else None,
        "p95_ms": percentiles([r[1] for r in good])["p95"],
    }


def _measure_level(
    workers: Sequence[_Worker], settings: LoadSettings, cancelled: Callable[[], bool] = lambda: False
) -> dict:
    """Load the backend with ``len(workers)`` requests in flight and measure windows until stable.

    Args:
        workers: the opened workers to use, one request in flight each.
        settings: windows, warm-up, stability.
        cancelled: polled while waiting; True ends the level early (its numbers are then partial).

    Returns:
        One JSON-ready row (see ``sweep``).
    """
    level = _Level()
    concurrency = len(workers)
    warmup = settings.warmup if settings.warmup is not None else 2 * concurrency
    for worker in workers:
        worker.commands.put(level)

    def wait_for(done: Callable[[], bool], until: float | None = None) -> None:
        with level.changed:
            while not done() and not cancelled():
                timeout = 0.1 if until is None else min(0.1, until - time.perf_counter())
                if timeout <= 0:
                    return
                level.changed.wait(timeout)

    wait_for(lambda: len(level.records) >= warmup)
    windows, first = [], len(level.records)
    starts = first
    while len(windows) < settings.max_windows and not cancelled():
        begin = time.perf_counter()
        if settings.duration_s is not None:
            wait_for(lambda: False, until=begin + settings.duration_s)
        else:
            wait_for(lambda s=starts: len(level.records) >= s + settings.count)
        end = time.perf_counter()
        with level.changed:
            ends = len(level.records)
        windows.append({**_window(level.records[starts:ends], end - begin), "_range": (starts, ends)})
        starts = ends
        if stable(windows, settings.tolerance):
            break
    level.stop.set()
    wait_for(lambda: level.finished >= concurrency)
    used = windows[-STABLE_WINDOWS:]
    records = [r for w in used for r in level.records[w["_range"][0] : w["_range"][1]]]
    seconds = sum(w["seconds"] for w in used)
    good = [r for r in records if r[-1] is None]
    errors = [r[-1] for r in records if r[-1] is not None]
    latency = percentiles([r[1] for r in good])
    return {
        "concurrency": concurrency,
        "batch": settings.batch,
        "images_per_s": round(sum(r[2] for r in records) / seconds, 2) if seconds > 0 else None,
        "requests_per_s": round(len(good) / seconds, 2) if seconds > 0 else None,
        **{f"{key}_ms": value for key, value in latency.items()},
        **{
            f"{stage}_ms": round(float(np.mean([r[4 + i] for r in good])), 3) if good else None
            for i, stage in enumerate(STAGES)
        },
        "requests": len(records),
        "errors": len(errors),
        "error_examples": sorted(set(errors))[:3],
        "windows": len(windows),
        "stable": stable(windows, settings.tolerance),
        "warmup_requests": warmup,
        "window_images_per_s": [w["images_per_s"] for w in windows],
        "window_p95_ms": [w["p95_ms"] for w in windows],
    }


def load_payloads(files: Sequence[Path | tuple[Path, str]], limit: int = 256) -> tuple[list[bytes], list[dict]]:
    """The encoded bytes of up to ``limit`` files, held in memory so reading never slows the load.

    Args:
        files: ``labeled_files``' pairs or paths.
        limit: at most this many are read (requests cycle through them).

    Returns:
        (payloads, failures [{path, error}] for files that could not be read).
    """
    payloads, failures = [], []
    for item in files:
        if len(payloads) >= limit:
            break
        path = Path(item[0] if isinstance(item, tuple) else item)
        try:
            payloads.append(read_image_file(path))
        except ImageError as exc:
            failures.append({"path": str(path), "error": str(exc)})
    return payloads, failures


def sweep(
    opener: Callable[[], Classifier],
    payloads: Sequence[bytes],
    settings: LoadSettings,
    backend: str = "",
    on_level: Callable[[dict], None] | None = None,
    cancelled: Callable[[], bool] = lambda: False,
) -> list[dict]:
    """Run each concurrency level against one backend, perf_analyzer style.

    Each level has as many worker threads as its concurrency, each with its own classifier made by ``opener``
    on that thread (a TFLite interpreter, a SavedModel, a gRPC channel or HTTP connection per thread), each
    sending one request of ``settings.batch`` images after another. Warm-up requests are thrown away, then
    windows are measured until the last three agree within the tolerance, or ``max_windows`` have passed
    (then ``stable`` is False). Workers are kept from one level to the next, so a model is opened at most
    max(concurrency) times.

    Example::

        sweep(lambda: open_classifier("models/flowers"), payloads, LoadSettings((1, 2, 4), count=50))

    Args:
        opener: makes one classifier; called once on each worker thread.
        payloads: encoded images, cycled through.
        settings: levels, batch, windows.
        backend: the rows' ``backend`` name.
        on_level: called with each row as soon as its level is done.
        cancelled: polled; True stops after the current window.

    Returns:
        One row per level: backend, concurrency, batch, images_per_s, requests_per_s, p50/p90/p95/p99/max/mean
        request latency in ms, the mean per request of each client-side stage (decode, preprocess = encoding
        the request for servers, inference, network = network and server, reply = decoding the reply) in ms,
        requests, errors, error_examples, windows, stable, warmup_requests, and each window's throughput and p95.

    Raises:
        ModelError: a classifier could not be opened (the first worker's sentence).
        ValueError: no payloads.
    """
    if not payloads:
        raise ValueError("no readable images to send")
    workers: list[_Worker] = []
    rows = []
    try:
        for concurrency in settings.concurrency:
            if cancelled():
                break
            while len(workers) < concurrency:
                workers.append(_Worker(opener, len(workers), payloads, settings.batch))
            for worker in workers[:concurrency]:
                worker.opened.wait()
                if worker.error is not None:
                    raise worker.error
            row = {"backend": backend, **_measure_level(workers[:concurrency], settings, cancelled)}
            rows.append(row)
            if on_level is not None:
                on_level(row)
    finally:
        for worker in workers:
            worker.commands.put(None)
        for worker in workers:
            worker.thread.join(30)
    return rows


CSV_COLUMNS = (
    "backend",
    "concurrency",
    "batch",
    "images_per_s",
    "requests_per_s",
    *(f"p{p}_ms" for p in PERCENTILES),
    "max_ms",
    "mean_ms",
    *(f"{stage}_ms" for stage in STAGES),
    "requests",
    "errors",
    "windows",
    "stable",
)
