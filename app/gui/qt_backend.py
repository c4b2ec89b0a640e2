"""The always-visible backend selector: local TFLite / SavedModel, remote gRPC / REST.

Opening a backend can take seconds (TensorFlow's import, a slow server), so it happens on the
classifier's own owner thread (``qt_owner.ModelOwner``), which also makes every later call into
it; the owner is kept until the choice changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QToolButton,
    QWidget,
)

from app.inference.factory import LOCAL_BACKENDS
from app.store import ModelError, is_version_name, read_metadata, resolve_version, user_path

from .qt_common import ElidedLabel, Job, icon, one_sentence, remember, sentence, setting
from .qt_owner import ModelOwner

BACKENDS = [
    ("tflite", "Local TFLite"),
    ("savedmodel", "Local SavedModel"),
    ("grpc", "Remote gRPC"),
    ("rest", "Remote REST"),
]
PLACEHOLDERS = {
    "tflite": "model folder (MODELS/NAME or MODELS/NAME/VERSION)",
    "savedmodel": "model folder (MODELS/NAME or MODELS/NAME/VERSION)",
    "grpc": "grpc://localhost:8500/MODEL",
    "rest": "http://localhost:8501/v1/models/MODEL",
}
DEFAULT_PORTS = {"grpc": 8500, "rest": 8501}
MAX_RECENT = 8


@dataclass(frozen=True)
class BackendChoice:
    kind: str
    location: str

    @property
    def remote(self) -> bool:
        return self.kind in ("grpc", "rest")

    def label(self) -> str:
        return dict(BACKENDS)[self.kind]


def model_name(location: str) -> str:
    """MODELS/NAME or MODELS/NAME/VERSION -> NAME ('' when there is no local model)."""
    path = Path(location.strip()) if location.strip() else None
    if path is None:
        return ""
    if path.suffix == ".tflite":
        path = path.parent
    return path.parent.name if is_version_name(path.name) else path.name


def default_model_name() -> str:
    """The open (or last) local model's name, which a server usually serves under the same name."""
    return model_name((setting("backend/recent_local", "") or "").split("\n")[0]) or "model"


def complete_address(kind: str, text: str, name: str | None = None) -> str:
    """Complete what people type for a server: ``host:port`` or ``host:port/NAME`` -> a full URL.

    gRPC gets ``grpc://`` and the model name; REST gets ``http://`` and TF Serving's ``/v1/models/NAME``.
    Anything else (local paths, addresses with another scheme) is returned as typed.
    """
    text = text.strip()
    if kind not in ("grpc", "rest") or not text:
        return text
    text, mark, query = text.partition("?")
    scheme, sep, rest = text.partition("://")
    if sep and not scheme.isalpha():  # not an address at all: let the backend say why
        return text + mark + query
    if not sep:
        scheme, rest = ("grpc" if kind == "grpc" else "http"), text
    host, _, path = rest.partition("/")
    path = path.strip("/")
    if not host:
        return text + mark + query
    if path in ("v1", "v1/models"):
        path = ""
    if ":" not in host.rsplit("]", 1)[-1]:
        host = f"{host}:{DEFAULT_PORTS[kind]}"
    if kind == "rest" and scheme in ("http", "https"):
        if not path.startswith("v1/models/"):
            path = f"v1/models/{path or name or default_model_name()}"
    elif kind == "grpc" and scheme in ("grpc", "grpcs") and not path:
        path = name or default_model_name()
    return f"{scheme}://{host}/{path}{mark}{query}"


def carried_address(kind: str, server) -> str:
    """``server`` (a ``RemoteTarget`` typed for the other protocol) as an address of ``kind``: the same host, model
    and TLS, at this protocol's default port (TF Serving listens for gRPC on 8500 and for REST on 8501)."""
    host = f"[{server.host}]" if ":" in server.host else server.host
    scheme = {"grpc": ("grpc", "grpcs"), "rest": ("http", "https")}[kind][server.secure]
    return complete_address(kind, f"{scheme}://{host}:{DEFAULT_PORTS[kind]}/{server.model}")


def open_choice(choice: BackendChoice):
    """Open a classifier for the choice (runs on a worker thread)."""
    from app.inference.factory import open_classifier

    if not choice.location.strip():
        from app.inference.base import ModelError

        raise ModelError("choose a model folder or server address first")
    if choice.remote:
        url = choice.location.strip()
        expected = ("grpc://", "grpcs://") if choice.kind == "grpc" else ("http://", "https://")
        if not url.startswith(expected):
            from app.inference.base import ModelError

            raise ModelError(f"a {choice.label()} address starts with {' or '.join(expected)}")
        return open_classifier(server=url, timeout_s=setting("remote/timeout", 10.0, float))
    return open_classifier(choice.location.strip(), choice.kind)


def describe_safely(classifier) -> tuple[str, str]:
    """(one-line status, model label) — runs on the owner thread; a failed status call is not fatal."""
    try:
        text = describe(classifier)
    except Exception as exc:  # status failed after opening: still usable, say why
        text = f"opened, but the status call failed: {one_sentence(exc)}"
    return text, model_label(classifier)


def model_label(classifier) -> str:
    """What the Model column shows: NAME vVERSION locally, NAME@host:port remotely."""
    target = getattr(classifier, "target", None)
    if target is not None:
        return f"{target.model}@{target.address}" + (f" v{target.version}" if target.version else "")
    version = getattr(classifier, "version_dir", None) or classifier.model_file.parent
    version = Path(version)
    return f"{version.parent.name} v{version.name}" if is_version_name(version.name) else version.name


def describe(classifier) -> str:
    """The connection check's answer: status, signature and class count."""
    parts = []
    status = getattr(classifier, "status", None)
    if callable(status):
        parts.append(", ".join(f"version {v} {state}" for v, state in status()) or "no version loaded")
        parts.append(f"signature {classifier.target.signature}")
    else:
        model_file = getattr(classifier, "model_file", None)
        version = Path(getattr(classifier, "version_dir", None) or model_file.parent)
        parts.append(f"{version.parent.name} version {version.name}")
        if model_file is not None:
            parts.append(model_file.name)
    parts.append(f"{len(classifier.labels)} classes")
    return " · ".join(parts)


class BackendBar(QWidget):
    """Emits ``changed`` when the user picks another backend or location.

    ``submit(fn, ...)`` runs ``fn(classifier, job)`` on the current choice's owner thread,
    opening the classifier there first if needed.
    """

    changed = Signal()
    message = Signal(str, str)  # text, level

    def __init__(self, parent=None):
        super().__init__(parent)
        self.owner: ModelOwner | None = None
        live = self.live_owner = []  # the open owner, for closing it when this bar is destroyed
        self.destroyed.connect(lambda *_: [owner.close(discard=True) for owner in live])
        self.local_model = ""  # the local model chosen in this session, which names a server's model by default
        self.owner_choice: BackendChoice | None = None
        self.description = ""
        self.model_label = ""

        self.kind = QComboBox()
        self.kind.setAccessibleName("Backend")
        from app import classify_only

        for key, text in BACKENDS:
            if key == "savedmodel" and classify_only():
                continue  # no TensorFlow in this build
            glyph = "mdi6.laptop" if key in LOCAL_BACKENDS else "mdi6.server-network"
            self.kind.addItem(icon(glyph), text, key)
        self.location = QComboBox()
        self.location.setEditable(True)
        self.location.setAccessibleName("Model or server")
        self.location.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.location.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.location.setMinimumContentsLength(26)  # the whole bar fits a 1024 px wide window (it grows wider)
        self.browse = QToolButton()
        self.browse.setIcon(icon("mdi6.folder-open"))
        self.browse.setToolTip("Choose a model folder")
        self.browse.setAccessibleName("Choose a model folder")
        self.check = QPushButton(icon("mdi6.lan-check"), "Check connection")
        self.dot = QLabel()
        self.status = ElidedLabel("Not checked")
        self.status.setAccessibleName("Backend status")
        self.status.setMinimumWidth(160)

        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("Backend:"))
        layout.addWidget(self.kind)
        layout.addWidget(self.location, 1)
        layout.addWidget(self.browse)
        layout.addWidget(self.check)
        layout.addWidget(self.dot)
        layout.addWidget(self.status, 1)

        kind = setting("backend/kind", "tflite")
        self.kind.setCurrentIndex(max(0, self.kind.findData(kind)))
        self._load_recent()
        self.kind.currentIndexChanged.connect(self._kind_changed)
        self.location.currentTextChanged.connect(self._location_changed)
        self.location.lineEdit().editingFinished.connect(self._complete_typed_address)
        self.location.lineEdit().returnPressed.connect(self._check_typed_server)
        self.browse.clicked.connect(self.choose_model_folder)
        self.check.clicked.connect(self.check_connection)
        self._set_status("unknown", self._not_opened_text())

    # --- the choice -------------------------------------------------------------------
    def choice(self) -> BackendChoice:
        kind = self.kind.currentData()
        return BackendChoice(kind, complete_address(kind, self.location.currentText(), self.default_name()))

    def default_name(self) -> str:
        """The model name a server address gets when none is typed: the open local model's, else the last one's."""
        return model_name(self.local_model) or default_model_name()

    def has_model(self) -> bool:
        """False when nothing is chosen yet (no model folder, no server): Classify shows how to get one."""
        return bool(self.location.currentText().strip())

    def set_choice(self, kind: str, location: str) -> None:
        """The app's own choice of a model it knows (one just trained, or opened from Models): remembered at once,
        as a typed one is once it opens (found under X: an unused one was forgotten when the app restarted)."""
        self.kind.setCurrentIndex(self.kind.findData(kind))
        self.location.setEditText(location)
        self._location_changed(location)
        self._remember_location()

    def _recent_key(self, kind: str | None = None) -> str:
        kind = kind or self.kind.currentData()
        return "backend/recent_local" if kind in LOCAL_BACKENDS else f"backend/recent_{kind}"

    def _load_recent(self, server=None) -> None:
        """The kind's recent locations; with none, ``server`` (the address typed before switching between gRPC
        and REST) carried over, else the local default server."""
        kind = self.kind.currentData()
        self.location.blockSignals(True)
        self.location.clear()
        recent = [r for r in (setting(self._recent_key(), "") or "").split("\n") if r]
        self.location.addItems(recent)
        default = ""
        if kind in DEFAULT_PORTS and server is not None:
            default = carried_address(kind, server)
        elif kind in DEFAULT_PORTS:
            default = complete_address(kind, f"localhost:{DEFAULT_PORTS[kind]}", self.default_name())
        self.location.setEditText(recent[0] if recent else default)
        self.location.lineEdit().setPlaceholderText(PLACEHOLDERS[kind])
        self.location.blockSignals(False)
        self.browse.setVisible(kind in LOCAL_BACKENDS)

    def _remember_location(self) -> None:
        value = self.location.currentText().strip()
        if not value:
            return
        recent = [r for r in (setting(self._recent_key(), "") or "").split("\n") if r and r != value]
        remember(self._recent_key(), "\n".join([value] + recent[: MAX_RECENT - 1]))

    def _kind_changed(self) -> None:
        server = self._typed_server()  # read before the new kind's list replaces it
        remember("backend/kind", self.kind.currentData())
        self._load_recent(server)
        self._invalidate()

    def _typed_server(self):
        """The server address in the location box as a ``RemoteTarget``, or None (a local path, a typo)."""
        from app.inference.remote import RemoteError, parse_target

        try:
            return parse_target(self.location.currentText().strip())
        except (RemoteError, ValueError):
            return None

    def _location_changed(self, text: str) -> None:
        if self.kind.currentData() in LOCAL_BACKENDS and text.strip():
            self.local_model = text.strip()
        self._invalidate()

    def _complete_typed_address(self) -> None:
        """Show the full URL once the user finishes typing ``host:port`` or ``host:port/NAME``."""
        completed = self.choice().location
        if completed != self.location.currentText().strip():
            self.location.setEditText(completed)

    def _check_typed_server(self) -> None:
        """Enter after a server address checks it, as the button does (a local model opens when first used).

        A check of this address still under way is not started again: a second Enter while a slow server was
        still connecting closed that connection and opened another.
        """
        choice = self.choice()
        if choice.remote and not (self.state == "busy" and self.owner_choice == choice):
            self.check_connection()

    def _invalidate(self) -> None:
        if self.owner_choice != self.choice():
            self.close_owner()  # released now, not when the next image is classified with another model
            self._set_status("unknown", self._not_opened_text())
        self.changed.emit()

    def choose_model_folder(self) -> None:
        """Pick a local model folder (switching a remote choice to Local TFLite)."""
        start = self.location.currentText() if not self.choice().remote else ""
        folder = QFileDialog.getExistingDirectory(self, "Choose a model folder", start or str(Path.home()))
        if folder:
            if self.choice().remote:
                self.kind.setCurrentIndex(self.kind.findData("tflite"))
            self.location.setEditText(folder)

    def connect_to_server(self) -> None:
        """Switch to Remote gRPC and put the cursor in the address field (``host:port/NAME`` is enough)."""
        if not self.choice().remote:
            self.kind.setCurrentIndex(self.kind.findData("grpc"))
        self.location.setFocus()
        self.location.lineEdit().selectAll()

    def _not_opened_text(self) -> str:
        """The status before the choice is opened: a local model says which version it is (read from its folder,
        no TensorFlow) and that it opens on first use, or that there is none; a server is "Not checked" until it
        answers."""
        choice = self.choice()
        if choice.remote or not choice.location:
            return "Not checked"
        try:
            found = resolve_version(choice.location)
            if found.suffix == ".tflite":
                return f"{found.name} · opens when first used"
            classes = len(read_metadata(found).labels or [])  # a damaged one is said now, not after a check
        except (ModelError, OSError) as exc:  # said now, not only after Check connection
            return one_sentence(exc)
        counted = f" · {classes} classes" if classes else ""
        return f"{found.parent.name} version {found.name}{counted} · opens when first used"

    def _set_status(self, state: str, text: str) -> None:
        colors = {"ok": "#188038", "error": "#b3261e", "busy": "#f9ab00", "unknown": "#9aa0a6"}
        self.dot.setPixmap(icon("mdi6.circle", colors[state]).pixmap(12, 12))
        self.status.setText(text)
        self.status.setToolTip(text)
        self.state = state

    # --- opening and calling ----------------------------------------------------------
    def submit(
        self,
        fn: Callable,
        on_done: Callable | None = None,
        on_error: Callable | None = None,
        on_progress: Callable | None = None,
    ) -> Job:
        """Run ``fn(classifier, job)`` on the current choice's owner thread; callbacks run on the GUI thread."""
        return self._current_owner().submit(fn, on_done, on_error, on_progress)

    def loading(self) -> bool:
        """True while the current choice's classifier is still being opened (TF import, a slow server)."""
        return self.owner is not None and not self.owner.ready

    def _current_owner(self) -> ModelOwner:
        choice = self.choice()
        if self.owner is not None and self.owner_choice == choice:
            return self.owner
        if self.owner is not None:
            self.owner.close()
        self.owner, self.owner_choice = ModelOwner(lambda: open_choice(choice), f"owner {choice.label()}"), choice
        self.live_owner[:] = [self.owner]
        self._set_status(
            "busy", f"Loading {choice.label()} model…" if not choice.remote else f"Connecting to {choice.location}…"
        )
        owner = self.owner

        def opened(result):
            if owner is not self.owner:
                return
            self.description, self.model_label = result
            self._remember_location()
            self._set_status("ok", self.description)

        def failed(exc):
            if owner is not self.owner:
                return
            text = one_sentence(exc)
            self._set_status("error", text)
            self.message.emit(sentence(text), "error")

        owner.submit(lambda classifier, _job: describe_safely(classifier), opened, failed)
        return owner

    def check_connection(self) -> None:
        """Reopen the current choice and show its status and signature."""
        if self.owner is not None:
            self.owner.close()
        self.owner, self.owner_choice = None, None
        self.submit(
            lambda classifier, _job: None, lambda _: self.message.emit(f"Connected: {self.description}", "info")
        )

    def forget_version(self, version_dir: str) -> None:
        """A version was deleted: close a classifier opened from it (or from its model's base folder, which
        resolved to it), so nothing keeps answering with a model that is gone; the next use reopens."""
        choice = self.owner_choice
        if choice is None or choice.remote:
            return
        version = Path(version_dir).resolve()
        if user_path(choice.location).resolve() in (version, version.parent):
            self.close_owner()
            self._set_status("unknown", self._not_opened_text())
            self.changed.emit()

    def close_owner(self) -> None:
        """Let the open classifier's thread finish and end (the window is closing)."""
        if self.owner is not None:
            self.owner.close()
        self.owner, self.owner_choice = None, None
