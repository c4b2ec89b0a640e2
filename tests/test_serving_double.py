"""The protocol double behaves like TF Serving where a client can see it (so client tests mean something)."""

import base64
import http.client
import json

import grpc
import pytest
from serving.double import TFServingDouble

# `trained` is the stand-in's: these tests check the serving double, not the answers' quality


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory):
    import tensorflow as tf

    class Echo(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="data")])
        def serve(self, data):
            return {"echo_bytes": data, "length": tf.strings.length(data)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def twice(self, x):
            return {"y": x * 2}

    base = tmp_path_factory.mktemp("models") / "echo"
    for version in (1, 2):
        module = Echo()
        tf.saved_model.save(
            module, str(base / str(version)), signatures={"serving_default": module.serve, "twice": module.twice}
        )
    with TFServingDouble({"echo": base}) as server:
        yield server


def rest(server, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=10)
    conn.request(method, path, body=body if isinstance(body, (bytes, type(None))) else json.dumps(body))
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


def test_status_reports_only_the_highest_version(echo_server):
    assert rest(echo_server, "GET", "/v1/models/echo") == (
        200,
        {
            "model_version_status": [
                {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
            ]
        },
    )
    assert rest(echo_server, "GET", "/v1/models/echo/versions/1")[0] == 404


def test_row_and_columnar_formats_with_binary(echo_server):
    code, body = rest(echo_server, "POST", "/v1/models/echo:predict", {"instances": [b64(b"hi"), b64(b"\xff\x00")]})
    assert code == 200
    assert body == {
        "predictions": [{"echo_bytes": b64(b"hi"), "length": 2}, {"echo_bytes": b64(b"\xff\x00"), "length": 2}]
    }
    code, body = rest(echo_server, "POST", "/v1/models/echo/versions/2:predict", {"inputs": {"data": [b64(b"abc")]}})
    assert (code, body) == (200, {"outputs": {"echo_bytes": [b64(b"abc")], "length": [3]}})
    code, body = rest(
        echo_server, "POST", "/v1/models/echo:predict", {"signature_name": "twice", "instances": [1.5, 2]}
    )
    assert (code, body) == (200, {"predictions": [3.0, 4.0]})  # one output: bare values


@pytest.mark.parametrize(
    "path, body, status, message",
    [
        ("/v1/models/nope:predict", {"instances": [1]}, 404, "Servable not found for request: Latest(nope)"),
        (
            "/v1/models/echo/versions/1:predict",
            {"instances": [b64(b"x")]},
            404,
            "Servable not found for request: Specific(echo, 1)",
        ),
        (
            "/v1/models/echo:predict",
            {"signature_name": "zz", "instances": [1]},
            400,
            'Serving signature key "zz" not found.',
        ),
        ("/v1/models/echo:predict", b"{not json", 400, "JSON Parse error"),
        ("/v1/models/echo:predict", {"signature_name": "twice", "instances": [b64(b"\x00\x00")]}, 400, "float"),
    ],
)
def test_rest_errors_match_the_real_server(echo_server, path, body, status, message):
    code, reply = rest(echo_server, "POST", path, body)
    assert code == status and set(reply) == {"error"} and message in reply["error"]


def test_grpc_errors_match_the_real_server(echo_server):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    stub = prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(f"127.0.0.1:{echo_server.grpc_port}")
    )

    def call(name="echo", signature="", key="data"):
        request = predict_pb2.PredictRequest()
        request.model_spec.name, request.model_spec.signature_name = name, signature
        request.inputs[key].CopyFrom(tf.make_tensor_proto([b"x"]))
        return stub.Predict(request, timeout=10)

    assert tf.make_ndarray(call().outputs["length"]).tolist() == [1]
    for kwargs, code, message in [
        ({"name": "nope"}, grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)"),
        ({"signature": "zz"}, grpc.StatusCode.FAILED_PRECONDITION, 'Serving signature key "zz" not found.'),
        ({"key": "wrong"}, grpc.StatusCode.INVALID_ARGUMENT, "Sent extra: {wrong}. Missing but required: {data}."),
    ]:
        with pytest.raises(grpc.RpcError) as info:
            call(**kwargs)
        assert info.value.code() == code and message in info.value.details()
