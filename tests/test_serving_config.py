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
        ("flowers", "/models/flowers", "tensorflow"), ("clothes", "/models/clothes", "tensorflow")]


def test_export_and_serve_config_list_every_model(trained, tmp_path):
    models = tmp_path / "models"
    for name in ("clothes", "shoes"):
        shutil.copytree(trained["models"] / "clothes", models / name)
    (models / "empty").mkdir()  # no version: not served
    result = subprocess.run([sys.executable, "-m", "app", "serve-config", str(models)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    config = parse((models / "models.config").read_text())
    assert [c.name for c in config.model_config_list.config] == ["clothes", "shoes"]
    assert config.model_config_list.config[1].base_path == "/models/shoes"
    # the training run wrote one beside its model too
    written = parse((trained["models"] / "models.config").read_text())
    assert [c.name for c in written.model_config_list.config] == ["clothes"]
    empty = subprocess.run([sys.executable, "-m", "app", "serve-config", str(tmp_path / "nothing")],
                           capture_output=True, text=True, timeout=60)
    assert empty.returncode == 2 and "no exported models" in empty.stderr


def test_docker_command_mounts_the_model_read_only(tmp_path):
    command = docker_command(tmp_path, "flowers")
    assert command.startswith("docker run --rm -p 8500:8500 -p 8501:8501 ")
    assert f"{tmp_path.resolve()}/flowers:/models/flowers:ro" in command
    assert command.endswith("-e MODEL_NAME=flowers tensorflow/serving")
