"""Write files and folders for the user so a crash never leaves half of one visible."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary sibling, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temp_folder(parent: Path) -> Path:
    """A fresh hidden folder name in ``parent`` that records our pid (see ``remove_stale_temps``)."""
    return parent / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def remove_stale_temps(parent: Path) -> None:
    """Delete ``.tmp-PID-*`` folders left by processes that died before renaming them into place."""
    for tmp in parent.glob(".tmp-*"):
        try:
            pid = int(tmp.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not pid_alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)
