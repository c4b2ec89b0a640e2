"""A retrain reuses the graph of an earlier export (app/core/export_graphs.py): its files must be what a full
export writes, and a kept graph that is damaged or answers wrong must cost only the time it was meant to save."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REUSED = "writing the new numbers into the graph kept from an earlier export"
TRACED = "saving SavedModel"


def _train(
    data: Path, tmp_path: Path, cache: str, name: str, backbone: str, seed: int = 0, test_percent: float = 25
) -> tuple[Path, list[str]]:
    """A stand-in training run: (version folder, the export stage's messages)."""
    from app.core.training import TrainSettings, run

    seen: list[dict] = []
    done = run(
        TrainSettings(
            str(data),
            str(tmp_path / "models"),
            name=name,
            cache_dir=str(tmp_path / cache),
            backbone=backbone,
            validation_percent=15,
            test_percent=test_percent,
            epochs=3,
            seed=seed,
        ),
        on_event=seen.append,
    )
    return Path(done["model_dir"]), [e.get("message") for e in seen if e["event"] == "stage"]


@pytest.fixture(scope="module")
def first_export(tmp_path_factory, fm_dir, standin_backbone) -> Path:
    """A folder whose ``cache`` holds the graph kept by one full export (the first version of "first")."""
    folder = tmp_path_factory.mktemp("first")
    _, said = _train(fm_dir, folder, "cache", "first", standin_backbone)
    assert TRACED in said and REUSED not in said and len(_kept(folder, "cache")) == 1
    return folder


@pytest.fixture
def kept_cache(first_export, tmp_path) -> Path:
    """``tmp_path`` with a copy of ``first_export``'s cache (each test may damage its own)."""
    shutil.copytree(first_export / "cache", tmp_path / "cache")
    return tmp_path


def _kept(tmp_path: Path, cache: str) -> list[Path]:
    return sorted(p for p in (tmp_path / cache / "export-graphs").iterdir() if not p.name.startswith("."))


def _answers(version: Path, images: list[bytes]) -> dict:
    import tensorflow as tf

    out = tf.saved_model.load(str(version)).signatures["serving_default"](image_bytes=tf.constant(images))
    return {key: value.numpy() for key, value in out.items()}


def _fidelity_rows(version: Path) -> dict:
    return json.loads((version / "metadata.json").read_text())["fidelity"]["artifacts"]


@pytest.mark.thorough  # over a second: two trainings
def test_a_retrain_writes_new_numbers_into_the_kept_graph_and_answers_like_a_full_export(
    fm_dir, first_export, kept_cache, standin_backbone
):
    """Same backbone, size and number of classes: the second export reuses the first's graph (no tracing, no
    conversion), yet writes what a full export of the same head writes: the .tflite byte for byte, the same
    SavedModel answers, and the new class names (the class folders were renamed, the seed changed)."""
    tmp_path = kept_cache
    renamed = tmp_path / "renamed"
    for folder in sorted(fm_dir.iterdir()):
        shutil.copytree(folder, renamed / f"new_{folder.name}")  # the same order, other names
    first = first_export / "models" / "first" / "1"
    reused, said = _train(renamed, tmp_path, "cache", "reused", standin_backbone, seed=7)  # other numbers
    assert REUSED in said and TRACED not in said
    full, said = _train(renamed, tmp_path, "fresh-cache", "full", standin_backbone, seed=7)  # no graph kept
    assert TRACED in said and REUSED not in said

    assert (reused / "model.tflite").read_bytes() == (full / "model.tflite").read_bytes()
    assert (reused / "model.tflite").read_bytes() != (first / "model.tflite").read_bytes()
    assert (reused / "assets/labels.txt").read_text() == "".join(f"new_{p.name}\n" for p in sorted(fm_dir.iterdir()))
    images = [p.read_bytes() for p in sorted(fm_dir.rglob("*.png"))[::20]]
    got, want = _answers(reused, images), _answers(full, images)
    assert np.allclose(got["probabilities"], want["probabilities"], atol=1e-6)
    assert list(got["classes"]) == list(want["classes"]) and all(c.startswith(b"new_") for c in got["classes"])
    assert np.array_equal(got["unknown"], want["unknown"])
    rows = _fidelity_rows(reused)
    assert set(rows) == {"saved_model:serving_default", "saved_model:serving_images", "model.tflite"}
    assert all(row["within_tolerance"] for row in rows.values())
    assert (reused / "fingerprint.pb").stat().st_size > 0  # rewritten for the new checkpoint


@pytest.mark.thorough
def test_a_kept_graph_that_answers_wrong_is_dropped_and_the_export_done_in_full(fm_dir, kept_cache, standin_backbone):
    """A kept graph whose backbone weights changed (a damaged cache) writes files that fail the fidelity
    check: they are thrown away before anything is published, the graph is traced again, and a fresh one is
    kept."""
    import tensorflow as tf

    tmp_path = kept_cache
    (kept,) = _kept(tmp_path, "cache")
    reader = tf.train.load_checkpoint(str(kept / "variables" / "variables"))
    names = sorted(reader.get_variable_to_dtype_map())
    _negate_backbone_weights(kept)

    version, said = _train(fm_dir, tmp_path, "cache", "second", standin_backbone)
    assert said.index(REUSED) < said.index(TRACED)  # tried, found wrong, done in full
    assert all(row["within_tolerance"] for row in _fidelity_rows(version).values())
    assert [p.name for p in version.parent.iterdir()] == ["1"]  # nothing of the failed attempt is left
    (fresh,) = _kept(tmp_path, "cache")
    fresh_reader = tf.train.load_checkpoint(str(fresh / "variables" / "variables"))
    assert np.array_equal(fresh_reader.get_tensor(names[0]), reader.get_tensor(names[0]))  # same layout
    conv = next(n for n in names if n.startswith("backbone/conv1"))
    assert np.array_equal(fresh_reader.get_tensor(conv), reader.get_tensor(conv))  # the real weights again
    third, said = _train(fm_dir, tmp_path, "cache", "third", standin_backbone)
    assert REUSED in said and TRACED not in said


def test_a_full_export_saves_each_function_once_and_no_branch_per_orientation(first_export):
    """Every function in saved_model.pb is converted one by one whenever the model is loaded (TF Serving, the
    app, the export's own check), so the file holds each traced function once and the in-graph decoder adds
    only its JPEG scale branches: before, it held 116 functions (two copies of each signature's trace and a
    branch per EXIF orientation), now about 20."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel.FromString((first_export / "models/first/1/saved_model.pb").read_bytes())
    names = [f.signature.name for f in saved.meta_graphs[0].graph_def.library.function]
    assert sum(name.startswith("__inference_serve_bytes_") for name in names) == 1, names  # traced once
    assert len(names) <= 24, names


@pytest.mark.thorough
def test_a_kept_graph_whose_places_are_wrong_is_never_patched(fm_dir, kept_cache, standin_backbone):
    """places.json pointing beside the head's numbers (or not JSON at all) must not write numbers over other
    parts of the .tflite: the kept graph is dropped before any file is written and the export is done in full."""
    tmp_path = kept_cache
    for damage in ("shifted", "not json"):
        (kept,) = _kept(tmp_path, "cache")
        places = kept / "places.json"
        if damage == "shifted":
            moved = {
                name: [offset + 4, transposed] for name, (offset, transposed) in json.loads(places.read_text()).items()
            }
            places.write_text(json.dumps(moved))
        else:
            places.write_text("{ not json")
        version, said = _train(fm_dir, tmp_path, "cache", damage.replace(" ", "_"), standin_backbone)
        assert TRACED in said and REUSED not in said, damage
        assert all(row["within_tolerance"] for row in _fidelity_rows(version).values()), damage


def _train_cli(data: Path, tmp_path: Path, cache: str, name: str, backbone: str, *wrapper: str) -> subprocess.Popen:
    """The same stand-in training run as ``_train``, as a ``retrain-studio train --json`` child process
    (``wrapper``: a command to run it under, e.g. ``setpriv``)."""
    command = [sys.executable, "-m", "app", "train", str(data), "-o", str(tmp_path / "models"), "--name", name]
    command += ["--cache-dir", str(tmp_path / cache), "--backbone", backbone, "--epochs", "3", "--seed", "0"]
    command += ["--validation-percent", "15", "--test-percent", "25", "--json"]
    return subprocess.Popen([*wrapper, *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finished(child: subprocess.Popen) -> tuple[Path, list[str]]:
    """(version folder, the export stage's messages) of a ``_train_cli`` child that must succeed."""
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, err[-2000:]
    seen = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    (done,) = [e for e in seen if e["event"] == "done"]
    return Path(done["model_dir"]), [e.get("message") for e in seen if e["event"] == "stage"]


def _snapshot(folder: Path) -> dict:
    """Every entry under ``folder`` (not following links): its kind, mode, times and bytes, to tell any change."""
    seen = {}
    for path in [folder, *sorted(folder.rglob("*"))]:
        info = path.lstat()
        data = path.read_bytes() if path.is_file() and not path.is_symlink() else None
        seen[str(path.relative_to(folder))] = (info.st_mode, info.st_mtime_ns, info.st_size, data)
    return seen


def _assert_correct(version: Path) -> None:
    """The version is published whole and every one of its files answered like the trained model."""
    rows = _fidelity_rows(version)
    assert set(rows) == {"saved_model:serving_default", "saved_model:serving_images", "model.tflite"}
    assert all(row["within_tolerance"] for row in rows.values()), rows


def _assert_fresh_graph(tmp_path: Path, cache: str, version: Path) -> None:
    """The one kept graph is whole again: the files of ``version``'s full export, byte for byte."""
    (kept,) = _kept(tmp_path, cache)
    assert kept.is_dir() and not kept.is_symlink()
    for name in ("saved_model.pb", "model.tflite", "variables/variables.index"):
        assert (kept / name).read_bytes() == (version / name).read_bytes(), name
    assert sorted(json.loads((kept / "places.json").read_text())) == ["head_bias", "head_kernel", "prototypes"]


def _damage(kept: Path, damage: str) -> None:
    if damage == "empty saved_model.pb":
        (kept / "saved_model.pb").write_bytes(b"")
    elif damage == "truncated variables.data":
        (data,) = (kept / "variables").glob("variables.data-*")
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    elif damage.startswith("model.tflite cut after the head's numbers"):  # patching them would work, the file does not
        import tensorflow as tf

        shapes = tf.train.load_checkpoint(str(kept / "variables" / "variables")).get_variable_to_shape_map()
        places = json.loads((kept / "places.json").read_text())
        model = (kept / "model.tflite").read_bytes()
        end = max(
            offset + 4 * int(np.prod(shapes[f"{name}/.ATTRIBUTES/VARIABLE_VALUE"]))
            for name, (offset, _) in places.items()
        )
        assert end < len(model) - 16
        (kept / "model.tflite").write_bytes(model[: (end + len(model)) // 2])
        if damage.endswith("its checksum too"):  # so it is patched and only LiteRT can tell (by raising)
            checksums = json.loads((kept / "sha256.json").read_text())
            checksums["model.tflite"] = hashlib.sha256((kept / "model.tflite").read_bytes()).hexdigest()
            (kept / "sha256.json").write_text(json.dumps(checksums))
    elif damage == "empty model.tflite":
        (kept / "model.tflite").write_bytes(b"")
    elif damage == "truncated variables.index":
        index = kept / "variables" / "variables.index"
        index.write_bytes(index.read_bytes()[: index.stat().st_size // 2])
    elif damage == "model.tflite a named pipe":  # opening it would wait for a writer forever
        (kept / "model.tflite").unlink()
        os.mkfifo(kept / "model.tflite")
    elif damage == "places.json missing":
        (kept / "places.json").unlink()
    else:
        raise AssertionError(damage)


@pytest.mark.parametrize(
    "damage",
    [
        "empty saved_model.pb",
        "truncated variables.data",
        "truncated variables.index",
        "model.tflite cut after the head's numbers",
        "model.tflite cut after the head's numbers, its checksum too",
        "empty model.tflite",
        "places.json missing",
        "model.tflite a named pipe",
    ],
)
@pytest.mark.thorough
def test_a_truncated_or_missing_kept_file_costs_a_full_export_not_the_run(
    fm_dir, first_export, kept_cache, standin_backbone, damage
):
    """A kept graph with a file emptied, cut short or missing (a full disk, a crash while copying): the run
    still publishes a version that answers right, done in full, and the kept graph is whole again after."""
    tmp_path = kept_cache
    (kept,) = _kept(tmp_path, "cache")
    _damage(kept, damage)
    version, said = _train(fm_dir, tmp_path, "cache", "second", standin_backbone)
    assert TRACED in said
    _assert_correct(version)
    assert [p.name for p in version.parent.iterdir()] == ["1"]
    _assert_fresh_graph(tmp_path, "cache", version)


def _precious(folder: Path, subfolders: int = 1) -> Path:
    """A user's folder with files in it (and ``subfolders`` folders holding one file each)."""
    folder.mkdir()
    (folder / "thesis.txt").write_text("years of work\n")
    for i in range(subfolders):
        (folder / f"chapter{i}").mkdir()
        (folder / f"chapter{i}" / "draft.txt").write_text(f"chapter {i}\n")
    return folder


@pytest.mark.thorough
def test_kept_graphs_linked_outside_the_cache_are_neither_used_nor_touched(fm_dir, kept_cache, standin_backbone):
    """The kept graph's folder and another kept-graph entry are symbolic links to a folder of the user's, the
    oldest entries, among more than ``KEPT_GRAPHS`` kept graphs, so the pruning reaches them: nothing in or of
    that folder changes (not even its time), the version answers right, and a real kept graph replaces the
    link (used by the next run)."""
    tmp_path = kept_cache
    graphs = tmp_path / "cache" / "export-graphs"
    (kept,) = _kept(tmp_path, "cache")
    stem, _, digest = kept.name.rsplit("-", 2)
    for classes in (6, 7, 8, 9):  # real kept graphs of other keys, older than the run but newer than the links
        shutil.copytree(kept, graphs / f"{stem}-{classes}-{digest}")
        os.utime(graphs / f"{stem}-{classes}-{digest}", (1e9 + classes, 1e9 + classes))
    shutil.rmtree(kept)
    precious = _precious(tmp_path / "precious")
    os.utime(precious, (1e9, 1e9))  # the oldest entry of all: the first the pruning would drop
    kept.symlink_to(precious)
    (graphs / f"{stem}-10-{digest}").symlink_to(precious)
    before = _snapshot(precious)

    version, said = _train(fm_dir, tmp_path, "cache", "second", standin_backbone)
    assert TRACED in said
    _assert_correct(version)
    assert _snapshot(precious) == before
    assert kept.is_dir() and not kept.is_symlink()
    assert (kept / "model.tflite").read_bytes() == (version / "model.tflite").read_bytes()
    assert len([p for p in _kept(tmp_path, "cache") if not p.is_symlink()]) == 4  # pruned to KEPT_GRAPHS

    third, said = _train(fm_dir, tmp_path, "cache", "third", standin_backbone)
    assert REUSED in said and TRACED not in said
    _assert_correct(third)
    assert _snapshot(precious) == before


@pytest.mark.thorough  # over a second: a training
def test_an_export_graphs_folder_linked_outside_the_cache_is_left_alone(fm_dir, kept_cache, standin_backbone):
    """``CACHE/export-graphs`` itself a link to a folder of the user's holding more folders than
    ``KEPT_GRAPHS``: the run writes nothing there and deletes none of them (the pruning would drop all but
    the newest 4), and the version answers right."""
    tmp_path = kept_cache
    graphs = tmp_path / "cache" / "export-graphs"
    shutil.rmtree(graphs)
    precious = _precious(tmp_path / "precious", subfolders=6)
    graphs.symlink_to(precious)
    before = _snapshot(precious)

    version, said = _train(fm_dir, tmp_path, "cache", "second", standin_backbone)
    assert TRACED in said
    _assert_correct(version)
    assert _snapshot(precious) == before


@pytest.mark.thorough
def test_a_kept_graph_of_another_number_of_classes_under_this_key_costs_a_full_export(
    fm_dir, kept_cache, standin_backbone
):
    """A kept graph made for 4 classes renamed to the 5-class key (its head has other shapes): it is not
    used, the version answers right with all 5 classes, and a graph for 5 classes is kept in its place."""
    tmp_path = kept_cache
    four = tmp_path / "four"
    for folder in sorted(fm_dir.iterdir())[:4]:
        shutil.copytree(folder, four / folder.name)
    _train(four, tmp_path, "four-cache", "four", standin_backbone)
    (kept,) = _kept(tmp_path, "cache")
    (other,) = _kept(tmp_path, "four-cache")
    assert other.name != kept.name
    shutil.rmtree(kept)
    other.rename(kept)

    version, said = _train(fm_dir, tmp_path, "cache", "second", standin_backbone)
    assert TRACED in said and REUSED not in said
    _assert_correct(version)
    assert (version / "assets/labels.txt").read_text() == "".join(f"{p.name}\n" for p in sorted(fm_dir.iterdir()))
    _assert_fresh_graph(tmp_path, "cache", version)


@pytest.mark.thorough
def test_two_runs_at_once_with_the_same_key_both_publish_and_keep_one_graph(fm_dir, kept_cache, standin_backbone):
    """Two ``train`` processes on one cache, same backbone and classes, other model names, started together:
    first with no kept graph (both export in full and race to keep theirs), then with one (both reuse it).
    Each publishes a version that answers right; one kept graph is left and no temporary folder."""
    tmp_path = kept_cache
    graphs = tmp_path / "cache" / "export-graphs"
    shutil.rmtree(graphs)
    for round_, stage in ((1, TRACED), (2, REUSED)):
        children = [_train_cli(fm_dir, tmp_path, "cache", f"{name}{round_}", standin_backbone) for name in "ab"]
        for child in children:
            version, said = _finished(child)
            assert stage in said, round_
            _assert_correct(version)
            assert version.name == "1"
        (kept,) = _kept(tmp_path, "cache")
        assert sorted(p.name for p in graphs.iterdir()) == [kept.name], round_


def _without_root_powers() -> list[str]:
    """A command prefix under which this user's processes obey folder permissions: none for a plain user;
    for root, ``setpriv`` dropping the capabilities that let root write anywhere (skips if that cannot be)."""
    if os.geteuid() != 0:
        return []
    wrapper = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    if not shutil.which("setpriv") or subprocess.run([*wrapper, "true"], capture_output=True).returncode != 0:
        pytest.skip("running as root, and setpriv cannot drop root's power to write into a read-only folder")
    return wrapper


@pytest.mark.thorough
def test_a_read_only_kept_graphs_folder_costs_only_the_reuse(fm_dir, kept_cache, standin_backbone):
    """``CACHE/export-graphs`` read-only (chmod 555), first holding a damaged kept graph (which cannot be
    dropped), then empty (a fresh one cannot be kept): both runs publish versions that answer right, and
    nothing new appears in the folder."""
    tmp_path = kept_cache
    graphs = tmp_path / "cache" / "export-graphs"
    (kept,) = _kept(tmp_path, "cache")
    _damage(kept, "empty saved_model.pb")
    wrapper = _without_root_powers()
    try:
        graphs.chmod(0o555)
        version, said = _finished(_train_cli(fm_dir, tmp_path, "cache", "second", standin_backbone, *wrapper))
        assert TRACED in said
        _assert_correct(version)
        assert [p.name for p in graphs.iterdir()] == [kept.name]  # no fresh graph, no temporary folder

        graphs.chmod(0o755)
        shutil.rmtree(kept)
        graphs.chmod(0o555)
        version, said = _finished(_train_cli(fm_dir, tmp_path, "cache", "third", standin_backbone, *wrapper))
        assert TRACED in said
        _assert_correct(version)
        assert list(graphs.iterdir()) == []  # root's powers really were dropped: nothing could be kept
    finally:
        graphs.chmod(0o755)


@pytest.mark.thorough
def test_a_kept_graph_of_another_user_is_reused_without_being_touched(fm_dir, kept_cache, standin_backbone):
    """A cache shared with another user (the kept graph's folder is theirs, readable, not writable): it is
    reused all the same, and its time is not changed (only its owner may)."""
    if os.geteuid() != 0:
        pytest.skip("making a folder another user's needs root")
    wrapper = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]
    if not shutil.which("setpriv") or subprocess.run([*wrapper, "true"], capture_output=True).returncode != 0:
        pytest.skip("running as root, and setpriv cannot drop root's power over other users' files")
    tmp_path = kept_cache
    (kept,) = _kept(tmp_path, "cache")
    os.chown(kept, 65534, 65534)  # nobody's
    os.utime(kept, (1e9, 1e9))
    version, said = _finished(_train_cli(fm_dir, tmp_path, "cache", "second", standin_backbone, *wrapper))
    assert REUSED in said and TRACED not in said
    _assert_correct(version)
    assert kept.stat().st_mtime == 1e9


def _negate_backbone_weights(kept: Path) -> None:
    """Damage a kept graph so that its files load and run but answer wrong (a changed conv layer)."""
    import tensorflow as tf

    prefix = str(kept / "variables" / "variables")
    reader = tf.train.load_checkpoint(prefix)
    names = sorted(reader.get_variable_to_dtype_map())
    tensors = [-reader.get_tensor(n) if n.startswith("backbone/conv1") else reader.get_tensor(n) for n in names]
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names), tensors=tensors)


@pytest.mark.thorough
def test_without_test_images_a_kept_graph_is_never_published_unchecked(fm_dir, kept_cache, standin_backbone):
    """No test split (``--test-percent 0``), so the fidelity check has nothing to run: a kept graph that
    answers wrong must not be published on trust; the version answers like a full export of the same run."""
    tmp_path = kept_cache
    (kept,) = _kept(tmp_path, "cache")
    _negate_backbone_weights(kept)
    version, said = _train(fm_dir, tmp_path, "cache", "second", standin_backbone, test_percent=0)
    full, _ = _train(fm_dir, tmp_path, "fresh-cache", "full", standin_backbone, test_percent=0)
    images = [p.read_bytes() for p in sorted(fm_dir.rglob("*.png"))[::20]]
    got, want = _answers(version, images), _answers(full, images)
    assert np.allclose(got["probabilities"], want["probabilities"], atol=1e-6)
    assert TRACED in said


@pytest.mark.thorough
def test_a_file_where_the_kept_graph_belongs_is_replaced_by_one(fm_dir, kept_cache, standin_backbone):
    """A plain file with the kept graph's name (a copying tool's mistake): not used, and a kept graph takes
    its place, so later runs can reuse one again."""
    tmp_path = kept_cache
    (kept,) = _kept(tmp_path, "cache")
    shutil.rmtree(kept)
    kept.write_bytes(b"not a folder")
    version, said = _train(fm_dir, tmp_path, "cache", "second", standin_backbone)
    assert TRACED in said
    _assert_correct(version)
    _assert_fresh_graph(tmp_path, "cache", version)


@pytest.mark.thorough  # over a second: trainings
def test_a_run_killed_while_keeping_a_graph_leaves_nothing_after_the_next_reuse(fm_dir, kept_cache, standin_backbone):
    """A run killed while copying a graph into the cache leaves its hidden temporary folder (tens of MB with real
    weights); a later run that only reuses the kept graph clears it, as one that keeps a graph would."""
    from app.core.atomic import TEMP_PREFIX, host_key

    tmp_path = kept_cache
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid no longer runs
    (kept,) = _kept(tmp_path, "cache")
    left = kept.parent / f"{TEMP_PREFIX}{host_key()}-{dead.pid}-0123abcd"
    shutil.copytree(kept, left)
    _, said = _train(fm_dir, tmp_path, "cache", "second", standin_backbone)
    assert REUSED in said and not left.exists() and len(_kept(tmp_path, "cache")) == 1


@pytest.mark.thorough
def test_a_bundle_without_tensorflow_s_package_metadata_still_trains_and_keeps_graphs(
    fm_dir, tmp_path, standin_backbone
):
    """A desktop bundle (PyInstaller) may not carry TensorFlow's package metadata, which the kept graph's key
    reads to avoid importing TensorFlow: training must neither fail nor lose the reuse there."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        "import importlib.metadata as metadata\n"
        "real = metadata.version\n"
        "def version(name):\n"
        "    if name.lower() == 'tensorflow':\n"
        "        raise metadata.PackageNotFoundError(name)\n"
        "    return real(name)\n"
        "metadata.version = version\n"
    )
    bundle = ("env", f"PYTHONPATH={shim}")
    first, said = _finished(_train_cli(fm_dir, tmp_path, "cache", "first", standin_backbone, *bundle))
    assert TRACED in said and len(_kept(tmp_path, "cache")) == 1
    second, said = _finished(_train_cli(fm_dir, tmp_path, "cache", "second", standin_backbone, *bundle))
    assert REUSED in said and TRACED not in said
    assert all(row["within_tolerance"] for row in _fidelity_rows(second).values())
