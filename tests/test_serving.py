"""gRPC and REST backends against the TF Serving protocol double, over real loopback sockets."""

import re
import subprocess

import numpy as np
import pytest
from images import bad_images, good_images
from serving.double import TFServingDouble

from app.inference.factory import open_classifier
from app.inference.remote import RemoteError, parse_target

REMOTE_VS_SAVEDMODEL = 1e-5  # the server runs the same SavedModel on the same bytes


@pytest.fixture(scope="module")
def sample(trained, fm_dir):
    files = [p for c in trained["done"]["classes"] for p in sorted((fm_dir / c).glob("*.png"))[:3]]
    return [p.read_bytes() for p in files], [p.parent.name for p in files]


def urls(server, name="clothes"):
    return [server.grpc_url(name), server.rest_url(name)]


def test_parse_target():
    t = parse_target("grpc://localhost/flowers?version=3&signature=serving_images")
    assert (t.host, t.port, t.model, t.version, t.signature, t.protocol) == (
        "localhost",
        8500,
        "flowers",
        3,
        "serving_images",
        "grpc",
    )
    t = parse_target("https://example.org/v1/models/flowers/versions/2")
    assert (t.port, t.model, t.version, t.secure, t.protocol) == (8501, "flowers", 2, True, "rest")
    for bad in ("ftp://x/y", "grpc://host:8500/", "http://host:8501/flowers", "grpc://h/m?version=x"):
        with pytest.raises(RemoteError):
            parse_target(bad)


def test_all_four_backends_agree(trained, server, sample):
    images, truth = sample
    model = trained["models"] / "clothes"
    reference = open_classifier(model, "savedmodel").classify(images, top_k=5)
    classes = trained["done"]["classes"]
    for backend, kwargs in [
        ("tflite", {"model": model}),
        ("grpc", {"server": server.grpc_url("clothes")}),
        ("rest", {"server": server.rest_url("clothes")}),
    ]:
        classifier = open_classifier(backend="tflite" if backend == "tflite" else None, **kwargs)
        assert classifier.labels == classes  # names come from the model itself
        out = classifier.classify(images, top_k=5)
        for got, want in zip(out, reference):
            assert got.error is None and got.label == want.label
            diff = max(abs(dict(got.top_k)[label] - score) for label, score in want.top_k)
            assert diff < REMOTE_VS_SAVEDMODEL, (backend, diff)
    assert np.mean([p.label == t for p, t in zip(reference, truth)]) >= 0.8


@pytest.mark.parametrize("kind", ["grpc", "rest"])
def test_remote_timings_and_bytes(server, sample, kind):
    images, _ = sample
    url = server.grpc_url("clothes") if kind == "grpc" else server.rest_url("clothes")
    classifier = open_classifier(server=url, token="s3cret")
    assert classifier.status() == [(1, "AVAILABLE")]
    out = classifier.classify(images[:4])
    for p in out:
        t = p.timings
        assert t.network_ms > 0 and t.reply_ms > 0  # encode, network + server, then decoding the reply
        assert t.total_ms == pytest.approx(t.preprocess_ms + t.network_ms + t.reply_ms, abs=0.01)
    sent, files = sum(p.request_bytes for p in out), sum(len(d) for d in images[:4])
    assert files < sent < files * 1.4 + 4 * 200  # the encoded bytes (base64 for REST), never pixels
    assert server.last_authorization == "Bearer s3cret"


@pytest.mark.parametrize("kind", ["grpc", "rest"])
def test_a_corrupt_image_fails_alone(server, sample, kind):
    images, truth = sample
    url = server.grpc_url("clothes") if kind == "grpc" else server.rest_url("clothes")
    batch = [images[0], bad_images()["truncated.jpg"][0], bad_images()["empty.jpg"][0], images[1]]
    out = open_classifier(server=url).classify(batch)
    assert [p.error is None for p in out] == [True, False, False, True]
    assert "rejected" in out[1].error and "empty" in out[2].error
    assert out[0].label == truth[0]


@pytest.mark.parametrize("kind", ["grpc", "rest"])
@pytest.mark.parametrize(
    "change, message",
    [
        (lambda u: u.replace("clothes", "shoes"), "has no model 'shoes'"),
        (
            lambda u: u + ("?version=7" if u.startswith("grpc") else "/versions/7"),
            "version 7 of model 'clothes' is not loaded",
        ),
        (lambda u: u + "?signature=nope", "has no signature 'nope'"),
        (lambda u: u + "?signature=serving_images", "does not take encoded image bytes"),
    ],
)
def test_user_mistakes_get_one_sentence(server, kind, change, message):
    url = change(server.grpc_url("clothes") if kind == "grpc" else server.rest_url("clothes"))
    with pytest.raises(RemoteError, match=message) as info:
        open_classifier(server=url)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "url, message",
    [
        ("grpc://127.0.0.1:9/clothes", "cannot reach a TF Serving gRPC server"),
        ("http://127.0.0.1:9/v1/models/clothes", "cannot reach a TF Serving REST server"),
        ("grpc://127.0.0.2:8500/clothes", "cannot reach"),  # a host where nothing listens
    ],
)
def test_unreachable_servers(url, message):
    with pytest.raises(RemoteError, match=message):
        open_classifier(server=url, timeout_s=5)


def test_deadline(server, sample):
    for url in urls(server):
        classifier = open_classifier(server=url, timeout_s=0.5)
        server.delay_s = 1.5
        try:
            out = classifier.classify(sample[0][:1])  # the image's error: a run goes on with the next
            assert out[0].error.endswith("did not answer within 0.5 s") and out[0].top_k == []
        finally:
            server.delay_s = 0.0


def test_message_too_large(trained):
    big = good_images()["big.jpg"]
    with TFServingDouble({"clothes": trained["models"] / "clothes"}, max_receive_bytes=200_000, rest=False) as small:
        classifier = open_classifier(server=small.grpc_url("clothes"))
        out = classifier.classify([big] * 3)
        assert all(re.match(r"the request \(.* MB\) is larger than .* accepts", p.error) for p in out)
    # and the client's own receive limit is raised: a 3 MB answer arrives intact
    assert len(big) > 200_000


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(folder / "key.pem"),
            "-out",
            str(folder / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )
    return folder / "key.pem", folder / "cert.pem"


def test_tls(trained, sample, tls_files, server):
    key, cert = tls_files
    with TFServingDouble(
        {"clothes": trained["models"] / "clothes"}, tls=(key.read_bytes(), cert.read_bytes()), rest=False
    ) as secure:
        url = secure.grpc_url("clothes", scheme="grpcs")
        out = open_classifier(server=url, ca_file=str(cert)).classify(sample[0][:1])
        assert out[0].label == sample[1][0]
        with pytest.raises(RemoteError, match="TLS|cannot reach"):
            open_classifier(server=url, timeout_s=3)  # not signed by a CA the client trusts
        with pytest.raises(RemoteError):
            open_classifier(server=secure.grpc_url("clothes"), timeout_s=3)  # plaintext to a TLS port
    with pytest.raises(RemoteError, match="TLS|cannot reach"):
        open_classifier(server=server.grpc_url("clothes", scheme="grpcs"), ca_file=str(cert), timeout_s=3)


def test_bench_command_compares_all_backends(trained, server, fm_dir):
    import json
    import sys

    backends = ",".join(["tflite", "savedmodel", *urls(server)])
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "app",
            "bench",
            str(fm_dir),
            "--model",
            str(trained["models"] / "clothes"),
            "--backends",
            backends,
            "--limit",
            "15",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["backend"] for r in rows] == backends.split(",")
    for row in rows:
        assert row["images"] == 15 and row["errors"] == 0 and row["accuracy"] >= 0.8
        for key in ("preprocess_ms", "inference_ms", "total_ms"):
            assert set(row[key]) == {"mean", "median", "p95", "min", "max"}
            assert row[key]["min"] <= row[key]["median"] <= row[key]["max"]
        assert row["images_per_s"] > 0 and row["request_bytes_mean"] > 0
    assert len({r["accuracy"] for r in rows}) == 1  # same model, same answers
    assert rows[0]["total_ms"]["median"] > 0 and rows[2]["network_ms"]["median"] > 0


def test_classify_command_against_a_server(server, fm_dir):
    import json
    import sys

    files = sorted((fm_dir / "bag").glob("*.png"))[:2]
    result = subprocess.run(
        [sys.executable, "-m", "app", "classify", "--server", server.rest_url("clothes"), *map(str, files), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["label"] for r in rows] == ["bag", "bag"] and rows[0]["backend"] == "rest"
    down = subprocess.run(
        [sys.executable, "-m", "app", "classify", "--server", "grpc://127.0.0.1:9/clothes", str(files[0])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert down.returncode == 1
    assert down.stderr.strip().splitlines()[-1].startswith("retrain-studio: cannot reach a TF Serving gRPC server")
