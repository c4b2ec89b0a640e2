"""Classify view: drop files or folders anywhere, rows stream in with top-k and timings.

Every call into a classifier goes through the backend bar's owner thread (``qt_owner``): the
batch below is one job there, results come back to the GUI thread by signal. Compare runs each
backend in its own owner thread, one backend after another, through ``app.inference.bench``.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import (
    QAbstractTableModel,
    QEvent,
    QModelIndex,
    QSize,
    QSortFilterProxyModel,
    Qt,
    Signal,
)
from PySide6.QtGui import (
    QColor,
    QGuiApplication,
    QImage,
    QKeySequence,
    QPixmap,
    QShortcut,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QStackedLayout,
    QStyledItemDelegate,
    QTableView,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.imaging import IMAGE_EXTENSIONS, ImageError, find_images, printable, read_image_file, walk
from app.inference.base import Prediction
from app.inference.bench import LoadSettings, bench, load_payloads, summary, sweep
from app.inference.factory import LOCAL_BACKENDS
from app.store import model_folders

from .qt_backend import (
    BACKENDS,
    DEFAULT_PORTS,
    BackendBar,
    BackendChoice,
    complete_address,
    model_label,
    open_choice,
)
from .qt_common import (
    icon,
    one_sentence,
    read_only_table,
    remember,
    run_in_background,
    sentence,
    setting,
    thumbnail,
    tone,
)
from .qt_owner import ModelOwner
from .qt_train_wizard import default_models_dir

COLUMNS = [
    "",
    "File",
    "Truth",
    "Label",
    "Score",
    "Unknown",
    "Decode",
    "Preprocess",
    "Inference",
    "Network",
    "Total ms",
    "Bytes",
    "Backend",
    "Model",
]
(
    THUMB_COL,
    FILE,
    TRUTH,
    LABEL,
    SCORE,
    UNKNOWN,
    DECODE,
    PREPROCESS,
    INFERENCE,
    NETWORK,
    TOTAL,
    BYTES,
    BACKEND,
    MODEL,
) = range(len(COLUMNS))
UNKNOWN_TEXT = "unknown"  # the Unknown column of an image that looks like none of the model's classes
TIMING_FIELDS = ["decode_ms", "preprocess_ms", "inference_ms", "network_ms", "total_ms"]
MODEL_COLUMN_MOST = 260  # a longer model name is elided in the middle (its version stays visible)
WIDTHS = {
    THUMB_COL: 56,
    FILE: 120,
    TRUTH: 72,
    LABEL: 90,
    SCORE: 66,
    UNKNOWN: 70,
    DECODE: 72,
    PREPROCESS: 76,
    INFERENCE: 70,
    NETWORK: 66,
    TOTAL: 64,
    BYTES: 64,
    BACKEND: 106,
    MODEL: 90,
}
# hidden in this order when the table is narrow (an unknown image's label still carries a "?" mark and tooltip)
OPTIONAL = [BYTES, PREPROCESS, DECODE, NETWORK, INFERENCE, UNKNOWN]
# stages a backend does not have: SavedModel decodes inside its graph, a server decodes and infers remotely
NOT_APPLICABLE = {
    "tflite": {"network_ms": "—"},
    "savedmodel": {"decode_ms": "in graph", "preprocess_ms": "in graph", "network_ms": "—"},
    "grpc": {"decode_ms": "on server", "inference_ms": "on server"},
    "rest": {"decode_ms": "on server", "inference_ms": "on server"},
}
CANCELLED = "cancelled"
THUMB = 48
MARK = 16  # the unknown-input mark beside a label
ANSWER = ("prediction", "backend", "kind", "choice", "model")  # what a run writes into a row
SELECT_HINT = "Select a row to see the image, its top classes and timings."
# the table's and the side pane's shares of the width: 4:1 is ~205 px for the pane in a 1280 px window (a fixed 150 px
# pane cropped its image and broke every line) and leaves a 1024 px window room for the essential columns
SPLIT = (4, 1)
PREVIEW_MOST = 420  # the side pane's image grows with the pane up to this many pixels a side
PREVIEW_LEAST = 48  # and is never flatter than a thumbnail
LABEL_COLUMN_MOST = 220  # a longer class name is elided
CHOOSE_A_MODEL_FIRST = "Choose a model first: train one, open a model folder or connect to a server."
EXPLAIN_TIP = "Show which parts of the image made the model answer as it did (a heat map; local models only)"
EXPLAIN_LOCAL_ONLY = "Explain works with local models (TFLite or SavedModel), not servers."
EXPLAIN_CHOOSE_FIRST = "Choose a row first: Explain shows where the model looked in that image."
EXPLAIN_NEEDS_TENSORFLOW = "Explain needs TensorFlow, which this classification-only build leaves out."


class FittedImage(QLabel):
    """The side pane's picture: the whole image, scaled to the pane's width (a fixed-size pixmap in a narrower
    pane showed only its middle). Its height follows the image's shape, up to two fifths of the pane and
    ``PREVIEW_MOST``: the room below stays the classes' (a square box squeezed them to four lines)."""

    def __init__(self):
        super().__init__()
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        policy = QSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        policy.setHeightForWidth(True)
        self.setSizePolicy(policy)
        self.image = QImage()
        self.band = 0  # rows at the image's top that are not the picture (the explanation's caption bar)

    def show_image(self, image: QImage, band: int = 0) -> None:
        """Show ``image``; its top ``band`` rows (a caption) come on top of the room the picture gets, so the
        picture keeps its size when Explain adds a caption (it shrank by the caption's share of the height)."""
        self.image, self.band = image, max(0, min(band, image.height() - 1))
        self.updateGeometry()
        self._fit()

    def clear(self) -> None:
        self.image, self.band = QImage(), 0
        self.updateGeometry()
        super().clear()

    def _scale(self, width: int, height: int) -> float:
        """The scale that fits the whole image in ``width`` x ``height`` and its picture in ``_tallest()``."""
        picture = self.image.height() - self.band
        return min(width / self.image.width(), height / self.image.height(), self._tallest() / picture)

    def hasHeightForWidth(self) -> bool:  # noqa: N802 (Qt's name)
        return True

    def heightForWidth(self, width: int) -> int:  # noqa: N802 (Qt's name): no blank square before a row is chosen
        if self.image.isNull():
            return 0
        return max(PREVIEW_LEAST, round(self.image.height() * self._scale(width, 1 << 20)))

    def _tallest(self) -> int:
        """At most ``PREVIEW_MOST``, and two fifths of the pane: a square image in a wide pane left the classes
        four lines."""
        pane = self.parentWidget()
        return min(PREVIEW_MOST, max(PREVIEW_LEAST, pane.height() * 2 // 5)) if pane else PREVIEW_MOST

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        return QSize(150, 0 if self.image.isNull() else PREVIEW_LEAST)

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt's name): not the pixmap's, which follows the size
        return QSize(220, self.heightForWidth(220))

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        super().resizeEvent(event)
        self._fit()

    def _fit(self) -> None:
        if self.image.isNull():
            super().clear()
            return
        width, height = self.contentsRect().width(), self.contentsRect().height()
        if height < PREVIEW_LEAST:  # before the layout gave it a height
            height = self.heightForWidth(width)
        scale = self._scale(width, height)
        box = QSize(max(1, round(self.image.width() * scale)), max(1, round(self.image.height() * scale)))
        self.setPixmap(
            QPixmap.fromImage(
                self.image.scaled(box, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)
            )
        )


class LabelCell(QStyledItemDelegate):
    """For the Label column: an error is read from its start ("error: cannot reach a TF Serving…"), where the
    table's middle eliding, right for file names, left "error:…port?)"; the unknown-input mark is text-sized
    (at the table's thumbnail size it left "tro…" of "trouser")."""

    def initStyleOption(self, option, index):
        super().initStyleOption(option, index)
        option.textElideMode = Qt.TextElideMode.ElideRight
        option.decorationSize = QSize(MARK, MARK)


def expand(paths) -> list[tuple[Path, str | None, str | None]]:
    """(file, ground truth, skip reason) for files as given and folders searched, in a stable order.

    Folders are searched by ``app.imaging``'s one rule (as training and ``classify`` do), so hidden
    names, other file types, FIFOs and broken links come back with a reason instead of vanishing.
    A dropped folder with class sub-folders (two or more sub-folders holding images) gives its
    files their sub-folder's name as ground truth, as ``bench`` does.
    """
    out = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            out += (
                [(f.path, None, f.reason) for f in find_images([path])]
                if path.exists() or path.is_symlink()
                else [(path, None, "no such file")]
            )
            continue
        found = walk(path)
        parts = {f.path: f.path.relative_to(path).parts for f in found}
        classes = {parts[f.path][0] for f in found if f.reason is None and len(parts[f.path]) > 1}
        labelled = len(classes) >= 2
        out += [(f.path, parts[f.path][0] if labelled and len(parts[f.path]) > 1 else None, f.reason) for f in found]
    return out


@dataclass
class Row:
    name: str
    path: Path | None = None
    data: bytes | None = None  # for pasted images, which have no file
    prediction: Prediction | None = None
    backend: str = ""
    kind: str = ""
    model: str = ""
    truth: str | None = None
    choice: BackendChoice | None = None
    thumb: QPixmap | None = None
    extra: dict = field(default_factory=dict)

    def payload(self) -> bytes:
        """The image's bytes; ImageError (one sentence) for a file that is not a readable regular image file."""
        return self.data if self.data is not None else read_image_file(self.path)

    @property
    def status(self) -> str:
        """waiting, ok, failed or cancelled."""
        p = self.prediction
        if p is None:
            return "waiting"
        if p.error == CANCELLED:
            return "cancelled"
        return "failed" if p.error else "ok"

    def low(self, threshold: float) -> bool:
        return self.status == "ok" and self.prediction.score is not None and self.prediction.score < threshold

    @property
    def unknown(self) -> bool:
        """Classified, and the model says it looks like none of its classes."""
        return self.status == "ok" and bool(self.prediction.unknown)


class ResultsModel(QAbstractTableModel):
    SORT_ROLE = Qt.ItemDataRole.UserRole + 1

    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: list[Row] = []
        self.threshold = 0.5

    def rowCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()):
        return len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        row = self.rows[index.row()]
        column, p = index.column(), row.prediction
        if role == self.SORT_ROLE:
            return self.sort_key(row, column)
        if role == Qt.ItemDataRole.DecorationRole and column == THUMB_COL:
            return row.thumb
        if role == Qt.ItemDataRole.DecorationRole and column == LABEL and row.unknown:
            return icon("mdi6.help-circle-outline", tone("bad"))
        if role == Qt.ItemDataRole.ToolTipRole:
            if column in (FILE, MODEL):
                return str(row.path or row.name) if column == FILE else row.model
            if p is None:
                return "waiting…"
            if p.error:
                return p.error
            flag = f"\nbelow the low-confidence threshold {self.threshold:.2f}" if row.low(self.threshold) else ""
            if row.unknown:
                flag += f"\nlooks like none of the model's classes (ood score {p.ood_score:.3f}); closest: {p.label}"
            return "\n".join(f"{label}: {score:.3f}" for label, score in p.top_k) + flag
        if (
            role == Qt.ItemDataRole.TextAlignmentRole
            and DECODE <= column <= BYTES
            or role == Qt.ItemDataRole.TextAlignmentRole
            and column == SCORE
        ):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ForegroundRole:
            if column == LABEL and row.status == "failed":
                return QColor(tone("bad"))
            if (
                column == LABEL
                and row.status == "cancelled"
                or DECODE <= column <= NETWORK
                and self.text(row, column) in ("—", "in graph", "on server")
            ):
                return QColor(tone("muted"))
            if column == SCORE and row.low(self.threshold):
                return QColor(tone("low"))
            if column == UNKNOWN and row.unknown:
                return QColor(tone("bad"))
            if column == LABEL and row.truth and row.status == "ok":
                return QColor(tone("good" if p.label == row.truth else "bad"))
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        return self.text(row, column)

    def text(self, row: Row, column: int) -> str | None:
        p = row.prediction
        if column == FILE:
            return row.name
        if column == TRUTH:
            return row.truth or ""
        if column == BACKEND:
            return row.backend
        if column == MODEL:
            return row.model
        if p is None:
            return "…" if column == LABEL else ""
        if p.error == CANCELLED:
            return CANCELLED if column == LABEL else ""
        if p.error:
            return f"error: {p.error}" if column == LABEL else ""
        if column == LABEL:
            return p.label
        if column == SCORE:
            return f"{p.score:.3f}" + (" low" if row.low(self.threshold) else "")
        if column == UNKNOWN:  # a model exported without the unknown-input detector cannot say
            return "—" if p.unknown is None else UNKNOWN_TEXT if p.unknown else ""
        if DECODE <= column <= TOTAL:
            name = TIMING_FIELDS[column - DECODE]
            return NOT_APPLICABLE.get(row.kind, {}).get(name) or f"{getattr(p.timings, name):.2f}"
        if column == BYTES:
            return f"{p.request_bytes:,}"
        return None

    def sort_key(self, row: Row, column: int):
        """Numbers sort as numbers; stages that do not apply and errors sort last."""
        p = row.prediction
        if column in (SCORE, BYTES) or DECODE <= column <= TOTAL:
            if row.status != "ok":
                return float("inf")
            if column == SCORE:
                return p.score
            if column == BYTES:
                return float(p.request_bytes)
            name = TIMING_FIELDS[column - DECODE]
            return float("inf") if name in NOT_APPLICABLE.get(row.kind, {}) else getattr(p.timings, name)
        return (self.text(row, column) or "").lower()

    def add(self, rows: list[Row]) -> int:
        first = len(self.rows)
        self.beginInsertRows(QModelIndex(), first, first + len(rows) - 1)
        self.rows.extend(rows)
        self.endInsertRows()
        return first

    def update(self, index: int) -> None:
        self.dataChanged.emit(self.index(index, 0), self.index(index, len(COLUMNS) - 1))

    def set_threshold(self, value: float) -> None:
        self.threshold = value
        if self.rows:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self.rows) - 1, len(COLUMNS) - 1))

    def clear(self) -> None:
        self.beginResetModel()
        self.rows.clear()
        self.endResetModel()


class ResultsFilter(QSortFilterProxyModel):
    """Sorting by number where a column holds numbers, and the Show filter (all, errors, low confidence,
    misclassified against the class folder, a label)."""

    def __init__(self, model: ResultsModel, parent=None):
        super().__init__(parent)
        self.setSourceModel(model)
        self.setSortRole(ResultsModel.SORT_ROLE)
        self.setDynamicSortFilter(True)
        self.mode = "all"

    def set_mode(self, mode: str | None = None) -> None:
        """Show only errors, low-confidence, misclassified rows or one label (``None``: same mode, new threshold)."""
        self.beginFilterChange()
        self.mode = mode or self.mode
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def filterAcceptsRow(self, source_row, source_parent):
        model: ResultsModel = self.sourceModel()
        row = model.rows[source_row]
        if self.mode == "errors":
            return row.status in ("failed", "cancelled")
        if self.mode == "low":
            return row.low(model.threshold)
        if self.mode == "unknown":
            return row.unknown
        if self.mode == "wrong":  # a labelled folder's errors are wrong classes, not failed files
            return row.status == "ok" and bool(row.truth) and row.prediction.label != row.truth
        if self.mode.startswith("label:"):
            return row.status == "ok" and row.prediction.label == self.mode[len("label:") :]
        return True


def batch_job(rows: list[tuple[int, Row]], top_k: int = 5):
    """The work one batch does on the model's owner thread: one image at a time, cancellable between images."""

    def run(classifier, job):
        start = time.perf_counter()
        job.progress(("started", model_label(classifier)))
        done = 0
        for index, row in rows:
            if job.cancelled.is_set():
                break
            try:
                data = row.payload()
            except ImageError as exc:
                job.progress(("result", (index, Prediction(error=str(exc)), QImage())))
                continue
            prediction = classifier.classify([data], top_k=top_k)[0]
            done += 1
            job.progress(("result", (index, prediction, thumbnail(data, THUMB))))
        return time.perf_counter() - start, done

    return run


class ClassifyView(QWidget):
    message = Signal(str, str)
    busy = Signal(bool)
    train_requested = Signal()
    models_requested = Signal()  # "Pick a trained model": the Models page

    def __init__(self, backend: BackendBar, parent=None):
        super().__init__(parent)
        self.backend = backend
        self.job = None
        self.batch: list[int] = []
        self.last_said = ""  # this view's newest message
        self.passing = ""  # a message true only for now (a failed run's, the offer to undo a Clear)
        self.cleared: list[Row] = []  # the rows Clear took away, until Undo clear or the next images
        self.last_batch: tuple[float, int] | None = None  # (seconds, images) of the last run, for the summary
        self.cleared_batch: tuple[float, int] | None = None
        self.earlier: dict[int, dict] = {}  # each batch row's answer before the run, given back if it gets no new one
        self.batch_model = ""
        self.model = ResultsModel(self)
        self.model.threshold = setting("classify/low_confidence", 0.5, float)
        self.proxy = ResultsFilter(self.model, self)
        self.setAcceptDrops(True)

        self.open_button = QPushButton(icon("mdi6.image-multiple"), "Open images…")
        self.open_folder_button = QPushButton(icon("mdi6.folder-image"), "Open folder…")
        self.paste_button = QPushButton(icon("mdi6.content-paste"), "Paste")
        self.compare_button = QPushButton(icon("mdi6.chart-bar"), "Compare backends…")
        self.compare_button.setAccessibleName("Compare backends")
        self.export_button = QPushButton(icon("mdi6.file-delimited"), "Export CSV…")
        self.clear_button = QPushButton(icon("mdi6.broom"), "Clear")
        self.cancel_button = QPushButton(icon("mdi6.stop"), "Cancel")
        self.cancel_button.setEnabled(False)
        self.open_button.setToolTip("Open image files (Ctrl+O)")
        self.paste_button.setToolTip("Classify an image from the clipboard (Ctrl+V)")
        tools = QHBoxLayout()
        for button in (
            self.open_button,
            self.open_folder_button,
            self.paste_button,
            self.compare_button,
            self.export_button,
            self.clear_button,
            self.cancel_button,
        ):
            tools.addWidget(button)
        tools.addStretch(1)

        self.show_filter = QComboBox()
        self.show_filter.setAccessibleName("Show")
        self.show_filter.addItem("All images", "all")
        self.show_filter.addItem("Errors and cancelled", "errors")
        self.show_filter.addItem("Low confidence", "low")
        self.show_filter.addItem("Unknown (none of the classes)", "unknown")
        self.show_filter.addItem("Misclassified (not its class folder)", "wrong")
        self.threshold = QDoubleSpinBox()
        self.threshold.setAccessibleName("Low-confidence threshold")
        self.threshold.setPrefix("Low confidence below ")
        self.threshold.setRange(0.0, 1.0)
        self.threshold.setSingleStep(0.05)
        self.threshold.setDecimals(2)
        self.threshold.setValue(self.model.threshold)
        self.rerun_button = QPushButton(icon("mdi6.refresh"), "Re-run")
        self.rerun_button.setAccessibleName("Re-run with the current backend")
        self.rerun_button.hide()
        filters = QHBoxLayout()
        filters.addWidget(QLabel("Show:"))
        filters.addWidget(self.show_filter)
        filters.addWidget(self.threshold)
        filters.addStretch(1)
        filters.addWidget(self.rerun_button)

        self.table = QTableView()
        self.table.setAccessibleName("Results")
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(-1, Qt.SortOrder.AscendingOrder)  # arrival order until a header is clicked
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setDefaultSectionSize(THUMB + 6)
        self.table.verticalHeader().hide()
        self.table.setIconSize(QSize(THUMB, THUMB))
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # keep a file name's number and extension
        self.table.setItemDelegateForColumn(LABEL, LabelCell(self.table))
        header = self.table.horizontalHeader()
        # fixed widths: ResizeToContents re-measures every row on every update, O(rows) per image
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(FILE, QHeaderView.ResizeMode.Stretch)  # the file name gives way first
        header.setMinimumSectionSize(40)
        for column, width in WIDTHS.items():
            self.table.setColumnWidth(column, width)
        self.table.setColumnHidden(TRUTH, True)
        self.table.viewport().installEventFilter(self)

        self.empty = QLabel("Drop images or folders here\n\nor press Ctrl+O to open files, Ctrl+V to paste an image")
        self.empty.setAccessibleName("Drop images here")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setStyleSheet(
            "QLabel { color: palette(mid); font-size: 16pt; border: 2px dashed palette(mid); border-radius: 12px; }"
        )
        self.no_model = self._no_model_panel()
        self.stack = QStackedLayout()
        self.stack.addWidget(self.no_model)
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self.table)
        table_holder = QWidget()
        table_holder.setLayout(self.stack)

        self.detail_image = FittedImage()
        self.detail_image.setAccessibleName("Image")
        self.detail_top = QListWidget()
        self.detail_top.setAccessibleName("Top classes")
        self.detail_top.setWordWrap(True)
        self.detail_timings = QLabel()
        self.detail_timings.setAccessibleName("Timings")
        self.detail_timings.setWordWrap(True)
        self.detail_name = QLabel(SELECT_HINT)
        self.detail_name.setWordWrap(True)
        self.detail_name.setAccessibleName("Selected image")
        self.explain_button = QPushButton("Explain")
        self.explain_button.setCheckable(True)
        self.explain_button.setAccessibleName("Explain")
        self.explain_button.setToolTip(EXPLAIN_TIP)
        self.explain_note = QLabel()
        self.explain_note.setAccessibleName("Explanation")
        self.explain_note.setWordWrap(True)
        self.explainer: ModelOwner | None = None  # the SavedModel of the explained version, on its own thread
        self.explainer_location = ""
        detail = QWidget()
        detail.setMinimumWidth(150)
        detail_layout = QVBoxLayout(detail)
        detail_layout.setContentsMargins(0, 0, 0, 0)
        detail_layout.addWidget(self.detail_image)
        detail_layout.addWidget(self.explain_button)
        detail_layout.addWidget(self.explain_note)
        detail_layout.addWidget(self.detail_name)
        self.detail_top_caption = QLabel("Top classes")
        detail_layout.addWidget(self.detail_top_caption)
        detail_layout.addWidget(self.detail_top, 1)
        detail_layout.addWidget(self.detail_timings)
        self.detail_answer = (self.detail_top_caption, self.detail_top, self.detail_timings)  # hidden until a row
        detail_layout.addStretch()  # takes the room while the class list is hidden (nothing chosen), not the image
        self.detail = detail
        self.splitter = QSplitter()
        self.splitter.addWidget(table_holder)
        self.splitter.addWidget(detail)
        for index, share in enumerate(SPLIT):  # the side pane keeps its share as the window grows or shrinks
            self.splitter.setStretchFactor(index, share)
        self.splitter.setSizes(list(SPLIT))  # a weight, not pixels, until the splitter knows its width
        self.splitter.setCollapsible(1, False)  # dragged to the edge, the pane vanished with no handle to find

        self.progress = QProgressBar()
        self.progress.setAccessibleName("Progress")
        self.progress.setMaximumWidth(220)
        self.progress.hide()
        self.summary = QLabel("")
        self.summary.setAccessibleName("Summary")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.accuracy = QLabel("")
        self.accuracy.setAccessibleName("Accuracy")
        self.accuracy.hide()
        self.matrix_button = QPushButton(icon("mdi6.grid"), "Confusion matrix…")
        self.matrix_button.hide()
        bottom = QHBoxLayout()
        bottom.addWidget(self.summary, 1)
        bottom.addWidget(self.accuracy)
        bottom.addWidget(self.matrix_button)
        bottom.addWidget(self.progress)

        layout = QVBoxLayout(self)
        layout.addLayout(tools)
        layout.addLayout(filters)
        layout.addWidget(self.splitter, 1)
        layout.addLayout(bottom)

        self.open_button.clicked.connect(self.open_files)
        self.open_folder_button.clicked.connect(self.open_folder)
        self.paste_button.clicked.connect(self.paste)
        self.compare_button.clicked.connect(self.compare)
        self.export_button.clicked.connect(lambda: self.export_csv())
        self.clear_button.clicked.connect(lambda: self.undo_clear() if self.cleared else self.clear())
        self.cancel_button.clicked.connect(self.cancel)
        self.rerun_button.clicked.connect(self.rerun_shown)
        self.matrix_button.clicked.connect(self.show_confusion_matrix)
        self.show_filter.currentIndexChanged.connect(lambda: self.proxy.set_mode(self.show_filter.currentData()))
        self.threshold.valueChanged.connect(self._threshold_changed)
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._show_detail(self.table.currentIndex()))
        self.explain_button.toggled.connect(lambda _on: self._show_detail(self.table.currentIndex()))
        self.backend.changed.connect(self._backend_changed)
        self.message.connect(lambda text, _level: setattr(self, "last_said", text))
        QShortcut(QKeySequence.StandardKey.Paste, self, self.paste)
        QShortcut(QKeySequence.StandardKey.Undo, self, self.undo_clear)
        self._show_nothing_selected()
        self._show_placeholder()

    def _no_model_panel(self) -> QWidget:
        """What Classify says before any model is chosen: how to get one, with buttons that do it."""
        panel = QWidget()
        panel.setObjectName("noModel")
        self.no_model_title = title = QLabel()
        title.setStyleSheet("font-size: 16pt; font-weight: bold;")
        self.no_model_text = text = QLabel()
        text.setWordWrap(True)
        self.pick_model = QPushButton(icon("mdi6.package-variant-closed"), "Pick a trained model")
        self.pick_model.clicked.connect(self.models_requested)
        train = QPushButton(icon("mdi6.school"), "Train a model")
        open_model = QPushButton(icon("mdi6.folder-open"), "Open a model folder…")
        server = QPushButton(icon("mdi6.server-network"), "Connect to a server…")
        train.clicked.connect(self.train_requested)
        open_model.clicked.connect(self.backend.choose_model_folder)
        server.clicked.connect(self.backend.connect_to_server)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        for button in (self.pick_model, train, open_model, server):
            buttons.addWidget(button)
        buttons.addStretch(1)
        layout = QVBoxLayout(panel)
        layout.addStretch(1)
        for label in (title, text):
            label.setAlignment(Qt.AlignmentFlag.AlignCenter)
            layout.addWidget(label)
        layout.addLayout(buttons)
        layout.addStretch(2)
        return panel

    def _show_placeholder(self) -> None:
        self.detail.setVisible(bool(self.model.rows))  # nothing to detail before the first image
        if self.model.rows:
            self.stack.setCurrentWidget(self.table)
        elif self.backend.has_model():
            self.stack.setCurrentWidget(self.empty)
        else:
            self._say_how_to_get_a_model()
            self.stack.setCurrentWidget(self.no_model)

    def showEvent(self, event):
        super().showEvent(event)
        self._show_placeholder()  # models may have been trained, or the models folder changed, meanwhile

    def _say_how_to_get_a_model(self) -> None:
        """Models already trained (after a restart, nothing is open yet) are offered first; else how to get one."""
        folder = default_models_dir()
        try:
            trained = len(model_folders(folder))
        except OSError:
            trained = 0
        self.pick_model.setVisible(bool(trained))
        if trained:
            self.no_model_title.setText("Choose a model to classify with")
            self.no_model_text.setText(
                f"{trained} trained model{'s are' if trained > 1 else ' is'} in {folder}: "
                "pick one, train another, open a model folder, or connect to a server."
            )
        else:
            self.no_model_title.setText("No model to classify with yet")
            self.no_model_text.setText(
                "Classifying needs a trained model. Train one from a folder of photos, open "
                "a model folder you already have, or connect to a TensorFlow Serving server."
            )

    # --- input ------------------------------------------------------------------------
    def dragEnterEvent(self, event):
        if event.mimeData().hasUrls() or event.mimeData().hasImage():
            event.acceptProposedAction()

    def dragMoveEvent(self, event):
        if event.mimeData().hasUrls() or event.mimeData().hasImage():
            event.acceptProposedAction()

    def dropEvent(self, event):
        mime = event.mimeData()
        if mime.hasUrls():
            self.classify_paths([u.toLocalFile() for u in mime.urls() if u.isLocalFile()])
        elif mime.hasImage():
            self._classify_image(QImage(mime.imageData()), "dropped image")
        event.acceptProposedAction()

    def open_files(self):
        if not self._ready_to_run():  # said before files are picked, not after (found under X: they were lost)
            return
        start = setting("classify/last_folder", str(Path.home()))
        pattern = "Images (" + " ".join(f"*{e}" for e in sorted(IMAGE_EXTENSIONS)) + ")"
        files, _ = QFileDialog.getOpenFileNames(self, "Open images", start, pattern)
        if files:
            remember("classify/last_folder", str(Path(files[0]).parent))
            self.classify_paths(files)

    def open_folder(self):
        if not self._ready_to_run():
            return
        folder = QFileDialog.getExistingDirectory(
            self, "Open a folder of images", setting("classify/last_folder", str(Path.home()))
        )
        if folder:
            remember("classify/last_folder", folder)
            self.classify_paths([folder])

    def paste(self):
        image = QGuiApplication.clipboard().image()
        if image.isNull():
            self.message.emit("The clipboard holds no image.", "warning")
            return
        self._classify_image(image, "pasted image")

    def _classify_image(self, image: QImage, name: str):
        from PySide6.QtCore import QBuffer, QIODevice

        buffer = QBuffer()
        buffer.open(QIODevice.OpenModeFlag.WriteOnly)
        image.save(buffer, "PNG")
        self._classify_rows([Row(f"{name} {len(self.model.rows) + 1}", data=bytes(buffer.data()))])

    def classify_paths(self, paths) -> None:
        """Search what was dropped or opened off the GUI thread (a folder of thousands of files took half a second
        to walk), then classify the images found."""
        if not self._ready_to_run():  # said at once: no walk through a folder that cannot be classified
            return
        paths = [str(p) for p in paths]
        if not any(Path(p).is_dir() for p in paths):  # files named one by one: nothing to walk
            self._classify_found(expand(paths))
            return
        self.summary.setText("Looking for images…")
        run_in_background(
            lambda _job: expand(paths),
            self._classify_found,
            lambda exc: self.message.emit(one_sentence(exc), "error"),
            self,
        )

    def _classify_found(self, found) -> None:
        files = [(p, truth) for p, truth, reason in found if reason is None]
        skipped = [(p, reason) for p, _truth, reason in found if reason is not None]
        if skipped:
            examples = "; ".join(f"{printable(p.name)}: {reason}" for p, reason in skipped[:5])
            self.message.emit(
                f"Skipped {len(skipped)} file{'s' if len(skipped) != 1 else ''} that cannot be "
                f"classified ({examples}{'; …' if len(skipped) > 5 else ''}).",
                "warning",
            )
        if not files:
            if not skipped:
                self.message.emit("No image files were found there (JPEG, PNG, GIF, BMP or WebP).", "warning")
            return
        self._classify_rows([Row(printable(p.name), path=p, truth=truth) for p, truth in files])

    # --- running ----------------------------------------------------------------------
    def _classify_rows(self, rows: list[Row]) -> None:
        if not self._ready_to_run():
            return
        if self.cleared:  # new images: what Clear took away is gone for good, and so is the offer to undo it
            self.cleared = []
            self._set_clear_button(undo=False)
            self._withdraw()
        first = self.model.add(rows)
        self.table.setColumnHidden(TRUTH, not any(r.truth for r in self.model.rows))
        self._fit_columns()
        self._run(list(range(first, first + len(rows))))

    def _ready_to_run(self) -> bool:
        if self.job is not None:
            self.message.emit("Still classifying the last batch; cancel it or wait.", "warning")
            return False
        if not self.backend.has_model():
            self.message.emit(CHOOSE_A_MODEL_FIRST, "warning")
            self._show_placeholder()
            return False
        return True

    def _run(self, indices: list[int]) -> None:
        """Classify these rows (new or re-run) with the current backend, as one job on its owner thread."""
        choice = self.backend.choice()
        self._withdraw()
        self.earlier = {i: {name: getattr(self.model.rows[i], name) for name in ANSWER} for i in indices}
        waiting = dict(zip(ANSWER, (None, choice.label(), choice.kind, choice, "")))
        for index in indices:
            for name, value in waiting.items():
                setattr(self.model.rows[index], name, value)
            self._row_changed(index)
        self.batch = indices
        self._show_placeholder()
        self._set_running(True)
        self.progress.setRange(0, 0)  # busy until the model is open and the first image is done
        self.progress.show()
        n = len(indices)
        self.summary.setText(
            f"Loading {choice.label()} model…"
            if self.backend.loading() or self.backend.owner_choice != choice
            else f"Classifying {n} images…"
        )
        self.job = self.backend.submit(
            batch_job([(i, self.model.rows[i]) for i in indices]), self._on_finished, self._on_failed, self._on_progress
        )

    def _on_progress(self, event) -> None:
        kind, value = event
        if kind == "started":
            self.batch_model = value
            self._widen_column(MODEL, value, MODEL_COLUMN_MOST)
            self.progress.setRange(0, len(self.batch))
            self.progress.setValue(0)
            self.summary.setText(f"Classifying {len(self.batch)} images…")
            return
        index, prediction, image = value
        row = self.model.rows[index]
        row.prediction = prediction
        row.model = self.batch_model
        label = prediction.label
        if label and self.show_filter.findData(f"label:{label}") < 0:  # once per label
            self.show_filter.addItem(f"Label: {label}", f"label:{label}")
            self._widen_column(LABEL, label, LABEL_COLUMN_MOST, mark=True)
        if not image.isNull():
            row.thumb = QPixmap.fromImage(image)
        self._row_changed(index)
        self.progress.setValue(self.progress.value() + 1)

    def _row_changed(self, index: int) -> None:
        """Redraw a row, and the side pane when it shows that row."""
        self.model.update(index)
        current = self.table.currentIndex()
        if self._selected(current) and self.proxy.mapToSource(current).row() == index:
            self._show_detail(current)

    def _selected(self, index) -> bool:
        """Whether ``index`` is the highlighted row: the side pane shows only that one (the table's current
        row without a highlight, after a re-run, was shown as if chosen)."""
        return index.isValid() and self.table.selectionModel().isSelected(index)

    def _show_nothing_selected(self) -> None:
        """The side pane before a row is chosen: the hint alone (no blank image square, no empty class list)."""
        self.detail_image.clear()
        self.detail_top.clear()
        self.detail_timings.clear()
        self.explain_note.clear()
        self.detail_name.setText(SELECT_HINT)
        self.explain_button.setEnabled(False)  # clicked with nothing chosen, it toggled on silently
        self.explain_button.setToolTip(EXPLAIN_CHOOSE_FIRST)
        for widget in self.detail_answer:
            widget.hide()

    def _keep_earlier_or(self, error: str) -> int:
        """Rows of the batch that got no new answer get their earlier one back (a re-run that could not reach
        its backend, or was cancelled, loses nothing), or ``error`` when they had none; returns how many were
        given back."""
        kept = 0
        for index in self.batch:
            row = self.model.rows[index]
            if row.prediction is not None:
                continue
            earlier = self.earlier.get(index, {})
            if earlier.get("prediction") is not None and not earlier["prediction"].error:
                for name, value in earlier.items():
                    setattr(row, name, value)
                kept += 1
            else:
                row.prediction = Prediction(error=error)
            self._row_changed(index)
        return kept

    def _on_failed(self, exc) -> None:
        """Opening failed or the server went away mid-batch: one sentence; the new answers so far are kept, and
        the rows without one keep the answer they had."""
        text = one_sentence(exc)
        kept = self._keep_earlier_or(text)
        if kept:
            self._say_for_now(f"{sentence(text).rstrip('.')}; the earlier results of {kept} images are kept.", "error")
        elif self.backend.state != "error":  # the backend bar already said why it could not open
            self._say_for_now(sentence(text), "error")
        self._finish(None, 0)

    def _say_for_now(self, text: str, level: str) -> None:
        """Say something that holds only until the backend, the rows or the next run change (``_withdraw``)."""
        self.message.emit(text, level)
        self.passing = text

    def _withdraw(self) -> None:
        """Take back the ``_say_for_now`` message if it is still this view's newest: a failed run's would
        otherwise come back when the backend bar's own message is cleared, and an undo offer outlive its rows;
        a newer message (skipped files, ...) stays."""
        if self.passing and self.last_said == self.passing:
            self.message.emit("", "info")
        self.passing = ""

    def _on_finished(self, result) -> None:
        seconds, done = result
        self._keep_earlier_or(CANCELLED)  # rows cancelled before their turn
        self._finish(seconds, done)

    def _finish(self, seconds, done) -> None:
        self.job = None
        self._set_running(False)
        self.progress.hide()
        self.update_summary(seconds, done)
        self._update_rerun()

    def _set_running(self, running: bool) -> None:
        self.cancel_button.setEnabled(running)
        self.compare_button.setEnabled(not running)
        self.busy.emit(running)
        if running:
            self.rerun_button.hide()

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.message.emit("Cancelled; the images classified so far are kept.", "info")

    def clear(self) -> None:
        """Empty the table (a running batch is cancelled first); the button then offers "Undo clear" (Ctrl+Z)
        until new images come."""
        if self.job is not None:
            self.cancel()
            return
        if not self.model.rows:
            return
        self.cleared, self.cleared_batch = list(self.model.rows), self.last_batch
        self._empty_table()
        self._set_clear_button(undo=True)
        self._say_for_now(f"Cleared {len(self.cleared)} results; Undo clear (Ctrl+Z) brings them back.", "info")

    def undo_clear(self) -> None:
        """Put back the rows the last Clear took away (nothing when new images came since)."""
        if not self.cleared or self.job is not None:
            return
        rows, self.cleared = self.cleared, []
        self.last_batch = self.cleared_batch
        self._set_clear_button(undo=False)
        self._withdraw()
        self.model.add(rows)
        for label in dict.fromkeys(r.prediction.label for r in rows if r.prediction and r.prediction.label):
            self.show_filter.addItem(f"Label: {label}", f"label:{label}")
        self.table.setColumnHidden(TRUTH, not any(r.truth for r in rows))
        self._fit_columns()
        self.update_summary()
        self._update_rerun()
        self._show_placeholder()

    def _set_clear_button(self, undo: bool) -> None:
        self.clear_button.setText("Undo clear" if undo else "Clear")
        self.clear_button.setIcon(icon("mdi6.undo" if undo else "mdi6.broom"))

    def _empty_table(self) -> None:
        """The table, its filters, summary and side pane as before any image."""
        self.model.clear()
        self.last_batch = None
        self._withdraw()
        self.show_filter.setCurrentIndex(0)
        for index in reversed(range(self.show_filter.count())):  # the label items of the cleared rows
            if str(self.show_filter.itemData(index)).startswith("label:"):
                self.show_filter.removeItem(index)
        self.summary.setText("")
        self.accuracy.hide()
        self.matrix_button.hide()
        self.rerun_button.hide()
        self.table.setColumnHidden(TRUTH, True)
        self._show_nothing_selected()
        self._show_placeholder()

    def _threshold_changed(self, value: float) -> None:
        remember("classify/low_confidence", value)
        self.model.set_threshold(value)
        self.proxy.set_mode()
        if self.job is None:
            self.update_summary()

    def _backend_changed(self) -> None:
        if self.last_said == CHOOSE_A_MODEL_FIRST and self.backend.has_model():  # found under X: it outlived its cause
            self.message.emit("", "info")
        self._withdraw()
        self._show_placeholder()
        self._update_rerun()

    def _update_rerun(self) -> None:
        """Offer one click to run the shown images again when the backend differs from theirs."""
        choice = self.backend.choice()
        stale = (
            self.job is None
            and self.backend.has_model()
            and any(r.choice is not None and r.choice != choice for r in self.model.rows)
        )
        self.rerun_button.setText(f"Re-run with {choice.label()}")
        self.rerun_button.setVisible(stale)

    def rerun_shown(self) -> None:
        """Classify the rows the filter shows again with the current backend."""
        indices = sorted(self.proxy.mapToSource(self.proxy.index(r, 0)).row() for r in range(self.proxy.rowCount()))
        if indices and self._ready_to_run():
            self._run(indices)

    def update_summary(self, seconds: float | None = None, batch: int | None = None) -> None:
        """Counts (classified / failed / cancelled), per-backend timing stats, low confidence, accuracy, and the
        last run's images/s (``seconds`` and ``batch`` after a run; kept when the threshold changes or a Clear is
        undone)."""
        rows = self.model.rows
        if seconds and batch:
            self.last_batch = (seconds, batch)
        counts = {s: sum(1 for r in rows if r.status == s) for s in ("ok", "failed", "cancelled")}
        parts = [f"{counts['ok']} classified"] + [f"{counts[s]} {s}" for s in ("failed", "cancelled") if counts[s]]
        low = sum(1 for r in rows if r.low(self.model.threshold))
        if low:
            parts.append(f"{low} below {self.model.threshold:.2f} confidence")
        unknown = sum(1 for r in rows if r.unknown)
        if unknown:
            parts.append(f"{unknown} unknown (none of the classes)")
        by_backend: dict[str, list[float]] = {}
        for r in rows:
            if r.status == "ok":
                by_backend.setdefault(r.backend, []).append(r.prediction.timings.total_ms)
        text = ", ".join(parts)
        for name, totals in by_backend.items():
            stats = summary(totals)
            prefix = f"{name}: {len(totals)} image{'s' if len(totals) != 1 else ''}, " if len(by_backend) > 1 else ""
            text += (
                f" · {prefix}total ms mean {stats['mean']:.1f}, median {stats['median']:.1f}, "
                f"p95 {stats['p95']:.1f}" + (f" ({name})" if len(by_backend) == 1 else "")
            )
        if self.last_batch and rows:
            text += f" · last batch {self.last_batch[1] / self.last_batch[0]:.1f} images/s"
        self.summary.setText(text if rows else "")
        self._update_accuracy()

    def _labelled(self) -> list[Row]:
        return [r for r in self.model.rows if r.truth and r.status == "ok"]

    def _update_accuracy(self) -> None:
        labelled = self._labelled()
        self.accuracy.setVisible(bool(labelled))
        self.matrix_button.setVisible(bool(labelled))
        if labelled:
            correct = sum(1 for r in labelled if r.prediction.label == r.truth)
            self.accuracy.setText(
                f"Accuracy {correct / len(labelled):.1%} ({correct} of {len(labelled)} with a class folder)"
            )

    def confusion(self) -> tuple[list[str], dict[tuple[str, str], int]]:
        """Classes and (true, predicted) counts over rows whose folder named their class."""
        cells: dict[tuple[str, str], int] = {}
        for r in self._labelled():
            cells[(r.truth, r.prediction.label)] = cells.get((r.truth, r.prediction.label), 0) + 1
        classes = sorted({c for pair in cells for c in pair})
        return classes, cells

    def show_confusion_matrix(self) -> None:
        classes, cells = self.confusion()
        dialog = QDialog(self)
        dialog.setWindowTitle("Confusion matrix")
        table = read_only_table(classes)
        table.setAccessibleName("Confusion matrix")
        table.setRowCount(len(classes))
        table.setVerticalHeaderLabels(classes)
        table.verticalHeader().show()
        for i, truth in enumerate(classes):
            for j, predicted in enumerate(classes):
                item = QTableWidgetItem(str(cells.get((truth, predicted), 0)))
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                if i == j:
                    item.setBackground(QColor("#d2e3fc"))
                table.setItem(i, j, item)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(dialog.reject)
        layout = QVBoxLayout(dialog)
        layout.addWidget(QLabel("Rows: the class folder (truth); columns: the predicted class."))
        layout.addWidget(table)
        layout.addWidget(buttons)
        dialog.resize(520, 360)
        dialog.exec()

    def eventFilter(self, watched, event) -> bool:
        if watched is self.table.viewport() and event.type() == QEvent.Type.Resize:
            self._fit_columns()
        return super().eventFilter(watched, event)

    def _widen_column(self, column: int, text: str, most: int, mark: bool = False) -> None:
        """Widen ``column`` to show ``text`` whole, with room for the unknown-input mark when ``mark`` ("sample_data
        v2" was "sampl…ta v2"; an unknown row's "trouser" was "tro…" beside its mark): measured once per model or
        label, not per row (ResizeToContents would measure every row on every update)."""
        extra = MARK + 8 if mark else 0
        wanted = min(self.table.fontMetrics().horizontalAdvance(text) + 16 + extra, most)
        if wanted > self.table.columnWidth(column):
            self.table.setColumnWidth(column, wanted)
            self._fit_columns()

    def _fit_columns(self) -> None:
        """Hide the per-stage columns (still in the detail pane) when the essential ones would not fit. A column
        counts at its width now when it is wider than planned (a widened Model column squeezed the file names
        to "t…g")."""

        def width(c: int) -> int:
            return WIDTHS[c] if self.table.isColumnHidden(c) else max(WIDTHS[c], self.table.columnWidth(c))

        available = self.table.viewport().width()
        needed = sum(
            width(c) for c in range(len(COLUMNS)) if c != FILE and not (c == TRUTH and self.table.isColumnHidden(TRUTH))
        )
        needed += WIDTHS[FILE]
        for column in OPTIONAL:
            fits, planned = needed <= available, width(column)
            self.table.setColumnHidden(column, not fits)
            if not fits:
                needed -= planned

    def _show_detail(self, current) -> None:
        source = self.proxy.mapToSource(current).row() if self._selected(current) else -1
        if source < 0 or source >= len(self.model.rows):
            self._show_nothing_selected()
            return
        row = self.model.rows[source]
        for widget in self.detail_answer:
            widget.show()
        try:
            image = thumbnail(row.payload(), PREVIEW_MOST)
        except ImageError:
            image = QImage()
        self.detail_image.show_image(image)
        # whose answer this is, to tell backends' apart; a zero-width space lets "name@host:port" wrap in the narrow
        # pane (seen under X: its port's last digit was cut off)
        answered_by = " · ".join(part for part in (row.backend, row.model.replace("@", "@\u200b")) if part)
        self.detail_name.setText(
            str(row.path or row.name)
            + (f"\nclass folder: {row.truth}" if row.truth else "")
            + (f"\n{answered_by}" if answered_by else "")
        )
        self.detail_top.clear()
        self.detail_timings.clear()
        self._explain(row)
        p = row.prediction
        if p is not None and p.error:
            self.detail_top.addItem(CANCELLED if p.error == CANCELLED else f"error: {p.error}")
        elif p is not None:
            self.detail_top.addItems([f"{label}  {score:.3f}" for label, score in p.top_k])
            if p.unknown:
                self.detail_top.addItem(
                    f"Unknown: looks like none of the model's classes (ood score {p.ood_score:.3f}); "
                    "the labels above are only the closest"
                )
            stages = [
                ("decode", DECODE),
                ("preprocess", PREPROCESS),
                ("inference", INFERENCE),
                ("network", NETWORK),
                ("total", TOTAL),
            ]
            self.detail_timings.setText(
                # a line breaks only after a "·", never inside "network —"
                "Milliseconds: "
                + "\u00a0· ".join(f"{name}\u00a0{self.model.text(row, c)}".replace(" ", "\u00a0") for name, c in stages)
            )

    def _explain(self, row: Row) -> None:
        """With Explain on, replace the detail image by the row's saliency overlay (computed on the explainer's
        thread, through the version's SavedModel); say why when the row cannot be explained."""
        from app import classify_only

        local = row.kind in LOCAL_BACKENDS and row.choice is not None
        self.explain_button.setEnabled(local and not classify_only())
        self.explain_button.setToolTip(  # a greyed-out button says why
            EXPLAIN_LOCAL_ONLY if not local else EXPLAIN_NEEDS_TENSORFLOW if classify_only() else EXPLAIN_TIP
        )
        self.explain_note.clear()
        if not self.explain_button.isChecked():
            return
        if not local:
            self.explain_note.setText(EXPLAIN_LOCAL_ONLY)
            return
        if row.status != "ok":
            self.explain_note.setText("Only a classified image can be explained.")
            return
        location = row.choice.location
        if self.explainer is None or self.explainer_location != location:
            if self.explainer is not None:
                self.explainer.close()
            from app.core.explain import savedmodel_predictor

            self.explainer = ModelOwner(lambda: savedmodel_predictor(location), "explainer")
            self.explainer_location = location
        self.explain_note.setText("Explaining…")
        wanted = row

        def work(predictor, _job):
            from app.core.explain import caption, overlay_png, saliency

            predict, labels, size = predictor
            result = saliency(wanted.payload(), predict, size)
            label = labels[result["class"]]
            return label, overlay_png(
                result["pixels"], result["saliency"], caption(label, result["score"], result["unknown"])
            )

        def done(answer):
            current = self.table.currentIndex()
            if not current.isValid() or self.model.rows[self.proxy.mapToSource(current).row()] is not wanted:
                return  # another row was chosen meanwhile
            label, png = answer
            overlay, plain = QImage.fromData(png), self.detail_image.image
            caption_rows = overlay.height() - round(overlay.width() * plain.height() / max(1, plain.width()))
            self.detail_image.show_image(overlay, band=caption_rows)  # the caption bar above the picture
            self.explain_note.setText(f"Bright: where hiding the image lowers '{label}' most.")

        def failed(exc):
            self.explain_note.setText(f"Could not explain this image: {one_sentence(exc)}")

        self.explainer.submit(work, done, failed)

    # --- output -----------------------------------------------------------------------
    def export_csv(self, path: str | None = None) -> None:
        if not self.model.rows:
            self.message.emit("Nothing to export yet.", "warning")
            return
        if not path:
            path, _ = QFileDialog.getSaveFileName(
                self,
                "Export results",
                str(Path(setting("classify/last_folder", str(Path.home()))) / "results.csv"),
                "CSV (*.csv)",
            )
        if not path:
            return
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(
            [
                "file",
                "truth",
                "label",
                "score",
                "top_k",
                *TIMING_FIELDS,
                "request_bytes",
                "backend",
                "model",
                "error",
                "unknown",
                "ood_score",
            ]
        )
        for row in self.model.rows:
            p = row.prediction or Prediction(error="not classified")
            writer.writerow(
                [
                    str(row.path or row.name),
                    row.truth or "",
                    p.label or "",
                    f"{p.score:.6f}" if p.score is not None else "",
                    "; ".join(f"{label}={score:.4f}" for label, score in p.top_k),
                    *[f"{getattr(p.timings, f):.3f}" for f in TIMING_FIELDS],
                    p.request_bytes,
                    row.backend,
                    row.model,
                    p.error or "",
                    "" if p.unknown is None else str(p.unknown).lower(),
                    "" if p.ood_score is None else f"{p.ood_score:.6f}",
                ]
            )
        from app.core.atomic import write_bytes

        write_bytes(path, buffer.getvalue().encode("utf-8"))
        self.message.emit(f"Results saved to {path}.", "info")

    def compare(self) -> None:
        files = [r for r in self.model.rows if r.path is not None]
        if not files:
            self.message.emit(
                "Classify some image files first; Compare runs the same images through several backends.", "warning"
            )
            return
        self.compare_dialog = CompareDialog(self.backend, files, self)
        self.compare_dialog.exec()


class CompareDialog(QDialog):
    """The same images through each ticked backend, one backend at a time, each in its own owner thread.

    Statistics come from ``app.inference.bench`` (the CLI's ``bench``), so GUI and CLI agree. The *Load sweep*
    tab runs ``bench.sweep`` (the CLI's ``bench --concurrency``) and charts images/s against p95 per backend.
    """

    def __init__(self, backend: BackendBar, rows: list[Row], parent=None):
        super().__init__(parent)
        self.setWindowTitle("Compare backends")
        self.files = [(r.path, r.truth) for r in rows if r.path is not None][:200]  # truth: the class folder
        self.labelled = bool(self.files) and all(truth for _, truth in self.files)
        self.resize(800, 580)
        form = QFormLayout()
        self.choices: dict[str, tuple[QCheckBox, QLineEdit]] = {}
        current = backend.choice()
        local = current.location if not current.remote else (setting("backend/recent_local", "") or "").split("\n")[0]
        for key, label in BACKENDS:
            if key in DEFAULT_PORTS:
                recent = (setting(f"backend/recent_{key}", "") or "").split("\n")[0]
                address = (
                    current.location
                    if current.kind == key
                    else recent or complete_address(key, f"localhost:{DEFAULT_PORTS[key]}")
                )
            else:
                address = local
            box = QCheckBox(label)
            edit = QLineEdit(address)
            edit.setAccessibleName(f"{label} address")
            box.setChecked(key in LOCAL_BACKENDS and bool(local) or current.kind == key)
            line = QHBoxLayout()
            line.addWidget(box)
            line.addWidget(edit, 1)
            form.addRow(line)
            self.choices[key] = (box, edit)
        self.table = read_only_table(
            ["Backend", "Images", "Errors", "Accuracy", "Median ms", "P95 ms", "Mean ms", "Images/s"]
        )
        self.table.setAccessibleName("Comparison")
        import pyqtgraph as pg

        self.chart = pg.PlotWidget(background=None)
        self.chart.setMinimumHeight(160)
        self.chart.setLabel("left", "total ms per image")
        self.status = QLabel(f"{len(self.files)} images")
        self.status.setAccessibleName("Compare status")
        self.status.setWordWrap(True)
        self.run_button = QPushButton(icon("mdi6.play"), "Run")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        buttons.addButton(self.run_button, QDialogButtonBox.ButtonRole.ActionRole)
        side_by_side = QWidget()
        side_layout = QVBoxLayout(side_by_side)
        side_layout.setContentsMargins(0, 0, 0, 0)
        side_layout.addWidget(self.table)
        side_layout.addWidget(self.chart, 1)
        self.tabs = QTabWidget()
        self.tabs.addTab(side_by_side, "Side by side")
        self.sweep_page = QWidget()  # filled when the tab is first opened (_build_sweep_tab)
        QVBoxLayout(self.sweep_page).setContentsMargins(0, 0, 0, 0)
        self.sweep_button: QPushButton | None = None
        self.tabs.addTab(self.sweep_page, "Load sweep")
        self.tabs.currentChanged.connect(lambda i: self.tabs.widget(i) is self.sweep_page and self._build_sweep_tab())
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(self.status)
        layout.addWidget(buttons)
        self.run_button.clicked.connect(self.run)
        self.results: dict[str, dict] = {}
        self.owners: list[ModelOwner] = []
        self.queue: list[BackendChoice] = []
        self.sweep_job = None
        self.sweep_rows: dict[str, list[dict]] = {}

    def _build_sweep_tab(self) -> None:
        """Concurrency levels, the *Run load sweep* button, a table per level and the throughput-vs-p95 chart,
        made when the tab first opens (the dialog opens as fast as before, with the one comparison table)."""
        if self.sweep_button is not None:
            return
        import pyqtgraph as pg

        content = QWidget()
        layout = QVBoxLayout(content)
        layout.setContentsMargins(0, 0, 0, 0)
        line = QHBoxLayout()
        line.addWidget(QLabel("Requests in flight:"))
        self.levels_edit = QLineEdit(setting("compare/concurrency", "1,2,4") or "1,2,4")
        self.levels_edit.setAccessibleName("Concurrency levels")
        self.levels_edit.setToolTip(
            "Comma-separated levels; each keeps that many requests going at once, one classifier per thread"
        )
        line.addWidget(self.levels_edit, 1)
        self.sweep_button = QPushButton(icon("mdi6.chart-line"), "Run load sweep")
        self.sweep_button.clicked.connect(self.run_sweep)
        line.addWidget(self.sweep_button)
        layout.addLayout(line)
        self.sweep_table = read_only_table(
            ["Backend", "In flight", "Images/s", "Median ms", "P95 ms", "P99 ms", "Errors", "Stable"]
        )
        self.sweep_table.setAccessibleName("Load sweep")
        layout.addWidget(self.sweep_table)
        self.sweep_chart = pg.PlotWidget(background=None)
        self.sweep_chart.setAccessibleName("Throughput vs p95")
        self.sweep_chart.setMinimumHeight(160)
        self.sweep_chart.setLabel("bottom", "p95 latency per request (ms)")
        self.sweep_chart.setLabel("left", "images/s")
        self.sweep_chart.addLegend()
        layout.addWidget(self.sweep_chart, 1)
        self.sweep_button.setEnabled(self.run_button.isEnabled())
        self.sweep_page.layout().addWidget(content)
        content.show()  # at once: a widget added to a shown page would otherwise appear one event later

    def run_sweep(self) -> None:
        """Each ticked backend through the concurrency levels (``bench.sweep``, as ``bench --concurrency``)."""
        picked = [
            BackendChoice(k, complete_address(k, e.text())) for k, (b, e) in self.choices.items() if b.isChecked()
        ]
        try:
            levels = tuple(int(c) for c in self.levels_edit.text().split(",") if c.strip())
            if not levels or any(not 1 <= c <= 64 for c in levels):
                raise ValueError
        except ValueError:
            self.status.setText("Type the requests in flight as whole numbers from 1 to 64, e.g. 1,2,4.")
            return
        if not picked:
            self.status.setText("Tick at least one backend.")
            return
        remember("compare/concurrency", self.levels_edit.text().strip())
        self.sweep_button.setEnabled(False)
        self.run_button.setEnabled(False)
        self.sweep_rows = {}
        self.sweep_table.setRowCount(0)
        self.sweep_chart.clear()
        files = list(self.files)
        settings = LoadSettings(concurrency=levels, count=20, max_windows=5)
        self.status.setText(f"Load sweep: {', '.join(c.label() for c in picked)} at {self.levels_edit.text()}…")

        def work(job):
            payloads, _ = load_payloads(files, 64)
            for choice in picked:
                if job.cancelled.is_set():
                    break
                try:
                    sweep(
                        lambda choice=choice: open_choice(choice),
                        payloads,
                        settings,
                        choice.label(),
                        on_level=job.progress,
                        cancelled=job.cancelled.is_set,
                    )
                except Exception as exc:  # this backend's one sentence; the next one still runs
                    job.progress({"backend": choice.label(), "error": exc.with_traceback(None)})
            return None

        self.sweep_job = run_in_background(work, self._sweep_done, self._sweep_failed, self, self._add_level)

    def _add_level(self, row: dict) -> None:
        row_index = self.sweep_table.rowCount()
        self.sweep_table.setRowCount(row_index + 1)
        name = row["backend"]
        if "error" in row:
            cells = [name, one_sentence(row["error"])] + [""] * 6
        else:
            self.sweep_rows.setdefault(name, []).append(row)
            number = lambda v: f"{v:.1f}" if v is not None else "—"  # noqa: E731
            cells = [
                name,
                str(row["concurrency"]),
                number(row["images_per_s"]),
                number(row["p50_ms"]),
                number(row["p95_ms"]),
                number(row["p99_ms"]),
                str(row["errors"]),
                "yes" if row["stable"] else "no",
            ]
        for c, text in enumerate(cells):
            self.sweep_table.setItem(row_index, c, QTableWidgetItem(text))
        if "error" not in row and not row["stable"]:
            self.sweep_table.item(row_index, 7).setToolTip(
                f"The last 3 of {row['windows']} windows still differed by more than 10% in images/s or p95"
            )
        if "error" in row:
            self.sweep_table.setSpan(row_index, 1, 1, self.sweep_table.columnCount() - 1)
            self.sweep_table.resizeRowToContents(row_index)
        self._draw_sweep()

    def _draw_sweep(self) -> None:
        """One line per backend: x = p95 ms, y = images/s, each point labelled with its requests in flight."""
        import pyqtgraph as pg

        self.sweep_chart.clear()
        colours = ["#1a73e8", "#f9ab00", "#188038", "#d93025"]
        for n, (name, rows) in enumerate(self.sweep_rows.items()):
            points = [(r["p95_ms"], r["images_per_s"], r["concurrency"]) for r in rows if r["p95_ms"] is not None]
            colour = colours[n % len(colours)]
            self.sweep_chart.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                pen=pg.mkPen(colour, width=2),
                symbol="o",
                symbolBrush=colour,
                name=name,
            )
            for x, y, level in points:
                label = pg.TextItem(f"{level}", color=colour, anchor=(0, 1))
                label.setPos(x, y)
                self.sweep_chart.addItem(label)
        # both axes from 0, with room for the labels: a 0.03 ms spread must not look like a slope
        xs = [r["p95_ms"] for rows in self.sweep_rows.values() for r in rows if r["p95_ms"] is not None]
        ys = [r["images_per_s"] for rows in self.sweep_rows.values() for r in rows if r["p95_ms"] is not None]
        if xs:
            self.sweep_chart.setXRange(0, max(xs) * 1.2, padding=0)
            self.sweep_chart.setYRange(0, max(ys) * 1.2, padding=0)

    def _sweep_done(self, _result) -> None:
        self.sweep_button.setEnabled(True)
        self.run_button.setEnabled(True)
        failed = [
            self.sweep_table.item(r, 0).text()
            for r in range(self.sweep_table.rowCount())
            if self.sweep_table.columnSpan(r, 1) > 1
        ]
        self.status.setText(
            f"Done: load sweep of {len(self.sweep_rows)} backend{'s' * (len(self.sweep_rows) != 1)}"
            + (f"; {', '.join(failed)} failed (see its row)" if failed else "")
            + ". Up and to the left is better: more images per second at a lower 95th percentile; "
            "the numbers are the requests in flight."
        )

    def _sweep_failed(self, exc) -> None:
        self.sweep_button.setEnabled(True)
        self.run_button.setEnabled(True)
        self.status.setText(f"The load sweep stopped: {one_sentence(exc)}")

    def run(self) -> None:
        picked = [
            BackendChoice(k, complete_address(k, e.text())) for k, (b, e) in self.choices.items() if b.isChecked()
        ]
        if not picked:
            self.status.setText("Tick at least one backend.")
            return
        self.run_button.setEnabled(False)
        if self.sweep_button is not None:
            self.sweep_button.setEnabled(False)
        self.results = {}
        self.table.setRowCount(0)
        self.queue = picked
        self._next()

    def _next(self) -> None:
        """Start the next backend: open it on a fresh owner thread, bench it there, close the owner."""
        if not self.queue:
            self.run_button.setEnabled(True)
            if self.sweep_button is not None:
                self.sweep_button.setEnabled(True)
            self._show_chart()
            return
        choice = self.queue.pop(0)
        self.status.setText(f"Running {choice.label()}… ({len(self.files)} images)")
        owner = ModelOwner(lambda: open_choice(choice), f"compare {choice.label()}")
        self.owners.append(owner)
        files = self.files

        def done(result):
            owner.close()
            self._add(choice.label(), result)

        def failed(exc):
            owner.close()
            self._add(choice.label(), {"error": one_sentence(exc)})

        owner.submit(
            lambda classifier, _job: bench(classifier, files, choice.label()),
            lambda result: (done(result), self._next()),
            lambda exc: (failed(exc), self._next()),
        )

    def _add(self, name: str, stats: dict) -> None:
        self.results[name] = stats
        row = self.table.rowCount()
        self.table.setRowCount(row + 1)
        if "error" in stats:
            cells = [name, stats["error"], "", "", "", "", "", ""]
        else:
            total = stats["total_ms"]
            accuracy = f"{stats['accuracy']:.1%}" if self.labelled and stats["accuracy"] is not None else "—"
            cells = [
                name,
                str(stats["images"]),
                str(stats["errors"]),
                accuracy,
                *(f"{total[k]:.2f}" if total[k] is not None else "—" for k in ("median", "p95", "mean")),
                f"{stats['images_per_s']:.1f}" if stats["images_per_s"] else "—",
            ]
        for c, text in enumerate(cells):
            self.table.setItem(row, c, QTableWidgetItem(text))
        if "error" in stats:  # the one sentence across the number columns, wrapped, instead of "127.0.0.1:41…"
            self.table.setSpan(row, 1, 1, self.table.columnCount() - 1)
            self.table.item(row, 1).setToolTip(stats["error"])
            self.table.resizeRowToContents(row)

    def _show_chart(self) -> None:
        import pyqtgraph as pg

        ok = [(n, s["total_ms"]) for n, s in self.results.items() if "error" not in s and s["total_ms"]["median"]]
        self.chart.clear()
        xs = list(range(len(ok)))
        self.chart.addItem(
            pg.BarGraphItem(
                x=[x - 0.2 for x in xs], height=[t["median"] for _, t in ok], width=0.38, brush="#1a73e8", name="median"
            )
        )
        self.chart.addItem(
            pg.BarGraphItem(
                x=[x + 0.2 for x in xs], height=[t["p95"] for _, t in ok], width=0.38, brush="#f9ab00", name="p95"
            )
        )
        self.chart.getAxis("bottom").setTicks([[(x, n) for x, (n, _) in zip(xs, ok)]])
        failed = [n for n, s in self.results.items() if "error" in s]
        ran = f"{len(self.results)} backends"
        if failed:
            ran = f"{len(self.results) - len(failed)} of {ran} ran; {', '.join(failed)} failed (see its row)"
        self.status.setText(f"Done: {ran}. Blue: median, amber: 95th percentile (ms per image, lower is better).")

    def done(self, result) -> None:
        """Closing stops listening; a backend still running finishes on its own thread and is released there."""
        if self.sweep_job is not None:  # the sweep stops after its current window; its threads close their models
            self.sweep_job.cancel()
        for owner in self.owners:
            owner.close(discard=True)
        self.queue = []
        super().done(result)
