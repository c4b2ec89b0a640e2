"""TF Serving over gRPC with the official tensorflow-serving-api stubs.

Encoded image bytes go as one DT_STRING tensor per batch to ``PredictionService.Predict``;
names come from ``GetModelMetadata``; ``GetModelStatus`` is the connection check.
Message limits are raised (gRPC's default 4 MiB receive limit fails on large photos),
every call has a deadline, and ``grpcs://`` uses TLS with an optional CA file and
bearer token.  Replies are capped at ``MAX_REPLY_BYTES`` (64 MB) and checked like REST's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import grpc
import numpy as np

from app.store import CLASS_INDEX_INPUT, CLASS_NAME_OUTPUT, CLASS_NAMES_SIGNATURE

from . import protos
from .remote import (
    MAX_REPLY_BYTES,
    BadRequest,
    RemoteClassifier,
    RemoteError,
    RemoteTarget,
    ReplyError,
    RequestError,
    checked_args,
    wrong_protocol,
)

MAX_MESSAGE_BYTES = 512 * 1024 * 1024  # what a request may carry (large photos)
MAX_ELEMENTS = 1 << 26  # more probabilities than any reply within MAX_REPLY_BYTES can hold
_STATES = {0: "UNKNOWN", 10: "START", 20: "LOADING", 30: "AVAILABLE", 40: "UNLOADING", 50: "END"}


class GrpcClassifier(RemoteClassifier):
    name = "grpc"

    def __init__(
        self,
        target: RemoteTarget | str,
        *,
        timeout_s: float = 10.0,
        ca_file: str | None = None,
        token: str | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        on_warning=None,
    ):
        protos.load()  # before any tensorflow_serving import: without it, they import all of TensorFlow
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        target, token = checked_args(target, token)
        self.timeout_s = timeout_s
        options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", MAX_REPLY_BYTES),
        ]
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
        super().__init__(target, token=token, on_warning=on_warning)

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
            from tensorflow.core.framework import types_pb2
            from tensorflow_serving.apis import get_model_metadata_pb2

            request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
            self._model_spec(request.model_spec)
            response = self._call(self._predict_stub.GetModelMetadata, request)
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            if "signature_def" not in response.metadata or not response.metadata["signature_def"].Unpack(signature_map):
                raise ReplyError(f"{self.where} answered with model metadata that is not TF Serving's")
            known = set(types_pb2.DataType.values())
            name = lambda t: types_pb2.DataType.Name(t.dtype) if t.dtype in known else ""  # noqa: E731
            self._signatures = {
                key: {
                    "inputs": {k: name(v) for k, v in sig.inputs.items()},
                    "outputs": {k: name(v) for k, v in sig.outputs.items()},
                }
                for key, sig in signature_map.signature_def.items()
            }
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
        request.output_filter.extend(self.names.wanted)
        size = request.ByteSize()
        encode_ms = (time.perf_counter() - start) * 1e3
        response = self._call(self._predict_stub.Predict, request)
        received = time.perf_counter()
        values = self._to_numpy(self._output(response, self.names.probabilities))
        top1 = None
        if self.names.classes:
            top1 = list(self._output(response, self.names.classes, "DT_STRING").string_val)
        unknown = ood_score = None
        if self.names.unknown:
            unknown = self._to_numpy(self._output(response, self.names.unknown, "DT_BOOL"))
            ood_score = self._to_numpy(self._output(response, self.names.ood_score, "DT_FLOAT"))
            if unknown.ndim != 1 or ood_score.ndim != 1:
                raise ReplyError(f"{self.where} answered with unknown flags or ood scores that are not one per image")
        reply = self.checked_reply(values, top1, len(images), size, encode_ms, unknown, ood_score)
        return reply._replace(reply_ms=(time.perf_counter() - received) * 1e3)

    def lookup_class_names(self, count: int) -> list:
        request = self._request(CLASS_NAMES_SIGNATURE, CLASS_INDEX_INPUT, _vector("DT_INT32", list(range(count))))
        response = self._call(self._predict_stub.Predict, request)
        return list(self._output(response, CLASS_NAME_OUTPUT, "DT_STRING").string_val)

    def _output(self, response, name: str, dtype: str | None = None):
        """One output of a PredictResponse (a missing key is an error, not protobuf's empty default)."""
        from tensorflow.core.framework import types_pb2

        if name not in response.outputs:
            raise ReplyError(f"{self.where} answered without the '{name}' output")
        proto = response.outputs[name]
        if dtype and proto.dtype != types_pb2.DataType.Value(dtype):
            raise ReplyError(f"{self.where} answered with a '{name}' output of the wrong type, not {dtype}")
        return proto

    def _to_numpy(self, proto) -> np.ndarray:
        """A float TensorProto as numpy without a TensorFlow call, checked against its own shape."""
        from tensorflow.core.framework import types_pb2

        dtypes = {
            types_pb2.DT_FLOAT: (np.float32, "float_val"),
            types_pb2.DT_DOUBLE: (np.float64, "double_val"),
            types_pb2.DT_BOOL: (np.bool_, "bool_val"),
        }
        if proto.dtype not in dtypes:
            raise ReplyError(f"{self.where} answered with probabilities that are not numbers")
        dtype, field = dtypes[proto.dtype]
        shape = [d.size for d in proto.tensor_shape.dim]
        count = 1
        for n in shape:
            count *= max(n, 0)
        if any(n < 0 for n in shape) or count > MAX_ELEMENTS:
            raise ReplyError(f"{self.where} answered with a tensor of impossible shape {shape}")
        if proto.tensor_content:
            if len(proto.tensor_content) != count * np.dtype(dtype).itemsize:
                raise ReplyError(f"{self.where} answered with a tensor whose bytes do not match its shape {shape}")
            return np.frombuffer(proto.tensor_content, dtype=dtype).reshape(shape)
        values = getattr(proto, field)
        if len(values) != count:
            raise ReplyError(f"{self.where} answered with a tensor whose values do not match its shape {shape}")
        return np.array(values, dtype=dtype).reshape(shape)


def _vector(dtype: str, values: list):
    """A 1-D TensorProto of strings (DT_STRING) or int32 (DT_INT32)."""
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(values))])
    field = "string_val" if dtype == "DT_STRING" else "int_val"
    return tensor_pb2.TensorProto(dtype=types_pb2.DataType.Value(dtype), tensor_shape=shape, **{field: values})


def _translate(exc: grpc.RpcError, target: RemoteTarget, timeout_s: float, request_bytes: int) -> RemoteError:
    """One sentence a user can act on, for each way a call can fail."""
    code, details = exc.code(), (exc.details() or "").strip()
    lowered = details.lower()
    where = f"{target.scheme}://{target.address}"
    if code == grpc.StatusCode.UNAVAILABLE:
        if "failed parsing http/2" in lowered or "http1" in lowered:
            return wrong_protocol(target)
        if any(word in lowered for word in ("ssl", "tls", "handshake", "certificate")):
            return RemoteError(
                f"the TLS handshake with {where} failed: check grpcs:// versus grpc:// and the CA certificate"
            )
        if "dns" in lowered or "resolve" in lowered:
            return RemoteError(f"cannot find the host '{target.host}'")
        return RemoteError(f"cannot reach a TF Serving gRPC server at {where} (is it running, on this port?)")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return RequestError(f"{where} did not answer within {timeout_s:g} s")
    if code == grpc.StatusCode.NOT_FOUND:
        if "Specific(" in details or "could not find version" in lowered:
            return RemoteError(f"version {target.version} of model '{target.model}' is not loaded on {where}")
        return RemoteError(f"the server at {where} has no model '{target.model}'")
    if code == grpc.StatusCode.FAILED_PRECONDITION and "signature" in lowered:
        return RemoteError(f"model '{target.model}' has no signature '{target.signature}'")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        if f"vs. {MAX_REPLY_BYTES})" in details:  # our own receive limit, not the server's
            return ReplyError(
                f"{where} sent a reply larger than the {MAX_REPLY_BYTES // 2**20} MB a prediction can need"
            )
        return RequestError(
            f"the request ({request_bytes / 1e6:.1f} MB) is larger than {where} accepts; "
            "send fewer or smaller images, or raise the server's limit"
        )
    if code == grpc.StatusCode.UNAUTHENTICATED or code == grpc.StatusCode.PERMISSION_DENIED:
        return RemoteError(f"{where} refused the credentials ({details or code.name})")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return BadRequest(f"the server rejected the image: {details.splitlines()[0] if details else code.name}")
    return RemoteError(f"{where} failed: {code.name} {details.splitlines()[0] if details else ''}".strip())
