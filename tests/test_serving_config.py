"""models.config and the docker command: valid for tensorflow/serving, parsed with its own protos."""

import shutil
import subprocess
import sys

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from app.core.serving_config import docker_command, models_config


def parse(text: str):
    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


def test_models_config_parses_with_the_serving_protos():
    config = parse(models_config({"flowers": "/models/flowers", "clothes": "/models/clothes"}))
    entries = config.model_config_list.config
    assert [(c.name, c.base_path, c.model_platform) for c in entries] == [
        ("flowers", "/models/flowers", "tensorflow"),
        ("clothes", "/models/clothes", "tensorflow"),
    ]


def test_export_and_serve_config_list_every_model(trained, tmp_path):
    models = tmp_path / "models"
    for name in ("clothes", "shoes"):
        shutil.copytree(trained["models"] / "clothes", models / name)
    (models / "empty").mkdir()  # no version: not served
    result = subprocess.run(
        [sys.executable, "-m", "app", "serve-config", str(models)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    config = parse((models / "models.config").read_text())
    assert [c.name for c in config.model_config_list.config] == ["clothes", "shoes"]
    assert config.model_config_list.config[1].base_path == "/models/shoes"
    # the training run wrote one beside its model too
    written = parse((trained["models"] / "models.config").read_text())
    assert [c.name for c in written.model_config_list.config] == ["clothes"]
    empty = subprocess.run(
        [sys.executable, "-m", "app", "serve-config", str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert empty.returncode == 2 and "no exported models" in empty.stderr


def test_docker_command_mounts_the_model_read_only(tmp_path):
    command = docker_command(tmp_path, "flowers")
    assert command.startswith("docker run --rm -p 8500:8500 -p 8501:8501 ")
    assert f"{tmp_path.resolve()}/flowers:/models/flowers:ro" in command
    assert command.endswith("-e MODEL_NAME=flowers tensorflow/serving")


ODD_NAMES = ['say"cheese', "back\\slash", "new\nline", "brace}{", "caf\u00e9", "it's", "tab\there", "#hash"]


def test_models_config_escapes_odd_names_and_paths():
    """Names the CLI now refuses can still sit in a models folder (made by hand or by an older version):
    the writer must never produce a file TF Serving cannot parse."""
    models = {name: f"/models/{name}" for name in ODD_NAMES}
    config = parse(models_config(models))
    assert [(c.name, c.base_path, c.model_platform) for c in config.model_config_list.config] == [
        (name, path, "tensorflow") for name, path in models.items()
    ]
    assert parse(models_config({})).HasField("model_config_list")


def test_serve_config_with_an_odd_folder_name_stays_parsable(tmp_path):
    for name in ('say"cheese', "plain", "new\nline"):
        (tmp_path / name / "1").mkdir(parents=True)
        (tmp_path / name / "1" / "saved_model.pb").write_bytes(b"")
    (tmp_path / "unservable\udcff" / "1").mkdir(parents=True)  # not UTF-8: a proto string cannot hold it
    (tmp_path / "unservable\udcff" / "1" / "saved_model.pb").write_bytes(b"")
    result = subprocess.run(
        [sys.executable, "-m", "app", "serve-config", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    config = parse((tmp_path / "models.config").read_text())
    assert [(c.name, c.base_path) for c in config.model_config_list.config] == [
        ("new\nline", "/models/new\nline"),
        ("plain", "/models/plain"),
        ('say"cheese', '/models/say"cheese'),
    ]


def test_serve_config_that_cannot_be_written_is_one_plain_sentence(tmp_path):
    """A folder named models.config in the way: the path and the reason, not the temporary file's errno text."""
    (tmp_path / "plain" / "1").mkdir(parents=True)
    (tmp_path / "plain" / "1" / "saved_model.pb").write_bytes(b"")
    (tmp_path / "models.config").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "app", "serve-config", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"retrain-studio: cannot write {tmp_path / 'models.config'} (Is a directory)"
    )
