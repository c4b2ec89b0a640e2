"""TF Serving over its REST API: ``POST /v1/models/NAME[/versions/V]:predict``.

Images go as ``{"instances": [{"b64": ...}]}`` (the bytes, base64, never pixels); names
come from ``GET .../metadata``; ``GET /v1/models/NAME`` is the connection check.  One
keep-alive connection is reused across calls; when the server has closed it while idle, the request
is sent once more on a new connection.  Standard library only: no TensorFlow.

``timeout_s`` is a deadline for the whole call (connect, send, every byte of the reply): a
watchdog shuts the socket when it passes, so a server that drips one byte a second cannot
hold a call open.  Replies larger than ``MAX_REPLY_BYTES`` (64 MB) are refused.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import ssl
import threading
import time
from collections.abc import Sequence

from app.store import CLASS_NAMES_SIGNATURE

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

# What a request meets on a connection the server has closed: plain HTTP, or TLS (the socket's end of file
# arrives without TLS's own closing message, which Python reports as SSLEOFError).
_CLOSED_BY_SERVER = (
    http.client.RemoteDisconnected,
    BrokenPipeError,
    ConnectionResetError,
    ssl.SSLEOFError,
    ssl.SSLZeroReturnError,
)


class RestClassifier(RemoteClassifier):
    name = "rest"

    def __init__(
        self,
        target: RemoteTarget | str,
        *,
        timeout_s: float = 10.0,
        ca_file: str | None = None,
        token: str | None = None,
        on_warning=None,
    ):
        target, token = checked_args(target, token)
        self.target, self.timeout_s = target, timeout_s
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._context = ssl.create_default_context(cafile=ca_file) if target.secure else None
        self._local = threading.local()  # one keep-alive connection per thread
        self._signatures = None
        super().__init__(target, token=token, on_warning=on_warning)

    @property
    def _base(self) -> str:
        path = f"/v1/models/{self.target.model}"
        return path + (f"/versions/{self.target.version}" if self.target.version is not None else "")

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._context is not None:
                conn = http.client.HTTPSConnection(self.target.host, self.target.port, context=self._context)
            else:
                conn = http.client.HTTPConnection(self.target.host, self.target.port)
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _exchange(self, method: str, path: str, body: bytes | None, deadline: float):
        """One request and its whole reply, or the socket is shut when ``deadline`` passes."""
        conn = self._connection()
        conn.timeout = max(0.001, deadline - time.monotonic())
        watchdog = threading.Timer(conn.timeout, _shut, (conn,))
        watchdog.daemon = True
        watchdog.start()
        try:
            if conn.sock is None:  # connect (and the TLS handshake) inside the deadline too
                conn.connect()
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle stall on small requests
            conn.sock.settimeout(max(0.001, deadline - time.monotonic()))
            conn.request(method, path, body=body, headers=self._headers)
            response = conn.getresponse()
            length = response.getheader("Content-Length", "")
            if length.strip().isdigit() and int(length) > MAX_REPLY_BYTES:
                raise ReplyError(
                    f"{self.where} sent a reply of {int(length) / 2**20:.0f} MB, more than the "
                    f"{MAX_REPLY_BYTES // 2**20} MB a prediction can need"
                )
            payload = response.read(MAX_REPLY_BYTES + 1)
            if len(payload) > MAX_REPLY_BYTES:
                raise ReplyError(
                    f"{self.where} sent a reply larger than the {MAX_REPLY_BYTES // 2**20} MB a prediction can need"
                )
            return response, payload
        finally:
            watchdog.cancel()

    def _send(self, method: str, path: str, body: bytes | None = None) -> dict:
        return self._parse(*self._round_trip(method, path, body), body)

    def _round_trip(self, method: str, path: str, body: bytes | None):
        """(response, payload) of one call within the deadline, the reply not yet parsed."""
        deadline = time.monotonic() + self.timeout_s
        for attempt in (0, 1):
            # A kept-alive connection may have been closed by the server while idle (its keep-alive timeout):
            # the request then meets a closed socket before the server saw it.  Such a request, and only on a
            # reused connection, is sent once more on a new one (every request here is safe to repeat: a
            # prediction changes nothing).  A fresh connection closed, or a call past its deadline, is an error.
            reused = self._connection().sock is not None
            try:
                return self._exchange(method, path, body, deadline)
            except ReplyError:
                self.close()
                raise
            except Exception as exc:
                self.close()
                retry = reused and not attempt
                error = self._failure(exc, time.monotonic() >= deadline, retry=retry, request=bool(body))
                if error is not None:
                    raise error from None
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _parse(self, response, payload: bytes, body: bytes | None) -> dict:
        """The reply's JSON object, or the one-sentence error its status or content means."""
        where = self.where
        try:
            data = json.loads(payload)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise ReplyError(
                f"{where} answered with something that is not TF Serving JSON (HTTP {response.status})"
            ) from None
        if response.status != 200:
            raise _translate(
                response.status,
                str(data.get("error", data)) if isinstance(data, dict) else str(data),
                self.target,
                len(body or b""),
            )
        if not isinstance(data, dict):
            raise ReplyError(f"{where} answered with JSON that is not an object")
        return data

    def _failure(self, exc: Exception, late: bool, retry: bool, request: bool) -> RemoteError | None:
        """The one-sentence error for a failed exchange, or None when a fresh connection should retry."""
        where = self.where
        if late or isinstance(exc, (socket.timeout, TimeoutError)):
            return RequestError(f"{where} did not answer within {self.timeout_s:g} s")
        if isinstance(exc, http.client.BadStatusLine) and str(exc.args[0] if exc.args else "")[:2] == "\0\0":
            return wrong_protocol(self.target)  # an HTTP/2 frame: a gRPC port
        if retry and isinstance(exc, _CLOSED_BY_SERVER):
            return None
        if isinstance(exc, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)):
            error = RequestError if request else RemoteError  # a large request may be what it refused
            return error(f"{where} closed the connection ({type(exc).__name__})")
        if isinstance(exc, http.client.HTTPException):
            return RemoteError(f"{where} does not answer like a TF Serving REST server ({type(exc).__name__})")
        if isinstance(exc, ssl.SSLError):
            return RemoteError(
                f"the TLS handshake with {where} failed: check https:// versus http:// and "
                f"the CA certificate ({exc.reason or exc})"
            )
        if isinstance(exc, socket.gaierror):
            return RemoteError(f"cannot find the host '{self.target.host}'")
        if isinstance(exc, OSError):
            return RemoteError(
                f"cannot reach a TF Serving REST server at {where} ({exc.strerror or type(exc).__name__})"
            )
        return RemoteError(f"the call to {where} failed ({type(exc).__name__})")

    def signatures(self) -> dict:
        if self._signatures is None:
            data = self._send("GET", self._base + "/metadata")
            try:
                defs = data.get("metadata", {}).get("signature_def", {}).get("signature_def", {})
                self._signatures = {
                    str(key): {
                        "inputs": {str(k): str(v.get("dtype", "")) for k, v in sig.get("inputs", {}).items()},
                        "outputs": {str(k): str(v.get("dtype", "")) for k, v in sig.get("outputs", {}).items()},
                    }
                    for key, sig in defs.items()
                }
            except (AttributeError, TypeError):
                raise ReplyError(f"{self.where} answered with model metadata that is not TF Serving's") from None
        return self._signatures

    def status(self) -> list[tuple[int, str]]:
        data = self._send("GET", self._base)
        try:
            return [(int(s["version"]), str(s["state"])) for s in data.get("model_version_status", [])]
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ReplyError(f"{self.where} answered with a model status that is not TF Serving's") from None

    def predict(self, images: Sequence[bytes]):
        start = time.perf_counter()
        body = json.dumps(
            {
                "signature_name": self.target.signature,
                "instances": [{"b64": base64.b64encode(data).decode("ascii")} for data in images],
            }
        ).encode()
        encode_ms = (time.perf_counter() - start) * 1e3
        exchanged = self._round_trip("POST", self._base + ":predict", body)
        received = time.perf_counter()
        rows = self._parse(*exchanged, body).get("predictions")
        if not isinstance(rows, list):
            raise ReplyError(f"{self.where} answered without a list of predictions")
        top1 = unknown = ood_score = None
        if rows and all(isinstance(row, dict) for row in rows):
            try:
                values = [row[self.names.probabilities] for row in rows]
                top1 = [row[self.names.classes] for row in rows] if self.names.classes else None
                if self.names.unknown:
                    unknown = [row[self.names.unknown] for row in rows]
                    ood_score = [row[self.names.ood_score] for row in rows]
            except KeyError as exc:
                raise ReplyError(f"{self.where} answered without the '{exc.args[0]}' output") from None
        elif any(isinstance(row, dict) for row in rows):
            raise ReplyError(f"{self.where} answered with predictions of mixed kinds")
        else:  # a signature with a single output answers with bare values
            values = rows
        reply = self.checked_reply(values, top1, len(images), len(body), encode_ms, unknown, ood_score)
        return reply._replace(reply_ms=(time.perf_counter() - received) * 1e3)

    def lookup_class_names(self, count: int) -> list:
        body = json.dumps({"signature_name": CLASS_NAMES_SIGNATURE, "instances": list(range(count))}).encode()
        return self._send("POST", self._base + ":predict", body).get("predictions")


def _shut(conn: http.client.HTTPConnection) -> None:
    """The watchdog: end a call whose deadline passed, wherever it is blocked."""
    sock = conn.sock
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed: nothing left to end
            sock.shutdown(socket.SHUT_RDWR)


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
        return RequestError(
            f"the request ({request_bytes / 1e6:.1f} MB) is larger than {where} accepts; send fewer or smaller images"
        )
    if status in (401, 403):
        return RemoteError(f"{where} refused the credentials (HTTP {status})")
    if status == 504:
        return RequestError(f"{where} timed out running the model")
    if status == 400:
        return BadRequest(f"the server rejected the image: {first}")
    return RemoteError(f"{where} failed: HTTP {status} {first}")
