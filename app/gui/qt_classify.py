"""Classify view: drop files or folders anywhere, rows stream in with top-k and timings."""
from __future__ import annotations

import csv
import io
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QObject, QRunnable, QSize, Qt, QThreadPool, Signal
from PySide6.QtGui import QGuiApplication, QImage, QKeySequence, QPixmap, QShortcut
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout,
                               QHBoxLayout, QHeaderView, QLabel, QLineEdit, QListWidget, QProgressBar, QPushButton,
                               QSplitter, QStackedLayout, QTableView, QTableWidgetItem, QVBoxLayout,
                               QWidget)

from app.inference.base import Prediction
from app.inference.bench import summary
from app.inference.preprocess import IMAGE_EXTENSIONS

from .qt_backend import BACKENDS, BackendBar, BackendChoice, open_choice
from .qt_common import icon, one_sentence, read_only_table, remember, setting, thumbnail

COLUMNS = ["", "File", "Label", "Score", "Decode", "Preprocess", "Inference", "Network", "Total ms", "Bytes",
           "Backend"]
TIMING_FIELDS = ["decode_ms", "preprocess_ms", "inference_ms", "network_ms", "total_ms"]
THUMB = 48


def expand(paths) -> list[Path]:
    """Files as given, folders searched recursively for images, in a stable order."""
    out = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                          and not p.name.startswith("."))
        elif path.is_file():
            out.append(path)
    return out


@dataclass
class Row:
    name: str
    path: Path | None = None
    data: bytes | None = None  # for pasted images, which have no file
    prediction: Prediction | None = None
    backend: str = ""
    thumb: QPixmap | None = None
    extra: dict = field(default_factory=dict)

    def payload(self) -> bytes:
        return self.data if self.data is not None else self.path.read_bytes()


class ResultsModel(QAbstractTableModel):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: list[Row] = []

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
        if role == Qt.ItemDataRole.DecorationRole and column == 0:
            return row.thumb
        if role == Qt.ItemDataRole.ToolTipRole:
            if p is None:
                return "waiting…"
            if p.error:
                return p.error
            return "\n".join(f"{label}: {score:.3f}" for label, score in p.top_k)
        if role == Qt.ItemDataRole.TextAlignmentRole and column >= 3:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ForegroundRole and p is not None and p.error and column == 2:
            from PySide6.QtGui import QColor
            return QColor("#b3261e")
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if column == 1:
            return row.name
        if column == 10:
            return row.backend
        if p is None:
            return "…" if column == 2 else ""
        if p.error:
            return f"error: {p.error}" if column == 2 else ""
        if column == 2:
            return p.label
        if column == 3:
            return f"{p.score:.3f}"
        if 4 <= column <= 8:
            return f"{getattr(p.timings, TIMING_FIELDS[column - 4]):.2f}"
        if column == 9:
            return f"{p.request_bytes:,}"
        return None

    def add(self, rows: list[Row]) -> int:
        first = len(self.rows)
        self.beginInsertRows(QModelIndex(), first, first + len(rows) - 1)
        self.rows.extend(rows)
        self.endInsertRows()
        return first

    def update(self, index: int) -> None:
        self.dataChanged.emit(self.index(index, 0), self.index(index, len(COLUMNS) - 1))

    def clear(self) -> None:
        self.beginResetModel()
        self.rows.clear()
        self.endResetModel()


class _BatchSignals(QObject):
    result = Signal(int, object, QImage)
    finished = Signal(float)
    failed = Signal(object)


class BatchWorker(QRunnable):
    """Classifies rows one by one on the thread pool; ``cancel()`` stops between images."""

    def __init__(self, classifier, jobs: list[tuple[int, Row]], top_k: int = 5):
        super().__init__()
        self.classifier, self.jobs, self.top_k = classifier, jobs, top_k
        self.signals = _BatchSignals()
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    def run(self) -> None:
        start = time.perf_counter()
        try:
            for index, row in self.jobs:
                if self._cancelled.is_set():
                    break
                try:
                    data = row.payload()
                except OSError as exc:
                    self.signals.result.emit(index, Prediction(error=f"cannot be read ({exc.strerror})"), QImage())
                    continue
                prediction = self.classifier.classify([data], top_k=self.top_k)[0]
                self.signals.result.emit(index, prediction, thumbnail(data, THUMB))
        except Exception as exc:  # a server that went away mid-batch: one sentence, rows so far kept
            self.signals.failed.emit(exc)
        self.signals.finished.emit(time.perf_counter() - start)


class ClassifyView(QWidget):
    message = Signal(str, str)
    busy = Signal(bool)

    def __init__(self, backend: BackendBar, parent=None):
        super().__init__(parent)
        self.backend = backend
        self.worker: BatchWorker | None = None
        self.model = ResultsModel(self)
        self.setAcceptDrops(True)

        self.open_button = QPushButton(icon("mdi6.image-multiple"), "Open images…")
        self.open_folder_button = QPushButton(icon("mdi6.folder-image"), "Open folder…")
        self.paste_button = QPushButton(icon("mdi6.content-paste"), "Paste")
        self.compare_button = QPushButton(icon("mdi6.chart-bar"), "Compare backends…")
        self.export_button = QPushButton(icon("mdi6.file-delimited"), "Export CSV…")
        self.clear_button = QPushButton(icon("mdi6.broom"), "Clear")
        self.cancel_button = QPushButton(icon("mdi6.stop"), "Cancel")
        self.cancel_button.setEnabled(False)
        self.open_button.setToolTip("Open image files (Ctrl+O)")
        self.paste_button.setToolTip("Classify an image from the clipboard (Ctrl+V)")
        tools = QHBoxLayout()
        for button in (self.open_button, self.open_folder_button, self.paste_button, self.compare_button,
                       self.export_button, self.clear_button, self.cancel_button):
            tools.addWidget(button)
        tools.addStretch(1)

        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setDefaultSectionSize(THUMB + 6)
        self.table.verticalHeader().hide()
        self.table.setIconSize(QSize(THUMB, THUMB))
        header = self.table.horizontalHeader()
        # fixed widths: ResizeToContents re-measures every row on every update, O(rows) per image
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        for column, width in enumerate([THUMB + 8, 140, 120, 52, 58, 76, 70, 66, 66, 60, 90]):
            self.table.setColumnWidth(column, width)

        self.empty = QLabel("Drop images or folders here\n\nor press Ctrl+O to open files, Ctrl+V to paste an image")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setStyleSheet("QLabel { color: palette(mid); font-size: 16pt; border: 2px dashed palette(mid); "
                                 "border-radius: 12px; }")
        self.stack = QStackedLayout()
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self.table)
        table_holder = QWidget()
        table_holder.setLayout(self.stack)

        self.detail_image = QLabel()
        self.detail_image.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.detail_image.setMinimumSize(200, 200)
        self.detail_top = QListWidget()
        self.detail_top.setWordWrap(True)
        self.detail_name = QLabel("Select a row to see the image, its top classes and timings.")
        self.detail_name.setWordWrap(True)
        detail = QWidget()
        detail_layout = QVBoxLayout(detail)
        detail_layout.addWidget(self.detail_image)
        detail_layout.addWidget(self.detail_name)
        detail_layout.addWidget(QLabel("Top classes"))
        detail_layout.addWidget(self.detail_top, 1)
        splitter = QSplitter()
        splitter.addWidget(table_holder)
        splitter.addWidget(detail)
        splitter.setStretchFactor(0, 4)
        splitter.setStretchFactor(1, 1)

        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.hide()
        self.summary = QLabel("No images yet")
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        bottom = QHBoxLayout()
        bottom.addWidget(self.summary, 1)
        bottom.addWidget(self.progress)

        layout = QVBoxLayout(self)
        layout.addLayout(tools)
        layout.addWidget(splitter, 1)
        layout.addLayout(bottom)

        self.open_button.clicked.connect(self.open_files)
        self.open_folder_button.clicked.connect(self.open_folder)
        self.paste_button.clicked.connect(self.paste)
        self.compare_button.clicked.connect(self.compare)
        self.export_button.clicked.connect(self.export_csv)
        self.clear_button.clicked.connect(self.clear)
        self.cancel_button.clicked.connect(self.cancel)
        self.table.selectionModel().currentRowChanged.connect(self._show_detail)
        QShortcut(QKeySequence.StandardKey.Paste, self, self.paste)

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
        start = setting("classify/last_folder", str(Path.home()))
        pattern = "Images (" + " ".join(f"*{e}" for e in sorted(IMAGE_EXTENSIONS)) + ")"
        files, _ = QFileDialog.getOpenFileNames(self, "Open images", start, pattern)
        if files:
            remember("classify/last_folder", str(Path(files[0]).parent))
            self.classify_paths(files)

    def open_folder(self):
        folder = QFileDialog.getExistingDirectory(self, "Open a folder of images",
                                                  setting("classify/last_folder", str(Path.home())))
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
        files = expand(paths)
        if not files:
            self.message.emit("No image files were found there (JPEG, PNG, GIF, BMP or WebP).", "warning")
            return
        self._classify_rows([Row(p.name, path=p) for p in files])

    # --- running ----------------------------------------------------------------------
    def _classify_rows(self, rows: list[Row]) -> None:
        if self.worker is not None:
            self.message.emit("Still classifying the last batch; cancel it or wait.", "warning")
            return
        first = self.model.add(rows)
        self.stack.setCurrentWidget(self.table)
        jobs = list(enumerate(rows, first))
        self.progress.setRange(0, len(jobs))
        self.progress.setValue(0)
        self.progress.show()
        self._set_running(True)
        self.backend.with_classifier(lambda c: self._start(c, jobs), lambda exc: self._open_failed(jobs, exc))

    def _open_failed(self, jobs, exc) -> None:
        for index, row in jobs:
            row.prediction = Prediction(error=one_sentence(exc))
            self.model.update(index)
        self._set_running(False)
        self.progress.hide()

    def _start(self, classifier, jobs) -> None:
        choice = self.backend.choice()
        for _, row in jobs:
            row.backend = choice.label()
        self.worker = BatchWorker(classifier, jobs)
        self.worker.signals.result.connect(self._on_result)
        self.worker.signals.finished.connect(self._on_finished)
        self.worker.signals.failed.connect(lambda exc: self.message.emit(one_sentence(exc).capitalize(), "error"))
        self._batch_start = len(self.model.rows) - len(jobs)
        QThreadPool.globalInstance().start(self.worker)

    def _on_result(self, index: int, prediction: Prediction, image: QImage) -> None:
        row = self.model.rows[index]
        row.prediction = prediction
        if not image.isNull():
            row.thumb = QPixmap.fromImage(image)
        self.model.update(index)
        self.progress.setValue(self.progress.value() + 1)
        if self.table.currentIndex().row() == index:
            self._show_detail(self.table.currentIndex())

    def _on_finished(self, seconds: float) -> None:
        done = [r for r in self.model.rows[self._batch_start:] if r.prediction is not None]
        for index in range(self._batch_start, len(self.model.rows)):
            if self.model.rows[index].prediction is None:  # cancelled before its turn
                self.model.rows[index].prediction = Prediction(error="cancelled")
                self.model.update(index)
        self.worker = None
        self._set_running(False)
        self.progress.hide()
        self.update_summary(seconds, len(done))

    def _set_running(self, running: bool) -> None:
        self.cancel_button.setEnabled(running)
        self.compare_button.setEnabled(not running)
        self.busy.emit(running)

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            self.message.emit("Cancelled; the images classified so far are kept.", "info")

    def clear(self) -> None:
        if self.worker is not None:
            self.cancel()
            return
        self.model.clear()
        self.stack.setCurrentWidget(self.empty)
        self.summary.setText("No images yet")
        self.detail_image.clear()
        self.detail_top.clear()
        self.detail_name.clear()

    def update_summary(self, seconds: float | None = None, batch: int | None = None) -> None:
        ok = [r.prediction for r in self.model.rows if r.prediction is not None and r.prediction.error is None]
        failed = sum(1 for r in self.model.rows if r.prediction is not None and r.prediction.error)
        if not ok:
            self.summary.setText(f"{failed} failed" if failed else "No images yet")
            return
        stats = summary([p.timings.total_ms for p in ok])
        rate = f" · {batch / seconds:.1f} images/s" if seconds and batch else ""
        self.summary.setText(
            f"{len(ok)} classified{f', {failed} failed' if failed else ''} · total ms mean {stats['mean']:.1f}, "
            f"median {stats['median']:.1f}, p95 {stats['p95']:.1f}{rate} · {self.backend.choice().label()}")

    def _show_detail(self, current, _previous=None) -> None:
        if not current.isValid() or current.row() >= len(self.model.rows):
            return
        row = self.model.rows[current.row()]
        try:
            image = thumbnail(row.payload(), 240)
        except OSError:
            image = QImage()
        self.detail_image.setPixmap(QPixmap.fromImage(image) if not image.isNull() else QPixmap())
        self.detail_name.setText(str(row.path or row.name))
        self.detail_top.clear()
        p = row.prediction
        if p is not None and p.error:
            self.detail_top.addItem(f"error: {p.error}")
        elif p is not None:
            self.detail_top.addItems([f"{label}  {score:.3f}" for label, score in p.top_k])
            t = p.timings
            self.detail_top.addItem(f"decode {t.decode_ms:.2f} · preprocess {t.preprocess_ms:.2f} · inference "
                                    f"{t.inference_ms:.2f} · network {t.network_ms:.2f} · total {t.total_ms:.2f} ms")

    # --- output -----------------------------------------------------------------------
    def export_csv(self, path: str | None = None) -> None:
        if not self.model.rows:
            self.message.emit("Nothing to export yet.", "warning")
            return
        if not path:
            path, _ = QFileDialog.getSaveFileName(self, "Export results", str(Path(
                setting("classify/last_folder", str(Path.home()))) / "results.csv"), "CSV (*.csv)")
        if not path:
            return
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["file", "label", "score", "top_k", *TIMING_FIELDS, "request_bytes", "backend", "error"])
        for row in self.model.rows:
            p = row.prediction or Prediction(error="not classified")
            writer.writerow([str(row.path or row.name), p.label or "", f"{p.score:.6f}" if p.score is not None else "",
                             "; ".join(f"{label}={score:.4f}" for label, score in p.top_k),
                             *[f"{getattr(p.timings, f):.3f}" for f in TIMING_FIELDS], p.request_bytes,
                             row.backend, p.error or ""])
        from app.core.atomic import write_bytes
        write_bytes(path, buffer.getvalue().encode("utf-8"))
        self.message.emit(f"Results saved to {path}.", "info")

    def compare(self) -> None:
        files = [r for r in self.model.rows if r.path is not None or r.data is not None]
        if not files:
            self.message.emit("Classify some images first; Compare runs the same images through several backends.",
                              "warning")
            return
        CompareDialog(self.backend, files, self).exec()


class CompareDialog(QDialog):
    """The same images through two or more backends, timings side by side with a small chart."""

    def __init__(self, backend: BackendBar, rows: list[Row], parent=None):
        super().__init__(parent)
        self.setWindowTitle("Compare backends")
        self.rows = rows[:200]
        self.resize(760, 560)
        form = QFormLayout()
        self.choices = {}
        local = setting("backend/recent_local", "").split("\n")[0]
        if backend.choice().kind in ("tflite", "savedmodel"):
            local = backend.choice().location or local
        for key, label in BACKENDS:
            recent = setting(f"backend/recent_{key}", "") if key in ("grpc", "rest") else local
            box = QCheckBox(label)
            edit = QLineEdit((recent or "").split("\n")[0])
            box.setChecked(key in ("tflite", "savedmodel") and bool(local) or
                           (backend.choice().kind == key))
            row = QHBoxLayout()
            row.addWidget(box)
            row.addWidget(edit, 1)
            form.addRow(row)
            self.choices[key] = (box, edit)
        self.table = read_only_table(["Backend", "Images", "Median ms", "P95 ms", "Mean ms", "Images/s"])
        import pyqtgraph as pg
        self.chart = pg.PlotWidget(background=None)
        self.chart.setMinimumHeight(180)
        self.chart.setLabel("left", "total ms per image")
        self.status = QLabel(f"{len(self.rows)} images")
        self.run_button = QPushButton(icon("mdi6.play"), "Run")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        buttons.addButton(self.run_button, QDialogButtonBox.ButtonRole.ActionRole)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.table)
        layout.addWidget(self.chart, 1)
        layout.addWidget(self.status)
        layout.addWidget(buttons)
        self.run_button.clicked.connect(self.run)
        self.results: dict[str, dict] = {}

    def run(self) -> None:
        picked = [BackendChoice(k, e.text().strip()) for k, (b, e) in self.choices.items() if b.isChecked()]
        if len(picked) < 1:
            self.status.setText("Tick at least one backend.")
            return
        self.run_button.setEnabled(False)
        self.status.setText("Running…")
        payloads = []
        for row in self.rows:
            try:
                payloads.append(row.payload())
            except OSError:
                pass
        from .qt_common import run_in_background

        def work():
            results = {}
            for choice in picked:
                try:
                    classifier = open_choice(choice)
                except Exception as exc:
                    results[choice.label()] = {"error": one_sentence(exc)}
                    continue
                start = time.perf_counter()
                out = [classifier.classify([data], top_k=1)[0] for data in payloads]
                wall = time.perf_counter() - start
                totals = [p.timings.total_ms for p in out if p.error is None]
                results[choice.label()] = {**summary(totals), "images": len(totals), "rate": len(out) / wall}
            return results

        run_in_background(work, self._show, lambda exc: self.status.setText(one_sentence(exc)), self)

    def _show(self, results: dict) -> None:
        import pyqtgraph as pg

        self.results = results
        self.run_button.setEnabled(True)
        self.table.setRowCount(len(results))
        names, medians, p95s = [], [], []
        for r, (name, stats) in enumerate(results.items()):
            if "error" in stats:
                cells = [name, stats["error"], "", "", "", ""]
            else:
                cells = [name, str(stats["images"]), f"{stats['median']:.2f}", f"{stats['p95']:.2f}",
                         f"{stats['mean']:.2f}", f"{stats['rate']:.1f}"]
                names.append(name)
                medians.append(stats["median"])
                p95s.append(stats["p95"])
            for c, text in enumerate(cells):
                self.table.setItem(r, c, QTableWidgetItem(text))
        self.chart.clear()
        xs = list(range(len(names)))
        self.chart.addItem(pg.BarGraphItem(x=[x - 0.2 for x in xs], height=medians, width=0.38, brush="#1a73e8",
                                           name="median"))
        self.chart.addItem(pg.BarGraphItem(x=[x + 0.2 for x in xs], height=p95s, width=0.38, brush="#f9ab00",
                                           name="p95"))
        self.chart.getAxis("bottom").setTicks([[(x, n) for x, n in zip(xs, names)]])
        self.status.setText("Blue: median, amber: 95th percentile (ms per image, lower is better).")
