"""Text that serves exported models with tensorflow/serving: a docker command and models.config.

Example::

    print(docker_command("/home/me/models", "flowers"))   # docker run ... tensorflow/serving
    write_models_config("/home/me/models")                # /home/me/models/models.config
    write_batching_parameters("/home/me/models")          # /home/me/models/batching_parameters.txt
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from app.store import BATCHING_PARAMETERS_FILE, MODELS_CONFIG_FILE, model_folders

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


def batching_parameters(
    num_batch_threads: int | None = None, max_batch_size: int = 32, batch_timeout_micros: int = 1000
) -> str:
    """A starting ``BatchingParameters`` text proto for ``--enable_batching --batching_parameters_file``.

    The values follow TF Serving's batching guide for a CPU server: one batch thread per core, a timeout
    slightly above zero (1 ms smooths batch sizes when requests are sparse while keeping tail latency low),
    and a queue as deep as the batch threads so an overloaded server refuses quickly instead of piling up
    latency. ``max_batch_size`` 32: on a CPU a larger batch saves little per image for a model of this size
    (EfficientNet-Lite0 runs 7.0 ms per image at batch 1, 7.9 at batch 32 in LiteRT here), so the batch only
    needs to absorb the concurrent requests. Measure with ``retrain-studio bench --concurrency`` and tune.

    Args:
        num_batch_threads: the server's CPU cores (default: this machine's).
        max_batch_size: the most images one batch holds (requests of several images count each image).
        batch_timeout_micros: how long a partial batch waits for more requests.

    Returns:
        The file's text, with a comment per field (``#`` lines are allowed in protobuf text format).

    >>> print(batching_parameters(2), end="")  # doctest: +ELLIPSIS
    # TF Serving batching ...
    max_batch_size { value: 32 }
    ...
    batch_timeout_micros { value: 1000 }
    ...
    num_batch_threads { value: 2 }
    ...
    max_enqueued_batches { value: 2 }
    """
    threads = max(1, num_batch_threads or os.cpu_count() or 1)
    return (
        "# TF Serving batching parameters, a starting point (retrain-studio serve-config).\n"
        "# Use: tensorflow_model_server --enable_batching --batching_parameters_file=/models/"
        f"{BATCHING_PARAMETERS_FILE}\n"
        "# Tune with `retrain-studio bench TEST_DIR --backends grpc://HOST:8500/NAME --concurrency 1,2,4,8`.\n"
        "# The most images in one batch (clients sending --batch N images per request fill it faster):\n"
        f"max_batch_size {{ value: {max_batch_size} }}\n"
        "# How long a partial batch waits for more requests; 0 to 10000 is the useful range on a CPU:\n"
        f"batch_timeout_micros {{ value: {batch_timeout_micros} }}\n"
        "# One batch thread per CPU core of the server (set it to the server's count if it is another machine):\n"
        f"num_batch_threads {{ value: {threads} }}\n"
        "# Batches waiting beyond this are refused at once (UNAVAILABLE) instead of adding latency:\n"
        f"max_enqueued_batches {{ value: {threads} }}\n"
    )


def write_batching_parameters(models_dir: str | Path, num_batch_threads: int | None = None) -> Path:
    """Write ``MODELS_DIR/batching_parameters.txt`` (``batching_parameters``), atomically.

    Args:
        models_dir: the models folder (mounted in the container beside ``models.config``).
        num_batch_threads: the server's CPU cores (default: this machine's).

    Returns:
        The file written.

    Raises:
        OSError: it cannot be written.
    """
    from .atomic import write_bytes

    path = Path(models_dir).expanduser() / BATCHING_PARAMETERS_FILE
    write_bytes(path, batching_parameters(num_batch_threads).encode())
    return path
