"""`classify` of many files: reading and decoding overlap inference, memory stays bounded, answers stay in
order, a server gets `--batch N` images per request, and people get a progress bar (issue 11)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from commands import cli

from app.inference.base import Prediction, Timings
from app.inference.pipeline import classify_files

# `trained` is the stand-in's: these tests check the classify pipeline, not the answers' quality


class SlowModel:
    """Decoding (``prepare``) and inference each take ``seconds``; records threads and how many wait decoded."""

    name = "slow"
    labels = ["a"]

    def __init__(self, seconds: float = 0.0):
        self.seconds = seconds
        self.prepare_threads, self.model_threads = set(), set()
        self.waiting = self.most_waiting = 0
        self.lock = threading.Lock()
        self.batches = []

    def prepare(self, data: bytes):
        self.prepare_threads.add(threading.get_ident())
        time.sleep(self.seconds)
        if data.startswith(b"bad"):
            return Prediction(error="cannot decode")
        with self.lock:
            self.waiting += 1
            self.most_waiting = max(self.most_waiting, self.waiting)
        return data

    def classify_prepared(self, items, top_k=5):
        self.model_threads.add(threading.get_ident())
        self.batches.append(len(items))
        time.sleep(self.seconds * len(items))
        with self.lock:
            self.waiting -= len(items)
        return [Prediction([(item.decode(), 1.0)], Timings()) for item in items]


@pytest.fixture
def files(tmp_path) -> list[Path]:
    paths = []
    for i in range(60):
        path = tmp_path / f"{i:03d}.png"
        path.write_bytes(b"bad" if i == 7 else f"img{i:03d}".encode())
        paths.append(path)
    return paths


def test_answers_come_in_order_and_a_bad_file_fails_alone(files, monkeypatch):
    monkeypatch.setattr("app.inference.pipeline.read_image_file", lambda path: path.read_bytes())
    model = SlowModel()
    out = list(classify_files(model, files, batch=4))
    assert [p.label for p in out] == [None if i == 7 else f"img{i:03d}" for i in range(60)]
    assert out[7].error == "cannot decode"
    assert model.model_threads == {threading.get_ident()}  # only the caller's thread touches the model
    assert threading.get_ident() not in model.prepare_threads  # decoding ran on the workers
    assert max(model.batches) == 4


def test_decoded_images_waiting_are_bounded(files, monkeypatch):
    """Memory stays flat: however many files, at most read_ahead decoded images wait for the model."""
    monkeypatch.setattr("app.inference.pipeline.read_image_file", lambda path: path.read_bytes())
    model = SlowModel()
    answers = classify_files(model, files * 20, batch=2, read_ahead=6)  # 1,200 files
    first = next(answers)
    time.sleep(0.2)  # a consumer that stalls: reading must not run away meanwhile
    assert first.label == "img000" and model.waiting <= 6
    assert sum(1 for _ in answers) == 1199
    assert model.most_waiting <= 6 + 2


def test_decoding_overlaps_inference(files, monkeypatch):
    monkeypatch.setattr("app.inference.pipeline.read_image_file", lambda path: path.read_bytes())
    files = files[:40]
    model = SlowModel(seconds=0.01)
    start = time.perf_counter()
    assert len(list(classify_files(model, files, batch=1))) == 40
    overlapped = time.perf_counter() - start
    serial = 40 * 2 * 0.01  # decode then infer, one after the other
    print(f"\n40 images, 10 ms decode + 10 ms inference each: {overlapped:.2f} s pipelined, {serial:.2f} s serial")
    assert overlapped < 0.75 * serial


def test_unreadable_files_are_their_own_errors(tmp_path):
    class Echo:
        name, labels = "echo", ["a"]

        def classify(self, images, top_k=5):
            return [Prediction([("a", 1.0)]) for _ in images]

    good = tmp_path / "x.png"
    good.write_bytes(b"\x89PNG")
    out = list(classify_files(Echo(), [good, tmp_path / "missing.png", good], batch=2))
    assert [p.error is None for p in out] == [True, False, True]


@pytest.mark.thorough  # over a second: a client in a child process
def test_classify_sends_batch_images_per_request(server, fm_dir):
    folder = fm_dir / "bag"
    files = sorted(folder.glob("*.png"))
    url = server.rest_url("clothes")
    runs = {}
    for batch in (1, 4):
        before = server.requests
        result = cli("classify", "--server", url, folder, "--json", "--batch", batch)
        assert result.returncode == 0, result.stderr[-2000:]
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        runs[batch] = (server.requests - before, [(r["path"], r["label"]) for r in rows])
    assert runs[1][1] == runs[4][1] and len(runs[1][1]) == len(files)
    opening = runs[1][0] - len(files)  # metadata-time calls (warm-up, class names): the same in both runs
    assert runs[4][0] - opening == -(-len(files) // 4)


@pytest.mark.thorough  # over a second: a client in a child process
def test_progress_bar_for_people_only(trained, fm_dir):
    folder = fm_dir / "trouser"
    count = len(list(folder.glob("*.png")))
    model = trained["models"] / "clothes"
    quiet = cli("classify", "--model", model, folder)  # stderr is a pipe: no bar unless asked
    assert quiet.returncode == 0 and f"/{count}" not in quiet.stderr
    shown = cli("classify", "--model", model, folder, "--progress")
    assert shown.returncode == 0 and f"{count}/{count}" in shown.stderr and "img" in shown.stderr
    assert len(shown.stdout.splitlines()) == count + 1  # a line per file and the summary, no bar in them
    as_json = cli("classify", "--model", model, folder, "--json", "--batch", "3")
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert len(rows) == count and all(r["error"] is None and r["label"] for r in rows)
    assert f"/{count}" not in as_json.stderr
