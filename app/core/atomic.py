"""Write files and folders for the user so a crash never leaves half of one visible."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path

TEMP_PREFIX = ".tmp-"


def _current_umask() -> int:
    """The process's umask (read once at import: setting it back and forth later could race other threads)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()
STALE_AFTER_S = 24 * 3600  # a temporary folder untouched this long is abandoned, whoever made it


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never part of it.

    The bytes go to a temporary sibling, are fsynced, then renamed over ``path`` (a rename within one folder
    is atomic); missing parent folders are created.  The file gets the permissions a plain ``open`` would
    give it (a replaced file keeps its own), so e.g. a TF Serving container running as another user can read
    a version's metadata.json like its other files.

    Args:
        path: The file to create or replace.
        data: Its new content.

    Raises:
        OSError: The folder cannot be written (the temporary file is removed first).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o7777  # a replaced file keeps its permissions
    except OSError:
        mode = 0o666 & ~_UMASK  # a new one gets what open() would give it, not mkstemp's owner-only 0600
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj) -> None:
    """Write ``obj`` as indented JSON (keys in their given order, a final newline) with ``write_bytes``.

    Args:
        path: The file to create or replace.
        obj: Anything ``json.dumps`` accepts.

    Raises:
        OSError: The folder cannot be written.
        TypeError: ``obj`` holds something JSON cannot represent (nothing is written).
    """
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def pid_alive(pid: int) -> bool:
    """Returns whether process ``pid`` of this pid namespace still runs (signal 0: asks, sends nothing).

    A pid we cannot ask about (out of range, or another user's) counts as alive: when unsure, a temporary
    folder is left alone rather than deleted under its writer.
    """
    if not 0 < pid < 2**31:
        return True  # not a pid we can ask about: assume its owner is still at work
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def host_key() -> str:
    """Returns who can judge our pids: the host name plus the pid namespace (containers may share a host name).

    Only ``[A-Za-z0-9_.]``, so the ``-`` separators of a temporary folder's name stay unambiguous.
    """
    key = socket.gethostname() or "host"
    with contextlib.suppress(OSError):  # no /proc (not Linux): the host name alone
        key += "." + re.sub(r"\D", "", os.readlink("/proc/self/ns/pid"))
    return re.sub(r"[^A-Za-z0-9_.]", "_", key)[:100]


def temp_folder(parent: Path) -> Path:
    """Returns a fresh hidden folder name ``.tmp-<host>-<pid>-<random>`` in ``parent``; nothing is created.

    The name says who writes there, so ``remove_stale_temps`` can tell a dead writer's leftovers from work
    in progress.

    >>> temp_folder(Path("models")).name.startswith(".tmp-")
    True
    """
    return parent / f"{TEMP_PREFIX}{host_key()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _owner(folder: Path) -> tuple[str | None, int | None]:
    """(host key, pid) from a temporary folder's name; (None, None) for a name not made by ``temp_folder``."""
    parts = folder.name[len(TEMP_PREFIX) :].rsplit("-", 2)
    if len(parts) == 3 and parts[1].isdigit():
        return parts[0], int(parts[1])
    return None, None


def _age_s(folder: Path, most: int = 10_000) -> float:
    """Seconds since anything in ``folder``, at any depth, last changed (0 past ``most`` entries: in use).

    Every level counts: a file being written three folders down leaves the top folder's time alone.
    """
    newest, seen = folder.lstat().st_mtime, 0
    for parent, folders, files in os.walk(folder):  # never follows links
        for name in folders + files:
            seen += 1
            if seen > most:
                return 0.0
            newest = max(newest, os.lstat(os.path.join(parent, name)).st_mtime)
    return time.time() - newest


def remove_stale_temps(parent: Path, stale_after_s: float = STALE_AFTER_S) -> list[Path]:
    """Delete the temporary folders directly in ``parent`` that nobody can still be writing.

    A folder is removed only when it is ours and dead (this host and pid namespace, and its
    pid no longer runs) or untouched for ``stale_after_s``: another machine's or container's
    work in progress, in a shared folder, is left alone.  Symlinks and files are never touched,
    and nothing outside ``parent`` is.  A folder that cannot be read or removed is skipped.

    Args:
        parent: The folder whose ``.tmp-*`` children are considered (not searched deeper).
        stale_after_s: Seconds without any change after which anyone's temporary folder is abandoned.

    Returns:
        The folders removed.
    """
    removed = []
    me = host_key()
    for tmp in parent.glob(f"{TEMP_PREFIX}*"):
        try:
            if tmp.is_symlink() or not tmp.is_dir():
                continue
            host, pid = _owner(tmp)
            dead = host == me and pid != os.getpid() and not pid_alive(pid)
            if dead or _age_s(tmp) > stale_after_s:
                shutil.rmtree(tmp)
                removed.append(tmp)
        except OSError:
            continue  # vanished meanwhile, or not ours to remove: leave it
    return removed
