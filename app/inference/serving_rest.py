"""TF Serving over its REST API: ``POST /v1/models/NAME[/versions/V]:predict``.

Images go as ``{"instances": [{"b64": ...}]}`` (the bytes, base64, never pixels); names
come from ``GET .../metadata``; ``GET /v1/models/NAME`` is the connection check.  One
keep-alive connection is reused across a batch.  Standard library only: no TensorFlow.
"""
from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import threading
import time
from typing import Sequence

import numpy as np

from .remote import BadRequest, RemoteClassifier, RemoteError, RemoteTarget, parse_target


class RestClassifier(RemoteClassifier):
    name = "rest"

    def __init__(self, target: RemoteTarget | str, *, timeout_s: float = 10.0, ca_file: str | None = None,
                 token: str | None = None):
        target = parse_target(target) if isinstance(target, str) else target
        self.target, self.timeout_s = target, timeout_s
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._context = ssl.create_default_context(cafile=ca_file) if target.secure else None
        self._local = threading.local()  # one keep-alive connection per thread
        self._signatures = None
        super().__init__(target)

    @property
    def _base(self) -> str:
        path = f"/v1/models/{self.target.model}"
        return path + (f"/versions/{self.target.version}" if self.target.version is not None else "")

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._context is not None:
                conn = http.client.HTTPSConnection(self.target.host, self.target.port, timeout=self.timeout_s,
                                                   context=self._context)
            else:
                conn = http.client.HTTPConnection(self.target.host, self.target.port, timeout=self.timeout_s)
            conn.connect()
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle stall on small requests
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _send(self, method: str, path: str, body: bytes | None = None) -> dict:
        where = f"{self.target.scheme}://{self.target.address}"
        for attempt in (0, 1):  # a kept-alive connection the server closed gets one fresh retry
            try:
                conn = self._connection()
                conn.request(method, path, body=body, headers=self._headers)
                response = conn.getresponse()
                payload = response.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                if attempt:
                    raise RemoteError(f"{where} closed the connection ({type(exc).__name__})") from None
            except ssl.SSLError as exc:
                self.close()
                raise RemoteError(f"the TLS handshake with {where} failed: check https:// versus http:// and the "
                                  f"CA certificate ({exc.reason or exc})") from None
            except (socket.timeout, TimeoutError):
                self.close()
                raise RemoteError(f"{where} did not answer within {self.timeout_s:g} s") from None
            except socket.gaierror:
                self.close()
                raise RemoteError(f"cannot find the host '{self.target.host}'") from None
            except OSError as exc:
                self.close()
                raise RemoteError(f"cannot reach a TF Serving REST server at {where} "
                                  f"({exc.strerror or type(exc).__name__})") from None
        try:
            data = json.loads(payload)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RemoteError(f"{where} answered with something that is not TF Serving JSON "
                              f"(HTTP {response.status})") from None
        if response.status != 200:
            raise _translate(response.status, str(data.get("error", data)) if isinstance(data, dict) else str(data),
                             self.target, len(body or b""))
        return data

    def signatures(self) -> dict:
        if self._signatures is None:
            data = self._send("GET", self._base + "/metadata")
            defs = data.get("metadata", {}).get("signature_def", {}).get("signature_def", {})
            self._signatures = {
                key: {"inputs": {k: v.get("dtype", "") for k, v in sig.get("inputs", {}).items()},
                      "outputs": {k: v.get("dtype", "") for k, v in sig.get("outputs", {}).items()}}
                for key, sig in defs.items()}
        return self._signatures

    def status(self) -> list[tuple[int, str]]:
        path = f"/v1/models/{self.target.model}" + (
            f"/versions/{self.target.version}" if self.target.version is not None else "")
        data = self._send("GET", path)
        return [(int(s["version"]), s["state"]) for s in data.get("model_version_status", [])]

    def predict(self, images: Sequence[bytes]):
        start = time.perf_counter()
        body = json.dumps({"signature_name": self.target.signature,
                           "instances": [{"b64": base64.b64encode(data).decode("ascii")} for data in images]}).encode()
        encode_ms = (time.perf_counter() - start) * 1e3
        rows = self._send("POST", self._base + ":predict", body)["predictions"]
        if rows and isinstance(rows[0], dict):
            probabilities = np.array([row[self.names.probabilities] for row in rows], dtype=np.float32)
            top1 = [row[self.names.classes] for row in rows] if self.names.classes else None
        else:  # a signature with a single output answers with bare values
            probabilities, top1 = np.array(rows, dtype=np.float32), None
        return probabilities.reshape(len(images), -1), top1, len(body), encode_ms

    def lookup_class_names(self, count: int) -> list[str]:
        body = json.dumps({"signature_name": "class_names", "instances": list(range(count))}).encode()
        return [str(name) for name in self._send("POST", self._base + ":predict", body)["predictions"]]


def _translate(status: int, message: str, target: RemoteTarget, request_bytes: int) -> RemoteError:
    where = f"{target.scheme}://{target.address}"
    first = message.splitlines()[0] if message else f"HTTP {status}"
    if status == 404:
        if "Specific(" in message or "Could not find version" in message:
            return RemoteError(f"version {target.version} of model '{target.model}' is not loaded on {where}")
        if "Servable not found" in message or "Could not find any versions" in message:
            return RemoteError(f"the server at {where} has no model '{target.model}'")
        return RemoteError(f"{where} is not a TF Serving REST endpoint (HTTP 404: {first})")
    if status == 400 and "signature" in message.lower() and "not found" in message.lower():
        return RemoteError(f"model '{target.model}' has no signature '{target.signature}'")
    if status in (413, 429) or "larger than" in message:
        return RemoteError(f"the request ({request_bytes / 1e6:.1f} MB) is larger than {where} accepts; "
                           "send fewer or smaller images")
    if status in (401, 403):
        return RemoteError(f"{where} refused the credentials (HTTP {status})")
    if status == 504:
        return RemoteError(f"{where} timed out running the model")
    if status == 400:
        return BadRequest(f"the server rejected the image: {first}")
    return RemoteError(f"{where} failed: HTTP {status} {first}")
