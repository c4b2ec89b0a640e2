"""The guided training wizard: folder -> review -> options -> training -> results -> export.

Training runs in a child process (``retrain-studio train --json``) read line by line, so
TensorFlow never starts in the GUI process and Cancel can simply kill the child: the
export is atomic, so a killed run leaves no model version behind.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from PySide6.QtCore import QProcess, QProcessEnvironment, Qt, Signal
from PySide6.QtGui import QColor, QGuiApplication, QImage, QPixmap
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGridLayout,
                               QHBoxLayout, QLabel, QLineEdit, QListWidgetItem, QPlainTextEdit, QProgressBar,
                               QPushButton, QSpinBox, QSplitter, QTableWidgetItem, QVBoxLayout, QWidget, QWizard,
                               QWizardPage)

from app.core.dataset import DatasetError, scan
from app.core.serving_config import docker_command, models_config
from app.core.training import TrainSettings
from app.paths import sample_data_dir

from .qt_common import (icon, one_sentence, read_only_table, remember, run_in_background, setting, thumbnail,
                        thumbnail_grid)

BACKBONE_CHOICES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
STAGE_NAMES = {"scan": "Scanning images", "backbone": "Loading the backbone", "embed": "Computing features",
               "embed_train": "Computing features (train)", "embed_validation": "Computing features (validation)",
               "embed_test": "Computing features (test)", "train": "Training the classifier",
               "fine_tune": "Fine-tuning the backbone", "evaluate": "Evaluating", "export": "Exporting"}


def default_models_dir() -> str:
    return setting("train/models_dir", str(Path.home() / "RetrainStudio" / "models"))


def train_command(settings: TrainSettings) -> list[str]:
    """The child process: this interpreter running the CLI (or the frozen app itself)."""
    program = [sys.executable] if getattr(sys, "frozen", False) else [sys.executable, "-m", "app"]
    args = ["train", settings.image_dir, "-o", settings.models_dir, "--name", settings.model_name(),
            "--backbone", settings.backbone, "--epochs", str(settings.epochs),
            "--learning-rate", str(settings.learning_rate),
            "--validation-percent", str(settings.validation_percent), "--test-percent", str(settings.test_percent),
            "--seed", str(settings.seed), "--tflite", settings.tflite, "--json"]
    if settings.augment:
        args.append("--augment")
    if settings.fine_tune:
        args.append("--fine-tune")
    return program + args


class FolderPage(QWizardPage):
    def __init__(self):
        super().__init__()
        self.setTitle("Choose your photos")
        self.setSubTitle("One sub-folder per class: photos/cats/*.jpg, photos/dogs/*.jpg … "
                         "Drop a folder here, browse for one, or start with the bundled sample.")
        self.setAcceptDrops(True)
        self.folder = QLineEdit(setting("train/last_folder", ""))
        self.folder.setPlaceholderText("a folder with one sub-folder of images per class")
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
        layout.addWidget(sample, 0, Qt.AlignmentFlag.AlignLeft)
        layout.addStretch(1)
        layout.addWidget(hint)
        self.registerField("folder*", self.folder)
        browse.clicked.connect(self._browse)
        sample.clicked.connect(lambda: self.folder.setText(str(sample_data_dir())))

    def _browse(self):
        folder = QFileDialog.getExistingDirectory(self, "Choose the training folder", self.folder.text())
        if folder:
            self.folder.setText(folder)

    def dragEnterEvent(self, event):
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event):
        folders = [u.toLocalFile() for u in event.mimeData().urls() if Path(u.toLocalFile()).is_dir()]
        if folders:
            self.folder.setText(folders[0])
            event.acceptProposedAction()

    def validatePage(self) -> bool:
        path = Path(self.folder.text()).expanduser()
        if not path.is_dir():
            self.wizard().message.emit(f"{path} is not a folder.", "error")
            return False
        remember("train/last_folder", str(path))
        return True


class ReviewPage(QWizardPage):
    def __init__(self):
        super().__init__()
        self.setTitle("Review the data set")
        self.setSubTitle("Images per class, a few examples of each, and any files that will be skipped.")
        self.dataset = None
        self.summary = QLabel("Scanning…")
        self.summary.setWordWrap(True)
        self.warnings = QLabel()
        self.warnings.setWordWrap(True)
        self.warnings.setStyleSheet("color: #7a5200;")
        import pyqtgraph as pg
        self.chart = pg.PlotWidget(background=None)
        self.chart.setMinimumHeight(160)
        self.chart.setLabel("left", "images")
        self.chart.setMouseEnabled(False, False)
        self.thumbs = thumbnail_grid(56, 96, 84)
        self.skipped = read_only_table(["Skipped file", "Why"])
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.chart)
        splitter.addWidget(self.thumbs)
        splitter.addWidget(self.skipped)
        splitter.setSizes([180, 320, 140])
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addWidget(self.warnings)
        layout.addWidget(splitter, 1)

    def initializePage(self):
        self.dataset = None
        self.summary.setText("Scanning…")
        self.summary.setStyleSheet("")
        self.warnings.clear()
        self.thumbs.clear()
        self.skipped.setRowCount(0)
        self.chart.clear()
        folder = self.field("folder")
        run_in_background(lambda: self._scan(folder), self._show, self._failed, self)
        self.completeChanged.emit()

    @staticmethod
    def _scan(folder):
        data = scan(folder)
        examples = []
        for label, name in enumerate(data.classes):
            for item in [i for i in data.items if i.label == label][:5]:
                examples.append((name, thumbnail(item.path, 56)))
        return data, examples

    def _show(self, result):
        import pyqtgraph as pg

        data, examples = result
        self.dataset = data
        counts = [sum(data.counts()[c].values()) for c in data.classes]
        s = data.summary()
        self.summary.setText(f"<b>{s['images']} images in {len(data.classes)} classes</b> — train {s['train']}, "
                             f"validation {s['validation']}, test {s['test']}; {s['skipped_count']} skipped.")
        self.warnings.setText("\n".join(f"⚠ {w}" for w in data.warnings))
        self.chart.addItem(pg.BarGraphItem(x=list(range(len(counts))), height=counts, width=0.6, brush="#1a73e8"))
        self.chart.getAxis("bottom").setTicks([[(i, c) for i, c in enumerate(data.classes)]])
        for name, image in examples:
            item = QListWidgetItem(name)
            if not image.isNull():
                item.setIcon(QPixmap.fromImage(image))
            item.setToolTip(name)
            self.thumbs.addItem(item)
        self.skipped.setRowCount(len(data.skipped))
        for r, skipped in enumerate(data.skipped):
            self.skipped.setItem(r, 0, QTableWidgetItem(str(skipped.path.relative_to(data.root))))
            self.skipped.setItem(r, 1, QTableWidgetItem(skipped.reason))
        self.skipped.setVisible(bool(data.skipped))
        self.completeChanged.emit()

    def _failed(self, exc):
        text = one_sentence(exc)
        self.summary.setText(text[0].upper() + text[1:] + ("." if not text.endswith(".") else ""))
        self.summary.setStyleSheet("color: #b3261e; font-weight: bold;")
        if not isinstance(exc, DatasetError):
            self.wizard().message.emit(text, "error")
        self.completeChanged.emit()

    def isComplete(self) -> bool:
        return self.dataset is not None


class OptionsPage(QWizardPage):
    def __init__(self):
        super().__init__()
        self.setTitle("Model options")
        self.setSubTitle("The defaults work well; open Advanced to change training.")
        self.backbone = QComboBox()
        self.backbone.setEditable(True)
        self.backbone.addItems(BACKBONE_CHOICES)
        self.backbone.setCurrentText(setting("train/backbone", BACKBONE_CHOICES[0]))
        self.backbone.setToolTip("Bundled EfficientNet-Lite (works offline), a TF Hub / Kaggle feature-vector "
                                 "handle (needs internet), or a local SavedModel folder")
        self.models_dir = QLineEdit(default_models_dir())
        browse = QPushButton(icon("mdi6.folder-open"), "")
        browse.setToolTip("Choose where models are saved")
        out_row = QHBoxLayout()
        out_row.addWidget(self.models_dir, 1)
        out_row.addWidget(browse)
        self.name = QLineEdit()
        form = QFormLayout()
        form.addRow("Backbone", self.backbone)
        form.addRow("Save models in", out_row)
        form.addRow("Model name", self.name)

        defaults = TrainSettings("", "")
        self.epochs = QSpinBox(minimum=1, maximum=1000, value=defaults.epochs)
        self.learning_rate = QDoubleSpinBox(decimals=5, minimum=1e-5, maximum=1.0, singleStep=0.0005,
                                            value=defaults.learning_rate)
        self.validation = QDoubleSpinBox(minimum=0, maximum=45, value=defaults.validation_percent, suffix=" %")
        self.test = QDoubleSpinBox(minimum=0, maximum=45, value=defaults.test_percent, suffix=" %")
        self.augment = QCheckBox("Add augmented copies (mirror, zoom, brightness)")
        self.fine_tune = QCheckBox("Fine-tune the backbone (slow; for large data sets)")
        self.seed = QSpinBox(minimum=0, maximum=2 ** 31 - 1, value=defaults.seed)
        self.tflite = QComboBox()
        self.tflite.addItems(["float", "dynamic", "int8", "none"])
        from superqt import QCollapsible
        advanced = QCollapsible("Advanced")
        inner = QWidget()
        grid = QFormLayout(inner)
        grid.addRow("Most epochs (early stopping)", self.epochs)
        grid.addRow("Learning rate", self.learning_rate)
        grid.addRow("Validation split", self.validation)
        grid.addRow("Test split", self.test)
        grid.addRow("", self.augment)
        grid.addRow("", self.fine_tune)
        grid.addRow("Seed", self.seed)
        grid.addRow("TFLite export", self.tflite)
        advanced.addWidget(inner)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(advanced)
        layout.addStretch(1)
        browse.clicked.connect(self._browse)

    def initializePage(self):
        folder = Path(self.field("folder")).expanduser().resolve()
        if not self.name.text():
            self.name.setText(TrainSettings(str(folder), "").model_name())

    def _browse(self):
        folder = QFileDialog.getExistingDirectory(self, "Save models in", self.models_dir.text())
        if folder:
            self.models_dir.setText(folder)

    def settings(self) -> TrainSettings:
        return TrainSettings(
            image_dir=str(Path(self.field("folder")).expanduser().resolve()),
            models_dir=str(Path(self.models_dir.text()).expanduser()), name=self.name.text().strip() or None,
            backbone=self.backbone.currentText().strip() or BACKBONE_CHOICES[0], epochs=self.epochs.value(),
            learning_rate=self.learning_rate.value(), validation_percent=self.validation.value(),
            test_percent=self.test.value(), augment=self.augment.isChecked(), fine_tune=self.fine_tune.isChecked(),
            seed=self.seed.value(), tflite=self.tflite.currentText())

    def validatePage(self) -> bool:
        if not self.models_dir.text().strip():
            self.wizard().message.emit("Choose where to save the model.", "error")
            return False
        remember("train/models_dir", self.models_dir.text().strip())
        remember("train/backbone", self.backbone.currentText().strip())
        return True


class TrainingPage(QWizardPage):
    finished_ok = Signal(dict)

    def __init__(self):
        super().__init__()
        self.setTitle("Training")
        self.setSubTitle("Features are computed once and cached, so training again on the same photos is quick.")
        self.process: QProcess | None = None
        self.done_event: dict | None = None
        self.error: str | None = None
        self.stage = QLabel("Starting…")
        self.progress = QProgressBar()
        self.eta = QLabel()
        self.cancel_button = QPushButton(icon("mdi6.stop"), "Cancel training")
        import pyqtgraph as pg
        self.loss_plot = pg.PlotWidget(background=None, title="loss")
        self.acc_plot = pg.PlotWidget(background=None, title="accuracy")
        for plot in (self.loss_plot, self.acc_plot):
            plot.addLegend(offset=(-10, 10))
            plot.setLabel("bottom", "epoch")
            plot.setMinimumHeight(150)
        self.curves = {
            "loss": self.loss_plot.plot(pen=pg.mkPen("#1a73e8", width=2), name="train"),
            "val_loss": self.loss_plot.plot(pen=pg.mkPen("#f9ab00", width=2), name="validation"),
            "accuracy": self.acc_plot.plot(pen=pg.mkPen("#1a73e8", width=2), name="train"),
            "val_accuracy": self.acc_plot.plot(pen=pg.mkPen("#f9ab00", width=2), name="validation"),
        }
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(2000)
        self.log.setPlaceholderText("Log")
        plots = QHBoxLayout()
        plots.addWidget(self.loss_plot)
        plots.addWidget(self.acc_plot)
        top = QGridLayout()
        top.addWidget(self.stage, 0, 0)
        top.addWidget(self.eta, 0, 1, Qt.AlignmentFlag.AlignRight)
        top.addWidget(self.progress, 1, 0, 1, 2)
        top.addWidget(self.cancel_button, 1, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(plots, 2)
        layout.addWidget(self.log, 1)
        self.cancel_button.clicked.connect(self.cancel)

    def initializePage(self):
        self.done_event, self.error, self.history = None, None, {k: [] for k in self.curves}
        for curve in self.curves.values():
            curve.setData([], [])
        self.log.clear()
        self.stage.setText("Starting…")
        self.progress.setRange(0, 0)
        self.eta.clear()
        self.cancel_button.setEnabled(True)
        settings = self.wizard().page(2).settings()
        command = train_command(settings)
        self.log.appendPlainText("$ " + " ".join(command))
        self.process = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        env.insert("RETRAIN_STUDIO_NICE", "10")  # training yields the CPU to the window, which stays smooth
        self.process.setProcessEnvironment(env)
        self.process.readyReadStandardOutput.connect(self._read_stdout)
        self.process.readyReadStandardError.connect(self._read_stderr)
        self.process.finished.connect(self._finished)
        self.process.errorOccurred.connect(self._process_error)
        self._buffer = b""
        self._stage_start = time.monotonic()
        self.process.start(command[0], command[1:])
        self.completeChanged.emit()

    def _read_stdout(self):
        self._buffer += bytes(self.process.readAllStandardOutput())
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if line.strip():
                try:
                    self._handle(json.loads(line))
                except json.JSONDecodeError:
                    self.log.appendPlainText(line.decode("utf-8", "replace"))

    def _read_stderr(self):
        text = bytes(self.process.readAllStandardError()).decode("utf-8", "replace")
        for line in text.splitlines():
            if line.strip() and not line.startswith(("I0000", "W0000", "WARNING: All log", "E0000")):
                self.log.appendPlainText(line)
                if line.startswith("retrain-studio: "):
                    self.error = line[len("retrain-studio: "):]

    def _handle(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "stage":
            self.stage.setText(STAGE_NAMES.get(event["stage"], event["stage"]) + " — " + event["message"])
            self.log.appendPlainText(event["message"])
            self.progress.setRange(0, 0)
            self.eta.clear()
        elif kind == "progress":
            stage, done, total = event["stage"], event["done"], event["total"]
            if getattr(self, "_progress_stage", None) != stage:
                self._progress_stage, self._stage_start, self._stage_first = stage, time.monotonic(), done
            self.stage.setText(STAGE_NAMES.get(stage, stage))
            self.progress.setRange(0, max(total, 1))
            self.progress.setValue(done)
            self.progress.setFormat(f"{done} / {total}")
            rate_done = done - self._stage_first
            elapsed = time.monotonic() - self._stage_start
            if rate_done > 0 and done < total and elapsed > 1:
                self.eta.setText(f"about {max(1, round((total - done) * elapsed / rate_done))} s left")
            elif done >= total:
                self.eta.clear()
        elif kind == "epoch":
            for key in self.curves:
                if key in event:
                    self.history[key].append((event["epoch"], event[key]))
                    xs, ys = zip(*self.history[key])
                    self.curves[key].setData(list(xs), list(ys))
        elif kind == "dataset":
            self.log.appendPlainText(f"{event['images']} images, {len(event['classes'])} classes, "
                                     f"{event['skipped_count']} skipped")
        elif kind == "warning":
            self.log.appendPlainText("warning: " + event["message"])
        elif kind == "error":
            self.error = event["message"]
        elif kind == "done":
            self.done_event = event

    def _finished(self, code: int, status):
        self._read_stdout()
        self.cancel_button.setEnabled(False)
        self.progress.setRange(0, 1)
        self.eta.clear()
        if code == 0 and self.done_event is not None:
            self.progress.setValue(1)
            self.progress.setFormat("done")
            acc = self.done_event["metrics"]["test_accuracy"]
            self.stage.setText("Finished" + (f": test accuracy {acc:.1%}" if acc is not None else ""))
            self.finished_ok.emit(self.done_event)
        elif getattr(self, "_cancelled", False):
            self.stage.setText("Cancelled; no model version was written.")
            self.progress.setValue(0)
        else:
            text = self.error or f"training stopped unexpectedly (exit code {code})"
            self.stage.setText("Failed: " + text)
            self.wizard().message.emit(text[0].upper() + text[1:], "error")
        self._cancelled = False
        self.process = None
        self.completeChanged.emit()

    def _process_error(self, error):
        if error == QProcess.ProcessError.FailedToStart:
            self.error = "could not start the training process"

    def cancel(self):
        if self.process is not None and self.process.state() != QProcess.ProcessState.NotRunning:
            self._cancelled = True
            self.process.kill()
            self.process.waitForFinished(5000)

    def running(self) -> bool:
        return self.process is not None and self.process.state() != QProcess.ProcessState.NotRunning

    def isComplete(self) -> bool:
        return self.done_event is not None and not self.running()

    def cleanupPage(self):  # Back pressed: stop the run
        self.cancel()


class ResultsPage(QWizardPage):
    """The stored results of the run just finished (the same view as Models → Open results).

    They are saved with the version, so Cancel or Train another discards nothing.
    """

    def __init__(self):
        super().__init__()
        self.setTitle("Results on the test split")
        self.setSubTitle("Images the model never saw while training. Click a cell of the confusion matrix to see "
                         "its images.")
        from .qt_results import ResultsView
        self.view = ResultsView(self)
        # the view's parts, under the names this page always had
        self.accuracy, self.matrix, self.images, self.cell_title = (
            self.view.accuracy, self.view.matrix, self.view.images, self.view.cell_title)
        QVBoxLayout(self).addWidget(self.view)

    def initializePage(self):
        self.view.load(self.wizard().page(3).done_event["model_dir"])


class ExportPage(QWizardPage):
    def __init__(self):
        super().__init__()
        self.setTitle("Your model is ready")
        self.setSubTitle("Saved as a TF Serving version folder, with a TFLite file beside it.")
        self.where = QLabel()
        self.where.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.where.setWordWrap(True)
        self.files = read_only_table(["File", "Size"])
        self.open_button = QPushButton(icon("mdi6.image-search"), "Classify with this model")
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
        layout.addWidget(self.open_button, 0, Qt.AlignmentFlag.AlignLeft)
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

    def initializePage(self):
        version = Path(self.wizard().page(3).done_event["model_dir"])
        self.version_dir = str(version)
        name, models_dir = version.parent.name, version.parent.parent
        self.where.setText(f"<b>{version}</b> (model <b>{name}</b>, version {version.name})")
        files = sorted(p for p in version.rglob("*") if p.is_file())
        self.files.setRowCount(len(files))
        for r, path in enumerate(files):
            self.files.setItem(r, 0, QTableWidgetItem(str(path.relative_to(version))))
            size = QTableWidgetItem(f"{path.stat().st_size / 1e6:.2f} MB")
            size.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.files.setItem(r, 1, size)
        self.docker.setPlainText(docker_command(models_dir, name))
        self.config.setPlainText(models_config({name: f"/models/{name}"}))


class TrainWizard(QWizard):
    message = Signal(str, str)
    open_in_classify = Signal(str)
    trained = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Train a classifier")
        self.setWizardStyle(QWizard.WizardStyle.ModernStyle)
        self.setOption(QWizard.WizardOption.NoCancelButton, False)
        for page in (FolderPage(), ReviewPage(), OptionsPage(), TrainingPage(), ResultsPage(), ExportPage()):
            self.addPage(page)
        self.page(3).finished_ok.connect(lambda event: self.trained.emit(event["model_dir"]))
        self.rejected.connect(self.page(3).cancel)
        self.setButtonText(QWizard.WizardButton.FinishButton, "Train another")
        self.page(2).setButtonText(QWizard.WizardButton.NextButton, "Train")
        self.finished.connect(self._start_over)

    def _start_over(self, _result) -> None:
        """Embedded in the main window, the wizard never closes: Finish begins a new run."""
        self.page(3).cancel()
        self.restart()
        self.show()
