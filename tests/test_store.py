"""The model store (app/store.py): which folders are versions, metadata.json's schema, label fallback, delete."""

import json
import os

import pytest

from app import store
from app.core.atomic import temp_folder
from app.core.serving_config import find_models
from app.store import (
    FORMAT_VERSION,
    Metadata,
    ModelError,
    delete_version,
    fallback_labels,
    labels_for,
    latest_version,
    model_folders,
    next_version,
    read_metadata,
    read_metadata_quietly,
    read_version,
    resolve_version,
    version_folders,
    write_metadata,
)

# metadata.json exactly as training wrote it before the store existed (format_version 1), trimmed of long lists
FORMAT_1 = {
    "format_version": 1,
    "labels": ["bag", "dress"],
    "input": {"height": 224, "width": 224, "channels": 3, "dtype": "float32", "range": [0.0, 1.0]},
    "preprocessing": "decode (JPEG at DCT scale, EXIF-upright), RGB, /255, antialiased bilinear resize "
    "(app.inference.preprocess)",
    "signatures": {
        "serving_default": {
            "inputs": {"image_bytes": "string [None]"},
            "outputs": ["probabilities", "classes", "scores"],
        }
    },
    "backbone": {"id": "efficientnet_lite0", "image_size": 224},
    "split_sizes": {"train": 8, "validation": 1, "test": 1},
    "skipped_files": 0,
    "review": None,
    "metrics": {"test_accuracy": 0.5, "test_images": 2, "validation_accuracy": None, "results_file": "results.npz"},
    "training": {"epochs": 3, "image_dir": "/photos", "sources": [{"path": "/photos", "kind": "folder"}]},
    "created": "2026-11-25T05:00:00+00:00",
    "app_version": "0.1.0",
    "platform": "Linux",
    "name": "clothes",
    "version": 1,
    "files": {"saved_model": "saved_model.pb", "labels": "assets/labels.txt"},
}


def version(base, name, complete=True):
    folder = base / name
    folder.mkdir(parents=True)
    if complete:
        (folder / "saved_model.pb").write_bytes(b"")
    return folder


def test_versions_are_digit_named_folders_only(tmp_path):
    """One rule for export, the backends, serve-config and the GUI: a half-written export (hidden temporary
    folder), a non-numeric folder, a digit-named file and a non-ASCII digit are not versions."""
    base = tmp_path / "models" / "clothes"
    one, ten = version(base, "1"), version(base, "10")
    version(base, "2", complete=False).joinpath("variables").mkdir()
    temp_folder(base).mkdir()  # an export in progress: ".tmp-host-pid-xxxx"
    version(base, "latest")
    version(base, "\u00b2")  # superscript two: str.isdigit() says yes, int() and TF Serving say no
    (base / "11").write_text("not a folder")
    assert version_folders(base) == [(1, one), (2, base / "2"), (10, ten)]
    assert latest_version(base) == ten == resolve_version(base)
    assert next_version(base) == 12  # above the file "11" too: a new version never collides with it
    assert model_folders(tmp_path / "models") == [base] and find_models(tmp_path / "models") == ["clothes"]
    (tmp_path / "models" / "empty" / ".tmp-x-1-abc").mkdir(parents=True)
    assert find_models(tmp_path / "models") == ["clothes"]  # only a half-written export: no model yet
    assert version_folders(tmp_path / "missing") == [] and next_version(tmp_path / "missing") == 1


def test_resolve_version_errors_are_one_sentence(tmp_path):
    with pytest.raises(ModelError, match="model not found"):
        resolve_version(tmp_path / "nothing")
    temp_folder(tmp_path).mkdir()
    with pytest.raises(ModelError, match="holds no model version"):
        resolve_version(tmp_path)
    assert resolve_version(version(tmp_path, "7", complete=True)) == tmp_path / "7"


def test_metadata_round_trip_keeps_every_field_and_unknown_keys(tmp_path):
    metadata = store.new_metadata(
        ["a", "b"],
        240,
        backbone={"id": "x/efficientnet_lite1"},
        review=None,
        split_sizes={"train": 3},
        skipped_files=2,
        metrics={"test_accuracy": 0.75},
        training={"epochs": 4},
    )
    metadata.extra["from_the_future"] = {"kept": True}
    write_metadata(tmp_path, metadata)
    raw = json.loads((tmp_path / "metadata.json").read_text())
    assert raw["format_version"] == FORMAT_VERSION and raw["from_the_future"] == {"kept": True}
    assert raw["signatures"]["serving_images"]["inputs"]["images"] == "float32 [None,240,240,3]"
    assert raw["input"]["height"] == 240 and raw["created"].endswith("+00:00")
    again = read_metadata(tmp_path)
    assert again == metadata
    assert (again.test_accuracy, again.backbone_id, again.skipped_files) == (0.75, "efficientnet_lite1", 2)


def test_reads_a_format_version_1_file_and_folders_without_metadata(tmp_path):
    (tmp_path / "metadata.json").write_text(json.dumps(FORMAT_1))
    metadata = read_metadata(tmp_path)
    assert metadata.format_version == 1 and metadata.labels == ["bag", "dress"] and metadata.extra == {}
    assert (metadata.test_accuracy, metadata.test_images, metadata.version) == (0.5, 2, 1)
    assert metadata.training["sources"] == [{"path": "/photos", "kind": "folder"}]
    assert metadata.to_dict() == FORMAT_1  # nothing lost or reordered when written back
    assert list(metadata.to_dict()) == list(FORMAT_1)
    bare = tmp_path / "bare"
    (bare / "assets").mkdir(parents=True)
    assert read_metadata(bare) == Metadata(format_version=None)
    (bare / "assets" / "labels.txt").write_text("cat\ndog\n")
    assert read_metadata(bare).labels == ["cat", "dog"] and read_metadata(bare).format_version is None


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "cannot be read (JSONDecodeError)"),
        ("[1, 2]", "is not a model's metadata"),
        ('{"labels": [1, null]}', "is not a model's metadata"),
        ('{"labels": "cat"}', "is not a model's metadata"),
        (b"\xff\xfe", "cannot be read (UnicodeDecodeError)"),
        ("[" * 100_000, "cannot be read (RecursionError)"),
    ],
)
def test_damaged_metadata_is_one_sentence_and_quiet_in_listings(tmp_path, text, message):
    folder = version(tmp_path / "m", "1")
    meta = folder / "metadata.json"
    meta.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ModelError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        read_metadata(folder)
    assert "\n" not in str(info.value)
    info = read_version(folder)  # the Models page still lists it, with what is unknown left unknown
    assert (info.classes, info.accuracy, info.version) == (None, None, "1")


def test_fields_of_the_wrong_type_read_as_missing(tmp_path):
    metadata = Metadata.from_dict(
        {"labels": ["a"], "metrics": [1], "created": 5, "skipped_files": True, "version": "3", "backbone": {"id": "b"}}
    )
    assert metadata.metrics == {} and metadata.created is None and metadata.skipped_files is None
    assert metadata.version is None and metadata.backbone_id == "b" and metadata.test_accuracy is None
    assert Metadata.from_dict({"metrics": {"test_accuracy": True}}).test_accuracy is None


def test_metadata_json_that_is_a_fifo_does_not_hang(tmp_path):
    os.mkfifo(tmp_path / "metadata.json")
    with pytest.raises(ModelError, match="is not a regular file"):
        read_metadata(tmp_path)


def test_a_labels_file_that_is_a_fifo_or_metadata_of_gigabytes_is_an_error_not_a_hang(tmp_path):
    """The backend bar reads a typed folder's metadata on the GUI thread: a pipe there hung it, a huge file
    stalled it."""
    (tmp_path / "pipe" / "assets").mkdir(parents=True)
    os.mkfifo(tmp_path / "pipe" / "assets" / "labels.txt")
    with pytest.raises(ModelError, match="is not a regular file"):
        read_metadata(tmp_path / "pipe")
    (tmp_path / "huge").mkdir()
    with open(tmp_path / "huge" / "metadata.json", "wb") as sparse:
        sparse.truncate(3_000_000_000)  # 3 GB that take no room on disk
    with pytest.raises(ModelError, match="3.0 GB, too large for a model's metadata"):
        read_metadata(tmp_path / "huge")
    assert read_metadata_quietly(tmp_path / "huge").labels == []


def test_a_tflite_that_is_a_pipe_or_a_folder_is_an_error_not_a_hang(tmp_path):
    """Found by attack under X: LiteRT opened a named pipe holding Python's lock, and every thread (the window's
    too) waited for a writer that never came."""
    from app.inference.tflite import TFLiteClassifier

    os.mkfifo(tmp_path / "pipe.tflite")
    (tmp_path / "folder.tflite").mkdir()
    for path in (tmp_path / "pipe.tflite", tmp_path / "folder.tflite"):
        with pytest.raises(ModelError, match="is not a regular file"):
            resolve_version(path)
        with pytest.raises(ModelError, match="is not a regular file"):
            TFLiteClassifier(path)
    folder = version(tmp_path / "piped", "1")
    os.mkfifo(folder / "model.tflite")
    with pytest.raises(ModelError, match="model.tflite is not a regular file"):
        TFLiteClassifier(tmp_path / "piped")


def test_an_unknown_user_s_home_is_a_missing_model_not_a_runtime_error():
    """Found by attack under X: ``~zzq/x`` typed into the backend bar raised RuntimeError on every key."""
    with pytest.raises(ModelError, match="model not found: ~zzq_no_such_user/x"):
        resolve_version("~zzq_no_such_user/x")
    assert model_folders("~zzq_no_such_user") == []


def test_label_fallback_names_every_class():
    assert fallback_labels(3) == ["class_0", "class_1", "class_2"] and fallback_labels(0) == []
    assert labels_for([], 2) == ["class_0", "class_1"] and labels_for(None, 1) == ["class_0"]
    assert labels_for(["cat", "dog"], 2) == ["cat", "dog"]


def test_read_version_reports_what_the_models_page_lists(tmp_path):
    folder = version(tmp_path / "clothes", "3")
    (folder / "model.tflite").write_bytes(b"\0" * 700)
    (folder / "results.npz").write_bytes(b"")
    (folder / "metadata.json").write_text(json.dumps(FORMAT_1))
    info = read_version(folder)
    assert (info.model, info.version, info.classes, info.accuracy, info.test_images) == ("clothes", "3", 2, 0.5, 2)
    assert info.backbone == "efficientnet_lite0" and info.tflite == {"model.tflite": 700} and info.has_results
    assert info.accuracy_text() == "50.0%" and info.metadata.labels == ["bag", "dress"]
    assert info.size >= 700 + len(json.dumps(FORMAT_1))


def test_delete_version_refuses_what_is_not_a_version_and_hides_before_removing(tmp_path):
    base = tmp_path / "m"
    keep = version(base, "1")
    for bad in (base / "latest", base / "\u00b2"):
        bad.mkdir()
        with pytest.raises(store.DeleteError, match="not a model version folder"):
            delete_version(bad, None)
    os.symlink(keep, base / "9")
    with pytest.raises(store.DeleteError):
        delete_version(base / "9", None)
    asked = []
    assert delete_version(keep, lambda path: asked.append(path) or False) is False
    assert asked == [keep] and keep.is_dir()  # no trash: nothing happened
    assert delete_version(keep, None) is False and not keep.exists()
    assert sorted(p.name for p in base.iterdir()) == ["9", "latest", "\u00b2"]  # no hidden leftover


def test_tflite_variants_follow_the_setting():
    assert store.tflite_variants("float") == ("float",) and store.tflite_variants("none") == ()
    assert store.tflite_variants("int8") == ("float", "int8")
    assert store.tflite_variants("dynamic") == ("float", "dynamic")
    assert set(store.TFLITE_FILES) == {"float", "dynamic", "int8"}


def test_the_store_and_imaging_import_neither_tensorflow_nor_qt():
    """Both are read by the lean classify-only build and by the GUI thread: importing them must stay cheap."""
    import subprocess
    import sys

    script = (
        "import sys, app.store, app.imaging, app.inference.base; "
        "heavy = [m for m in ('tensorflow', 'PySide6', 'tf_keras') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-1000:]
