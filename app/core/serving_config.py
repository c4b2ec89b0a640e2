"""Text that serves exported models with tensorflow/serving: a docker command and models.config.

Example::

    print(docker_command("/home/me/models", "flowers"))   # docker run ... tensorflow/serving
    write_models_config("/home/me/models")                # /home/me/models/models.config
"""

from __future__ import annotations

import shlex
from pathlib import Path

from app.store import MODELS_CONFIG_FILE, model_folders

SERVING_IMAGE = "tensorflow/serving"
CONTAINER_ROOT = "/models"


def docker_command(models_dir: str | Path, name: str) -> str:
    """A ``docker run`` line serving one model on 8500 (gRPC) and 8501 (REST), its folder mounted read-only.

    Args:
        models_dir: the models folder on this machine.
        name: the model's folder name.

    Returns:
        The command, each argument quoted for a POSIX shell.
    """
    source = Path(models_dir).expanduser().resolve() / name
    return (
        f"docker run --rm -p 8500:8500 -p 8501:8501 "
        f"-v {shlex.quote(f'{source}:{CONTAINER_ROOT}/{name}:ro')} -e MODEL_NAME={shlex.quote(name)} "
        f"{SERVING_IMAGE}"
    )


def models_config(models: dict[str, str]) -> str:
    """A ``model_config_list`` in protobuf text format, for TF Serving's ``--model_config_file``.

    Built as TF Serving's own ``ModelServerConfig`` message and printed by ``text_format``, so any name
    or path (quotes, backslashes, newlines) is escaped the way the server parses it.

    Args:
        models: {name: base path inside the container}.

    Returns:
        The file's text.

    >>> print(models_config({"flowers": "/models/flowers"}), end="")
    model_config_list {
      config {
        name: "flowers"
        base_path: "/models/flowers"
        model_platform: "tensorflow"
      }
    }
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
    """Write ``MODELS_DIR/models.config`` listing every model there (atomically).

    Args:
        models_dir: the models folder.
        container_root: where the models folder is mounted inside the container.

    Returns:
        The file written.

    Raises:
        OSError: it cannot be written.
    """
    from .atomic import write_bytes

    root = Path(models_dir).expanduser()
    path = root / MODELS_CONFIG_FILE
    names = find_models(root)
    write_bytes(path, models_config({name: f"{container_root}/{name}" for name in names}).encode())
    return path
