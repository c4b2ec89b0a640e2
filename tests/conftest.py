"""Shared fixtures: a session cache (backbone converted once), real Fashion-MNIST folders, a tiny stand-in
backbone for tests that do not test the real weights, and one trained model that many tests inspect."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_SCREEN = Path(tempfile.gettempdir()) / "retrain-studio-offscreen-screen.json"
_SCREEN.write_text(
    '{"screens": [{"name": "test", "x": 0, "y": 0, "width": 1920, "height": 1080, "logicalDpi": 96, "dpr": 1}]}'
)
os.environ.setdefault("QT_QPA_PLATFORM", f"offscreen:configfile={_SCREEN}")  # a full-HD screen, no display
sys.path.insert(0, str(Path(__file__).parent))

import fashion_mnist  # noqa: E402

import app  # noqa: E402, F401  (first, as in every entry point: it sets TF_USE_LEGACY_KERAS before TensorFlow loads)

REPO = Path(__file__).resolve().parents[1]
FM_CLASSES = [1, 3, 7, 8, 9]  # trouser, dress, sneaker, bag, ankle boot
FM_PER_CLASS = 40


@contextlib.contextmanager
def made_once(tmp_path_factory, name: str):
    """``(folder, made)`` under an exclusive lock: ``folder`` is shared by every pytest-xdist worker of this run
    (the session's own without xdist), ``made`` says whether an earlier holder already filled it. Session
    fixtures that cost seconds (the converted backbone, the trained models) are made once per run, not once
    per worker."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the run's folder above each worker's own
    folder, done = base / name, base / f"{name}.made"
    with open(base / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        made = done.exists()
        folder.mkdir(exist_ok=True)
        yield folder, made
        done.touch()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    with made_once(tmp_path_factory, "cache") as (path, _):
        pass  # the embedding store and the converted backbone lock for themselves
    os.environ["RETRAIN_STUDIO_CACHE"] = str(path)  # child processes share the converted backbone
    return path


@pytest.fixture(scope="session")
def standin_backbone(tmp_path_factory) -> str:
    """The tiny local feature-vector SavedModel of ``tests/standin.py``, built once: pass it as ``--backbone`` /
    ``TrainSettings(backbone=...)`` where a test checks the pipeline, not what the real weights see."""
    import standin

    with made_once(tmp_path_factory, "backbones") as (folder, made):
        return str(folder / standin.FOLDER_NAME if made else standin.build(folder))


@pytest.fixture(scope="session")
def fm_dir(tmp_path_factory) -> Path:
    if not fashion_mnist.available():
        pytest.fail("Fashion-MNIST is missing: apt-get install dataset-fashion-mnist (.ci/run does this)")
    with made_once(tmp_path_factory, "fm") as (folder, made):
        if not made:
            fashion_mnist.write_folders(folder / "clothes", FM_PER_CLASS, FM_CLASSES)
    return folder / "clothes"


@pytest.fixture(scope="session")
def efficientnet_trained(tmp_path_factory, fm_dir, cache_dir) -> dict:
    """One real training run (EfficientNet-Lite0), shared: {"done": done event, "events": [...], "models": Path,
    "version_dir": Path}, for the tests of the real weights' claims (the others' ``trained`` is the stand-in's)."""
    return _trained_once(tmp_path_factory, "models", fm_dir, cache_dir)


def _trained_once(tmp_path_factory, name: str, fm_dir: Path, cache_dir: Path, backbone: str | None = None) -> dict:
    """``_train_clothes`` into a folder of this run, once for all workers (the others read its record)."""
    with made_once(tmp_path_factory, name) as (folder, made):
        record = folder / "trained.json"
        if not made:
            result = _train_clothes(folder, fm_dir, cache_dir, backbone)
            record.write_text(json.dumps({"done": result["done"], "events": result["events"]}))
    kept = json.loads(record.read_text())
    return {**kept, "models": folder, "version_dir": Path(kept["done"]["model_dir"])}


def _train_clothes(models: Path, fm_dir: Path, cache_dir: Path, backbone: str | None = None) -> dict:
    """Train ``models/clothes`` on ``fm_dir``: {"done": done event, "events": [...], "models", "version_dir"}."""
    from app.core.backbones import DEFAULT_BACKBONE
    from app.core.training import TrainSettings, run

    seen: list[dict] = []
    settings = TrainSettings(
        str(fm_dir),
        str(models),
        name="clothes",
        backbone=backbone or DEFAULT_BACKBONE,
        cache_dir=str(cache_dir),
        validation_percent=15,
        test_percent=25,
        tflite="dynamic",
    )
    done = run(settings, on_event=seen.append)
    return {"done": done, "events": seen, "models": models, "version_dir": Path(done["model_dir"])}


@pytest.fixture(scope="session")
def trained(tmp_path_factory, fm_dir, cache_dir, standin_backbone) -> dict:
    """The shared model tests inspect, trained once on the stand-in backbone: they check what the app does with
    a model (protocols, the command line, hostile input, the GUI), not how good its answers are, and it trains,
    loads and classifies in a fraction of EfficientNet's time. Tests of the real weights' claims ask for
    ``efficientnet_trained`` by name."""
    return _trained_once(tmp_path_factory, "standin-models", fm_dir, cache_dir, standin_backbone)


@pytest.fixture(scope="module")
def server(trained):
    """A TF Serving double (tests/serving/double.py) serving the shared model as "clothes"; one per test
    module, because some modules switch it into misbehaving modes."""
    from serving.double import TFServingDouble

    with TFServingDouble({"clothes": trained["models"] / "clothes"}) as double:
        yield double
