"""The guided training wizard: folder -> review -> options -> training -> results -> export.

Training runs in a child process (``retrain-studio train --json``) read line by line, so
TensorFlow never starts in the GUI process and Cancel can simply kill the child: the
export is atomic, so a killed run leaves no model version behind.  Leaving a running
training (Back, Esc, Cancel, closing the window) always asks first.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import replace
from enum import IntEnum
from pathlib import Path

from PySide6.QtCore import QSignalBlocker, Qt, Signal
from PySide6.QtGui import QGuiApplication, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidgetItem,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
    QWizard,
    QWizardPage,
)

from app.core.atomic import remove_stale_temps
from app.core.dataset import (
    CLASS,
    FOLDER,
    DatasetError,
    Source,
    check_root,
    excluded_files,
    loose_images,
    scan,
    set_excluded,
)
from app.core.serving_config import docker_command, models_config
from app.core.training import TrainSettings, free_name, newest_classes
from app.core.trust import fidelity_warnings
from app.imaging import class_name_problem
from app.paths import sample_data_dir
from app.store import human_size, read_metadata_quietly

from .qt_common import (
    Job,
    icon,
    load_thumbnails,
    note,
    one_sentence,
    open_in_file_manager,
    read_only_table,
    remember,
    run_in_background,
    sentence,
    set_tone,
    setting,
    thumbnail,
    thumbnail_grid,
    tone,
)
from .qt_training import STAGE_NAMES, EventChild, OverallProgress, train_command

BACKBONES = {  # CLI id -> what a person choosing one needs to know (ImageNet top-1 from the EfficientNet-Lite release)
    "efficientnet_lite0": "EfficientNet-Lite0 — fastest, 224 px, 4.7 M params, 75 % ImageNet (recommended)",
    "efficientnet_lite1": "EfficientNet-Lite1 — balanced, 240 px, 5.4 M params, 77 % ImageNet",
    "efficientnet_lite2": "EfficientNet-Lite2 — most accurate, slowest, 260 px, 6.1 M params, 78 % ImageNet",
}
BACKBONE_CHOICES = list(BACKBONES)
OVERFIT_GAP, OVERFIT_EPOCHS = 0.15, 3
MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class Page(IntEnum):
    """The wizard's pages in order: the ids given to setPage and read back from currentId, never bare numbers."""

    FOLDER = 0
    REVIEW = 1
    OPTIONS = 2
    TRAINING = 3
    RESULTS = 4
    EXPORT = 5


def default_models_dir() -> str:
    return setting("train/models_dir", str(Path.home() / "RetrainStudio" / "models"))


class SourceList(QWidget):
    """Image folders as a table the user adds to and removes from: folders of class folders (their classes merge
    with the others by name) and one-class folders (the class name editable, defaulting to the folder's name).
    Used by the wizard's first page ("More folders") and the Retrain dialog (every folder)."""

    changed = Signal()

    def __init__(self, name: str, accessible: str, heading: str, start: Callable[[], str] = lambda: ""):
        super().__init__()
        self.start = start  # where the folder dialogs open
        self.table = read_only_table(["Class", heading])
        self.table.setObjectName(name)
        self.table.setAccessibleName(accessible)
        self.table.setEditTriggers(
            QAbstractItemView.EditTrigger.DoubleClicked | QAbstractItemView.EditTrigger.EditKeyPressed
        )  # only a class name is editable
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setToolTip("Classes of the same name merge. Double-click a one-class folder's class to rename it.")
        add_classes = QPushButton(icon("mdi6.folder-multiple-plus"), "Add folder of classes…")
        add_classes.setToolTip("Another folder with one sub-folder per class; its classes merge with the others")
        add_one = QPushButton(icon("mdi6.folder-plus"), "Add one-class folder…")
        add_one.setToolTip("A folder whose images are all one class (named after the folder; you can rename it)")
        self.remove_button = QPushButton(icon("mdi6.folder-remove"), "Remove folder")
        self.remove_button.setEnabled(False)
        buttons = QHBoxLayout()
        for widget in (add_classes, add_one, self.remove_button):
            buttons.addWidget(widget)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.table, 1)
        layout.addLayout(buttons)
        add_classes.clicked.connect(lambda: self._browse(FOLDER))
        add_one.clicked.connect(lambda: self._browse(CLASS))
        self.remove_button.clicked.connect(self.remove_selected)
        self.table.itemSelectionChanged.connect(
            lambda: self.remove_button.setEnabled(bool(self.table.selectionModel().selectedRows()))
        )
        self.table.itemChanged.connect(lambda _item: self.changed.emit())

    def add_source(self, source: Source) -> None:
        """One row; a one-class folder's class name is editable there."""
        row = self.table.rowCount()
        self.table.insertRow(row)
        name = QTableWidgetItem(source.class_name() if source.kind == CLASS else "(its sub-folders)")
        folder = QTableWidgetItem(source.path)
        folder.setFlags(folder.flags() & ~Qt.ItemFlag.ItemIsEditable)
        if source.kind != CLASS:
            name.setFlags(name.flags() & ~Qt.ItemFlag.ItemIsEditable)
        folder.setData(Qt.ItemDataRole.UserRole, source.kind)
        folder.setToolTip(source.path)
        with QSignalBlocker(self.table):
            self.table.setItem(row, 0, name)
            self.table.setItem(row, 1, folder)
        self.changed.emit()

    def add_folder(self, folder: str) -> None:
        """A dropped folder: a folder of class folders if it looks like one, else a one-class folder."""
        try:
            check_root(folder)
            self.add_source(Source(folder, FOLDER))
        except DatasetError:
            self.add_source(Source(folder, CLASS))

    def set_sources(self, sources: list[Source]) -> None:
        self.table.setRowCount(0)
        for source in sources:
            self.add_source(source)

    def sources(self) -> list[Source]:
        """The folders as listed."""
        out = []
        for row in range(self.table.rowCount()):
            kind, path = self.table.item(row, 1).data(Qt.ItemDataRole.UserRole), self.table.item(row, 1).text()
            out.append(Source(path, kind, self.table.item(row, 0).text().strip() if kind == CLASS else None))
        return out

    @staticmethod
    def problem(sources: list[Source]) -> str | None:
        """Why these folders cannot be trained on, checked at once without reading images; None when they can."""
        try:
            for source in sources:
                if source.kind == FOLDER:
                    check_root(source.path)
                elif not source.class_name():
                    raise DatasetError(f"the one-class folder {source.path} needs a class name")
                elif problem := class_name_problem(source.class_name()):
                    raise DatasetError(f"class name {source.class_name()!r} cannot be a class: {problem}")
                elif "=" in source.class_name():
                    raise DatasetError(f"class name {source.class_name()!r} cannot hold '='")
                elif not source.root().is_dir():
                    raise DatasetError(f"{source.path} is not a folder")
        except DatasetError as exc:
            return sentence(one_sentence(exc))
        return None

    def _browse(self, kind: str) -> None:
        title = "Add a folder of class folders" if kind == FOLDER else "Add a folder that is one class"
        folder = QFileDialog.getExistingDirectory(self, title, self.start())
        if folder:
            self.add_source(Source(folder, kind))

    def remove_selected(self) -> None:
        for index in sorted(self.table.selectionModel().selectedRows(), key=lambda i: -i.row()):
            self.table.removeRow(index.row())
        self.changed.emit()


class FolderPage(QWizardPage):
    def __init__(self):
        super().__init__()
        self.setObjectName("folder_page")
        self.setTitle("Choose your photos")
        self.setSubTitle(
            "One sub-folder per class: photos/cats/*.jpg, photos/dogs/*.jpg … "
            "Drop a folder here, browse for one, or start with the bundled sample."
        )
        self.setAcceptDrops(True)
        self.folder = QLineEdit(setting("train/last_folder", ""))
        self.folder.setObjectName("training_folder")
        self.folder.setAccessibleName("Training folder")
        self.folder.setPlaceholderText("a folder with one sub-folder of images per class")
        self.error = note("bad", "folder_error", bold=True)
        self.error.hide()
        browse = QPushButton(icon("mdi6.folder-open"), "Browse…")
        sample = QPushButton(icon("mdi6.tshirt-crew"), "Use sample data")
        sample.setToolTip("120 Fashion-MNIST photos in 4 classes, shipped with the app")
        row = QHBoxLayout()
        row.addWidget(self.folder, 1)
        row.addWidget(browse)
        hint = QLabel("Tip: 30 or more images per class give a useful first model; the images stay where they are.")
        hint.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.error)
        layout.addWidget(sample, 0, Qt.AlignmentFlag.AlignLeft)
        self.more = SourceList("more_sources", "More folders", "More images from", self.folder.text)
        layout.addWidget(QLabel("More folders (optional): photos elsewhere, merged by class name."))
        layout.addWidget(self.more, 1)
        layout.addWidget(hint)
        # not a mandatory field: Qt counts those complete only once they differ from their first value,
        # which kept Next disabled for a remembered folder
        self.registerField("folder", self.folder)
        self.folder.textChanged.connect(self._edited)
        browse.clicked.connect(self._browse)
        sample.clicked.connect(lambda: self.folder.setText(str(sample_data_dir())))
        self.more.changed.connect(self._edited)

    def sources(self) -> list[Source]:
        """The training folder, then the extra folders as listed."""
        out = [Source(str(Path(self.folder.text().strip()).expanduser()))] if self.folder.text().strip() else []
        return out + self.more.sources()

    def _edited(self):
        self.error.hide()
        self.completeChanged.emit()

    def _browse(self):
        folder = QFileDialog.getExistingDirectory(self, "Choose the training folder", self.folder.text())
        if folder:
            self.folder.setText(folder)

    def dragEnterEvent(self, event):
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event):
        """The first folder dropped on an empty page is the training folder; others are added to "More folders"
        (a folder with class folders as one, else as a one-class folder)."""
        folders = [u.toLocalFile() for u in event.mimeData().urls() if Path(u.toLocalFile()).is_dir()]
        if folders and not self.folder.text().strip():
            self.folder.setText(folders.pop(0))
        for folder in folders:
            self.more.add_folder(folder)
        if folders or self.folder.text().strip():
            event.acceptProposedAction()

    def isComplete(self) -> bool:
        return bool(self.folder.text().strip())

    def validatePage(self) -> bool:
        """Absurd folders (the disk, loose photos, empty folders) are refused here at once, before any scan."""
        path = Path(self.folder.text().strip()).expanduser()
        problem = SourceList.problem(self.sources())
        if problem:
            self.error.setText(problem)
            self.error.show()
            return False
        remember("train/last_folder", str(path))
        return True


class _ScanCancelled(Exception):
    pass


class ReviewPage(QWizardPage):
    def __init__(self):
        super().__init__()
        self.setObjectName("review_page")
        self.setTitle("Review the data set")
        self.setSubTitle("Images per class, a few examples of each, and any files that will be skipped.")
        self.dataset = None
        self.scan_job: Job | None = None  # the scan running now; a cancelled or replaced one's answers are ignored
        self.summary = QLabel("Scanning…")
        self.summary.setObjectName("review_summary")
        self.summary.setWordWrap(True)
        self.scan_progress = QProgressBar()
        self.scan_progress.setObjectName("scan_progress")
        self.scan_button = QPushButton(icon("mdi6.stop"), "Cancel scan")
        self.scan_button.setObjectName("scan_button")
        self.warnings = note("low")
        self.loose = note("low", "loose_images")
        self.browse_class = QComboBox()
        self.browse_class.setObjectName("browse_class")
        self.browse_class.setAccessibleName("Class to browse")
        self.browse_button = QPushButton(icon("mdi6.image-multiple"), "Browse images…")
        self.browse_button.setToolTip("See every image of a class and leave out the ones that do not belong")
        self.problems_button = QPushButton(icon("mdi6.magnify-scan"), "Find problems…")
        self.problems_button.setObjectName("find_problems")
        self.problems_button.setAccessibleName("Find problems")
        self.problems_button.setToolTip(
            "Look for likely wrong labels, duplicates (and leaks between the splits) and "
            "outliers; you decide what to exclude or move"
        )
        self.chart_box = QWidget()  # holds the class-count chart, made on first use (see ``chart``)
        QVBoxLayout(self.chart_box).setContentsMargins(0, 0, 0, 0)
        self.chart_box.setMinimumHeight(160)
        self._chart = None
        self.thumbs = thumbnail_grid(56, 96, 84)
        self.skipped = read_only_table(["Skipped file", "Why"])
        self.skipped.setObjectName("skipped_files")
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.chart_box)
        splitter.addWidget(self.thumbs)
        splitter.addWidget(self.skipped)
        splitter.setSizes([180, 320, 140])
        scan_row = QHBoxLayout()
        scan_row.addWidget(self.scan_progress, 1)
        scan_row.addWidget(self.scan_button)
        browse_row = QHBoxLayout()
        browse_row.addWidget(QLabel("Look through a class:"))
        browse_row.addWidget(self.browse_class)
        browse_row.addWidget(self.browse_button)
        browse_row.addWidget(self.problems_button)
        browse_row.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addLayout(scan_row)
        layout.addWidget(self.warnings)
        layout.addWidget(self.loose)
        layout.addLayout(browse_row)
        layout.addWidget(splitter, 1)
        self.scan_button.clicked.connect(self._scan_button_clicked)
        self.browse_button.clicked.connect(self.browse_images)
        self.problems_button.clicked.connect(self.find_problems)
        self.thumbs.itemDoubleClicked.connect(lambda item: self.browse_images(item.text()))

    @property
    def chart(self):
        """The class-count bar chart, made when first needed: importing pyqtgraph costs about 0.1 s of CPU,
        which the window would otherwise spend before it appears."""
        if self._chart is None:
            import pyqtgraph as pg

            self._chart = pg.PlotWidget(background=None)
            self._chart.setLabel("left", "images")
            self._chart.setMouseEnabled(False, False)
            self.chart_box.layout().addWidget(self._chart)
        return self._chart

    def initializePage(self):
        self.start_scan()

    def cleanupPage(self):  # Back pressed: a scan still running is abandoned
        self.stop_scan()

    def start_scan(self) -> None:
        """Scan in the background; progress and the result come back to the GUI thread."""
        self.stop_scan()
        self.dataset = None
        self.summary.setText("Scanning…")
        set_tone(self.summary, None)
        for label in (self.warnings, self.loose):
            label.clear()
            label.hide()
        self.thumbs.clear()
        self.skipped.setRowCount(0)
        self.chart.clear()
        self.browse_class.clear()
        self.browse_button.setEnabled(False)
        self.problems_button.setEnabled(False)
        self.scan_progress.setRange(0, 0)
        self.scan_progress.setFormat("looking for images…")
        self.scan_progress.show()
        self.scan_button.setText("Cancel scan")
        self.scan_button.setIcon(icon("mdi6.stop"))
        self.scan_button.show()
        folder = self.wizard().folder_page.sources()

        def work(job: Job):
            def on_event(event: dict) -> None:
                if job.cancelled.is_set():
                    raise _ScanCancelled()
                if event.get("event") == "progress":
                    job.progress((event["done"], event["total"]))

            return self.scan_folder(folder, on_event)

        def current(handler):  # answers of a cancelled or replaced scan are ignored
            return lambda value: job is self.scan_job and handler(value)

        job = self.scan_job = run_in_background(
            work, current(self._show), current(self._failed), self, current(self._progress)
        )
        self.completeChanged.emit()

    def stop_scan(self) -> None:
        if self.scan_job is not None and self.dataset is None and not self.scan_progress.isHidden():
            self.scan_job.cancel()
            self.scan_job = None
            self.summary.setText("Scan cancelled.")
            self.scan_progress.hide()
            self.scan_button.setText("Scan again")
            self.scan_button.setIcon(icon("mdi6.refresh"))

    def _scan_button_clicked(self):
        if self.scan_button.text() == "Cancel scan":
            self.stop_scan()
        else:
            self.start_scan()

    @staticmethod
    def scan_folder(folder, on_event):
        """Runs on a worker thread: no Qt widget here, only QImage thumbnails."""
        data = scan(folder, on_event=on_event)
        examples = []
        for label, name in enumerate(data.classes):
            for item in [i for i in data.items if i.label == label][:5]:
                examples.append((name, thumbnail(item.path, 56)))
        return data, examples, len(loose_images(data.root))

    def _progress(self, value: tuple[int, int]):
        done, total = value
        self.scan_progress.setRange(0, max(total, 1))
        self.scan_progress.setValue(done)
        self.scan_progress.setFormat(f"checked {done} of {total} files")

    def _show(self, result):
        import pyqtgraph as pg

        data, examples, loose = result
        self.dataset = data
        self.scan_progress.hide()
        self.scan_button.hide()
        counts = [sum(data.counts()[c].values()) for c in data.classes]
        s = data.summary()
        self.summary.setText(
            f"<b>{s['images']} images in {len(data.classes)} classes</b> — train {s['train']}, "
            f"validation {s['validation']}, test {s['test']}; {s['skipped_count']} skipped."
        )
        if len(data.sources) > 1:  # where each class's images come from
            origins = data.origins()
            self.summary.setText(
                self.summary.text()
                + "<br>"
                + "; ".join(
                    f"{c}: " + ", ".join(f"{n} from {Path(where).name}" for where, n in origins[c].items())
                    for c in data.classes
                )
            )
        self.warnings.setText("\n".join(f"⚠ {w}" for w in data.warnings))
        self.warnings.setVisible(bool(data.warnings))
        if loose:
            many = loose != 1
            self.loose.setText(
                f"⚠ {loose} image{'s' if many else ''} directly in the folder "
                f"{'are' if many else 'is'} not used: put {'them' if many else 'it'} in a class folder."
            )
            self.loose.show()
        self.chart.addItem(pg.BarGraphItem(x=list(range(len(counts))), height=counts, width=0.6, brush="#1a73e8"))
        self.chart.getAxis("bottom").setTicks([[(i, c) for i, c in enumerate(data.classes)]])
        for name, image in examples:
            item = QListWidgetItem(name)
            if not image.isNull():
                item.setIcon(QPixmap.fromImage(image))
            item.setToolTip(f"{name}: double-click to see every image of this class")
            self.thumbs.addItem(item)
        self.browse_class.addItems(data.classes)
        self.browse_button.setEnabled(True)
        self.problems_button.setEnabled(True)
        self.skipped.setRowCount(len(data.skipped))
        for r, skipped in enumerate(data.skipped):
            source = data.source_of(skipped.path)  # another folder's files are named with that folder
            shown = (
                skipped.path.relative_to(data.root)
                if skipped.path.is_relative_to(data.root)
                else skipped.path.relative_to(source.root().parent)
                if source
                else skipped.path
            )
            self.skipped.setItem(r, 0, QTableWidgetItem(str(shown)))
            self.skipped.setItem(r, 1, QTableWidgetItem(skipped.reason))
        self.skipped.setVisible(bool(data.skipped))
        self.completeChanged.emit()

    def _failed(self, exc):
        if isinstance(exc, _ScanCancelled):
            return
        self.scan_progress.hide()
        self.scan_button.hide()
        text = one_sentence(exc)
        self.summary.setText(sentence(text))
        set_tone(self.summary, "bad", bold=True)
        if not isinstance(exc, DatasetError):
            self.wizard().message.emit(sentence(text), "error")
        self.completeChanged.emit()

    def browse_images(self, class_name: str | None = None) -> None:
        """Every image of one class, from every folder, each ticked; un-ticking one leaves it out of training."""
        data = self.dataset
        name = class_name if isinstance(class_name, str) and class_name else self.browse_class.currentText()
        if data is None or name not in data.classes:
            return
        label = data.classes.index(name)
        paths = [i.path for i in data.items if i.label == label]
        paths += [s.path for s in data.skipped if s.reason == "excluded by you" and data.class_of(s.path) == name]
        dialog = ClassBrowser(self, data, name, sorted(paths, key=lambda p: str(p).lower()))
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.finished.connect(lambda _result: dialog.changed and self.start_scan())
        dialog.open()

    def find_problems(self) -> None:
        """The data review of every folder (wrong labels, duplicates, leaks, outliers) in a dialog; a change means
        a new scan."""
        from .qt_review import ReviewDialog

        if self.dataset is None:
            return
        dialog = ReviewDialog(self, self.dataset, setting("train/backbone", BACKBONE_CHOICES[0]))
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.finished.connect(lambda _result: dialog.changed and self.start_scan())
        dialog.open()

    def isComplete(self) -> bool:
        return self.dataset is not None


class ClassBrowser(QDialog):
    """A thumbnail grid of one class from every folder; the ticks are written at once to the exclusions of the
    folder each image came from (``<source>/.retrain-studio/excluded.txt``)."""

    def __init__(self, parent, data, class_name: str, paths: list[Path]):
        super().__init__(parent)
        self.setObjectName("class_browser")
        self.setWindowTitle(f"Images of {class_name}")
        self.resize(760, 560)
        self.data, self.paths, self.changed = data, paths, False
        excluded = set().union(*(excluded_files(root) for root in self._roots()))
        self.note = QLabel(
            f"{len(paths)} images. Untick an image to leave it out of training; tick it again to bring it back."
        )
        self.note.setWordWrap(True)
        self.grid = thumbnail_grid(96, 132, 132)
        self.grid.setObjectName("class_images")
        self.grid.setAccessibleName(f"Images of {class_name}")
        several = len(self._roots()) > 1  # then each caption says which folder the image is in
        for path in paths:
            item = QListWidgetItem(f"{path.name}\n{self._root(path).name}" if several else path.name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Unchecked if path.resolve() in excluded else Qt.CheckState.Checked)
            item.setToolTip(str(path))
            self.grid.addItem(item)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.note)
        layout.addWidget(self.grid, 1)
        layout.addWidget(buttons)
        self.grid.itemChanged.connect(self._ticked)

        thumbnails = load_thumbnails([self.grid.item(i) for i in range(len(paths))], paths, 96, self)
        self.finished.connect(lambda _result: thumbnails.cancel())

    def _root(self, path: Path) -> Path:
        source = self.data.source_of(path)
        return source.root() if source else self.data.root

    def _roots(self) -> set[Path]:
        return {self._root(path) for path in self.paths}

    def _ticked(self, _item):
        unticked = {
            self.paths[i].resolve()
            for i in range(self.grid.count())
            if self.grid.item(i).checkState() != Qt.CheckState.Checked
        }
        try:
            for root in sorted(self._roots()):
                mine, before = {p.resolve() for p in self.paths if self._root(p) == root}, excluded_files(root)
                if (after := (before - mine) | (unticked & mine)) != before:  # another folder's list stays as is
                    set_excluded(root, after)
        except (OSError, ValueError) as exc:  # a read-only folder, a name with a line break
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else one_sentence(exc)
            self.note.setText(sentence(f"could not save the exclusions: {reason}"))
            set_tone(self.note, "bad")
            return
        self.changed = True
        self.note.setText(f"{len(self.paths) - len(unticked)} of {len(self.paths)} images used for training.")


class BackboneBox(QComboBox):
    """The backbone: a listed one by its human name, or a typed hub handle or SavedModel folder."""

    def __init__(self, chosen: str):
        super().__init__()
        self.setObjectName("backbone")
        self.setAccessibleName("Backbone")
        self.setEditable(True)
        for backbone_id, text in BACKBONES.items():
            self.addItem(text, backbone_id)
        self.set_backbone(chosen)
        self.setToolTip(
            "A bundled EfficientNet-Lite (works offline; a bigger one is slower and a little "
            "more accurate), a TF Hub / Kaggle feature-vector handle (needs internet), "
            "or a local SavedModel folder"
        )

    def set_backbone(self, backbone_id: str) -> None:
        self.setCurrentText(BACKBONES.get(backbone_id, backbone_id))

    def backbone_id(self) -> str:
        """The CLI id of a listed backbone, or what the user typed (a hub handle or a SavedModel folder)."""
        text = self.currentText().strip()
        index = self.findText(text)
        return self.itemData(index) if index >= 0 else text or BACKBONE_CHOICES[0]


class SettingsForm(QWidget):
    """The training settings a person may change (the wizard's Advanced part, the Retrain dialog): ``load``
    shows a TrainSettings, ``applied`` returns one with these values and the rest of the given one kept."""

    def __init__(self):
        super().__init__()
        defaults = TrainSettings("", "")
        self.epochs = QSpinBox(minimum=1, maximum=1000, value=defaults.epochs)
        self.batch_size = QSpinBox(minimum=1, maximum=4096, value=defaults.batch_size)
        self.learning_rate = QDoubleSpinBox(
            decimals=5, minimum=1e-5, maximum=1.0, singleStep=0.0005, value=defaults.learning_rate
        )
        self.validation = QDoubleSpinBox(minimum=0, maximum=45, value=defaults.validation_percent, suffix=" %")
        self.test = QDoubleSpinBox(minimum=0, maximum=45, value=defaults.test_percent, suffix=" %")
        self.augment = QCheckBox("Add augmented copies (mirror, zoom, brightness)")
        self.fine_tune = QCheckBox("Fine-tune the backbone (slow; for large data sets)")
        self.fine_tune_epochs = QSpinBox(minimum=0, maximum=1000, value=defaults.fine_tune_epochs)
        self.seed = QSpinBox(minimum=0, maximum=2**31 - 1, value=defaults.seed)
        self.tflite = QComboBox()
        self.tflite.addItems(["float", "dynamic", "int8", "none"])
        grid = QFormLayout(self)
        for widget, name, label in [
            (self.epochs, "epochs", "Most epochs (early stopping)"),
            (self.batch_size, "batch_size", "Batch size"),
            (self.learning_rate, "learning_rate", "Learning rate"),
            (self.validation, "validation_percent", "Validation split"),
            (self.test, "test_percent", "Test split"),
            (self.augment, "augment", ""),
            (self.fine_tune, "fine_tune", ""),
            (self.fine_tune_epochs, "fine_tune_epochs", "Fine-tuning epochs"),
            (self.seed, "seed", "Seed"),
            (self.tflite, "tflite_export", "TFLite export"),
        ]:
            widget.setObjectName(name)
            widget.setAccessibleName(label or widget.text())
            grid.addRow(label, widget)
        self.fine_tune.toggled.connect(self.fine_tune_epochs.setEnabled)
        self.fine_tune_epochs.setEnabled(False)

    def load(self, settings: TrainSettings) -> None:
        """Show ``settings``' values (numbers outside a field's range are clamped to it)."""
        self.epochs.setValue(settings.epochs)
        self.batch_size.setValue(settings.batch_size)
        self.learning_rate.setValue(settings.learning_rate)
        self.validation.setValue(settings.validation_percent)
        self.test.setValue(settings.test_percent)
        self.augment.setChecked(settings.augment)
        self.fine_tune.setChecked(settings.fine_tune)
        self.fine_tune_epochs.setValue(settings.fine_tune_epochs)
        self.seed.setValue(settings.seed)
        self.tflite.setCurrentText(settings.tflite)

    def applied(self, settings: TrainSettings) -> TrainSettings:
        """``settings`` with this form's values."""
        return replace(
            settings,
            epochs=self.epochs.value(),
            batch_size=self.batch_size.value(),
            learning_rate=self.learning_rate.value(),
            validation_percent=self.validation.value(),
            test_percent=self.test.value(),
            augment=self.augment.isChecked(),
            fine_tune=self.fine_tune.isChecked(),
            fine_tune_epochs=self.fine_tune_epochs.value(),
            seed=self.seed.value(),
            tflite=self.tflite.currentText(),
        )


class OptionsPage(QWizardPage):
    def __init__(self):
        super().__init__()
        self.setObjectName("options_page")
        self.setTitle("Model options")
        self.setSubTitle("The defaults work well; open Advanced to change training.")
        self.backbone = BackboneBox(setting("train/backbone", BACKBONE_CHOICES[0]))
        self.models_dir = QLineEdit(default_models_dir())
        self.models_dir.setObjectName("models_dir")
        self.models_dir.setAccessibleName("Save models in")
        browse = QPushButton(icon("mdi6.folder-open"), "")
        browse.setToolTip("Choose where models are saved")
        out_row = QHBoxLayout()
        out_row.addWidget(self.models_dir, 1)
        out_row.addWidget(browse)
        self.name = QLineEdit()
        self.name.setObjectName("model_name")
        self.name.setAccessibleName("Model name")
        self.name_for = None  # the folder whose default name the field shows (None: the user typed it)
        self.conflict = note("low", "name_conflict")
        self.use_new_name = QPushButton()
        self.use_new_name.setObjectName("use_new_name")
        self.keep_name = QCheckBox("Add a version with the new classes anyway")
        self.keep_name.setObjectName("keep_name")
        conflict_box = QWidget()
        conflict_row = QVBoxLayout(conflict_box)
        conflict_row.setContentsMargins(0, 0, 0, 0)
        conflict_row.addWidget(self.conflict)
        buttons_row = QHBoxLayout()
        buttons_row.addWidget(self.use_new_name)
        buttons_row.addWidget(self.keep_name)
        buttons_row.addStretch(1)
        conflict_row.addLayout(buttons_row)
        self.conflict_box = conflict_box
        conflict_box.hide()
        form = QFormLayout()
        form.addRow("Backbone", self.backbone)
        form.addRow("Save models in", out_row)
        form.addRow("Model name", self.name)
        form.addRow("", conflict_box)

        self.form = SettingsForm()
        for name in ("epochs", "learning_rate", "validation", "test", "augment", "fine_tune", "seed", "tflite"):
            setattr(self, name, getattr(self.form, name))  # the page's fields, under the names they always had
        # folded into the Advanced section when the page first opens (_make_advanced)
        self.advanced_options, self.advanced = self.form, None
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        self.advanced_slot = QVBoxLayout()
        layout.addLayout(self.advanced_slot)
        layout.addStretch(1)
        browse.clicked.connect(self._browse)
        self.name.textEdited.connect(self._name_typed)
        self.name.textChanged.connect(self.check_name)
        self.models_dir.textChanged.connect(self.check_name)
        self.use_new_name.clicked.connect(lambda: self.name.setText(self.use_new_name.property("name")))
        self.reported = False  # this page's error is on show
        for changed in (self.name.textChanged, self.models_dir.textChanged, self.keep_name.toggled):
            changed.connect(self._clear_solved_problem)

    def folder(self) -> Path:
        return Path(self.field("folder").strip()).expanduser().resolve()

    def _make_advanced(self) -> None:
        """The folded Advanced section, made when the page first opens: superqt imports qtpy, whose
        ``from PySide6.QtWidgets import *`` costs about 0.12 s of CPU the window would spend before it appears."""
        if self.advanced is not None:
            return
        from superqt import QCollapsible

        # folded: the arrow points right (more to see); open: down (what it shows is below)
        down, right = icon("mdi6.chevron-down"), icon("mdi6.chevron-right")
        self.advanced = QCollapsible(
            "Advanced", expandedIcon="▾" if down.isNull() else down, collapsedIcon="▸" if right.isNull() else right
        )
        self.advanced.setObjectName("advanced")
        self.advanced.addWidget(self.advanced_options)
        self.advanced_slot.addWidget(self.advanced)

    def initializePage(self):
        """The name follows the chosen folder until the user types one."""
        self._make_advanced()
        folder = self.folder()
        if self.name_for != folder and (self.name_for is not None or not self.name.text().strip()):
            self.name_for = folder
            self.name.setText(TrainSettings(str(folder), "").model_name())
        self.keep_name.setChecked(False)
        self.check_name()

    def _name_typed(self, _text):
        self.name_for = None

    def classes(self) -> list[str]:
        data = self.wizard().review_page.dataset if self.wizard() else None
        return list(data.classes) if data is not None else []

    def check_name(self) -> None:
        """Say so when NAME's newest version has other classes, and offer a free name in one click."""
        name, models_dir, classes = self.name.text().strip(), self.models_dir.text().strip(), self.classes()
        old = newest_classes(models_dir, name) if name and models_dir and MODEL_NAME.fullmatch(name) else None
        if old is None or not classes or sorted(old) == sorted(classes):
            self.conflict_box.hide()
            return
        new_name = free_name(models_dir, name, classes)
        added, removed = sorted(set(classes) - set(old)), sorted(set(old) - set(classes))
        change = "; ".join(
            part
            for part in (f"adds {', '.join(added)}" if added else "", f"drops {', '.join(removed)}" if removed else "")
            if part
        )
        self.conflict.setText(
            f"⚠ A model named {name} already exists with other classes ({', '.join(old)}); "
            f"this data set {change}. Clients of {name} would switch class sets silently."
        )
        self.use_new_name.setText(f"Use {new_name}")
        self.use_new_name.setProperty("name", new_name)
        self.conflict_box.show()

    def has_conflict(self) -> bool:
        return not self.conflict_box.isHidden()

    def _browse(self):
        folder = QFileDialog.getExistingDirectory(self, "Save models in", self.models_dir.text())
        if folder:
            self.models_dir.setText(folder)

    def backbone_id(self) -> str:
        return self.backbone.backbone_id()

    def settings(self) -> TrainSettings:
        sources = self.wizard().folder_page.sources()
        return self.form.applied(
            TrainSettings(
                image_dir=sources[0].path,
                sources=sources,
                models_dir=str(Path(self.models_dir.text()).expanduser()),
                name=self.name.text().strip() or None,
                backbone=self.backbone_id(),
            )
        )

    def problem(self) -> str | None:
        """Why Train cannot start yet, as one sentence; None when it can."""
        name = self.name.text().strip()
        return (
            "Choose where to save the model."
            if not self.models_dir.text().strip()
            else "Use letters, digits, '.', '-' and '_' in the model name."
            if name and not MODEL_NAME.fullmatch(name)
            else f"Use the new name or tick “{self.keep_name.text()}”."
            if self.has_conflict() and not self.keep_name.isChecked()
            else None
        )

    def _clear_solved_problem(self) -> None:
        """The error this page raised goes once its cause is gone (a new name, the box ticked), not at Train."""
        if self.reported and self.wizard() and not self.problem():
            self.reported = False
            self.wizard().message.emit("", "error")

    def validatePage(self) -> bool:
        problem = self.problem()
        if problem:
            self.reported = True
            self.wizard().message.emit(problem, "error")
            return False
        self._clear_solved_problem()
        remember("train/models_dir", self.models_dir.text().strip())
        remember("train/backbone", self.backbone_id())
        return True


class TrainingPage(QWizardPage):
    finished_ok = Signal(dict)
    progress_changed = Signal(int, str)  # overall percent (-1: no training running), what is happening

    def __init__(self):
        super().__init__()
        self.setObjectName("training_page")
        self.setTitle("Training")
        self.setSubTitle("Features are computed once and cached, so training again on the same photos is quick.")
        self.process: EventChild | None = None
        self.done_event: dict | None = None
        self.error: str | None = None
        self.history: dict = {}
        self.settings: TrainSettings | None = None
        self.stage = QLabel("Starting…")
        self.stage.setObjectName("training_stage")
        self.progress = QProgressBar()
        self.progress.setObjectName("training_progress")
        self.progress.setRange(0, 1000)
        self.eta = QLabel()
        self.eta.setObjectName("training_eta")
        self.cancel_button = QPushButton(icon("mdi6.stop"), "Cancel training")
        self.overfitting = QLabel()
        self.overfitting.setObjectName("overfitting_warning")
        self.overfitting.setWordWrap(True)
        self.overfitting.setStyleSheet(f"color: {tone('low')}; font-weight: bold;")
        self.overfitting.hide()
        colours = self.COLOURS
        self.curves: dict = {}  # the loss and accuracy charts are made when the page first opens (make_plots)
        legend = QLabel(
            "   ".join(f"<span style='color:{c}; font-weight:bold'>━━</span> {n}" for n, c in colours.items())
        )
        legend.setObjectName("chart_legend")
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(2000)
        self.log.setPlaceholderText("Log")
        self.plots = QHBoxLayout()
        top = QGridLayout()
        top.addWidget(self.stage, 0, 0)
        top.addWidget(self.eta, 0, 1, Qt.AlignmentFlag.AlignRight)
        top.addWidget(self.progress, 1, 0, 1, 2)
        top.addWidget(self.cancel_button, 1, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.overfitting)
        layout.addWidget(legend, 0, Qt.AlignmentFlag.AlignHCenter)
        layout.addLayout(self.plots, 2)
        layout.addWidget(self.log, 1)
        self.cancel_button.clicked.connect(self.cancel)

    COLOURS = {"train": "#1a73e8", "validation": "#f9ab00"}

    def make_plots(self) -> None:
        """The loss and accuracy charts, made when the page first opens: pyqtgraph's import and two plots cost
        about 0.15 s of CPU that the window would otherwise spend before it appears."""
        if self.curves:
            return
        import pyqtgraph as pg

        self.loss_plot = pg.PlotWidget(background=None, title="loss")
        self.acc_plot = pg.PlotWidget(background=None, title="accuracy")
        for plot in (self.loss_plot, self.acc_plot):  # the legend is a label above the charts, never on a curve
            plot.setLabel("bottom", "epoch")
            plot.setMinimumHeight(150)
            self.plots.addWidget(plot)
        pens = {name: pg.mkPen(colour, width=2) for name, colour in self.COLOURS.items()}
        self.curves = {
            "loss": self.loss_plot.plot(pen=pens["train"], name="train"),
            "val_loss": self.loss_plot.plot(pen=pens["validation"], name="validation"),
            "accuracy": self.acc_plot.plot(pen=pens["train"], name="train"),
            "val_accuracy": self.acc_plot.plot(pen=pens["validation"], name="validation"),
        }

    def initializePage(self):
        self.make_plots()
        self.done_event, self.error, self.history = None, None, {k: [] for k in self.curves}
        for curve in self.curves.values():
            curve.setData([], [])
        for plot in (self.loss_plot, self.acc_plot):
            plot.enableAutoRange()
        self.overfitting.hide()
        self._overfit_epochs = 0
        self.log.clear()
        self.stage.setText("Starting…")
        self.eta.clear()
        self.cancel_button.setEnabled(True)
        self.setButtonText(QWizard.WizardButton.CancelButton, "Cancel")  # stops the run (after asking)
        options = self.wizard().options_page
        self.settings = options.settings()
        self.overall, self._started = OverallProgress(self.settings.fine_tune), time.monotonic()
        self.progress.setValue(0)
        self.progress.setFormat("%p%")
        self._report()
        command = train_command(self.settings, options.keep_name.isChecked())
        self.log.appendPlainText("$ " + " ".join(command))
        self.process = EventChild(command, self)
        self.process.event.connect(self._handle)
        self.process.log.connect(self.log.appendPlainText)
        self.process.ended.connect(self._finished)
        self.process.start()
        self.completeChanged.emit()

    def _advance(self, stage: str, done: float = 0.0) -> None:
        """Move the bar to ``done`` (0..1) through ``stage``; it never moves back."""
        self.progress.setValue(round(self.overall.advance(stage, done) * 1000))
        self._report()

    def _report(self) -> None:
        elapsed = time.monotonic() - self._started
        f = self.overall.fraction
        left = ""
        if 0.05 <= f < 1 and elapsed > 2:
            seconds = elapsed * (1 - f) / f
            left = f"about {spoken_seconds(seconds)} left"
        self.eta.setText(left)
        text = STAGE_NAMES.get(self.overall.stage, self.overall.stage) + (f", {left}" if left else "")
        self.progress_changed.emit(int(f * 100), text)

    def _handle(self, event: dict) -> None:
        kind = event.get("event")
        try:
            self._show(kind, event)
        except (KeyError, TypeError, AttributeError, ValueError):
            self.log.appendPlainText(str(event))  # an event of an unknown shape: logged, never a crash

    def _show(self, kind: str, event: dict) -> None:
        if kind == "stage":
            self.stage.setText(STAGE_NAMES.get(event["stage"], event["stage"]) + " — " + event["message"])
            self.log.appendPlainText(event["message"])
            self._advance(event["stage"])
        elif kind == "progress":
            stage, done, total = event["stage"], event["done"], event["total"]
            of = f"epoch {done} of at most {total}" if stage in ("train", "fine_tune") else f"{done} / {total}"
            self.stage.setText(f"{STAGE_NAMES.get(stage, stage)}: {of}")
            self._advance(stage, done / total if total else 1.0)
        elif kind == "epoch":
            for key in self.curves:
                if key in event:
                    self.history[key].append((event["epoch"], event[key]))
                    xs, ys = zip(*self.history[key])
                    self.curves[key].setData(list(xs), list(ys))
            self._check_overfitting(event)
        elif kind == "dataset":
            self.overall.dataset(event)
            self.log.appendPlainText(
                f"{event['images']} images, {len(event['classes'])} classes, {event['skipped_count']} skipped"
            )
        elif kind == "review":
            leaks = sum(g["leak"] for g in event["duplicates"])
            self.log.appendPlainText(
                f"review: {len(event['label_issues'])} likely wrong labels, "
                f"{len(event['duplicates'])} duplicate groups ({leaks} leaks), "
                f"{len(event['outliers'])} outliers (Back to the review step: Find problems…)"
            )
        elif kind == "warning":
            self.log.appendPlainText("warning: " + event["message"])
        elif kind == "error":
            self.error = event["message"]
        elif kind == "done":
            self.done_event = event

    def _check_overfitting(self, event: dict) -> None:
        """Train accuracy far above validation for several epochs: the head memorises the training images."""
        if "accuracy" not in event or "val_accuracy" not in event:
            return
        gap = event["accuracy"] - event["val_accuracy"]
        self._overfit_epochs = self._overfit_epochs + 1 if gap > OVERFIT_GAP else 0
        if self._overfit_epochs >= OVERFIT_EPOCHS:
            self.overfitting.setText(
                f"⚠ Possible overfitting: training accuracy is {gap * 100:.0f} points above validation for "
                f"{self._overfit_epochs} epochs. More images per class or augmentation (Advanced) usually help."
            )
            self.overfitting.show()

    def _finished(self, outcome) -> None:
        self.cancel_button.setEnabled(False)
        self.eta.clear()
        if outcome.ok and self.done_event is not None:
            self._advance("export", 1.0)
            self.progress.setFormat("done")
            acc = self.done_event["metrics"]["test_accuracy"]
            took = (self.done_event.get("seconds") or {}).get("total")
            self.setButtonText(QWizard.WizardButton.CancelButton, "Done")  # the version is saved now
            self.stage.setText(
                "Finished"
                + (f" in {spoken_seconds(took)}" if isinstance(took, (int, float)) else "")
                + (f": test accuracy {acc:.1%}" if acc is not None else "")
            )
            self.finished_ok.emit(self.done_event)
        elif outcome.cancelled:
            self.stage.setText("Cancelled; no model version was written.")
            self.progress.setValue(0)
            if self.settings is not None:  # a child killed while exporting leaves a hidden temporary folder
                remove_stale_temps(Path(self.settings.models_dir) / self.settings.model_name())
        else:
            text = outcome.reason("training")
            self.stage.setText("Failed: " + text)
            self.wizard().message.emit(sentence(text), "error")
        self.process = None
        self.progress_changed.emit(-1, self.stage.text())
        self.completeChanged.emit()

    def cancel(self):
        if self.running():
            self.process.cancel()

    def running(self) -> bool:
        return self.process is not None and self.process.running()

    def isComplete(self) -> bool:
        return self.done_event is not None and not self.running()

    def cleanupPage(self):  # Back (after the wizard asked) or a restart: stop the run
        self.cancel()


class ResultsPage(QWizardPage):
    """The stored results of the run just finished (the same view as Models → Open results).

    They are saved with the version, so Cancel or Train another discards nothing.
    """

    def __init__(self):
        super().__init__()
        self.setTitle("Results on the test split")
        self.setSubTitle(
            "Images the model never saw while training. Click a cell of the confusion matrix to see its images."
        )
        from .qt_results import ResultsView

        self.view = ResultsView(self)
        # the view's parts, under the names this page always had
        self.accuracy, self.matrix, self.images, self.cell_title = (
            self.view.accuracy,
            self.view.matrix,
            self.view.images,
            self.view.cell_title,
        )
        QVBoxLayout(self).addWidget(self.view)

    def initializePage(self):
        self.view.load(self.wizard().training_page.done_event["model_dir"])


class ExportPage(QWizardPage):
    def __init__(self):
        super().__init__()
        self.setObjectName("export_page")
        self.setTitle("Your model is ready")
        self.setSubTitle("Saved as a TF Serving version folder, with a TFLite file beside it.")
        self.version_dir = ""
        self.where = QLabel()
        self.where.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.where.setWordWrap(True)
        self.files = read_only_table(["File", "Size"])
        self.fidelity = QLabel()
        self.fidelity.setAccessibleName("Export check")
        self.fidelity.setWordWrap(True)
        self.fidelity.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.open_button = QPushButton(icon("mdi6.image-search"), "Classify with this model")
        self.show_button = QPushButton(icon("mdi6.folder-open"), "Show in folder")
        self.show_button.setToolTip("Open the version folder in the file manager")
        self.docker = QPlainTextEdit()
        self.docker.setReadOnly(True)
        self.docker.setMaximumHeight(70)
        self.config = QPlainTextEdit()
        self.config.setReadOnly(True)
        self.config.setMaximumHeight(130)
        copy_docker = QPushButton(icon("mdi6.content-copy"), "Copy")
        copy_config = QPushButton(icon("mdi6.content-copy"), "Copy")
        layout = QVBoxLayout(self)
        layout.addWidget(self.where)
        layout.addWidget(self.files, 1)
        layout.addWidget(self.fidelity)
        actions = QHBoxLayout()
        actions.addWidget(self.open_button)
        actions.addWidget(self.show_button)
        actions.addStretch(1)
        layout.addLayout(actions)
        layout.addWidget(QLabel("Serve it with TensorFlow Serving (gRPC on 8500, REST on 8501):"))
        row = QHBoxLayout()
        row.addWidget(self.docker, 1)
        row.addWidget(copy_docker, 0, Qt.AlignmentFlag.AlignTop)
        layout.addLayout(row)
        layout.addWidget(QLabel("or add it to a models.config:"))
        row = QHBoxLayout()
        row.addWidget(self.config, 1)
        row.addWidget(copy_config, 0, Qt.AlignmentFlag.AlignTop)
        layout.addLayout(row)
        copy_docker.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.docker.toPlainText()))
        copy_config.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.config.toPlainText()))
        self.open_button.clicked.connect(lambda: self.wizard().open_in_classify.emit(self.version_dir))
        self.show_button.clicked.connect(lambda: open_in_file_manager(self.version_dir, self))

    def initializePage(self):
        version = Path(self.wizard().training_page.done_event["model_dir"])
        self.version_dir = str(version)
        name, models_dir = version.parent.name, version.parent.parent
        self.where.setText(f"<b>{version}</b> (model <b>{name}</b>, version {version.name})")
        files = sorted(p for p in version.rglob("*") if p.is_file())
        self.files.setRowCount(len(files))
        for r, path in enumerate(files):
            self.files.setItem(r, 0, QTableWidgetItem(str(path.relative_to(version))))
            size = QTableWidgetItem(human_size(path.stat().st_size))
            size.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.files.setItem(r, 1, size)
        self.docker.setPlainText(docker_command(models_dir, name))
        self.config.setPlainText(models_config({name: f"/models/{name}"}))
        self.show_fidelity(read_metadata_quietly(version).fidelity)

    def show_fidelity(self, table: dict | None) -> None:
        """Whether every exported file answered the test split like the trained model (metadata's fidelity)."""
        warnings = fidelity_warnings(table)
        rows = (table or {}).get("artifacts") or {}
        if warnings:
            self.fidelity.setText("Warning: " + "; ".join(warnings) + ".")
            set_tone(self.fidelity, "bad", bold=True)
        elif rows:
            counts = sorted({row.get("images", 0) for row in rows.values()})
            images = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
            self.fidelity.setText(
                f"Checked: all {len(rows)} exported files answer {images} test images like the trained model, "
                "each within its tolerance."
            )
            set_tone(self.fidelity, "good")
        else:
            self.fidelity.setText("No test images, so the exported files could not be checked against training.")
            set_tone(self.fidelity, None)


def spoken_seconds(seconds: float) -> str:
    """A duration as a person reads it: whole seconds, or whole minutes from 90 s on.

    >>> spoken_seconds(7.6), spoken_seconds(200)
    ('8 s', '3 min')
    """
    return f"{max(1, round(seconds))} s" if seconds < 90 else f"{round(seconds / 60)} min"


class TrainWizard(QWizard):
    message = Signal(str, str)
    open_in_classify = Signal(str)
    trained = Signal(str)
    progress = Signal(int, str)  # overall training percent (-1 when none runs) and a line of text, for the sidebar

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Train a classifier")
        self.setWizardStyle(QWizard.WizardStyle.ModernStyle)
        self.setOption(QWizard.WizardOption.NoCancelButton, False)
        self.folder_page, self.review_page, self.options_page = FolderPage(), ReviewPage(), OptionsPage()
        self.training_page, self.results_page, self.export_page = TrainingPage(), ResultsPage(), ExportPage()
        self.results_page.setObjectName("results_page")
        for page_id, page in (
            (Page.FOLDER, self.folder_page),
            (Page.REVIEW, self.review_page),
            (Page.OPTIONS, self.options_page),
            (Page.TRAINING, self.training_page),
            (Page.RESULTS, self.results_page),
            (Page.EXPORT, self.export_page),
        ):
            self.setPage(page_id, page)
        self.training_page.finished_ok.connect(lambda event: self.trained.emit(event["model_dir"]))
        self.training_page.progress_changed.connect(self.progress)
        # the training charts are made while the options are read, so the Train click itself stays light
        self.currentIdChanged.connect(lambda page_id: page_id == Page.OPTIONS and self.training_page.make_plots())
        self.setButtonText(QWizard.WizardButton.FinishButton, "Train another")
        self.options_page.setButtonText(QWizard.WizardButton.NextButton, "Train")
        for done_page in (self.results_page, self.export_page):  # the version is saved: leaving discards nothing
            done_page.setButtonText(QWizard.WizardButton.CancelButton, "Done")
        back = self.button(QWizard.WizardButton.BackButton)
        back.clicked.disconnect()  # Back from a running training asks first
        back.clicked.connect(self.go_back)
        self.finished.connect(self._start_over)

    def focusNextPrevChild(self, next_child: bool) -> bool:
        """QWizard hides its whole contents for a moment whenever a page's completeness changes (its
        anti-flicker trick); Qt then moves the focus to the next widget outside the wizard, so a person typing
        a folder lost the focus after one key. While updates are off, focus stays where it is."""
        if not self.updatesEnabled():
            return True
        return super().focusNextPrevChild(next_child)

    def confirm_abandon(self) -> bool:
        """True when no training runs, or the user agreed to stop it (it is then stopped: nothing is kept)."""
        if not self.training_page.running():
            return True
        box = QMessageBox(
            QMessageBox.Icon.Question,
            "Stop training?",
            "Stop training? The run so far is discarded; no model version is written.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            self,
        )
        box.setDefaultButton(QMessageBox.StandardButton.No)
        if box.exec() != QMessageBox.StandardButton.Yes:
            return False  # even if the run ended meanwhile: the user chose to stay
        self.training_page.cancel()
        return True

    def cancel_training(self) -> bool:
        """Esc: stop a running training after asking; False when there was none (Esc means something else)."""
        if not self.training_page.running():
            return False
        self.confirm_abandon()
        return True

    def keyPressEvent(self, event) -> None:
        """Esc stops a running training after asking; it never resets the wizard (QDialog would reject)."""
        if event.key() == Qt.Key.Key_Escape:
            self.cancel_training()
            event.accept()
            return
        super().keyPressEvent(event)

    def go_back(self) -> None:
        if self.currentPage() is not self.training_page or self.confirm_abandon():
            self.back()

    def reject(self) -> None:
        if self.confirm_abandon():
            super().reject()

    def _start_over(self, _result) -> None:
        """Embedded in the main window, the wizard never closes: Finish begins a new run."""
        self.training_page.cancel()
        self.restart()
        self.show()
