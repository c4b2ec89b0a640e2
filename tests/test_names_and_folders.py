"""Names and output folders: a model name stays inside MODELS_DIR, bad folders and flags fail before any
work, temporary folders of other machines survive clean-up, and bad cache shards never stop a run."""

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import fashion_mnist
import numpy as np
import pytest
from commands import cli
from standin import FEATURES

from app.cli import main
from app.core import backbones, features
from app.core.atomic import host_key, remove_stale_temps, temp_folder
from app.core.export import OutputError, check_name, check_output
from app.core.training import TrainSettings, run

REPO = Path(__file__).resolve().parents[1]
BAD_NAMES = [
    "../escaped",
    "ABSOLUTE",
    "..",
    ".",
    "a/b/c",
    'say"cheese',
    "it's",
    "new\nline",
    "with space",
    ".hidden",
    "back\\slash",
    "x" * 101,
    "",
    "models.config",
    "tab\there",
    "caf\u00e9",
]


def tree(root: Path) -> list[str]:
    """Every path under ``root``, hidden ones included, with its size for files."""
    return sorted(f"{p.relative_to(root)}:{p.stat().st_size if p.is_file() else 'dir'}" for p in root.rglob("*"))


def dead_pid() -> int:
    """The pid of a process that has just ended."""
    return int(
        subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
        ).stdout
    )


@pytest.fixture
def no_tf(tmp_path_factory):
    """Environment for a CLI child in which importing TensorFlow leaves a marker (and fails)."""
    fake = tmp_path_factory.mktemp("fake_tf")
    (fake / "tensorflow").mkdir()
    marker = fake / "tensorflow_was_imported"
    (fake / "tensorflow" / "__init__.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nraise ImportError('TensorFlow is blocked in this test')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), str(REPO), os.environ.get("PYTHONPATH", "")])}
    control = subprocess.run([sys.executable, "-c", "import tensorflow"], env=env, capture_output=True)
    assert control.returncode != 0 and marker.exists()  # the trap works
    marker.unlink()
    return env, marker


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory) -> Path:
    """Two classes of six real images: enough for a fast real training run."""
    return fashion_mnist.write_folders(tmp_path_factory.mktemp("small") / "small", 6, [1, 8], start=300)


# --- names ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BAD_NAMES, ids=lambda n: repr(n)[:20])
def test_bad_name_is_refused_before_any_work(name, tmp_path, no_tf, small_dir):
    env, marker = no_tf
    work = tmp_path / "work"
    shutil.copytree(small_dir, work / "data")
    models = work / "models"
    models.mkdir()
    # a dead run's temporary folder in MODELS_DIR's parent: `--name ..` once swept it away
    (work / f".tmp-{host_key()}-{dead_pid()}-cafe0001").mkdir()
    (tmp_path / "escaped-canary").mkdir()
    before = tree(tmp_path)
    name = str(work / "abs") if name == "ABSOLUTE" else name
    started = time.perf_counter()
    result = cli("train", "data", "-o", models, "--name", name, "--json", env=env, cwd=work)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("retrain-studio: the model name ") and "not allowed" in lines[0]
    assert [json.loads(line)["event"] for line in result.stdout.splitlines()] == ["error"]
    assert not marker.exists(), "TensorFlow was imported before the name was checked"
    assert time.perf_counter() - started < 30
    assert tree(tmp_path) == before  # nothing written, moved or deleted anywhere


def test_training_api_refuses_bad_names_too(tmp_path, small_dir):
    seen = []
    for name in ("../escaped", str(tmp_path / "abs"), "..", "a/b"):
        with pytest.raises(OutputError, match="not allowed"):
            run(TrainSettings(str(small_dir), str(tmp_path / "models"), name=name), on_event=seen.append)
    assert seen == [] and list(tmp_path.iterdir()) == []


def test_check_name_accepts_safe_single_segments():
    for name in ("flowers", "Flowers_2.v1", "a", "-dash", "_x", "9", "x" * 100):
        assert check_name(name) == name
    for name in [n for n in BAD_NAMES if n != "ABSOLUTE"] + ["/abs/olute", None, 7, "\udcff", "a\x00b"]:
        with pytest.raises(OutputError):
            check_name(name)


@pytest.mark.parametrize(
    "folder, expected",
    [
        ("flowers", "flowers"),
        (".hidden photos", "_hidden_photos"),
        ('say "cheese"', "say_cheese_"),
        ("caf\u00e9 \u00e0 la carte", "caf_la_carte"),
        ("models.config", "classifier"),
        ("x" * 150, "x" * 100),
    ],
)
def test_default_name_is_made_safe_from_the_folder_name(tmp_path, folder, expected):
    (tmp_path / folder).mkdir()
    name = TrainSettings(str(tmp_path / folder), str(tmp_path / "models")).model_name()
    assert name == expected and check_name(name) == name


# --- the models folder, checked before scanning -----------------------------------------------------------


def test_models_dir_that_is_a_file_fails_before_any_work(tmp_path, no_tf, small_dir):
    env, marker = no_tf
    (tmp_path / "models").write_text("not a folder")
    for output in (tmp_path / "models", tmp_path / "models" / "deeper"):
        result = cli("train", small_dir, "-o", output, "--name", "clothes", env=env)
        assert result.returncode == 1
        assert result.stderr.splitlines() == [
            f"retrain-studio: {tmp_path / 'models'} is not a folder, so no model can be written under {output}"
        ]
        assert not marker.exists()
    assert (tmp_path / "models").read_text() == "not a folder"


def test_too_long_folder_name_fails_before_any_work(tmp_path, no_tf, small_dir):
    env, marker = no_tf
    result = cli("train", small_dir, "-o", tmp_path / ("m" * 300), "--name", "clothes", env=env)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"retrain-studio: the models folder {tmp_path / ('m' * 300)} has a folder name longer than 255 bytes"
    ]
    assert not marker.exists() and list(tmp_path.iterdir()) == []


def test_no_room_fails_before_the_scan(tmp_path, small_dir, monkeypatch):
    """Simulated: a nearly full disk is shutil.disk_usage reporting 50 MB free."""
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=50 * 2**20))
    seen = []
    with pytest.raises(OutputError, match=r"^only 50 MB is free in .*; a model version needs about 200 MB$"):
        run(TrainSettings(str(small_dir), str(tmp_path / "models"), name="clothes"), on_event=seen.append)
    assert seen == [] and list(tmp_path.iterdir()) == []


def test_unwritable_folder_is_refused_by_the_check(tmp_path, monkeypatch):
    """Simulated with os.access (root passes chmod); the real read-only mount is tested below."""
    (tmp_path / "models" / "writable").mkdir(parents=True)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != tmp_path / "models" and real(p, mode))
    with pytest.raises(OutputError, match="is not writable"):
        check_output(tmp_path / "models", "new")
    with pytest.raises(OutputError, match="is not writable"):
        check_output(tmp_path / "models" / "not-yet" / "deeper", "new")
    assert check_output(tmp_path / "models", "writable") == tmp_path / "models" / "writable"


def _can_mount_read_only(tmp_path: Path) -> bool:
    probe = tmp_path / "probe"
    probe.mkdir()
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"mount --bind -o ro '{probe}' '{probe}' && ! touch '{probe}/x' 2>/dev/null"],
        capture_output=True,
    )
    probe.rmdir()
    return shutil.which("unshare") is not None and done.returncode == 0


def read_only(models: Path, *command, writable_name: tuple[Path, Path] | None = None, env=None, timeout=120):
    """Run ``command`` where ``models`` is a real read-only bind mount (a user and mount namespace:
    even root cannot write there), optionally with a writable folder mounted over MODELS_DIR/NAME."""
    script = f"mount --bind -o ro '{models}' '{models}'"
    if writable_name:
        script += f" && mount --bind '{writable_name[0]}' '{writable_name[1]}'"
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", script + ' && exec "$@"', "sh", *map(str, command)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def test_read_only_models_dir_fails_before_any_work(tmp_path, no_tf, small_dir):
    if not _can_mount_read_only(tmp_path):
        pytest.skip("no user namespaces here for a read-only bind mount")
    env, marker = no_tf
    models = tmp_path / "models"
    models.mkdir()
    result = read_only(
        models, sys.executable, "-m", "app", "train", small_dir, "-o", models, "--name", "clothes", env=env
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"retrain-studio: the folder {models} is not writable, so no model can be written there"
    ]
    assert not marker.exists() and list(models.iterdir()) == []


@pytest.mark.thorough
def test_read_only_models_dir_with_writable_name_exports_and_warns(tmp_path, small_dir, cache_dir, standin_backbone):
    """The real thing: MODELS_DIR read-only, MODELS_DIR/NAME a writable mount; the export is a success
    and the models.config refresh that cannot be written is one warning."""
    if not _can_mount_read_only(tmp_path):
        pytest.skip("no user namespaces here for a read-only bind mount")
    models, writable = tmp_path / "models", tmp_path / "elsewhere"
    (models / "clothes").mkdir(parents=True)
    writable.mkdir()
    result = read_only(
        models,
        sys.executable,
        "-m",
        "app",
        "train",
        small_dir,
        "-o",
        models,
        "--name",
        "clothes",
        "--cache-dir",
        cache_dir,
        "--backbone",
        standin_backbone,
        "--epochs",
        "3",
        "--tflite",
        "none",
        "--json",
        writable_name=(writable, models / "clothes"),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[-1]["event"] == "done" and events[-1]["model_dir"] == str(models / "clothes" / "1")
    assert events[-1]["models_config"] is None
    warnings = [e["message"] for e in events if e["event"] == "warning" and "models.config" in e["message"]]
    assert warnings == [
        f"the model was exported, but {models / 'models.config'} could not be updated "
        "(Read-only file system); run serve-config later"
    ]
    assert (writable / "1" / "saved_model.pb").is_file() and (writable / "1" / "metadata.json").is_file()
    assert sorted(p.name for p in models.iterdir()) == ["clothes"]


# --- temporary folders ------------------------------------------------------------------------------------


def test_temp_folders_name_their_host_and_pid(tmp_path):
    tmp = temp_folder(tmp_path)
    assert tmp.parent == tmp_path and tmp.name.startswith(f".tmp-{host_key()}-{os.getpid()}-")
    assert "-" not in host_key() and "/" not in host_key()


def test_stale_temp_clean_up_removes_only_dead_or_old_work(tmp_path):
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        me, dead = host_key(), dead_pid()
        outside = tmp_path / "outside"
        (outside / "keep").mkdir(parents=True)
        base = tmp_path / "models" / "clothes"
        folders = {
            f".tmp-{me}-{dead}-aaaa0001": False,  # ours and dead: removed
            f".tmp-{me}-{alive.pid}-aaaa0002": True,  # ours and running: kept
            f".tmp-{me}-{os.getpid()}-aaaa0003": True,  # this very process: kept
            f".tmp-otherhost.4026531836-{dead}-aaaa0004": True,  # another machine's or container's, fresh
            f".tmp-{dead}-aaaa0005": True,  # the old naming (pid only, from who knows where), fresh
            f".tmp-otherhost.1-{dead}-aaaa0006": False,  # another machine's, untouched for 25 h
            f".tmp-{dead}-aaaa0007": False,  # old naming, untouched for 25 h
        }
        for name in folders:
            (base / name / "variables").mkdir(parents=True)
            (base / name / "saved_model.pb").write_bytes(b"half")
        old = time.time() - 25 * 3600
        for name in (f".tmp-otherhost.1-{dead}-aaaa0006", f".tmp-{dead}-aaaa0007"):
            for path in (base / name / "variables", base / name / "saved_model.pb", base / name):
                os.utime(path, (old, old))
        (base / f".tmp-{me}-{dead}-link").symlink_to(outside)  # a link is never followed nor removed
        (base / f".tmp-{me}-{dead}-file").write_text("a file, not ours to judge")
        removed = remove_stale_temps(base)
        assert sorted(p.name for p in removed) == sorted(n for n, keep in folders.items() if not keep)
        for name, keep in folders.items():
            assert (base / name).exists() == keep, name
        assert (base / f".tmp-{me}-{dead}-link").is_symlink() and (outside / "keep").is_dir()
        assert (base / f".tmp-{me}-{dead}-file").is_file()
    finally:
        alive.kill()
        alive.wait()


def test_stale_temp_clean_up_sees_work_deep_inside_an_old_folder(tmp_path):
    """Another machine's export whose top levels are a day old but whose file three folders down is being written."""
    base = tmp_path / "models" / "clothes"
    work = base / ".tmp-otherhost.1-4242-aaaa0001"
    (work / "variables" / "shard").mkdir(parents=True)
    (work / "variables" / "shard" / "live.data").write_bytes(b"being written now")
    old = time.time() - 25 * 3600
    for path in (work / "variables" / "shard", work / "variables", work):
        os.utime(path, (old, old))
    assert remove_stale_temps(base) == [] and (work / "variables" / "shard" / "live.data").exists()
    os.utime(work / "variables" / "shard" / "live.data", (old, old))
    assert remove_stale_temps(base) == [work] and not work.exists()  # untouched everywhere: abandoned


# --- numeric flags ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, flag",
    [
        (["--learning-rate", "nan"], "--learning-rate"),
        (["--learning-rate", "inf"], "--learning-rate"),
        (["--learning-rate", "-0.1"], "--learning-rate"),
        (["--learning-rate", "0"], "--learning-rate"),
        (["--epochs", "0"], "--epochs"),
        (["--epochs", "-3"], "--epochs"),
        (["--batch-size", "0"], "--batch-size"),
        (["--validation-percent", "nan"], "--validation-percent"),
        (["--validation-percent", "-1"], "--validation-percent"),
        (["--test-percent", "100"], "--test-percent"),
        (["--test-percent", "inf"], "--test-percent"),
        (["--validation-percent", "60", "--test-percent", "40"], "add up to less than 100"),
        (["--fine-tune-epochs", "-1"], "--fine-tune-epochs"),
        (["--seed", "-1"], "--seed"),
        (["--seed", str(2**40)], "--seed"),
    ],
)
def test_bad_numeric_flag_is_a_usage_error(flags, flag, tmp_path, small_dir, capsys):
    assert main(["train", str(small_dir), "-o", str(tmp_path / "models"), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("retrain-studio: ") and flag in err[0]
    assert list(tmp_path.iterdir()) == []


def test_nan_learning_rate_fails_before_importing_tensorflow(tmp_path, no_tf, small_dir):
    env, marker = no_tf
    result = cli("train", small_dir, "-o", tmp_path / "models", "--learning-rate", "nan", env=env)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["retrain-studio: --learning-rate must be a finite number above 0, not nan"]
    assert not marker.exists() and list(tmp_path.iterdir()) == []


def test_settings_check_covers_the_api_only_numbers():
    for bad in (
        {"dropout": 1.0},
        {"label_smoothing": float("nan")},
        {"patience": 0},
        {"augment_copies": -1},
        {"fine_tune_learning_rate": float("inf")},
        {"epochs": 2.5},
        {"batch_size": True},
        {"tflite": "x"},
    ):
        with pytest.raises(ValueError):
            TrainSettings("a", "b", **bad).check()
    assert TrainSettings("a", "b", validation_percent=0, test_percent=0, dropout=0.0).check()


# --- cache shards -----------------------------------------------------------------------------------------


@pytest.mark.thorough  # over a second: a training
def test_bad_cache_shards_are_dropped_with_a_warning_and_training_goes_on(
    tmp_path, small_dir, cache_dir, standin_backbone
):
    """A truncated, a zero-byte, a garbage and a foreign-width shard, through a real training run."""
    info = backbones.resolve(standin_backbone)
    folder = features.EmbeddingCache(
        backbones.cache_root(cache_dir), backbones.fingerprint(info), info.image_size
    ).folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    good = tmp_path / "good.npz"
    np.savez(
        good, keys=np.array([f"{i:064x}" for i in range(50)]), vectors=rng.random((50, FEATURES), dtype=np.float32)
    )
    data = good.read_bytes()
    assert zipfile.is_zipfile(good) and len(data) > 100_000
    bad = {
        "truncated": data[: len(data) // 2],
        "zero-byte": b"",
        "garbage": rng.bytes(5000),
        "cut-in-header": data[:40],
    }
    narrow = tmp_path / "narrow.npz"
    np.savez(narrow, keys=np.array(["0" * 64]), vectors=np.zeros((1, 7), np.float32))
    bad["foreign-width"] = narrow.read_bytes()
    for kind, content in bad.items():
        (folder / f"bad-{kind}.npz").write_bytes(content)
    for n in range(2):  # good shards (of images not in this run) outnumber the foreign-width one
        shutil.copy(good, folder / f"good-{n}.npz")
    seen = []
    done = run(
        TrainSettings(
            str(small_dir),
            str(tmp_path / "models"),
            name="shards",
            cache_dir=str(cache_dir),
            backbone=standin_backbone,
            epochs=3,
            tflite="none",
            validation_percent=20,
            test_percent=20,
        ),
        on_event=seen.append,
    )
    assert done["event"] == "done" and (Path(done["model_dir"]) / "saved_model.pb").is_file()
    warnings = [e["message"] for e in seen if e["event"] == "warning" and "feature cache" in e["message"]]
    for kind in bad:
        assert not (folder / f"bad-{kind}.npz").exists(), kind
        assert sum(f"bad-{kind}.npz" in w for w in warnings) == 1, (kind, warnings)
    assert len(warnings) == len(bad)
    assert any("width 7" in w for w in warnings)
    # what was computed is cached cleanly: a second cache opens without a warning
    again = []
    features.EmbeddingCache(
        backbones.cache_root(cache_dir), backbones.fingerprint(info), info.image_size, on_event=again.append
    )
    assert again == []


@pytest.mark.timeout(60)  # a FIFO named .npz, read by mistake, would hang
def test_cache_entries_that_are_not_files_are_left_alone_and_do_not_stop_training(tmp_path):
    """A folder, a FIFO or a link named *.npz in the cache: ignored with a warning, never read or deleted."""
    cache = features.EmbeddingCache(tmp_path, "backbone", 224)
    cache.folder.mkdir(parents=True)
    (cache.folder / "folder.npz").mkdir()
    os.mkfifo(cache.folder / "pipe.npz")
    os.symlink("/dev/zero", cache.folder / "zero.npz")
    (cache.folder / "empty.npz").write_bytes(b"")
    seen = []
    features.EmbeddingCache(tmp_path, "backbone", 224, on_event=seen.append)
    warnings = [e["message"] for e in seen if e["event"] == "warning"]
    assert len(warnings) == 4 and sum("not a regular file" in w for w in warnings) == 3
    assert sorted(p.name for p in cache.folder.iterdir()) == ["folder.npz", "pipe.npz", "zero.npz"]


def test_a_cache_that_cannot_be_written_is_warned_about_once(tmp_path):
    """A read-only or full cache costs speed next time, never the run (it used to end training at the first save)."""
    blocked = tmp_path / "a-file"
    blocked.write_bytes(b"")  # the cache folder would have to be created under a file: every write fails
    seen = []
    cache = features.EmbeddingCache(blocked, "backbone", 224, on_event=seen.append)
    for batch in range(3):
        cache.add([f"key{batch}"], np.ones((1, 4), np.float32))
        cache.flush()
    assert "key2" in cache
    warnings = [e["message"] for e in seen if e["event"] == "warning"]
    assert len(warnings) == 1 and "computed again next time" in warnings[0]
