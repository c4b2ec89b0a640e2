"""Models view: every exported model and version in the models folder, with what it is and weighs."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QFile, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QTableWidgetItem,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app import classify_only
from app.store import (
    DeleteError,
    VersionInfo,
    delete_version,
    human_size,
    model_folders,
    read_version,
    user_path,
    version_folders,
)

from .qt_common import ask, icon, open_in_file_manager, read_only_table, remember
from .qt_results import ResultsDialog
from .qt_retrain import Retrain, choose_and_start
from .qt_train_wizard import default_models_dir

COLUMNS = ["Model / version", "Classes", "Test accuracy", "Created", "Backbone", "SavedModel", "TFLite"]
VERSION_ROLE = 256  # Qt.UserRole: a version row's folder


def version_cells(info: VersionInfo) -> list[str]:
    """The cells of one version's row."""
    saved = info.size - sum(info.tflite.values())
    accuracy = info.accuracy_text() + (f" on {info.test_images} images" if info.test_images else "")
    return [
        f"version {info.version}",
        str(info.classes) if info.classes is not None else "?",
        accuracy,
        info.created,
        info.backbone,
        human_size(saved),
        ", ".join(f"{name} {human_size(size)}" for name, size in info.tflite.items()) or "—",
    ]


def move_to_trash(path: Path) -> bool:
    """The system trash (freedesktop.org, macOS, Windows) through Qt; False where there is none."""
    result = QFile.moveToTrash(str(path))
    return bool(result[0] if isinstance(result, tuple) else result)


class ModelsView(QWidget):
    open_in_classify = Signal(str)
    version_deleted = Signal(str)  # the folder that went: an open classifier may still be reading it
    message = Signal(str, str)
    retrain_progress = Signal(int, str)  # percent (-1: no retraining running), what is happening
    retrain_message = Signal(str, str)  # a background retraining's news, for every page (the user may be elsewhere)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.folder = QLineEdit(default_models_dir())
        self.folder.setAccessibleName("Models folder")
        browse = QPushButton(icon("mdi6.folder-open"), "")
        browse.setToolTip("Choose the models folder")
        browse.setAccessibleName("Choose the models folder")
        refresh = QPushButton(icon("mdi6.refresh"), "Refresh")
        top = QHBoxLayout()
        top.addWidget(QLabel("Models folder:"))
        top.addWidget(self.folder, 1)
        top.addWidget(browse)
        top.addWidget(refresh)
        self.tree = QTreeWidget()
        self.tree.setAccessibleName("Models")
        self.tree.setHeaderLabels(COLUMNS)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.header().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.tree.header().setStretchLastSection(True)
        self.tree.setStyleSheet("QTreeWidget::item { padding: 3px 0; }")
        self.empty = QLabel()
        self.empty.setWordWrap(True)  # it names the models folder: a long path must not widen the window
        self.open_button = QPushButton(icon("mdi6.image-search"), "Open in Classify")
        self.results_button = QPushButton(icon("mdi6.chart-box-outline"), "Open results")
        self.results_button.setToolTip("Accuracy, per-class table, confusion matrix and mistakes of this version")
        self.reveal_button = QPushButton(icon("mdi6.folder-eye"), "Show in file manager")
        self.delete_button = QPushButton(icon("mdi6.delete"), "Delete version…")
        self.retrain_button = QPushButton(icon("mdi6.autorenew"), "Retrain")
        self.retrain_button.setAccessibleName("Retrain")
        self.retrain_status = QLabel()
        self.retrain_status.setObjectName("retrain_status")
        self.retrain = Retrain(self)
        self.changes_title = QLabel()
        self.changes_title.setObjectName("class_changes_title")
        self.changes = read_only_table(["Class", "Accuracy", "F1"])
        self.changes.setObjectName("class_changes")
        self.changes.setAccessibleName("Per-class changes")
        self.changes.setMaximumHeight(170)
        self.show_changes(None)
        self.retrain_button.setVisible(not classify_only())
        actions = QHBoxLayout()
        for button in (
            self.open_button,
            self.results_button,
            self.reveal_button,
            self.retrain_button,
            self.delete_button,
        ):
            actions.addWidget(button)
        actions.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.tree, 1)
        layout.addWidget(self.empty)
        layout.addWidget(self.retrain_status)
        layout.addWidget(self.changes_title)
        layout.addWidget(self.changes)
        layout.addLayout(actions)
        browse.clicked.connect(self._browse)
        refresh.clicked.connect(self.refresh)
        self.folder.editingFinished.connect(self.refresh)
        # lambdas: clicked(bool) must never land in a parameter
        self.open_button.clicked.connect(lambda: self.open_selected())
        self.results_button.clicked.connect(lambda: self.open_results())
        self.reveal_button.clicked.connect(lambda: self.reveal_selected())
        self.delete_button.clicked.connect(lambda: self.delete_selected())
        self.retrain_button.clicked.connect(lambda: self.retrain_selected())
        self.tree.itemDoubleClicked.connect(lambda *_: self.open_selected())
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
        root = user_path(self.folder.text())
        remember("train/models_dir", str(root))
        current = self.tree.currentItem()
        keep = (current.data(0, VERSION_ROLE) or current.text(0)) if current else None  # selected before
        self.tree.clear()
        models = model_folders(root)
        for model in models:
            parent = QTreeWidgetItem([model.name])
            parent.setIcon(0, icon("mdi6.brain"))
            self.tree.addTopLevelItem(parent)
            for _, version in reversed(version_folders(model)):
                item = QTreeWidgetItem(version_cells(read_version(version)))
                item.setData(0, VERSION_ROLE, str(version))
                parent.addChild(item)
                if keep == str(version):
                    self.tree.setCurrentItem(item)
            parent.setExpanded(True)
            if keep == model.name and self.tree.currentItem() is None:
                self.tree.setCurrentItem(parent)
        self.empty.setText("" if models else f"No models in {root} yet: train one, or choose another folder.")
        self._update_buttons()

    def selected_version(self, newest_of_model: bool = True) -> Path | None:
        """The selected version row's folder; for a model row its newest version, unless told not to."""
        item = self.tree.currentItem()
        if item is None:
            return None
        if item.data(0, VERSION_ROLE) is None and item.childCount() and newest_of_model:
            item = item.child(0)
        value = item.data(0, VERSION_ROLE)
        return Path(value) if value else None

    def _update_buttons(self) -> None:
        any_selected = self.selected_version() is not None
        version_row = self.selected_version(newest_of_model=False) is not None
        for button in (self.open_button, self.results_button, self.reveal_button):
            button.setEnabled(any_selected)
        self.retrain_button.setEnabled(any_selected and not self.retrain.running())
        self.retrain_button.setToolTip(
            "A retraining is running"
            if self.retrain.running()
            else "Train the next version of this model from its folders and settings, in the "
            "background (only new images are embedded)"
        )
        self.delete_button.setEnabled(version_row)  # never silently the newest of a model row
        self.delete_button.setToolTip(
            "Move this version to the trash (asks first)"
            if version_row
            else "Select a version (not a model) to delete it"
        )

    def open_selected(self) -> None:
        version = self.selected_version()
        if version:
            self.open_in_classify.emit(str(version))

    def open_results(self) -> ResultsDialog | None:
        """Reopen the results stored with the selected version in their own window."""
        version = self.selected_version()
        if version is None:
            return None
        dialog = ResultsDialog(version, self)
        dialog.show()
        return dialog

    def reveal_selected(self) -> None:
        version = self.selected_version()
        if version:
            open_in_file_manager(version, self)

    def retrain_selected(self) -> None:
        """Retrain the selected model (or the model of the selected version): first its folders and settings in a
        dialog, then a child process in the background."""
        version = self.selected_version()
        if version is None or self.retrain.running():
            return
        choose_and_start(self, version)

    def start_retraining(self, settings, allow_new_classes: bool = False) -> None:
        """Train ``settings`` (a TrainSettings of one of these models) as its next version, in the background."""
        self.retrain.start(settings, allow_new_classes)
        self._update_buttons()

    def show_changes(self, what) -> None:
        """Below the list: every class's test accuracy and F1 in the previous and the new version (None: hide)."""
        self.changes_title.setVisible(what is not None)
        self.changes.setVisible(what is not None)
        if what is None:
            return
        previous, new, changes = what
        self.changes_title.setText(
            f"{new.model} version {new.version} against version {previous.version}, per class (largest changes first):"
        )
        self.changes.setHorizontalHeaderLabels(
            ["Class", f"Accuracy v{previous.version} → v{new.version}", f"F1 v{previous.version} → v{new.version}"]
        )
        self.changes.setRowCount(len(changes))
        for row, change in enumerate(changes):
            for column, text in enumerate((change.name, change.accuracy_text(), change.f1_text())):
                self.changes.setItem(row, column, QTableWidgetItem(text))

    def delete_selected(self) -> None:
        """Ask, naming exactly what goes, then move the selected version to the trash."""
        version = self.selected_version(newest_of_model=False)
        if version is None:
            return
        info = read_version(version)
        classes = info.classes if info.classes is not None else "?"
        what = (
            f"Model: {info.model}\nVersion: {info.version}\nClasses: {classes}\nTest accuracy: "
            f"{info.accuracy_text()}\nSize: {human_size(info.size)}\nFolder: {version}"
        )
        if not ask(
            self,
            QMessageBox.Icon.Question,
            "Delete version",
            f"Move {info.model} version {info.version} to the trash?",
            "Move to trash",
            what + "\n\nTF Serving stops serving this version. You can restore it from the trash.",
        ):
            return
        try:
            trashed = delete_version(version, move_to_trash)
            if trashed:
                self.version_deleted.emit(str(version))
                self.message.emit(
                    f"Moved {info.model} version {info.version} to the trash. To undo, restore "
                    f"“{version.name}” from the trash (it goes back to {version.parent}).",
                    "info",
                )
            elif self._confirm_permanent(info):
                delete_version(version, None)
                self.version_deleted.emit(str(version))
                self.message.emit(f"Deleted {info.model} version {info.version} permanently.", "info")
        except DeleteError as exc:
            self.message.emit(str(exc)[0].upper() + str(exc)[1:] + ".", "error")
        self.refresh()

    def _confirm_permanent(self, info: VersionInfo) -> bool:
        return ask(
            self,
            QMessageBox.Icon.Warning,
            "No trash",
            f"There is no trash for {info.path}. Delete {info.model} version {info.version} "
            "permanently? This cannot be undone.",
            "Delete permanently",
        )
