"""Packaging: desktop integration files validate, serving files parse, icons exist, bundles build (slow)."""

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from google.protobuf import text_format
from PIL import Image
from tensorflow_serving.config import model_server_config_pb2

REPO = Path(__file__).resolve().parents[1]
LINUX = REPO / "packaging" / "linux"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]  # the one users install


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing: .ci/run installs it")
        pytest.skip(f"{name} is not installed here (apt-get install desktop-file-utils appstream)")
    return path


def test_desktop_file_validates():
    result = subprocess.run(
        [_tool("desktop-file-validate"), str(LINUX / "retrain-studio.desktop")], capture_output=True, text=True
    )
    assert result.returncode == 0 and "error" not in result.stdout, result.stdout


def test_appstream_metainfo_validates():
    metainfo = LINUX / "io.github.retrainstudio.RetrainStudio.metainfo.xml"
    result = subprocess.run(
        [_tool("appstreamcli"), "validate", "--no-net", str(metainfo)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert '<launchable type="desktop-id">retrain-studio.desktop</launchable>' in metainfo.read_text()


def test_icons_in_standard_sizes():
    for size in (16, 24, 32, 48, 64, 128, 256, 512):
        path = REPO / "resources" / "icons" / "hicolor" / f"{size}x{size}" / "apps" / "retrain-studio.png"
        with Image.open(path) as image:
            assert image.size == (size, size) and image.mode == "RGBA"
    assert (REPO / "resources" / "icons" / "hicolor" / "scalable" / "apps" / "retrain-studio.svg").exists()


def test_serving_compose_and_example_config():
    compose = yaml.safe_load((REPO / "packaging" / "serving" / "compose.yaml").read_text())
    service = compose["services"]["tfserving"]
    assert service["image"].startswith("tensorflow/serving")
    assert set(service["ports"]) == {"8500:8500", "8501:8501"}
    assert "--model_config_file=/models/models.config" in service["command"]
    config = text_format.Parse(
        (REPO / "packaging" / "serving" / "models.config").read_text(), model_server_config_pb2.ModelServerConfig()
    )
    names = [c.name for c in config.model_config_list.config]
    assert names == ["flowers", "clothes"]
    assert list(config.model_config_list.config[1].model_version_policy.specific.versions) == [2, 3]


def test_version_flag():
    """``--version`` says the version pyproject.toml gives the package (app.__version__ must follow it)."""
    out = subprocess.run([sys.executable, "-m", "app", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"retrain-studio {VERSION}"


@pytest.mark.slow
@pytest.mark.parametrize("variant, folder", [("classify", "retrain-studio-classify"), ("full", "retrain-studio")])
def test_bundle_builds_and_starts(variant, folder, tmp_path):
    """Builds with PyInstaller (minutes), then runs the bundle with no Python beside it."""
    build = subprocess.run(
        ["bash", str(REPO / "packaging" / "build.sh"), variant], capture_output=True, text=True, cwd=REPO, timeout=3000
    )
    print(build.stdout[-2000:], build.stderr[-3000:])
    assert build.returncode == 0
    binary = REPO / "dist" / folder / "retrain-studio"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "QT_QPA_PLATFORM": "offscreen"}  # no venv, no PYTHONPATH
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, env=env, timeout=120)
    assert version.returncode == 0 and version.stdout.startswith(f"retrain-studio {VERSION}")
    gui = subprocess.run(
        [str(binary)], capture_output=True, text=True, timeout=120, env={**env, "RETRAIN_STUDIO_QUIT_AFTER_SHOW": "1"}
    )
    assert gui.returncode == 0 and "window shown: Retrain Studio" in gui.stdout, gui.stderr[-2000:]
