"""gRPC and REST backends against the TF Serving protocol double, over real loopback sockets."""

import re
import subprocess
import time

import numpy as np
import pytest
from images import bad_images, good_images
from serving.double import TFServingDouble

from app.inference.factory import open_classifier
from app.inference.remote import RemoteError, parse_target

# `trained` is the stand-in's: these tests check the serving protocols, not the answers' quality

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


@pytest.mark.thorough  # over a second: a deadline waited out
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


GRPC_DEFAULT_RECEIVE_BYTES = 4 * 1024 * 1024  # gRPC's default grpc.max_receive_message_length


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory):
    """A model with 140,000 classes on a one-line stand-in backbone (mean colour): 8 images' probabilities
    (the client's batch) are 4.5 MB, more than gRPC's default receive limit."""
    import tensorflow as tf

    from app import store
    from app.core import export

    class MeanColour(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)], autograph=False)
        def __call__(self, images):
            return tf.concat([tf.reduce_mean(images, axis=[1, 2]), tf.ones_like(images[:, 0, 0, :1])], axis=1)

    k = 140_000
    labels = [f"class_{i:06d}" for i in range(k)]
    kernel = np.random.default_rng(0).normal(0, 4, (4, k)).astype(np.float32)
    models = tmp_path_factory.mktemp("wide")
    export.export(
        models,
        "wide",
        load_backbone=MeanColour,
        head=(kernel, np.zeros(k, np.float32)),
        labels=labels,
        image_size=32,
        metadata=store.new_metadata(labels, 32),
        tflite=(),
    )
    return models / "wide"


@pytest.mark.thorough  # over a second: a big reply
def test_grpc_client_receives_replies_above_grpcs_default_limit(wide_model, fm_dir):
    """The client raises its receive limit: a 4.5 MB reply arrives whole, where a channel with gRPC's default
    limit is refused the same reply."""
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    images = [path.read_bytes() for path in sorted(fm_dir.rglob("*.png"))[::25]]  # 8 images, of every class
    with TFServingDouble({"wide": wide_model}, rest=False) as wide:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "wide"
        request.inputs["image_bytes"].CopyFrom(tf_string_vector(images))
        request.output_filter.append("probabilities")
        channel = grpc.insecure_channel(f"127.0.0.1:{wide.grpc_port}")  # gRPC's default options
        with channel, pytest.raises(grpc.RpcError) as refused:
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        sizes = re.search(r"larger than max \((\d+) vs\. (\d+)\)", refused.value.details())
        assert sizes and int(sizes[2]) == GRPC_DEFAULT_RECEIVE_BYTES < int(sizes[1]), refused.value.details()

        out = open_classifier(server=wide.grpc_url("wide"), timeout_s=60).classify(images, top_k=5)
        sent = wide.models["wide"].run("serving_default", {"image_bytes": images})["probabilities"]  # the server's
    assert [p.error for p in out] == [None] * 8
    labels = [f"class_{i:06d}" for i in range(sent.shape[1])]
    for got, row in zip(out, sent):
        top = np.argsort(-row, kind="stable")[:5]
        assert got.top_k == [(labels[i], pytest.approx(float(row[i]), rel=1e-6)) for i in top]


def tf_string_vector(values: list[bytes]):
    """A DT_STRING TensorProto of shape [len(values)], as a TF Serving client sends encoded images."""
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(values))])
    return tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=shape, string_val=values)


def test_rest_retries_once_when_the_server_closed_a_kept_alive_connection(server, sample):
    """TF Serving closes a kept-alive REST connection after its idle timeout; the client's next request then
    meets a closed socket.  It is sent again, once, on a new connection, and the user sees nothing of it; a
    fresh connection closed without an answer, or a call past its deadline, is not repeated."""
    images, truth = sample
    server.close_idle_rest_connections()  # left open by clients of earlier tests in this module, not yet collected
    classifier = open_classifier(server=server.rest_url("clothes"), timeout_s=5)
    assert classifier.classify(images[:1])[0].label == truth[0]
    connections, predicts = server.rest_connections, server.requests
    assert server.close_idle_rest_connections() == 1  # one kept-alive connection served every call so far

    out = classifier.classify(images[:2])
    assert [p.label for p in out] == truth[:2] and all(p.error is None for p in out)
    assert server.rest_connections == connections + 1  # the retry's new connection
    assert server.requests == predicts + 1  # the stale connection's attempt never reached the model

    try:
        server.fault = "hang_up"  # the server closes every connection without answering
        connections = server.rest_connections
        out = classifier.classify(images[:1])  # on the kept-alive connection: retried once, on a new one
        assert out[0].error == f"http://127.0.0.1:{server.rest_port} closed the connection (RemoteDisconnected)"
        assert server.rest_connections == connections + 1
        out = classifier.classify(images[:1])  # on a fresh connection: not repeated
        assert out[0].error.endswith("closed the connection (RemoteDisconnected)")
        assert server.rest_connections == connections + 2
    finally:
        server.fault = None

    slow = open_classifier(server=server.rest_url("clothes"), timeout_s=0.25)
    predicts = server.requests
    try:
        server.delay_s = 0.5
        out = slow.classify(images[:1])
        assert out[0].error.endswith("did not answer within 0.25 s")
        time.sleep(0.8)  # the server finishes the late request; a retry would have sent a second one
        assert server.requests == predicts + 1
    finally:
        server.delay_s = 0.0


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


@pytest.mark.thorough  # over a second: a TLS server
def test_rest_over_tls(trained, sample, tls_files, fm_dir):
    """https:// with the server's self-signed certificate as --ca-file classifies; without it, or over plain
    http:// to the TLS port, the user gets one sentence."""
    import json
    import sys

    key, cert = tls_files
    files = sorted((fm_dir / "bag").glob("*.png"))[:2]
    tls = (key.read_bytes(), cert.read_bytes())
    with TFServingDouble({"clothes": trained["models"] / "clothes"}, tls=tls) as secure:
        url = secure.rest_url("clothes")
        assert url.startswith("https://")

        def classify(*flags):
            return subprocess.run(
                [sys.executable, "-m", "app", "classify", "--server", url, *flags, *map(str, files), "--json"],
                capture_output=True,
                text=True,
                timeout=120,
            )

        trusted = classify("--ca-file", str(cert))
        assert trusted.returncode == 0, trusted.stderr[-2000:]
        rows = [json.loads(line) for line in trusted.stdout.splitlines()]
        assert [r["label"] for r in rows] == ["bag", "bag"] and rows[0]["backend"] == "rest"

        untrusted = classify("--timeout", "5")
        assert untrusted.returncode == 1 and untrusted.stdout == ""
        last = untrusted.stderr.strip().splitlines()[-1]
        assert re.fullmatch(
            rf"retrain-studio: the TLS handshake with https://127\.0\.0\.1:{secure.rest_port} failed: check https:// "
            r"versus http:// and the CA certificate \(CERTIFICATE_VERIFY_FAILED\)",
            last,
        ), last

        classifier = open_classifier(server=url, ca_file=str(cert))
        secure.close_idle_rest_connections()  # the keep-alive retry works over TLS too
        assert classifier.classify(sample[0][:1])[0].label == sample[1][0]
        with pytest.raises(RemoteError) as info:
            open_classifier(server=url.replace("https://", "http://"), timeout_s=5)
        assert "\n" not in str(info.value) and str(info.value).startswith(f"http://127.0.0.1:{secure.rest_port} ")


@pytest.mark.thorough  # over a second: TensorFlow in a child process
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


@pytest.mark.thorough  # over a second: a client in a child process
def test_classify_command_against_a_server(server, fm_dir):
    import json
    import sys

    files = sorted((fm_dir / "bag").glob("*.png"))[:2]
    for url, backend in ((server.rest_url("clothes"), "rest"), (server.grpc_url("clothes"), "grpc")):
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "app", "classify", "--server", url, *map(str, files), "--json"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        assert [r["label"] for r in rows] == ["bag", "bag"] and rows[0]["backend"] == backend
        imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
        assert "app.inference.remote" in imported  # -X importtime's report is there to read
        # a client that only speaks the protocol needs none of TensorFlow (3-4 s and ~550 MB to import)
        assert "tensorflow" not in imported
    down = subprocess.run(
        [sys.executable, "-m", "app", "classify", "--server", "grpc://127.0.0.1:9/clothes", str(files[0])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert down.returncode == 1
    assert down.stderr.strip().splitlines()[-1].startswith("retrain-studio: cannot reach a TF Serving gRPC server")


RACE_WITH_TENSORFLOW = """
import importlib.abc, json, sys, threading, time
import app
from app.inference import protos
assert "tensorflow" not in sys.modules
seen = {}

def import_tensorflow():
    seen["while_the_protos_load"] = "tensorflow.core.framework" in sys.modules and "tensorflow" not in sys.modules
    import tensorflow
    seen["tf"] = tensorflow

racer = threading.Thread(target=import_tensorflow)

class StartTheRacer(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow_serving.apis.predict_pb2" and threading.current_thread() is not racer:
            racer.start()
            time.sleep(0.5)  # TensorFlow's import starts on the other thread while the protos are loading
        return None

sys.meta_path.insert(0, StartTheRacer())  # asked before the finders that find it
protos.load()
racer.join()
tf = seen["tf"]
from tensorflow_serving.apis import predict_pb2
request = predict_pb2.PredictRequest()
request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([b"jpeg"]))
print(json.dumps({
    "raced": seen["while_the_protos_load"],
    "tensorflow_works": int(tf.constant(6) // 2) == 3 and hasattr(tf, "saved_model"),
    "one_tensor_proto": type(tf.make_tensor_proto([1])) is type(request.inputs["image_bytes"]),
    "request": request.inputs["image_bytes"].string_val[0].decode(),
}))
"""


@pytest.mark.thorough
def test_tensorflow_imported_on_another_thread_while_the_protos_load_is_whole():
    """The gRPC client imports TF Serving's protos without TensorFlow's __init__ (app/inference/protos.py);
    a thread importing TensorFlow meanwhile waits and gets all of it, sharing the same protobuf classes."""
    import json
    import sys

    result = subprocess.run([sys.executable, "-c", RACE_WITH_TENSORFLOW], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    said = json.loads(result.stdout.splitlines()[-1])
    assert said == {"raced": True, "tensorflow_works": True, "one_tensor_proto": True, "request": "jpeg"}
