"""The hostile corpus (tests/hostile.py) through every reader: scan, training, classify, bench.

Every file must be used, or an error/skip that names it with a plain reason; the run always goes on.
Each test prints its tally: files tried, crashes, files silently lost (the goal is 0 crashes, 0 lost).
"""

import functools
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from commands import cli
from hostile import BAD_CLASS_NAMES, HOSTILE_CLASS, outcome_of, write_corpus
from images import good_images
from PIL import Image

from app import imaging as preprocess
from app.core.dataset import scan
from app.imaging import read_image_file

pytestmark = pytest.mark.timeout(600)  # a FIFO or /dev/zero read by mistake must fail the test, not hang it


cli = functools.partial(cli, text=False)  # the corpus's odd names may not be valid UTF-8


def _tally(where: str, cases, outcomes: dict, crashes: int = 0) -> dict:
    """Counts for the closing note; a crash is a run ended by an exception or a non-zero exit."""
    counts = Counter(outcomes.values())
    tally = {
        "kinds": len({c.kind for c in cases}),
        "files_tried": len(cases),
        "crashes": crashes,
        "silently_lost": counts["lost"],
        **{k: v for k, v in counts.items() if k != "lost"},
    }
    print(f"\nhostile corpus through {where}: {json.dumps(tally)}")
    return tally


def _check(case, outcome: str, reason: str, expect: str) -> None:
    if expect == "either":
        assert outcome in ("used", "skipped", "error"), (case, outcome)
    else:
        assert outcome == expect, (case.kind, str(case.path), outcome, reason)
    if outcome != "used":
        assert reason and "\n" not in reason, (case.kind, reason)
        if expect != "either" and case.word:
            assert case.word in reason, (case.kind, reason)


def _good_classes(root: Path, per_class: int = 4) -> None:
    images = list(good_images().values())
    for name in ("cats", "dogs"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            (root / name / f"{name}_{i}.jpg").write_bytes(images[i % 3])


def test_decoder_errors_are_one_sentence_and_big_photos_are_used(tmp_path):
    """Whatever Pillow raises (OSError, ValueError, SyntaxError, ...) becomes an ImageError; 108 MP decodes."""
    cases = [c for c in write_corpus(tmp_path, fuzz=300) if c.expect != "skipped"]
    crashes = []
    for case in cases:
        try:
            data = read_image_file(case.path)
            pixels = preprocess.decode(data, (224, 224))
            outcome, reason = "used", ""
            assert pixels.ndim == 3 and pixels.shape[2] == 3
        except preprocess.ImageError as exc:
            outcome, reason = "error", str(exc)
        except Exception as exc:  # noqa: BLE001 - exactly what must never happen
            crashes.append((case.kind, case.path.name, f"{type(exc).__name__}: {exc}"))
            continue
        _check(case, outcome, reason, "used" if case.expect == "used" else case.expect)
    print(f"\ndecoder: {len(cases)} files tried, {len(crashes)} crashes")
    assert not crashes, crashes[:10]


@pytest.mark.thorough  # over a second: the whole hostile corpus
def test_scan_uses_or_lists_every_hostile_file(tmp_path):
    root = tmp_path / "data"
    _good_classes(root)
    cases = write_corpus(root, fuzz=300)
    data = scan(root)
    used = {item.path for item in data.items}
    skipped = {s.path: s.reason for s in data.skipped}
    outcomes = {}
    for case in cases:
        outcome, reason = outcome_of(case.path, used, skipped)
        outcomes[case.path] = outcome
        _check(case, outcome, reason, case.scan_expect)
    assert data.classes == ["cats", "dogs", HOSTILE_CLASS]
    for name in BAD_CLASS_NAMES:
        assert "cannot be a class" in skipped[root / name]
    assert sum("was left out" in note for note in data.warnings) == len(BAD_CLASS_NAMES)
    tally = _tally("scan", cases, outcomes)
    assert tally["silently_lost"] == 0


@pytest.mark.thorough
def test_training_on_good_images_mixed_with_the_corpus(tmp_path, fm_dir, cache_dir, standin_backbone):
    """A real `train --json` run: completes, names every skipped file, labels.txt has only safe names."""
    root = tmp_path / "mixed"
    for name in ("trouser", "sneaker"):
        shutil.copytree(fm_dir / name, root / name)
    cases = write_corpus(root, fuzz=60)
    where = ("--cache-dir", cache_dir, "--backbone", standin_backbone)
    result = cli("train", root, "-o", tmp_path / "models", "--json", "--tflite", "none", *where, timeout=900)
    if result.returncode != 0:
        print(f"\ntraining: {len(cases)} hostile files tried, 1 crash (exit {result.returncode})")
    assert result.returncode == 0, result.stderr[-2000:]
    events = [json.loads(line) for line in result.stdout.decode().splitlines()]
    dataset = next(e for e in events if e["event"] == "dataset")
    skipped = {Path(s["path"]): s["reason"] for s in dataset["skipped"]}
    assert len(skipped) == dataset["skipped_count"]
    for case in cases:
        listed = outcome_of(case.path, set(), skipped)[0] == "skipped"
        assert listed == (case.scan_expect == "skipped") or case.scan_expect == "either", (case.kind, str(case.path))
    done = events[-1]
    assert done["event"] == "done"
    labels = (Path(done["model_dir"]) / "assets" / "labels.txt").read_text(encoding="utf-8").splitlines()
    assert labels == [HOSTILE_CLASS, "sneaker", "trouser"]
    fm_count = sum(len(list((fm_dir / name).iterdir())) for name in ("trouser", "sneaker"))
    expected_used = fm_count + sum(
        1 for c in cases if c.scan_expect == "used" or (c.scan_expect == "either" and c.path not in skipped)
    )
    lost = expected_used - dataset["images"]
    print(
        f"\ntraining: {len(cases)} hostile files tried, {dataset['images']} images used, {len(skipped)} skipped, "
        f"0 crashes, {lost} silently lost"
    )
    assert lost == 0


def _rows_by_path(stdout: bytes) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    for line in stdout.decode().splitlines():
        row = json.loads(line)
        rows.setdefault(row["path"], []).append(row)
    return rows


@pytest.mark.thorough  # over a second: a client in a child process
def test_classify_dir_gives_every_file_one_row(trained, tmp_path):
    root = tmp_path / "photos"
    cases = write_corpus(root, fuzz=300)
    result = cli("classify", "--model", trained["models"] / "clothes", root, "--json")
    rows = _rows_by_path(result.stdout)
    outcomes = {}
    for case in cases:
        owner = next((p for p in (case.path, *case.path.parents) if str(p) in rows), None)
        row = rows[str(owner)][0] if owner else None
        outcomes[case.path] = (
            "lost" if row is None else "skipped" if row.get("skipped") else "error" if row["error"] else "used"
        )
    tally = _tally("classify DIR --json", cases, outcomes, crashes=int(result.returncode != 0))
    assert result.returncode == 0, result.stderr[-2000:]
    assert all(len(r) == 1 for r in rows.values())
    assert len({frozenset(r[0]) for r in rows.values()}) == 1  # skipped rows have the same keys as the rest
    for case in cases:
        owner = next(p for p in (case.path, *case.path.parents) if str(p) in rows)
        row = rows[str(owner)][0]
        _check(case, outcomes[case.path], row["error"], case.expect)
        if outcomes[case.path] == "used":
            assert row["label"] and row["top_k"], row
    assert tally["silently_lost"] == 0


def test_classify_named_fifo_and_device_link_are_errors_not_hangs(trained, tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")
    os.symlink("/dev/zero", tmp_path / "zero.jpg")
    result = cli(
        "classify",
        "--model",
        trained["models"] / "clothes",
        tmp_path / "pipe.jpg",
        tmp_path / "zero.jpg",
        "--json",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-1000:]
    rows = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [Path(r["path"]).name for r in rows] == ["pipe.jpg", "zero.jpg"]
    assert all("not a regular file" in r["error"] for r in rows)


def test_printed_names_and_labels_are_escaped(trained, tmp_path):
    """File names with escape sequences and labels from metadata.json never reach the terminal raw."""
    model = tmp_path / "model" / "1"
    shutil.copytree(trained["version_dir"], model)
    meta = json.loads((model / "metadata.json").read_text())
    meta["labels"] = [f"\x1b]0;pwned\x07label{i}\x1b[2J" for i in range(len(meta["labels"]))]
    (model / "metadata.json").write_text(json.dumps(meta))
    photos = tmp_path / "photos"
    photos.mkdir()
    jpeg = good_images()["rgb.jpg"]
    for name in ("\x1b[31mred\x1b[0m.jpg", "new\nline.jpg", os.fsdecode(b"caf\xe9.jpg")):
        (photos / name).write_bytes(jpeg)
    (photos / "bad\x1b[2J.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (photos / "odd.\x1b[2Jext").write_bytes(b"")  # skipped: the reason quotes the extension
    result = cli("classify", "--model", model, photos)
    assert result.returncode == 0, result.stderr[-1000:]
    out = result.stdout.decode("utf-8")  # strict: an undecodable byte must not reach the terminal either
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b[31mred\\x1b[0m.jpg" in out and "new\\x0aline.jpg" in out and "caf\\xe9.jpg" in out
    assert "\\x1b]0;pwned\\x07label" in out and "error:" in out
    assert "not a supported image file (.\\x1b[2Jext)" in out
    assert len(out.splitlines()) == 6  # 5 rows + the summary: a newline in a name does not add a line


@pytest.mark.thorough  # over a second: a client in a child process
def test_bench_completes_and_counts_errors(trained, fm_dir, tmp_path):
    """`bench` over a labeled folder holding the corpus: finishes, one error per bad file, none lost."""
    root = tmp_path / "labeled"
    for name in ("trouser", "sneaker"):
        (root / name).mkdir(parents=True)
        for path in sorted((fm_dir / name).iterdir())[:5]:
            shutil.copy(path, root / name)
    cases = write_corpus(root, fuzz=100)
    result = cli("bench", root, "--model", trained["models"] / "clothes", "--backends", "tflite", "--json")
    if result.returncode != 0:
        print(f"\nbench: {len(cases) + 10} files, 1 crash (exit {result.returncode})")
    assert result.returncode == 0, result.stderr[-2000:]
    row = json.loads(result.stdout.decode().splitlines()[-1])
    lost = 10 + len(cases) - row["images"] - row["skipped_files"]  # the hidden folder: one entry for its one file
    print(
        f"\nbench: {10 + len(cases)} files, {row['images']} tried, {row['errors']} errors, 0 crashes, "
        f"{row['skipped_files']} skipped, {lost} silently lost"
    )
    tried = [c for c in cases if c.expect != "skipped"]
    errors = [c for c in cases if c.expect == "error"]
    fuzz_errors = sum(1 for f in row["failures"] if "fuzz" in f["path"])
    assert row["images"] == 10 + len(tried)
    assert row["errors"] == len(errors) + fuzz_errors
    failed = {f["path"] for f in row["failures"]}
    assert {str(c.path) for c in errors} <= failed
    assert lost == 0


def test_bench_truth_is_the_class_folder_however_deep(trained, fm_dir, tmp_path):
    """`cat/2019/a.jpg` is a cat, as in training (not a '2019'); a file loose in the root is skipped, named."""
    root = tmp_path / "labeled"
    for name, sub in (("trouser", "2019/summer"), ("sneaker", "")):
        (root / name / sub).mkdir(parents=True)
        for path in sorted((fm_dir / name).iterdir())[:6]:
            shutil.copy(path, root / name / sub)
    shutil.copy(sorted((fm_dir / "sneaker").iterdir())[0], root / "loose.png")
    result = cli("bench", root, "--model", trained["models"] / "clothes", "--backends", "tflite", "--json")
    assert result.returncode == 0, result.stderr[-1000:]
    row = json.loads(result.stdout.decode().splitlines()[-1])
    assert row["images"] == 12 and row["errors"] == 0 and row["skipped_files"] == 1
    assert row["accuracy"] >= 0.75  # the trained model knows trousers from sneakers; '2019' would score 0.5
    human = cli("bench", root, "--model", trained["models"] / "clothes", "--backends", "tflite").stdout.decode()
    assert f"skipped {root / 'loose.png'}: not inside a class folder" in human


@pytest.mark.thorough  # over a second: a client in a child process
def test_bench_reads_each_file_only_when_it_is_used(trained, tmp_path):
    """Peak memory must not grow with the folder: 24 x 8 MB files would add 192 MB if read up front."""

    def peak_rss_mb(folder: Path) -> float:
        script = (
            "import resource, sys; from app.cli import main; rc = main(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, file=sys.stderr); sys.exit(rc)"
        )
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                script,
                "bench",
                folder,
                "--model",
                trained["models"] / "clothes",
                "--backends",
                "tflite",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-1000:]
        return float(result.stderr.strip().splitlines()[-1])

    small, large = tmp_path / "small", tmp_path / "large"
    for root, count in ((small, 2), (large, 24)):
        for c in ("a", "b"):
            (root / c).mkdir(parents=True)
            for i in range(count // 2):
                (root / c / f"{i}.jpg").write_bytes(b"\0" * (8 * 2**20))  # not an image: fails fast
    growth = peak_rss_mb(large) - peak_rss_mb(small)
    print(f"\nbench peak memory growth for 24 x 8 MB files: {growth:.0f} MB")
    assert growth < 80


def test_an_image_changed_after_the_scan_is_left_out_not_fatal(tmp_path, cache_dir, standin_backbone):
    """A file replaced by junk between the scan and the embed stage is skipped with a warning naming it.

    With --test-percent 0 too: an empty split once ended the embed stage ("need at least one array").
    """
    from app.core.training import TrainSettings, run

    rng = np.random.default_rng(20261125)  # fresh pixels: not in the shared embedding cache
    root = tmp_path / "data"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / c / f"{c}{i}.png")
    victim = root / "a" / "a3.png"
    seen = []

    def sink(event):
        seen.append(event)
        if event["event"] == "dataset":
            victim.write_bytes(b"replaced while training")

    done = run(
        TrainSettings(
            str(root),
            str(tmp_path / "models"),
            name="changed",
            cache_dir=str(cache_dir),
            backbone=standin_backbone,
            validation_percent=20,
            test_percent=0,
            tflite="none",
        ),
        on_event=sink,
    )
    warnings = [e["message"] for e in seen if e["event"] == "warning"]
    assert any(str(victim) in w and "changed after the scan" in w for w in warnings), warnings
    meta = json.loads((Path(done["model_dir"]) / "metadata.json").read_text())
    assert meta["skipped_files"] == 1 and sum(meta["split_sizes"].values()) == 15
    assert meta["split_sizes"]["test"] == 0 and meta["metrics"]["test_accuracy"] is None


@pytest.mark.thorough  # over a second: a training in a child process
def test_training_progress_prints_names_escaped(tmp_path, fm_dir, cache_dir, standin_backbone):
    """The human-readable `train` output: skipped names, reasons and warnings never print raw control bytes."""
    root = tmp_path / "data"
    for name in ("trouser", "sneaker"):
        (root / name).mkdir(parents=True)
        for path in sorted((fm_dir / name).iterdir())[:10]:
            shutil.copy(path, root / name)
    (root / "trouser" / "\x1b[31mred\x1b]0;owned\x07.jpg").write_bytes(b"junk")
    (root / "trouser" / os.fsdecode(b"caf\xe9.jpg")).write_bytes(b"junk")
    (root / "esc\x1b[2Jape").mkdir()
    where = ("--cache-dir", cache_dir, "--backbone", standin_backbone)
    result = cli("train", root, "-o", tmp_path / "models", "--tflite", "none", *where, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    err = result.stderr.decode("utf-8")  # strict: undecodable name bytes are escaped too
    assert "\x1b" not in err and "\x07" not in err
    assert "\\x1b[31mred\\x1b]0;owned\\x07.jpg" in err and "caf\\xe9.jpg" in err
    assert "esc\\x1b[2Jape" in err and "3 skipped" in err


def test_usage_errors_print_names_escaped(tmp_path):
    missing = tmp_path / os.fsdecode(b"no\xffpe\x1b[31m")
    result = cli("classify", "--model", tmp_path, missing, timeout=120)
    err = result.stderr.decode("utf-8")
    assert result.returncode == 2 and "\x1b" not in err
    assert err.strip().endswith("no such file or folder: " + str(tmp_path) + "/no\\xffpe\\x1b[31m")
