"""The models folder as the user sees it: what a version is, what it weighs, and removing one.

No TensorFlow and no Qt here: the GUI asks the questions and calls these.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

from .atomic import temp_folder
from .export import version_folders


def model_folders(models_dir: str | Path) -> list[Path]:
    """The models in a models folder: sub-folders holding at least one complete version, by name."""
    root = Path(models_dir).expanduser()
    return sorted(p for p in root.iterdir() if p.is_dir() and version_folders(p)) if root.is_dir() else []


def human_size(n: int) -> str:
    """Bytes for people: "512 B", "3.4 KB", "17.2 MB", "1.3 GB" (never "0.00 MB").

    >>> human_size(0), human_size(1536), human_size(17_200_000)
    ('0 B', '1.5 KB', '17.2 MB')
    """
    if n < 1000:
        return f"{n} B"
    for unit in ("KB", "MB", "GB", "TB"):
        n /= 1000
        if n < 999.95 or unit == "TB":
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


def folder_size(path: Path) -> int:
    """Bytes of the regular files under ``path`` (links are not followed)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            total += st.st_size if stat.S_ISREG(st.st_mode) else 0
    return total


@dataclass
class VersionInfo:
    """One version folder's facts, read from its metadata.json (missing facts are None)."""

    path: Path
    model: str
    version: str
    classes: int | None = None
    accuracy: float | None = None
    test_images: int | None = None
    created: str = ""
    backbone: str = "?"
    size: int = 0
    tflite: dict[str, int] = field(default_factory=dict)
    has_results: bool = False

    def accuracy_text(self) -> str:
        return f"{self.accuracy:.1%}" if self.accuracy is not None else "—"


def read_version(version: str | Path) -> VersionInfo:
    version = Path(version)
    try:
        meta = json.loads((version / "metadata.json").read_text(encoding="utf-8"))
        meta = meta if isinstance(meta, dict) else {}
    except (OSError, ValueError):
        meta = {}
    metrics = meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {}
    acc, images = metrics.get("test_accuracy"), metrics.get("test_images")
    created = str(meta.get("created", ""))
    try:
        created = datetime.fromisoformat(created).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        pass
    labels = meta.get("labels")
    backbone = meta.get("backbone") if isinstance(meta.get("backbone"), dict) else {}
    tflite = {p.name: p.stat().st_size for p in sorted(version.glob("*.tflite")) if p.is_file()}
    return VersionInfo(
        path=version, model=version.parent.name, version=version.name,
        classes=len(labels) if isinstance(labels, list) else None,
        accuracy=float(acc) if isinstance(acc, (int, float)) else None,
        test_images=images if isinstance(images, int) else None, created=created,
        backbone=str(backbone.get("id", "?")).split("/")[-1], size=folder_size(version), tflite=tflite,
        has_results=(version / "results.npz").is_file())


class DeleteError(OSError):
    """A version that could not be removed, in one sentence."""


def delete_version(version: str | Path, trash: Callable[[Path], bool] | None) -> bool:
    """Remove one version folder ``MODELS_DIR/NAME/N``; True if it went to the trash.

    ``trash(path)`` moves a path to the system trash and says whether it could (the GUI passes
    QFile.moveToTrash). It returns False where there is no trash: then nothing has happened and
    this returns False; call again with ``trash=None`` (after asking) to delete permanently.
    A permanent delete first renames the folder to a hidden name, so TF Serving never sees half
    a version, then removes it.
    """
    version = Path(version)
    if not version.name.isdigit() or version.is_symlink() or not version.is_dir():
        raise DeleteError(f"{version} is not a model version folder")
    if trash is not None:
        return bool(trash(version))
    hidden = temp_folder(version.parent)
    try:
        version.rename(hidden)
    except OSError as exc:
        raise DeleteError(f"{version} could not be deleted ({exc.strerror or exc})") from None
    shutil.rmtree(hidden, ignore_errors=True)
    return False
