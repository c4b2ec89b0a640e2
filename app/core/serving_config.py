"""Text that serves exported models with tensorflow/serving: a docker command and models.config.

    >>> print(docker_command("/home/me/models", "flowers"))
    >>> print(models_config({"flowers": "/models/flowers"}))
"""
from __future__ import annotations

import shlex
from pathlib import Path

from app.store import MODELS_CONFIG_FILE, model_folders

SERVING_IMAGE = "tensorflow/serving"
CONTAINER_ROOT = "/models"


def docker_command(models_dir: str | Path, name: str) -> str:
    """Serve one model on 8500 (gRPC) and 8501 (REST), the folder mounted read-only."""
    source = Path(models_dir).expanduser().resolve() / name
    return (f"docker run --rm -p 8500:8500 -p 8501:8501 "
            f"-v {shlex.quote(f'{source}:{CONTAINER_ROOT}/{name}:ro')} -e MODEL_NAME={shlex.quote(name)} "
            f"{SERVING_IMAGE}")


def models_config(models: dict[str, str]) -> str:
    """A ``model_config_list`` in protobuf text format: {name: base_path inside the container}.

    Built as TF Serving's own ``ModelServerConfig`` message and printed by ``text_format``, so
    any name or path (quotes, backslashes, newlines) is escaped the way the server parses it.
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.SetInParent()  # an empty list stays a list, as the server expects
    for name, path in models.items():
        config.model_config_list.config.add(name=name, base_path=path, model_platform="tensorflow")
    return text_format.MessageToString(config)


def find_models(models_dir: str | Path) -> list[str]:
    """Names of the models under ``models_dir`` (``store.model_folders``) that TF Serving can be told about.

    Args:
        models_dir: the models folder; need not exist.

    Returns:
        Sorted folder names holding at least one version, except names that are not UTF-8.
    """
    return [p.name for p in model_folders(models_dir) if _utf8(p.name)]


def _utf8(name: str) -> bool:
    """A folder name a protobuf string (and so TF Serving) can carry; undecodable bytes cannot be."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def write_models_config(models_dir: str | Path, container_root: str = CONTAINER_ROOT) -> Path:
    """Write ``MODELS_DIR/models.config`` listing every model there (atomically); returns its path."""
    from .atomic import write_bytes

    root = Path(models_dir).expanduser()
    path = root / MODELS_CONFIG_FILE
    names = find_models(root)
    write_bytes(path, models_config({name: f"{container_root}/{name}" for name in names}).encode())
    return path
