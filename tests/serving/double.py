"""A TensorFlow Serving protocol double for tests: real stubs, real sockets, real models.

The real ``tensorflow_model_server`` cannot be installed here, so this serves exported
SavedModels on 127.0.0.1 with the official gRPC servicers (PredictionService,
ModelService) and a REST server that follows TF Serving's published REST API.  It copies
what a client can see of the real server: only the highest version is loaded, status
states, NOT_FOUND / INVALID_ARGUMENT / FAILED_PRECONDITION with the real messages,
REST ``{"error": ...}`` bodies with the real HTTP codes, row and columnar formats,
``{"b64": ...}`` only for string inputs and ``*_bytes`` outputs, gRPC message limits.

    with TFServingDouble({"clothes": models / "clothes"}) as server:
        server.grpc_url("clothes"), server.rest_url("clothes")

It can also misbehave, as a broken or hostile server would: set ``fault`` to one of
``FAULTS`` (wrong shapes, NaN, bad labels, wrong JSON types, a reply dripped one byte at
a time, a huge reply...), or ``delay_s`` with ``slow_from_bytes`` to make only large
requests slow.

With ``tls`` both the gRPC and the REST port speak TLS only.  REST connections are kept alive (HTTP/1.1);
``close_idle_rest_connections()`` closes them as the real server does when one has been idle past its
keep-alive timeout, and ``rest_connections`` counts the connections accepted.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import ssl
import sys
import tempfile
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
DEFAULT_SIGNATURE = "serving_default"
HTTP_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INTERNAL: 500,
}


# Replies a client must refuse.  Numeric and label faults apply to both protocols; the rest to one.
NUMERIC_FAULTS = ("columns", "extra_row", "missing_row", "empty", "nan", "inf", "not_softmax")
TRUST_FAULTS = ("ood_nan", "unknown_not_bool", "unknown_missing")  # the unknown / ood_score outputs answered wrongly
LABEL_FAULTS = ("labels_count", "labels_utf8", "labels_control", "labels_duplicate")
METADATA_FAULTS = ("bad_metadata", "bad_status")  # GetModelMetadata / GetModelStatus answered wrongly
GRPC_FAULTS = ("missing_key", "wrong_type", "bad_shape", "huge")
REST_FAULTS = (
    "missing_key",
    "wrong_type",
    "not_object",
    "not_json",
    "rows_not_list",
    "drip",
    "huge",
    "huge_declared",
    "hang_up",  # the connection closed without an answer, as a crashing server's would be
)
FAULTS = (
    NUMERIC_FAULTS + TRUST_FAULTS + LABEL_FAULTS + METADATA_FAULTS + tuple(dict.fromkeys(GRPC_FAULTS + REST_FAULTS))
)


def _misbehave(fault: str | None, signature: str, outputs: dict) -> dict:
    """The model's true outputs, changed as ``fault`` says (numeric faults: the image signature only)."""
    out = dict(outputs)
    if fault in NUMERIC_FAULTS and (signature or DEFAULT_SIGNATURE) == DEFAULT_SIGNATURE:
        if fault in ("extra_row", "missing_row", "empty"):
            change = {
                "extra_row": lambda v: np.concatenate([v, v[:1]]),
                "missing_row": lambda v: v[:-1],
                "empty": lambda v: v[:0],
            }[fault]
            return {k: change(v) for k, v in out.items()}
        p = out["probabilities"].copy()
        if fault == "columns":
            p = p[:, :-1]
        elif fault in ("nan", "inf"):
            p[0, 0] = np.nan if fault == "nan" else np.inf
        elif fault == "not_softmax":
            p = p * 3
        out["probabilities"] = p
    if fault in TRUST_FAULTS and (signature or DEFAULT_SIGNATURE) == DEFAULT_SIGNATURE and "unknown" in out:
        if fault == "ood_nan":
            out["ood_score"] = out["ood_score"].copy()
            out["ood_score"][0] = np.nan
        elif fault == "unknown_not_bool":
            out["unknown"] = out["unknown"].astype(np.float32)
        else:
            del out["unknown"]
    if fault in LABEL_FAULTS and signature == "class_names":
        names = out["class_name"]
        out["class_name"] = {
            "labels_count": lambda: names[:-1],
            "labels_utf8": lambda: np.array([b"\xff\xfe" + n for n in names], dtype=object),
            "labels_control": lambda: np.array([n + b"\n\x1b[31m" for n in names], dtype=object),
            "labels_duplicate": lambda: np.array([names[0]] * len(names), dtype=object),
        }[fault]()
    return out


def _request_bytes(inputs: dict) -> int:
    return sum(len(b) for v in inputs.values() for b in np.ravel(np.asarray(v, dtype=object)) if isinstance(b, bytes))


class ServingError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code, self.message = code, message


class LoadedModel:
    """The highest version of one model (TF Serving's default version policy: latest 1)."""

    def __init__(self, name: str, base_path: Path):
        versions = sorted(int(p.name) for p in Path(base_path).iterdir() if p.is_dir() and p.name.isdigit())
        self.name, self.version = name, versions[-1]
        folder = Path(base_path) / str(self.version)
        self.model = tf.saved_model.load(str(folder))
        saved = saved_model_pb2.SavedModel.FromString((folder / "saved_model.pb").read_bytes())
        self.signature_defs = {k: v for k, v in saved.meta_graphs[0].signature_def.items() if not k.startswith("__")}

    def signature(self, name: str):
        name = name or DEFAULT_SIGNATURE
        if name not in self.signature_defs:
            raise ServingError(grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{name}" not found.')
        return name, self.signature_defs[name]

    def run(self, signature_name: str, inputs: dict) -> dict:
        name, signature = self.signature(signature_name)
        expected = set(signature.inputs)
        if set(inputs) != expected:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input size does not match signature: {len(inputs)}!={len(expected)} "
                f"len({{{','.join(sorted(inputs))}}}) != len({{{','.join(sorted(expected))}}}). "
                f"Sent extra: {{{','.join(sorted(set(inputs) - expected))}}}. "
                f"Missing but required: {{{','.join(sorted(expected - set(inputs)))}}}.",
            )
        tensors = {}
        for key, value in inputs.items():
            dtype = tf.dtypes.as_dtype(signature.inputs[key].dtype)
            try:
                tensors[key] = tf.constant(value, dtype=dtype)
            except (TypeError, ValueError) as exc:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT, f"Expects arg[0] to be {dtype.name}: {exc}"
                ) from None
        try:
            outputs = self.model.signatures[name](**tensors)
        except tf.errors.InvalidArgumentError as exc:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, exc.message.splitlines()[0]) from None
        return {k: v.numpy() for k, v in outputs.items()}


class TFServingDouble:
    def __init__(
        self,
        models: dict[str, Path],
        *,
        max_receive_bytes: int = 2**31 - 1,
        tls: tuple[bytes, bytes] | None = None,
        rest: bool = True,
    ):
        self.models = {name: LoadedModel(name, path) for name, path in models.items()}
        self.delay_s = 0.0  # set to make every Predict slow (deadline tests)
        self.slow_from_bytes = 0  # ... or only requests carrying at least this many image bytes
        self.fault: str | None = None  # one of FAULTS: answer wrongly on purpose
        self.max_receive_bytes = max_receive_bytes
        self.requests = 0
        self.rest_connections = 0  # REST connections accepted (a kept-alive one serves many requests)
        self._rest_open: set = set()  # the sockets of REST connections not closed yet
        self.last_authorization = None  # what the last request sent as its bearer token
        options = [("grpc.max_receive_message_length", max_receive_bytes), ("grpc.max_send_message_length", 2**31 - 1)]
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=options)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(_Prediction(self), self._grpc)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ModelService(self), self._grpc)
        self.rest_tls: ssl.SSLContext | None = None
        if tls:
            credentials = grpc.ssl_server_credentials([(tls[0], tls[1])])  # (private key, certificate)
            self.grpc_port = self._grpc.add_secure_port("127.0.0.1:0", credentials)
            self.rest_tls = _server_tls_context(*tls)
        else:
            self.grpc_port = self._grpc.add_insecure_port("127.0.0.1:0")
        self._rest = _RestServer(("127.0.0.1", 0), _RestHandler, self) if rest else None
        self.rest_port = self._rest.server_address[1] if self._rest else None

    # lifecycle
    def start(self) -> TFServingDouble:
        self._grpc.start()
        if self._rest:
            threading.Thread(target=self._rest.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._grpc.stop(grace=None)
        if self._rest:
            self._rest.shutdown()
            self._rest.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def grpc_url(self, name: str, scheme: str = "grpc") -> str:
        return f"{scheme}://127.0.0.1:{self.grpc_port}/{name}"

    def rest_url(self, name: str) -> str:
        return f"{'https' if self.rest_tls else 'http'}://127.0.0.1:{self.rest_port}/v1/models/{name}"

    def close_idle_rest_connections(self, timeout_s: float = 10.0) -> int:
        """Close every open REST connection, as an idle keep-alive timeout would, and wait until they are closed.

        Call it while no request is under way.  Returns how many were closed.
        """
        sockets = list(self._rest_open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # the handler's wait for the next request ends; it closes
        deadline = time.monotonic() + timeout_s
        while self._rest_open and time.monotonic() < deadline:
            time.sleep(0.01)
        return len(sockets)

    # shared logic
    def find(self, name: str, version: int | None) -> LoadedModel:
        model = self.models.get(name)
        if model is None or (version is not None and version != model.version):
            spec = f"Latest({name})" if version is None else f"Specific({name}, {version})"
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {spec}")
        return model

    def predict(self, name: str, version: int | None, signature: str, inputs: dict) -> tuple[LoadedModel, dict]:
        self.requests += 1
        if self.delay_s and _request_bytes(inputs) >= self.slow_from_bytes:
            time.sleep(self.delay_s)
        model = self.find(name, version)
        return model, _misbehave(self.fault, signature, model.run(signature, inputs))


class _Prediction(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, server: TFServingDouble):
        self.server = server

    def Predict(self, request, context):
        self.server.last_authorization = dict(context.invocation_metadata()).get("authorization")
        spec = request.model_spec
        version = spec.version.value if spec.HasField("version") else None
        try:
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            model, outputs = self.server.predict(spec.name, version, spec.signature_name, inputs)
            wanted = list(request.output_filter) or list(outputs)
            for alias in wanted:
                if alias not in outputs:
                    raise ServingError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"output tensor alias not found in signature: {alias} Outputs expected "
                        f"to be in the set {{{','.join(sorted(outputs))}}}.",
                    )
        except ServingError as exc:
            context.abort(exc.code, exc.message)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = spec.name
        response.model_spec.signature_name = spec.signature_name or DEFAULT_SIGNATURE
        response.model_spec.version.value = model.version
        for alias in wanted:
            response.outputs[alias].CopyFrom(tf.make_tensor_proto(outputs[alias]))
        fault = self.server.fault if "probabilities" in response.outputs else None
        if fault == "missing_key":
            del response.outputs["probabilities"]
        elif fault == "wrong_type":
            response.outputs["probabilities"].CopyFrom(tf.make_tensor_proto(np.array([[b"0.5"]], dtype=object)))
        elif fault == "bad_shape":
            response.outputs["probabilities"].tensor_shape.dim[-1].size += 1
        elif fault == "huge":  # 68 MB of probabilities
            response.outputs["probabilities"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 17_000_000), np.float32)))
        return response

    def GetModelMetadata(self, request, context):
        spec = request.model_spec
        version = spec.version.value if spec.HasField("version") else None
        try:
            model = self.server.find(spec.name, version)
            if list(request.metadata_field) != ["signature_def"]:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "Metadata field signature_def is required, and only signature_def is supported",
                )
        except ServingError as exc:
            context.abort(exc.code, exc.message)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = model.name
        response.model_spec.version.value = model.version
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, value in model.signature_defs.items():
            signature_map.signature_def[key].CopyFrom(value)
        response.metadata["signature_def"].Pack(
            signature_map if self.server.fault != "bad_metadata" else get_model_status_pb2.GetModelStatusResponse()
        )
        return response


class _ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, server: TFServingDouble):
        self.server = server

    def GetModelStatus(self, request, context):
        spec = request.model_spec
        model = self.server.models.get(spec.name)
        if model is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {spec.name}")
        if spec.HasField("version") and spec.version.value != model.version:
            context.abort(
                grpc.StatusCode.NOT_FOUND, f"Could not find version {spec.version.value} of model {spec.name}"
            )
        response = get_model_status_pb2.GetModelStatusResponse()
        status = response.model_version_status.add()
        status.version, status.state = model.version, AVAILABLE
        if self.server.fault == "bad_status":
            response.model_version_status.add().state = 7  # not a state TF Serving has
        return response


def _server_tls_context(key_pem: bytes, cert_pem: bytes) -> ssl.SSLContext:
    """A server-side TLS context from PEM bytes (ssl wants files: written to a temporary folder, read once)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as folder:
        key, cert = Path(folder, "key.pem"), Path(folder, "cert.pem")
        key.write_bytes(key_pem)
        cert.write_bytes(cert_pem)
        context.load_cert_chain(cert, key)
    return context


class _RestServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, handler, serving: TFServingDouble):
        self.serving = serving
        super().__init__(address, handler)

    def handle_error(self, request, client_address):
        """A client that fails the TLS handshake or hangs up is that connection's end, not a test's noise."""
        if not isinstance(sys.exc_info()[1], OSError):  # ssl.SSLError and ConnectionError are OSErrors
            super().handle_error(request, client_address)


def _to_json(value: np.ndarray, binary: bool):
    if value.dtype == object:
        if binary:
            return np.vectorize(lambda b: {"b64": base64.b64encode(b).decode()}, otypes=[object])(value).tolist()
        return np.vectorize(lambda b: b.decode("utf-8", "surrogateescape"), otypes=[object])(value).tolist()
    return value.tolist()


def _from_json(value):
    """Turn {"b64": ...} into bytes, recursively; other values stay as they are."""
    if isinstance(value, dict):
        if set(value) == {"b64"}:
            return base64.b64decode(value["b64"])
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "JSON Value not formatted correctly for base64 data")
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


class _RestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real server
    disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms delayed-ACK stall

    def log_message(self, *args):  # quiet test output
        pass

    def setup(self):
        serving = self.server.serving
        serving.rest_connections += 1
        if serving.rest_tls is not None:  # the handshake in this connection's thread: a stuck client blocks no one
            self.request.settimeout(10)
            self.request = serving.rest_tls.wrap_socket(self.request, server_side=True)
            self.request.settimeout(None)
        serving._rest_open.add(self.request)
        super().setup()

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.serving._rest_open.discard(self.request)

    def _reply(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self):
        import re

        match = re.fullmatch(r"/v1/models/([^/:]+)(?:/versions/(\d+))?(?::(predict)|/(metadata))?", self.path)
        if not match:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Malformed request: {self.command} {self.path}")
        name, version, predict, metadata = match.groups()
        return name, int(version) if version else None, predict, metadata

    def do_GET(self):
        try:
            name, version, predict, metadata = self._route()
            if predict:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Malformed request: GET {self.path}")
            if metadata and self.server.serving.fault == "bad_metadata":
                return self._reply(200, {"metadata": {"signature_def": ["serving_default"]}})
            if not metadata and self.server.serving.fault == "bad_status":
                return self._reply(200, {"model_version_status": [{"version": "one", "state": "AVAILABLE"}]})
            if metadata:
                model = self.server.serving.find(name, version)
                signature_map = get_model_metadata_pb2.SignatureDefMap()
                for key, value in model.signature_defs.items():
                    signature_map.signature_def[key].CopyFrom(value)
                return self._reply(
                    200,
                    {
                        "model_spec": {"name": name, "signature_name": "", "version": str(model.version)},
                        "metadata": {
                            "signature_def": json_format.MessageToDict(signature_map, preserving_proto_field_name=True)
                        },
                    },
                )
            model = self.server.serving.models.get(name)
            if model is None:
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}")
            if version is not None and version != model.version:
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find version {version} of model {name}")
            return self._reply(
                200,
                {
                    "model_version_status": [
                        {
                            "version": str(model.version),
                            "state": "AVAILABLE",
                            "status": {"error_code": "OK", "error_message": ""},
                        }
                    ]
                },
            )
        except ServingError as exc:
            self._reply(HTTP_CODES.get(exc.code, 500), {"error": exc.message})

    def _misbehave(self, fault: str) -> bool:
        """Answer a predict request as a broken server would; True when the reply has been sent."""
        if fault == "drip":  # a valid reply, one byte every half second: only a whole-call deadline ends it
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}":
                time.sleep(0.5)
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            return True
        if fault == "huge":  # no length, no end: 80 MB of one JSON array
            self.close_connection = True
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n[")
            for _ in range(80):
                self.wfile.write(b"0," * (1 << 19))
            return True
        if fault == "hang_up":
            self.close_connection = True
            return True
        if fault == "huge_declared":
            self.close_connection = True
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n[")
            return True
        if fault == "not_json":
            self.send_response(200)
            self.send_header("Content-Length", "4")
            self.end_headers()
            self.wfile.write(b"\x00\xff{[")
            return True
        if fault == "not_object":
            self._reply(200, [0.5, 0.5])
            return True
        if fault == "rows_not_list":
            self._reply(200, {"predictions": {"probabilities": [0.5, 0.5]}})
            return True
        return False

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length)
        self.server.serving.last_authorization = self.headers.get("Authorization")
        fault = self.server.serving.fault
        if length > self.server.serving.max_receive_bytes:
            return self._reply(413, {"error": f"Request body of {length} bytes is larger than the server accepts"})
        try:
            if '"class_names"' not in body[:100].decode("latin-1") and fault and self._misbehave(fault):
                return None
        except OSError:  # the client gave up, as it should
            self.close_connection = True
            return None
        try:
            name, version, predict, metadata = self._route()
            if not predict:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Malformed request: POST {self.path}")
            try:
                request = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT, f"JSON Parse error: {exc.msg}. at offset: {exc.pos}"
                ) from None
            if not isinstance(request, dict) or ("instances" in request) == ("inputs" in request):
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "Missing 'inputs' or 'instances' key"
                    if isinstance(request, dict) and "instances" not in request
                    else "Not both 'inputs' and 'instances' can be set",
                )
            model = self.server.serving.find(name, version)
            signature_name, signature = model.signature(request.get("signature_name", ""))
            input_names = sorted(signature.inputs)
            if "instances" in request:
                rows = request["instances"]
                if not isinstance(rows, list):
                    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Expecting 'instances' to be an list/array")
                if rows and isinstance(rows[0], dict) and set(rows[0]) != {"b64"}:
                    inputs = {k: _from_json([row.get(k) for row in rows]) for k in rows[0]}
                elif len(input_names) == 1:
                    inputs = {input_names[0]: _from_json(rows)}
                else:
                    raise ServingError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        "instances must be objects for signatures with more than one input",
                    )
            else:
                columns = request["inputs"]
                inputs = (
                    {k: _from_json(v) for k, v in columns.items()}
                    if isinstance(columns, dict) and set(columns) != {"b64"}
                    else {input_names[0]: _from_json(columns)}
                )
            _, outputs = self.server.serving.predict(name, version, signature_name, inputs)
            as_json = {k: _to_json(v, k.endswith("_bytes")) for k, v in outputs.items()}
            if fault == "missing_key" and "probabilities" in as_json:
                del as_json["probabilities"]
            elif fault == "wrong_type" and "probabilities" in as_json:
                as_json["probabilities"] = [[str(x) for x in row] for row in as_json["probabilities"]]
            if "instances" in request:
                if len(as_json) == 1:
                    return self._reply(200, {"predictions": next(iter(as_json.values()))})
                count = len(next(iter(as_json.values())))
                return self._reply(200, {"predictions": [{k: v[i] for k, v in as_json.items()} for i in range(count)]})
            return self._reply(200, {"outputs": next(iter(as_json.values())) if len(as_json) == 1 else as_json})
        except ServingError as exc:
            self._reply(HTTP_CODES.get(exc.code, 500), {"error": exc.message})


def main(argv=None) -> None:
    """Serve models from another process: ``python tests/serving/double.py NAME=PATH ...``.

    Prints ``{"grpc_port": ..., "rest_port": ...}`` on one line, then serves until killed.
    """
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+", metavar="NAME=PATH")
    args = parser.parse_args(argv)
    models = dict(item.split("=", 1) for item in args.models)
    server = TFServingDouble({name: Path(path) for name, path in models.items()}).start()
    print(json.dumps({"grpc_port": server.grpc_port, "rest_port": server.rest_port}), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()
        sys.exit(0)


if __name__ == "__main__":
    main()
