"""The child processes the GUI trains, retrains and reviews with: ``retrain-studio train|review ... --json``.

TensorFlow never starts in the window's process: the wizard, Models → Retrain and *Find problems* each start
the CLI as a child (``EventChild``), read its JSON events line by line and learn why a run failed from its last
``error`` event (never from stderr, which is only shown in the log).  The command comes from the CLI's own
``train_arguments``, so every training setting reaches the child.  Cancel kills the child: the export is atomic,
so a killed run leaves no version behind.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, Signal

from app.cli import source_arguments, train_arguments

STAGE_NAMES = {
    "start": "Starting",
    "scan": "Scanning images",
    "backbone": "Loading the backbone",
    "embed": "Computing features",
    "embed_train": "Computing features (train)",
    "embed_validation": "Computing features (validation)",
    "embed_test": "Computing features (test)",
    "train": "Training the classifier",
    "fine_tune": "Fine-tuning the backbone",
    "calibrate": "Calibrating confidence",
    "evaluate": "Evaluating",
    "export": "Exporting",
    "review": "Reviewing the data",
    "thumbnails": "Making thumbnails",
}
# Expected share of a run's time per stage (measured on the sample: the backbone load and the TFLite export
# dominate small sets, features large ones); features are shared among the splits by their sizes.
STAGE_WEIGHTS = {
    "start": 6,
    "scan": 4,
    "backbone": 18,
    "embed": 36,
    "train": 8,
    "fine_tune": 0,
    "calibrate": 1,
    "evaluate": 1,
    "export": 27,
}
FINE_TUNE_WEIGHT = 150
STAGE_ORDER = [
    "start",
    "scan",
    "backbone",
    "embed_train",
    "embed_validation",
    "embed_test",
    "train",
    "fine_tune",
    "calibrate",
    "evaluate",
    "export",
]
QUIET_STDERR = (  # library lines, not for people: gRPC/absl start-up, LiteRT's "INFO: Created ... XNNPACK delegate"
    "I0000",
    "W0000",
    "WARNING: All log",
    "E0000",
    "INFO: ",
)


def child_command(arguments: list[str]) -> list[str]:
    """This interpreter running the CLI with ``arguments`` (or the frozen app itself)."""
    program = [sys.executable] if getattr(sys, "frozen", False) else [sys.executable, "-m", "app"]
    return program + list(arguments)


def train_command(settings, allow_new_classes: bool = False) -> list[str]:
    """The training child for ``settings`` (a ``TrainSettings``): every setting, events as JSON lines."""
    return child_command(train_arguments(settings, allow_new_classes=allow_new_classes))


def review_command(sources, backbone: str | None = None) -> list[str]:
    """The data-review child for every one of ``sources`` (``dataset.Source`` objects or folders)."""
    chosen = [f"--backbone={backbone}"] if backbone else []
    return child_command(["review", "--json", *chosen, *source_arguments(sources)])


@dataclass
class Outcome:
    """How a child ended: its exit code, its ``done`` event, the message of its ``error`` event, or cancelled."""

    code: int
    done: dict | None = None
    error: str | None = None
    cancelled: bool = False

    @property
    def ok(self) -> bool:
        return self.code == 0 and not self.cancelled

    def reason(self, what: str = "the process") -> str:
        """Why it failed, in the child's own words when it said them."""
        return self.error or f"{what} stopped unexpectedly (exit code {self.code})"


class EventChild(QObject):
    """One child process emitting JSON events: ``event(dict)`` for each, ``log(str)`` for any other line (stderr
    and stray stdout, for a log view), ``ended(Outcome)`` once at the end.  ``cancel()`` kills it."""

    event = Signal(object)
    log = Signal(str)
    ended = Signal(object)

    def __init__(self, command: list[str], parent: QObject):
        super().__init__(parent)
        self.command = command
        self.done: dict | None = None
        self.error: str | None = None
        self.cancelled = False
        self._buffer = b""
        self._error_buffer = b""
        self._ended = False
        self.process = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        env.insert("RETRAIN_STUDIO_NICE", "10")  # the child yields the CPU to the window, which stays smooth
        self.process.setProcessEnvironment(env)
        self.process.readyReadStandardOutput.connect(self._read_stdout)
        self.process.readyReadStandardError.connect(self._read_stderr)
        self.process.finished.connect(lambda code, _status: self._end(code))
        self.process.errorOccurred.connect(self._process_error)

    def start(self) -> None:
        self.process.start(self.command[0], self.command[1:])

    def running(self) -> bool:
        return not self._ended and self.process.state() != QProcess.ProcessState.NotRunning

    def cancel(self) -> None:
        """Kill the child and wait for it (a half-written version is the caller's to tidy, by its name)."""
        if self.running():
            self.cancelled = True
            self.process.kill()
            self.process.waitForFinished(5000)

    def _read_stdout(self) -> None:
        self._buffer += bytes(self.process.readAllStandardOutput())
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in filter(bytes.strip, lines):
            try:
                event = json.loads(line)
                kind = event["event"]
            except (ValueError, KeyError, TypeError):
                self.log.emit(line.decode("utf-8", "replace"))
                continue
            if kind == "error":
                self.error = str(event.get("message") or "") or None
            elif kind == "done":
                self.done = event
            self.event.emit(event)

    def _read_stderr(self, final: bool = False) -> None:
        """Log whole stderr lines only: a read can end mid-line ("INFO:" now, the rest next time), and only
        a whole line can be told to be library noise."""
        self._error_buffer += bytes(self.process.readAllStandardError())
        *lines, self._error_buffer = self._error_buffer.split(b"\n")
        if final:
            lines, self._error_buffer = [*lines, self._error_buffer], b""
        for line in (raw.decode("utf-8", "replace").rstrip("\r") for raw in lines):
            if line.strip() and not line.startswith(QUIET_STDERR):
                self.log.emit(line)

    def _process_error(self, error) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self.error = "could not start the child process"
            self._end(-1)

    def _end(self, code: int) -> None:
        if self._ended:
            return
        self._read_stdout()
        self._read_stderr(final=True)
        self._ended = True
        self.ended.emit(Outcome(code, self.done, self.error, self.cancelled))


class OverallProgress:
    """One fraction (0..1) across a run's stages, weighted by their usual share of the time; it never moves back.

    Args:
        fine_tune: whether the run fine-tunes (a long stage then).
    """

    def __init__(self, fine_tune: bool = False):
        self.weights = dict(STAGE_WEIGHTS, fine_tune=FINE_TUNE_WEIGHT if fine_tune else 0)
        self.split_share = {"train": 0.8, "validation": 0.1, "test": 0.1}
        self.stage, self.fraction = "start", 0.0

    def weight(self, stage: str) -> float:
        if stage.startswith("embed_"):
            return self.weights["embed"] * self.split_share.get(stage[len("embed_") :], 0.0)
        return self.weights.get(stage, 0)

    def dataset(self, event: dict) -> None:
        """The scan's split sizes share the feature stage among the splits."""
        sizes = {k: event.get(k, 0) for k in ("train", "validation", "test")}
        if sum(sizes.values()):
            self.split_share = {k: v / sum(sizes.values()) for k, v in sizes.items()}

    def advance(self, stage: str, done: float = 0.0) -> float:
        """Move to ``done`` (0..1) through ``stage``; returns the overall fraction (stages it does not know: as is)."""
        stage = "embed_train" if stage == "embed" else stage
        if stage in STAGE_ORDER:
            before = sum(self.weight(s) for s in STAGE_ORDER[: STAGE_ORDER.index(stage)])
            total = sum(self.weight(s) for s in STAGE_ORDER)
            self.fraction = max(self.fraction, min(1.0, (before + self.weight(stage) * done) / total))
            self.stage = stage
        return self.fraction

    def take(self, event: dict) -> float:
        """Follow one child event (stage, progress, dataset); returns the overall fraction."""
        kind = event.get("event")
        if kind == "dataset":
            self.dataset(event)
        elif kind == "stage":
            return self.advance(event["stage"])
        elif kind == "progress":
            return self.advance(event["stage"], event["done"] / event["total"] if event["total"] else 1.0)
        return self.fraction
