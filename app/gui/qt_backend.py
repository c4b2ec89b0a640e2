"""The always-visible backend selector: local TFLite / SavedModel, remote gRPC / REST.

Opening a backend can take seconds (TensorFlow's import, a slow server), so it happens on
the thread pool; the opened classifier is kept until the choice changes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QComboBox, QFileDialog, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QToolButton,
                               QWidget)

from .qt_common import icon, one_sentence, remember, run_in_background, setting

BACKENDS = [("tflite", "Local TFLite"), ("savedmodel", "Local SavedModel"),
            ("grpc", "Remote gRPC"), ("rest", "Remote REST")]
PLACEHOLDERS = {"tflite": "model folder (MODELS/NAME or MODELS/NAME/VERSION)",
                "savedmodel": "model folder (MODELS/NAME or MODELS/NAME/VERSION)",
                "grpc": "grpc://localhost:8500/MODEL", "rest": "http://localhost:8501/v1/models/MODEL"}
DEFAULTS = {"grpc": "grpc://localhost:8500/model", "rest": "http://localhost:8501/v1/models/model"}
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


def open_and_describe(choice: BackendChoice):
    """(classifier, one-line status) — both network calls stay off the GUI thread."""
    classifier = open_choice(choice)
    try:
        return classifier, describe(classifier)
    except Exception as exc:  # status failed after opening: still usable, say why
        return classifier, f"opened, but the status call failed: {one_sentence(exc)}"


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
    """Emits ``changed`` when the user picks another backend or location."""

    changed = Signal()
    message = Signal(str, str)  # text, level

    def __init__(self, parent=None):
        super().__init__(parent)
        self._classifier = None
        self._classifier_choice: BackendChoice | None = None
        self._pending: list[tuple[Callable, Callable]] = []
        self._opening: BackendChoice | None = None

        self.kind = QComboBox()
        self.kind.setAccessibleName("Backend")
        from app import classify_only
        for key, text in BACKENDS:
            if key == "savedmodel" and classify_only():
                continue  # no TensorFlow in this build
            self.kind.addItem(icon("mdi6.laptop" if key in ("tflite", "savedmodel") else "mdi6.server-network"), text, key)
        self.location = QComboBox()
        self.location.setEditable(True)
        self.location.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.location.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.location.setMinimumContentsLength(30)
        self.browse = QToolButton()
        self.browse.setIcon(icon("mdi6.folder-open"))
        self.browse.setToolTip("Choose a model folder")
        self.check = QPushButton(icon("mdi6.lan-check"), "Check connection")
        self.dot = QLabel()
        self.status = QLabel("Not checked")
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
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
        self.browse.clicked.connect(self._browse)
        self.check.clicked.connect(self.check_connection)
        self._set_status("unknown", "Not checked")

    # --- the choice -------------------------------------------------------------------
    def choice(self) -> BackendChoice:
        return BackendChoice(self.kind.currentData(), self.location.currentText().strip())

    def set_choice(self, kind: str, location: str) -> None:
        self.kind.setCurrentIndex(self.kind.findData(kind))
        self.location.setEditText(location)
        self._location_changed(location)

    def _recent_key(self, kind: str | None = None) -> str:
        kind = kind or self.kind.currentData()
        return "backend/recent_local" if kind in ("tflite", "savedmodel") else f"backend/recent_{kind}"

    def _load_recent(self) -> None:
        kind = self.kind.currentData()
        self.location.blockSignals(True)
        self.location.clear()
        recent = [r for r in (setting(self._recent_key(), "") or "").split("\n") if r]
        self.location.addItems(recent)
        self.location.setEditText(recent[0] if recent else DEFAULTS.get(kind, ""))
        self.location.lineEdit().setPlaceholderText(PLACEHOLDERS[kind])
        self.location.blockSignals(False)
        self.browse.setVisible(kind in ("tflite", "savedmodel"))

    def _remember_location(self) -> None:
        value = self.location.currentText().strip()
        if not value:
            return
        recent = [r for r in (setting(self._recent_key(), "") or "").split("\n") if r and r != value]
        remember(self._recent_key(), "\n".join([value] + recent[:MAX_RECENT - 1]))

    def _kind_changed(self) -> None:
        remember("backend/kind", self.kind.currentData())
        self._load_recent()
        self._invalidate()

    def _location_changed(self, _text: str) -> None:
        self._invalidate()

    def _invalidate(self) -> None:
        if self._classifier_choice != self.choice():
            self._set_status("unknown", "Not checked")
        self.changed.emit()

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a model folder", self.location.currentText())
        if folder:
            self.location.setEditText(folder)

    def _set_status(self, state: str, text: str) -> None:
        colors = {"ok": "#188038", "error": "#b3261e", "busy": "#f9ab00", "unknown": "#9aa0a6"}
        self.dot.setPixmap(icon("mdi6.circle", colors[state]).pixmap(12, 12))
        self.status.setText(text)
        self.status.setToolTip(text)
        self.state = state

    # --- opening ----------------------------------------------------------------------
    def with_classifier(self, on_ready: Callable, on_error: Callable | None = None) -> None:
        """Call ``on_ready(classifier)`` once the current choice is open (opening it if needed)."""
        choice = self.choice()
        if self._classifier is not None and self._classifier_choice == choice:
            on_ready(self._classifier)
            return
        self._pending.append((on_ready, on_error))
        if self._opening == choice:
            return
        self._opening = choice
        self._set_status("busy", f"Opening {choice.label()}…")

        def opened(result):
            classifier, description = result
            if choice != self.choice():  # the user moved on while it opened
                self._opening = None
                self.with_classifier_retry()
                return
            self._classifier, self._classifier_choice, self._opening = classifier, choice, None
            self._remember_location()
            self.description = description
            self._set_status("ok", description)
            pending, self._pending = self._pending, []
            for ready, _ in pending:
                ready(classifier)

        def failed(exc):
            self._opening = None
            text = one_sentence(exc)
            self._set_status("error", text)
            self.message.emit(text[0].upper() + text[1:], "error")
            pending, self._pending = self._pending, []
            for _, error in pending:
                if error:
                    error(exc)

        run_in_background(lambda: open_and_describe(choice), opened, failed, self)

    def with_classifier_retry(self) -> None:
        pending, self._pending = self._pending, []
        for ready, error in pending:
            self.with_classifier(ready, error)

    def check_connection(self) -> None:
        """Reopen the current choice and show its status and signature."""
        self._classifier, self._classifier_choice = None, None
        self.with_classifier(lambda c: self.message.emit(f"Connected: {self.description}", "info"))
