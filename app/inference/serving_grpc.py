"""TF Serving over gRPC with the official tensorflow-serving-api stubs.

Encoded image bytes go as one DT_STRING tensor per batch to ``PredictionService.Predict``;
names come from ``GetModelMetadata``; ``GetModelStatus`` is the connection check.
Message limits are raised (gRPC's default 4 MiB receive limit fails on large photos),
every call has a deadline, and ``grpcs://`` uses TLS with an optional CA file and
bearer token.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import grpc
import numpy as np

from .remote import BadRequest, RemoteClassifier, RemoteError, RemoteTarget, parse_target

MAX_MESSAGE_BYTES = 512 * 1024 * 1024
_STATES = {0: "UNKNOWN", 10: "START", 20: "LOADING", 30: "AVAILABLE", 40: "UNLOADING", 50: "END"}


class GrpcClassifier(RemoteClassifier):
    name = "grpc"

    def __init__(self, target: RemoteTarget | str, *, timeout_s: float = 10.0, ca_file: str | None = None,
                 token: str | None = None, max_message_bytes: int = MAX_MESSAGE_BYTES):
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        target = parse_target(target) if isinstance(target, str) else target
        self.timeout_s = timeout_s
        options = [("grpc.max_send_message_length", max_message_bytes),
                   ("grpc.max_receive_message_length", max_message_bytes)]
        if target.secure:
            root = Path(ca_file).expanduser().read_bytes() if ca_file else None
            self._channel = grpc.secure_channel(target.address, grpc.ssl_channel_credentials(root), options)
        else:
            self._channel = grpc.insecure_channel(target.address, options)
        self._call_metadata = [("authorization", f"Bearer {token}")] if token else None
        self._predict_stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._model_stub = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._signatures = None
        self.target = target
        super().__init__(target)

    def close(self) -> None:
        self._channel.close()

    def _model_spec(self, spec, signature: str | None = None) -> None:
        spec.name = self.target.model
        if self.target.version is not None:
            spec.version.value = self.target.version
        if signature:
            spec.signature_name = signature

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout_s, metadata=self._call_metadata)
        except grpc.RpcError as exc:
            raise _translate(exc, self.target, self.timeout_s, request.ByteSize()) from None

    def signatures(self) -> dict:
        if self._signatures is None:
            from tensorflow_serving.apis import get_model_metadata_pb2
            from tensorflow.core.framework import types_pb2

            request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
            self._model_spec(request.model_spec)
            response = self._call(self._predict_stub.GetModelMetadata, request)
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            response.metadata["signature_def"].Unpack(signature_map)
            name = lambda t: types_pb2.DataType.Name(t.dtype)  # noqa: E731
            self._signatures = {
                key: {"inputs": {k: name(v) for k, v in sig.inputs.items()},
                      "outputs": {k: name(v) for k, v in sig.outputs.items()}}
                for key, sig in signature_map.signature_def.items()}
        return self._signatures

    def status(self) -> list[tuple[int, str]]:
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        self._model_spec(request.model_spec)
        response = self._call(self._model_stub.GetModelStatus, request)
        return [(s.version, _STATES.get(s.state, str(s.state))) for s in response.model_version_status]

    def _request(self, signature: str, input_name: str, proto):
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        self._model_spec(request.model_spec, signature)
        request.inputs[input_name].CopyFrom(proto)
        return request

    def predict(self, images: Sequence[bytes]):
        start = time.perf_counter()
        request = self._request(self.target.signature, self.names.image_input, _vector("DT_STRING", list(images)))
        request.output_filter.extend([n for n in (self.names.probabilities, self.names.classes) if n])
        size = request.ByteSize()
        encode_ms = (time.perf_counter() - start) * 1e3
        response = self._call(self._predict_stub.Predict, request)
        probabilities = _to_numpy(response.outputs[self.names.probabilities]).astype(np.float32)
        top1 = None
        if self.names.classes:
            top1 = [b.decode("utf-8", "replace") for b in response.outputs[self.names.classes].string_val]
        return probabilities.reshape(len(images), -1), top1, size, encode_ms

    def lookup_class_names(self, count: int) -> list[str]:
        request = self._request("class_names", "class_index", _vector("DT_INT32", list(range(count))))
        response = self._call(self._predict_stub.Predict, request)
        return [b.decode("utf-8") for b in response.outputs["class_name"].string_val]


def _vector(dtype: str, values: list):
    """A 1-D TensorProto of strings (DT_STRING) or int32 (DT_INT32)."""
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(values))])
    field = "string_val" if dtype == "DT_STRING" else "int_val"
    return tensor_pb2.TensorProto(dtype=types_pb2.DataType.Value(dtype), tensor_shape=shape, **{field: values})


def _to_numpy(proto) -> np.ndarray:
    """A float TensorProto as numpy, without a TensorFlow call (either encoding the server picks)."""
    shape = [d.size for d in proto.tensor_shape.dim]
    if proto.tensor_content:
        return np.frombuffer(proto.tensor_content, dtype=np.float32).reshape(shape)
    return np.array(proto.float_val, dtype=np.float32).reshape(shape)


def _translate(exc: grpc.RpcError, target: RemoteTarget, timeout_s: float, request_bytes: int) -> RemoteError:
    """One sentence a user can act on, for each way a call can fail."""
    code, details = exc.code(), (exc.details() or "").strip()
    lowered = details.lower()
    where = f"{target.scheme}://{target.address}"
    if code == grpc.StatusCode.UNAVAILABLE:
        if any(word in lowered for word in ("ssl", "tls", "handshake", "certificate")):
            return RemoteError(f"the TLS handshake with {where} failed: check grpcs:// versus grpc:// and the "
                               "CA certificate")
        if "dns" in lowered or "resolve" in lowered:
            return RemoteError(f"cannot find the host '{target.host}'")
        return RemoteError(f"cannot reach a TF Serving gRPC server at {where} (is it running, on this port?)")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return RemoteError(f"{where} did not answer within {timeout_s:g} s")
    if code == grpc.StatusCode.NOT_FOUND:
        if "Specific(" in details or "could not find version" in lowered:
            return RemoteError(f"version {target.version} of model '{target.model}' is not loaded on {where}")
        return RemoteError(f"the server at {where} has no model '{target.model}'")
    if code == grpc.StatusCode.FAILED_PRECONDITION and "signature" in lowered:
        return RemoteError(f"model '{target.model}' has no signature '{target.signature}'")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return RemoteError(f"the request ({request_bytes / 1e6:.1f} MB) is larger than {where} accepts; "
                           "send fewer or smaller images, or raise the server's limit")
    if code == grpc.StatusCode.UNAUTHENTICATED or code == grpc.StatusCode.PERMISSION_DENIED:
        return RemoteError(f"{where} refused the credentials ({details or code.name})")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return BadRequest(f"the server rejected the image: {details.splitlines()[0] if details else code.name}")
    return RemoteError(f"{where} failed: {code.name} {details.splitlines()[0] if details else ''}".strip())
