"""Misbehaving servers: wrong replies, slow or huge replies, the wrong protocol, plain-text tokens.

Every server here is the TF Serving double on 127.0.0.1, started by the test and told to
misbehave (``double.fault``); nothing it answers may end a run with a library error or
give a silently wrong result.
"""

import json
import os
import re
import subprocess
import sys
import time

import pytest
from images import good_images
from serving.double import TFServingDouble

from app.inference.base import ModelError
from app.inference.factory import open_classifier
from app.inference.remote import RemoteError

# `trained` is the stand-in's: these tests check the clients against misbehaving servers, not the answers' quality


@pytest.fixture(scope="module")
def images(trained, fm_dir):
    classes = trained["done"]["classes"]
    return [sorted((fm_dir / classes[i]).glob("*.png"))[0].read_bytes() for i in (0, 1)]


def url(server, kind: str) -> str:
    return server.grpc_url("clothes") if kind == "grpc" else server.rest_url("clothes")


@pytest.fixture
def faulty(server):
    """Set ``server.fault`` (or delays) for one test; always healthy again afterwards."""
    yield server
    server.fault, server.delay_s, server.slow_from_bytes = None, 0.0, 0


REPLY_FAULTS = {  # fault -> what the image's error must say (one sentence, never a library's exception)
    "columns": "4 probabilities per image, but model 'clothes' has 5 classes",
    "extra_row": r"shape \[2, 5\] for 1 image",
    "missing_row": "no predictions",
    "empty": "no predictions",
    "nan": "not finite",
    "inf": "not finite",
    "not_softmax": "do not sum to 1",
    "missing_key": "without the 'probabilities' output",
    "wrong_type": "not numbers",
    "ood_nan": "without one finite 'ood_score' per image",
}
GRPC_ONLY = {
    "bad_shape": "bytes do not match its shape",
    "unknown_not_bool": "'unknown' output of the wrong type, not DT_BOOL",
    "unknown_missing": "output tensor alias not found",  # the real server refuses a filter naming no output
}
REST_ONLY = {
    "not_object": "JSON that is not an object",
    "not_json": "not TF Serving JSON",
    "rows_not_list": "without a list of predictions",
    "unknown_not_bool": "without one true/false 'unknown' per image",
    "unknown_missing": "without the 'unknown' output",
}
CASES = (
    [(k, f, m) for k in ("grpc", "rest") for f, m in REPLY_FAULTS.items()]
    + [("grpc", f, m) for f, m in GRPC_ONLY.items()]
    + [("rest", f, m) for f, m in REST_ONLY.items()]
)


@pytest.mark.parametrize("kind, fault, message", CASES)
def test_a_wrong_reply_is_each_images_one_sentence_error(faulty, images, kind, fault, message):
    classifier = open_classifier(server=url(faulty, kind))
    faulty.fault = fault
    out = classifier.classify(images)
    for prediction in out:
        assert prediction.error is not None and prediction.top_k == [], (fault, prediction)
        assert "\n" not in prediction.error and "Error" not in prediction.error
    assert any(re.search(message, p.error) for p in out), [p.error for p in out]
    faulty.fault = None
    assert all(p.error is None for p in classifier.classify(images))  # the same client goes on once it heals


@pytest.mark.parametrize("kind", ["grpc", "rest"])
@pytest.mark.parametrize(
    "fault, message",
    [
        ("labels_count", "4 class names where 5 were expected"),
        ("labels_utf8", "not valid UTF-8"),
        ("labels_control", "control characters"),
        ("labels_duplicate", "same class name twice"),
        ("nan", "not finite"),  # the warm-up reply is checked too
    ],
)
def test_bad_model_metadata_refuses_to_open(faulty, kind, fault, message):
    faulty.fault = fault
    with pytest.raises(ModelError, match=message) as info:
        open_classifier(server=url(faulty, kind))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kind", ["grpc", "rest"])
def test_bad_metadata_and_status_are_one_sentence(faulty, kind):
    classifier = open_classifier(server=url(faulty, kind))
    faulty.fault = "bad_status"
    if kind == "rest":
        with pytest.raises(ModelError, match="model status that is not TF Serving's"):
            classifier.status()
    else:  # an unknown state number is shown as it is, never an exception
        assert classifier.status()[-1] == (0, "7")
    faulty.fault = "bad_metadata"
    with pytest.raises(ModelError, match="model metadata that is not TF Serving's"):
        open_classifier(server=url(faulty, kind))


def test_rest_timeout_is_a_deadline_for_the_whole_call(faulty, images):
    classifier = open_classifier(server=faulty.rest_url("clothes"), timeout_s=1)
    faulty.fault = "drip"  # one byte every 0.5 s: each read is quick, the whole reply would take 20 s
    start = time.monotonic()
    out = classifier.classify(images[:1])
    elapsed = time.monotonic() - start
    assert out[0].error == f"http://127.0.0.1:{faulty.rest_port} did not answer within 1 s"
    assert 0.9 < elapsed < 3.5  # the old per-read timeout let it run about 20 s


@pytest.mark.parametrize("kind, fault", [("rest", "huge"), ("rest", "huge_declared"), ("grpc", "huge")])
def test_reply_size_is_capped(faulty, images, kind, fault):
    classifier = open_classifier(server=url(faulty, kind))
    faulty.fault = fault
    out = classifier.classify(images[:1])
    assert "MB" in out[0].error and "a prediction can need" in out[0].error


@pytest.mark.thorough
@pytest.mark.parametrize("kind", ["grpc", "rest"])
def test_one_slow_image_fails_alone(faulty, images, kind):
    big = good_images()["big.jpg"]
    classifier = open_classifier(server=url(faulty, kind), timeout_s=2)
    faulty.delay_s, faulty.slow_from_bytes = 3.0, len(big)
    out = classifier.classify([images[0], big, images[1]])
    where = f"grpc://127.0.0.1:{faulty.grpc_port}" if kind == "grpc" else f"http://127.0.0.1:{faulty.rest_port}"
    assert [p.error for p in out] == [None, f"{where} did not answer within 2 s", None]


@pytest.mark.thorough  # over a second: a client in a child process
def test_one_oversize_image_fails_alone_and_the_cli_goes_on(trained, images, tmp_path):
    big = good_images()["big.jpg"]
    with TFServingDouble({"clothes": trained["models"] / "clothes"}, max_receive_bytes=200_000) as small:
        for target in (small.grpc_url("clothes"), small.rest_url("clothes")):
            out = open_classifier(server=target).classify([images[0], big, images[1]])
            assert [p.error is None for p in out] == [True, False, True]
            assert "is larger than" in out[1].error
        files = []
        for name, data in [("a.png", images[0]), ("big.jpg", big), ("b.png", images[1])]:
            (tmp_path / name).write_bytes(data)
            files.append(str(tmp_path / name))
        result = subprocess.run(
            [sys.executable, "-m", "app", "classify", "--server", small.rest_url("clothes"), *files, "--json"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["path"].rsplit("/", 1)[-1] for r in rows] == ["a.png", "big.jpg", "b.png"]
    assert [r["error"] is None for r in rows] == [True, False, True]


def test_the_wrong_protocol_is_named(server):
    with pytest.raises(RemoteError) as rest_at_grpc:
        open_classifier(server=f"http://127.0.0.1:{server.grpc_port}/v1/models/clothes", timeout_s=5)
    assert str(rest_at_grpc.value).endswith(
        f"this port speaks gRPC; use grpc://127.0.0.1:{server.grpc_port}/clothes or the REST port (8501)"
    )
    with pytest.raises(RemoteError) as grpc_at_rest:
        open_classifier(server=f"grpc://127.0.0.1:{server.rest_port}/clothes", timeout_s=5)
    assert str(grpc_at_rest.value).endswith(
        f"this port speaks REST; use http://127.0.0.1:{server.rest_port}/v1/models/clothes or the gRPC port (8500)"
    )


def test_grpcs_at_a_plain_port_is_one_line_without_grpc_logs(server, images, tmp_path):
    """TLS spoken to a plain port: gRPC's own INFO log of the failed handshake must not reach the terminal."""
    (tmp_path / "a.png").write_bytes(images[0])
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "app",
            "classify",
            "--server",
            f"grpcs://127.0.0.1:{server.rest_port}/clothes",
            "--timeout",
            "3",
            str(tmp_path / "a.png"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 1
    assert "TLS handshake" in result.stderr.splitlines()[-1]
    assert "ssl_transport_security" not in result.stderr and "Handshake failed" not in result.stderr


@pytest.mark.parametrize("kind", ["grpc", "rest"])
def test_a_token_over_plain_text_is_warned_about_once(server, kind):
    seen = []
    first = open_classifier(server=url(server, kind), token="s3cret", on_warning=seen.append)
    second = open_classifier(server=url(server, kind), token="s3cret", on_warning=seen.append)
    assert len(seen) == 1 and "unencrypted" in seen[0] and ("grpcs://" if kind == "grpc" else "https://") in seen[0]
    assert first.warnings == second.warnings == seen  # what the GUI shows
    assert open_classifier(server=url(server, kind)).warnings == []
    with pytest.raises(ModelError, match="one line of printable ASCII"):
        open_classifier(server=url(server, kind), token="s3cret\r\nX-Evil: 1")


@pytest.mark.thorough  # over a second: clients in child processes
def test_cli_token_from_a_file_or_the_environment(server, images, tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(images[0])
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    base = [sys.executable, "-m", "app", "classify", "--server", server.rest_url("clothes"), str(image), str(image)]
    env = {**os.environ, "RETRAIN_STUDIO_TOKEN": "from-env"}
    result = subprocess.run(
        base + ["--token-file", str(token_file)], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr
    assert server.last_authorization == "Bearer from-file"
    assert result.stderr.count("warning: the token is sent unencrypted") == 1
    result = subprocess.run(base, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0 and server.last_authorization == "Bearer from-env"
    missing = subprocess.run(
        base + ["--token-file", str(tmp_path / "nope")], capture_output=True, text=True, timeout=120
    )
    assert missing.returncode == 2 and "cannot read --token-file" in missing.stderr
    endless = subprocess.run(base + ["--timeout", "nan"], capture_output=True, text=True, timeout=120)
    assert endless.returncode == 2 and "--timeout must be a positive number" in endless.stderr


@pytest.mark.thorough  # over a second: clients in child processes
def test_cli_token_from_a_pipe_is_waited_for_and_an_unwritten_fifo_does_not_hang(server, images, tmp_path):
    """`--token-file <(pass show x)` (a pipe with a writer) works; a FIFO nobody writes to is 'empty', not a hang."""
    image = tmp_path / "a.png"
    image.write_bytes(images[0])
    base = [sys.executable, "-m", "app", "classify", "--server", server.rest_url("clothes"), str(image)]
    fifo = tmp_path / "token.fifo"
    os.mkfifo(fifo)
    silent = subprocess.run(base + ["--token-file", str(fifo)], capture_output=True, text=True, timeout=60)
    assert silent.returncode == 2 and f"--token-file {fifo} is empty" in silent.stderr
    read, write = os.pipe()
    process = subprocess.Popen(
        base + ["--token-file", f"/dev/fd/{read}"],
        pass_fds=(read,),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(read)
    time.sleep(1)  # the CLI is already waiting for the writer
    os.write(write, b"from-pipe\n")
    os.close(write)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert server.last_authorization == "Bearer from-pipe"
