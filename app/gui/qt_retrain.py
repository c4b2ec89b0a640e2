"""Models → Retrain: the next version of a model, from its recorded folders and settings (editable first), trained
in a child process while the user keeps working; when it ends, both versions' accuracy and the per-class changes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QMessageBox,
    QVBoxLayout,
)

from app.core.atomic import remove_stale_temps
from app.core.training import TrainSettings, class_change, count_new_images
from app.store import VersionInfo, read_version, version_folders

from .qt_common import Job, ask, one_sentence, run_in_background, sentence, set_tone
from .qt_train_wizard import BackboneBox, SettingsForm, SourceList
from .qt_training import STAGE_NAMES, EventChild, OverallProgress, train_command


class _Stale(Exception):
    """The count was replaced by a newer one (the folders or settings changed meanwhile)."""


class RetrainDialog(QDialog):
    """The recorded folders and settings of a model's newest version, to change before retraining it, and how many
    images are new (only those go through the backbone).  ``chosen()`` gives what to run once it is accepted."""

    def __init__(self, parent, settings: TrainSettings, newest: VersionInfo):
        super().__init__(parent)
        self.setObjectName("retrain_dialog")
        self.setWindowTitle(f"Retrain {settings.name}")
        self.resize(780, 620)
        self.recorded, self.allow_new_classes = settings, False
        self.setAcceptDrops(True)
        self.count_job: Job | None = None
        intro = QLabel(
            f"Trains <b>{settings.name}</b> version {int(newest.version) + 1} in the background from these folders "
            f"and settings (recorded with version {newest.version}, test accuracy {newest.accuracy_text()}). "
            "You can keep classifying meanwhile."
        )
        intro.setWordWrap(True)
        self.sources = SourceList("retrain_sources", "Image folders", "Images from", self._first_folder)
        self.sources.set_sources(settings.all_sources())
        self.backbone = BackboneBox(settings.backbone)
        self.form = SettingsForm()
        self.form.load(settings)
        self.new_images = QLabel()
        self.new_images.setObjectName("new_images")
        self.new_images.setAccessibleName("New images")
        self.new_images.setWordWrap(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.start_button = self.buttons.addButton("Retrain", QDialogButtonBox.ButtonRole.AcceptRole)
        self.start_button.setObjectName("start_retrain")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.form.layout().insertRow(0, "Backbone", self.backbone)  # one column of labels for every setting
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(QLabel("Image folders (classes of the same name merge):"))
        layout.addWidget(self.sources, 1)
        layout.addWidget(self.form)
        layout.addWidget(self.new_images)
        layout.addWidget(self.buttons)
        self.recount = QTimer(self, singleShot=True, interval=300)  # one count after a burst of edits
        self.recount.timeout.connect(self.count)
        self.sources.changed.connect(self.recount.start)
        self.backbone.currentTextChanged.connect(lambda _text: self.recount.start())
        self.form.augment.toggled.connect(lambda _on: self.recount.start())
        for spin in (self.form.validation, self.form.test):
            spin.valueChanged.connect(lambda _value: self.recount.start())
        self.finished.connect(lambda _result: self._stop_count())
        self.count()

    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        """Folders dropped on the dialog are added, as on the wizard's first page."""
        folders = [u.toLocalFile() for u in event.mimeData().urls() if Path(u.toLocalFile()).is_dir()]
        for folder in folders:
            self.sources.add_folder(folder)
        if folders:
            event.acceptProposedAction()

    def _first_folder(self) -> str:
        sources = self.sources.sources()
        return sources[0].path if sources else ""

    def chosen(self) -> TrainSettings:
        """The settings as the dialog shows them: the recorded ones, with the user's folders and values."""
        sources = self.sources.sources()
        return self.form.applied(
            replace(
                self.recorded,
                sources=sources,
                image_dir=sources[0].path if sources else "",
                backbone=self.backbone.backbone_id(),
            )
        )

    def _stop_count(self) -> None:
        if self.count_job is not None:
            self.count_job.cancel()
            self.count_job = None

    def count(self) -> None:
        """Count the new images of the folders shown, in the background (a scan: every file is read once)."""
        self._stop_count()
        settings = self.chosen()
        problem = SourceList.problem(settings.all_sources()) if settings.sources else "Add at least one folder."
        if problem:
            self._say(problem, "bad")
            return
        self._say("Counting new images…", None)

        def work(job: Job):
            def on_event(event: dict) -> None:
                if job.cancelled.is_set():
                    raise _Stale()
                if event.get("event") == "progress":
                    job.progress((event["done"], event["total"]))

            new, data = count_new_images(settings, on_event)
            return new, len(data.items), len(data.classes)

        def current(handler):
            return lambda value: job is self.count_job and handler(value)

        job = self.count_job = run_in_background(
            work, current(self._counted), current(self._count_failed), self, current(self._counting)
        )

    def _counting(self, value: tuple[int, int]) -> None:
        done, total = value
        self._say(f"Counting new images: checked {done} of {total} files…", None)

    def _counted(self, value: tuple[int, int, int]) -> None:
        new, images, classes = value
        self._say(
            f"{new} new image{'s' * (new != 1)} of {images} in {classes} classes: only "
            f"{'these go' if new != 1 else 'this goes'} through the backbone ({images - new} already cached).",
            None,
        )

    def _count_failed(self, exc: BaseException) -> None:
        if not isinstance(exc, _Stale):
            self._say(sentence(one_sentence(exc)), "bad")

    def _say(self, text: str, kind: str | None) -> None:
        self.new_images.setText(text)
        set_tone(self.new_images, kind, bold=kind == "bad")

    def accept(self) -> None:
        """Start only with usable folders, and after asking when the classes differ from the newest version's."""
        settings = self.chosen()
        problem = SourceList.problem(settings.all_sources()) if settings.sources else "Add at least one folder."
        if problem:
            self._say(problem, "bad")
            return
        change = class_change(settings)
        # the same rule as a new training under an existing name, said before anything starts
        if change and not ask(
            self,
            QMessageBox.Icon.Warning,
            "Classes changed",
            f"{settings.name} was trained on {', '.join(change[0])}; its folders now have "
            f"{', '.join(change[1])}. Clients of {settings.name} would switch class sets.",
            "Retrain anyway",
        ):
            return
        self.allow_new_classes = bool(change)
        super().accept()


@dataclass
class ClassChange:
    """One class's test numbers in the previous and the new version (None: no test image of it there)."""

    name: str
    old_accuracy: float | None
    new_accuracy: float | None
    old_f1: float | None
    new_f1: float | None
    in_old: bool = True  # the class is one of the version's classes
    in_new: bool = True

    def size(self) -> float:
        """How much it moved: the larger of the accuracy and F1 changes; a class added or dropped counts fully, one
        not measured in either version not at all."""
        if self.in_old != self.in_new:
            return 1.0
        pairs = [(self.old_accuracy, self.new_accuracy), (self.old_f1, self.new_f1)]
        return max((abs(b - a) for a, b in pairs if a is not None and b is not None), default=0.0)

    def accuracy_text(self) -> str:
        return " → ".join("—" if x is None else f"{x:.0%}" for x in (self.old_accuracy, self.new_accuracy))

    def f1_text(self) -> str:
        return " → ".join("—" if x is None else f"{x:.2f}" for x in (self.old_f1, self.new_f1))

    def text(self) -> str:
        return f"{self.name} {self.accuracy_text()} (F1 {self.f1_text()})"


def per_class(version: Path) -> dict[str, dict]:
    """{class: {"recall" (the class's accuracy), "f1", "support"}} of a version's test split, from its stored
    results (any number of classes), else from metadata.json; {} when neither can be read."""
    from app.core.evaluation import ResultsError, load_results, per_class_metrics

    try:
        results = load_results(version)
        return per_class_metrics(results.confusion, results.classes)
    except ResultsError:
        rows = read_version(version).metadata.metrics.get("per_class")
        return rows if isinstance(rows, dict) else {}


def class_changes(old: Path, new: Path) -> list[ClassChange]:
    """Every class of either version, old → new accuracy and F1 on their test splits, largest changes first."""
    before, after = per_class(old), per_class(new)

    def number(rows: dict, name: str, key: str) -> float | None:
        row = rows.get(name)
        value = row.get(key) if isinstance(row, dict) and row.get("support", 1) else None
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    changes = [
        ClassChange(
            name,
            number(before, name, "recall"),
            number(after, name, "recall"),
            number(before, name, "f1"),
            number(after, name, "f1"),
            name in before,
            name in after,
        )
        for name in sorted(set(before) | set(after))
    ]
    return sorted(changes, key=lambda c: (-c.size(), c.name))


class Retrain:
    """One background retraining of a model: a training child (TensorFlow never runs in the window's process), its
    events turned into the Models page's status line, the sidebar's progress and messages for every page."""

    def __init__(self, view):
        self.view = view
        self.child: EventChild | None = None
        self.model: Path | None = None

    def running(self) -> bool:
        return self.child is not None and self.child.running()

    def start(self, settings: TrainSettings, allow_new_classes: bool = False) -> None:
        """Train ``settings`` as the next version of its model (``models_dir/name``)."""
        self.model = Path(settings.models_dir) / settings.model_name()
        versions = version_folders(self.model)  # none when the user deleted them all meanwhile
        self.previous = read_version(versions[-1][1]) if versions else None
        self.overall, self.percent = OverallProgress(settings.fine_tune), 0
        self.child = EventChild(train_command(settings, allow_new_classes), self.view)
        self.child.event.connect(self._event)
        self.child.ended.connect(self._ended)
        self._status(0, f"Retraining {self.model.name}: starting…")
        self.child.start()

    def cancel(self) -> None:
        """Stop a running retraining (the window is closing); a half-written version is removed."""
        if self.running():
            self.child.cancel()

    def _status(self, percent: int, text: str) -> None:
        self.percent = max(self.percent, percent)
        self.view.retrain_status.setText(text)
        self.view.retrain_progress.emit(self.percent, text)

    def _event(self, event: dict) -> None:
        kind, name = event["event"], self.model.name
        if kind == "new_images":
            count = event["count"]
            self.view.retrain_message.emit(
                f"Retraining {name} in the background: {count} new "
                f"image{'s' * (count != 1)} of {event['images']}. You can keep classifying.",
                "info",
            )
        elif kind in ("stage", "progress", "dataset"):
            percent = int(100 * self.overall.take(event))
            if kind != "dataset":
                stage = STAGE_NAMES.get(event["stage"], event["stage"]).lower()
                self._status(percent, f"Retraining {name}: {stage} ({max(self.percent, percent)}%)")

    def _ended(self, outcome) -> None:
        name, previous = self.model.name, self.previous
        self.view.show_changes(None)
        if outcome.ok and outcome.done is not None:
            new = read_version(outcome.done["model_dir"])
            changes = class_changes(previous.path, new.path) if previous else []
            moved = [c for c in changes if c.size() >= 0.005]
            compared = (
                f" (version {previous.version}: {previous.accuracy_text()}). "
                + (
                    "Per class, largest changes first: "
                    + "; ".join(c.text() for c in moved[:3])
                    + ("; …" if len(moved) > 3 else "")
                    + "."
                    if moved
                    else "No class changed."
                )
                if previous
                else "."
            )
            self.view.retrain_message.emit(
                f"Retrained {name}: version {new.version} has test accuracy {new.accuracy_text()}{compared}", "info"
            )
            text = f"Retrained {name}: version {new.version}, test accuracy {new.accuracy_text()}."
            if previous:
                self.view.show_changes((previous, new, changes))
        else:
            remove_stale_temps(self.model)  # a child stopped while exporting leaves a hidden temporary folder
            text = f"Retraining {name} " + (
                "was cancelled." if outcome.cancelled else "failed: " + sentence(outcome.reason("the retraining"))
            )
            if not outcome.cancelled:
                self.view.retrain_message.emit(text, "error")
        self.child = None
        self.view.retrain_status.setText(text)
        self.view.retrain_progress.emit(-1, text)
        self.view.refresh()


def choose_and_start(view, version: Path) -> bool:
    """Models → Retrain: the dialog of ``version``'s model; starts the retraining when the user accepts."""
    from app.core.training import TrainingError, recorded_settings

    try:
        settings, _ = recorded_settings(version.parent)
    except TrainingError as exc:
        view.message.emit(sentence(str(exc)), "error")
        return False
    dialog = RetrainDialog(view, settings, read_version(version_folders(version.parent)[-1][1]))
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    dialog.accepted.connect(lambda: view.start_retraining(dialog.chosen(), dialog.allow_new_classes))
    dialog.open()
    return True
