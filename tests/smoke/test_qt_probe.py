"""The UI log and stall watchdog the X smoke test reads (app/gui/qt_probe.py): on when asked, off by default."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def run_app(tmp_path: Path, **env) -> subprocess.CompletedProcess:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "QT_QPA_PLATFORM": "offscreen",
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "RETRAIN_STUDIO_QUIT_AFTER_SHOW": "1",
        **env,
    }
    script = Path(sys.executable).parent / "retrain-studio"
    return subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=60, cwd=home)


@pytest.mark.thorough  # over a second: an app process
def test_probe_logs_what_is_on_screen_and_stalls(tmp_path):
    log = tmp_path / "ui.jsonl"
    out = run_app(tmp_path, RETRAIN_STUDIO_UI_LOG=str(log), RETRAIN_STUDIO_WATCHDOG="1")
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(r["kind"] == "window" and r["window"] == "Retrain Studio" for r in records)
    check = [r for r in records if r["kind"] == "button" and r.get("text") == "Check connection"]
    assert check and check[0]["w"] > 0 and check[0]["h"] > 0 and check[0]["enabled"]
    assert any(r["kind"] == "stall" and r["ms"] > 0 for r in records)
    assert any(r["kind"] == "status" and r["text"] == "Ready" for r in records)


@pytest.mark.thorough  # over a second: an app process
def test_probe_is_off_by_default(tmp_path):
    out = run_app(tmp_path)
    assert out.returncode == 0, out.stderr
    assert "window shown: Retrain Studio" in out.stdout
    assert not list(tmp_path.rglob("*.jsonl"))
    assert '"kind": "stall"' not in out.stderr
