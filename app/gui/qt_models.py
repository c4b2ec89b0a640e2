"""Models view: every exported model and version in the models folder, with what it is and weighs."""
from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

from PySide6.QtCore import QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (QAbstractItemView, QFileDialog, QHBoxLayout, QHeaderView, QLabel, QLineEdit,
                               QMessageBox, QPushButton, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget)

from app.core.atomic import temp_folder
from app.core.export import version_folders

from .qt_common import icon, remember
from .qt_train_wizard import default_models_dir

COLUMNS = ["Model / version", "Classes", "Test accuracy", "Created", "Backbone", "SavedModel", "TFLite"]


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def describe_version(version: Path) -> list[str]:
    """The cells of one version's row."""
    try:
        meta = json.loads((version / "metadata.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = {}
    acc = (meta.get("metrics") or {}).get("test_accuracy")
    created = meta.get("created", "")
    try:
        created = datetime.fromisoformat(created).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        pass
    tflite = [p for p in version.glob("*.tflite")]
    saved = folder_size(version) - sum(p.stat().st_size for p in tflite)
    return [f"version {version.name}", str(len(meta.get("labels", []))) if meta else "?",
            f"{acc:.1%}" if isinstance(acc, (int, float)) else "—", created,
            (meta.get("backbone") or {}).get("id", "?").split("/")[-1],
            f"{saved / 1e6:.1f} MB", ", ".join(f"{p.name} {p.stat().st_size / 1e6:.1f} MB" for p in tflite) or "—"]


class ModelsView(QWidget):
    open_in_classify = Signal(str)
    message = Signal(str, str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.folder = QLineEdit(default_models_dir())
        browse = QPushButton(icon("mdi6.folder-open"), "")
        browse.setToolTip("Choose the models folder")
        refresh = QPushButton(icon("mdi6.refresh"), "Refresh")
        top = QHBoxLayout()
        top.addWidget(QLabel("Models folder:"))
        top.addWidget(self.folder, 1)
        top.addWidget(browse)
        top.addWidget(refresh)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(COLUMNS)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.header().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.tree.header().setStretchLastSection(True)
        self.tree.setStyleSheet("QTreeWidget::item { padding: 3px 0; }")
        self.empty = QLabel()
        self.open_button = QPushButton(icon("mdi6.image-search"), "Open in Classify")
        self.reveal_button = QPushButton(icon("mdi6.folder-eye"), "Show in file manager")
        self.delete_button = QPushButton(icon("mdi6.delete"), "Delete version…")
        actions = QHBoxLayout()
        for button in (self.open_button, self.reveal_button, self.delete_button):
            actions.addWidget(button)
        actions.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.tree, 1)
        layout.addWidget(self.empty)
        layout.addLayout(actions)
        browse.clicked.connect(self._browse)
        refresh.clicked.connect(self.refresh)
        self.folder.editingFinished.connect(self.refresh)
        self.open_button.clicked.connect(self._open)
        self.reveal_button.clicked.connect(self._reveal)
        self.delete_button.clicked.connect(self._delete)
        self.tree.itemDoubleClicked.connect(lambda *_: self._open())
        self.tree.currentItemChanged.connect(lambda *_: self._update_buttons())
        self.refresh()

    def _browse(self):
        folder = QFileDialog.getExistingDirectory(self, "Models folder", self.folder.text())
        if folder:
            self.folder.setText(folder)
            self.refresh()

    def set_folder(self, folder: str) -> None:
        self.folder.setText(folder)
        self.refresh()

    def refresh(self) -> None:
        root = Path(self.folder.text()).expanduser()
        remember("train/models_dir", str(root))
        self.tree.clear()
        models = sorted(p for p in root.iterdir() if p.is_dir() and version_folders(p)) if root.is_dir() else []
        for model in models:
            parent = QTreeWidgetItem([model.name])
            parent.setIcon(0, icon("mdi6.brain"))
            self.tree.addTopLevelItem(parent)
            for _, version in reversed(version_folders(model)):
                item = QTreeWidgetItem(describe_version(version))
                item.setData(0, 256, str(version))
                parent.addChild(item)
            parent.setExpanded(True)
        self.empty.setText("" if models else f"No models in {root} yet: train one, or choose another folder.")
        self._update_buttons()

    def _selected_version(self) -> Path | None:
        item = self.tree.currentItem()
        if item is None:
            return None
        if item.data(0, 256) is None and item.childCount():
            item = item.child(0)  # a model: its newest version
        value = item.data(0, 256)
        return Path(value) if value else None

    def _update_buttons(self) -> None:
        selected = self._selected_version() is not None
        for button in (self.open_button, self.reveal_button, self.delete_button):
            button.setEnabled(selected)

    def _open(self) -> None:
        version = self._selected_version()
        if version:
            self.open_in_classify.emit(str(version))

    def _reveal(self) -> None:
        version = self._selected_version()
        if version:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(version)))

    def _delete(self, confirm: bool = True) -> None:
        version = self._selected_version()
        if version is None:
            return
        if confirm and QMessageBox.question(
                self, "Delete version", f"Delete {version.parent.name} version {version.name}?\n\n{version}\n\n"
                "This cannot be undone.") != QMessageBox.StandardButton.Yes:
            return
        hidden = temp_folder(version.parent)  # hide it from TF Serving first, then remove
        version.rename(hidden)
        shutil.rmtree(hidden, ignore_errors=True)
        self.message.emit(f"Deleted {version.parent.name} version {version.name}.", "info")
        self.refresh()
