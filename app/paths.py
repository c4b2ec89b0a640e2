"""Where the app's bundled files live, in a source checkout or a PyInstaller bundle."""

from __future__ import annotations

import sys
from pathlib import Path


def resources_dir() -> Path:
    """Returns the folder of bundled resources (sample data, icons).

    PyInstaller unpacks a bundle under ``sys._MEIPASS``; a source checkout keeps them in ``resources/`` at the
    repository's top.
    """
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return Path(bundle) / "resources"
    return Path(__file__).resolve().parent.parent / "resources"


def sample_data_dir() -> Path:
    """Returns the bundled sample data set (one sub-folder per class), trained on by "Use sample data".

    >>> sorted(p.name for p in sample_data_dir().iterdir() if p.is_dir())
    ['bag', 'dress', 'sneaker', 'trouser']
    """
    return resources_dir() / "sample_data"
