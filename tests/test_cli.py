"""The command-line contract: --json lines, exit codes, one-line errors."""

import json
import subprocess
import sys

import pytest
from commands import cli
from images import bad_images, good_images

# `trained` is the stand-in's: these tests check the command line, not the answers' quality


def _last_line(text: str) -> str:
    return [line for line in text.splitlines() if line.strip()][-1]


def test_backbones_lists_offline_bundled_models():
    result = cli("backbones", "--json")
    assert result.returncode == 0
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows[0]["id"] == "efficientnet_lite0" and rows[0]["offline"] is True
    assert any(not r["offline"] for r in rows)


def test_version_and_usage_errors():
    assert cli("--version").stdout.startswith("retrain-studio ")
    bad = cli("train", "somewhere")  # missing -o
    assert bad.returncode == 2
    bad = cli("classify", "--model", "m", "--top-k", "0", __file__)
    assert bad.returncode == 2 and "top-k" in bad.stderr


def test_single_class_folder_is_a_clear_error(tmp_path, cache_dir):
    (tmp_path / "data" / "cats").mkdir(parents=True)
    for i in range(3):
        (tmp_path / "data" / "cats" / f"{i}.jpg").write_bytes(good_images()["rgb.jpg"])
    result = cli("train", tmp_path / "data", "-o", tmp_path / "models", "--json")
    assert result.returncode == 1
    assert (
        _last_line(result.stderr) == f"retrain-studio: {tmp_path / 'data'} has 1 class folder; "
        "put the images in at least 2 sub-folders, one per class"
    )
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[-1]["event"] == "error" and "1 class folder" in events[-1]["message"]
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").rglob("saved_model.pb"))


@pytest.mark.thorough  # over a second: TensorFlow in a child process
def test_classify_json_keeps_going_past_a_corrupt_file(trained, fm_dir, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(bad_images()["truncated.jpg"][0])
    good = sorted((fm_dir / "sneaker").glob("*.png"))[:2]
    result = cli(
        "classify",
        "--model",
        trained["models"] / "clothes",
        "--backend",
        "savedmodel",
        tmp_path / "broken.jpg",
        *good,
        "--json",
        "--top-k",
        "2",
    )
    assert result.returncode == 0, result.stderr[-1000:]
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["error"] is None for r in rows] == [False, True, True]
    assert "truncated" in rows[0]["error"] or "decode" in rows[0]["error"]
    for row in rows[1:]:
        assert row["label"] == "sneaker" and len(row["top_k"]) == 2 and row["backend"] == "savedmodel"
        assert set(row["timings"]) == {
            "decode_ms",
            "preprocess_ms",
            "inference_ms",
            "network_ms",
            "reply_ms",
            "total_ms",
        }
    assert [row["request_bytes"] for row in rows[1:]] == [path.stat().st_size for path in good]  # the file's bytes


def test_classify_missing_model_is_one_line(tmp_path):
    result = cli("classify", "--model", tmp_path / "nothing", __file__)
    assert result.returncode == 1
    assert _last_line(result.stderr) == f"retrain-studio: model not found: {tmp_path / 'nothing'}"


def test_train_refuses_a_new_class_set_under_an_old_name(tmp_path):
    """Checked before any scanning: TF Serving clients of NAME would silently switch class sets."""
    from app.paths import sample_data_dir

    version = tmp_path / "models" / "clothes" / "1"
    version.mkdir(parents=True)
    (version / "metadata.json").write_text(json.dumps({"labels": ["bag", "dress", "shirt"]}))
    result = cli("train", sample_data_dir(), "-o", tmp_path / "models", "--name", "clothes", "--json", timeout=60)
    assert result.returncode == 2  # nothing was scanned: the only event is the error
    assert [json.loads(line)["event"] for line in result.stdout.splitlines()] == ["error"]
    assert _last_line(result.stderr) == (
        f"retrain-studio: model 'clothes' was trained on bag, dress, shirt but {sample_data_dir()} has bag, dress, "
        "sneaker, trouser; choose another --name or pass --allow-new-classes"
    )
    one_class = tmp_path / "one_class"
    (one_class / "shirt").mkdir(parents=True)
    allowed = cli("train", one_class, "-o", tmp_path / "models", "--name", "clothes", "--allow-new-classes", timeout=60)
    assert allowed.returncode == 1 and "1 class folder" in allowed.stderr  # got past the check, to the scan
    assert [p.name for p in (tmp_path / "models" / "clothes").iterdir()] == ["1"]


def test_output_piped_into_head_ends_quietly(trained, fm_dir):
    """`classify DIR | head -1`: the reader goes away mid-run; exit 0 with nothing on stderr, not 'Broken pipe'."""
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "classify", "--model", str(trained["models"] / "clothes"), str(fm_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = process.stdout.readline()  # output is block-buffered: more than one buffer is still to come
    process.stdout.close()
    stderr = process.stderr.read()
    assert process.wait(timeout=300) == 0, stderr[-500:]
    assert first.strip() and "Broken pipe" not in stderr and "retrain-studio:" not in stderr


def test_no_help_text_shows_a_doubled_percent_sign(capsys):
    """Seen in `bench --help`: "within 10%% in throughput" (argparse formats argument helps, not group texts)."""
    import re

    from app.cli import build_parser

    def shown(*args) -> str:
        with pytest.raises(SystemExit):
            build_parser().parse_args([*args, "--help"])
        return capsys.readouterr().out

    commands = re.search(r"\{([a-z,-]+)\}", shown()).group(1).split(",")
    helps = [shown(command) for command in commands]
    assert len(commands) > 5 and all("%%" not in text for text in helps)
    assert "within 10% in throughput" in "".join(helps)
