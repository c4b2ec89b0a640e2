"""models.config and the docker command: valid for tensorflow/serving, parsed with its own protos."""

import shutil
import subprocess
import sys

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from app.core.serving_config import docker_command, models_config

# `trained` is the stand-in's: these tests check the serving files, not the answers' quality


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


def batching_message():
    """TF Serving's BatchingParameters (session_bundle_config.proto), which tensorflow-serving-api does not ship:
    rebuilt field for field (names, numbers, wrapper types) so the suggested file is parsed as the server parses it."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    proto = descriptor_pb2.FileDescriptorProto(
        name="session_bundle_config.proto", package="tensorflow.serving", syntax="proto3"
    )
    proto.dependency.append("google/protobuf/wrappers.proto")
    message = proto.message_type.add(name="BatchingParameters")
    wrapped = [
        ("max_batch_size", 1, "Int64Value"),
        ("batch_timeout_micros", 2, "Int64Value"),
        ("max_enqueued_batches", 3, "Int64Value"),
        ("num_batch_threads", 4, "Int64Value"),
        ("thread_pool_name", 5, "StringValue"),
    ]
    for name, number, kind in wrapped:
        message.field.add(
            name=name,
            number=number,
            label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
            type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
            type_name=f".google.protobuf.{kind}",
        )
    message.field.add(
        name="allowed_batch_sizes",
        number=6,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
    )
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


def test_serve_config_writes_batching_parameters_tf_serving_can_parse(trained, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(trained["models"] / "clothes", models / "clothes")
    result = subprocess.run(
        [sys.executable, "-m", "app", "serve-config", str(models), "--batch-threads", "6"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "batching_parameters.txt" in result.stdout
    params = text_format.Parse((models / "batching_parameters.txt").read_text(), batching_message()())
    assert params.num_batch_threads.value == 6 and params.max_enqueued_batches.value == 6
    assert params.max_batch_size.value == 32 and params.batch_timeout_micros.value == 1000
    assert parse((models / "models.config").read_text()).model_config_list.config[0].name == "clothes"
    with pytest.raises(text_format.ParseError):  # the check can fail: a misspelt field is refused
        text_format.Parse("max_batch_sise { value: 3 }", batching_message()())
    bad = subprocess.run(
        [sys.executable, "-m", "app", "serve-config", str(models), "--batch-threads", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "--batch-threads" in bad.stderr


def test_batching_parameters_default_to_this_machine_s_cores():
    import os

    from app.core.serving_config import batching_parameters

    params = text_format.Parse(batching_parameters(), batching_message()())
    assert params.num_batch_threads.value == os.cpu_count()


def test_a_model_cannot_be_named_like_the_batching_file(tmp_path):
    from app.core.export import OutputError, check_name

    with pytest.raises(OutputError, match="is not allowed"):
        check_name("batching_parameters.txt")
