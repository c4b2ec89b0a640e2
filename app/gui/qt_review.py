"""The wizard's data review: likely wrong labels, duplicates (leaks highlighted) and outliers as thumbnails.

The review runs in a child process (``retrain-studio review --json``), like training, so TensorFlow never
starts in the GUI process.  Nothing changes without a click: *Exclude* writes the exclusion file
(``IMAGE_DIR/.retrain-studio/excluded.txt``), *Move to suggested class* moves the file inside IMAGE_DIR
under a free name; *Undo* reverses the last action, *Include again* an exclusion.  Nothing is deleted.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
)

from app.core import review
from app.core.dataset import FOLDER, Dataset, class_names, excluded_files, set_excluded

from .qt_common import (
    icon,
    load_thumbnails,
    one_sentence,
    thumbnail_grid,
    tone,
)
from .qt_training import EventChild, review_command

LEAK_COLOUR = "#f6c7c3"
STAGES = {
    "scan": "Scanning images",
    "backbone": "Loading the backbone",
    "embed": "Computing features",
    "thumbnails": "Making thumbnails",
    "review": "Looking for problems",
}


class ReviewDialog(QDialog):
    """Runs the review of every folder of ``data`` and shows its findings; ``changed`` tells the caller to scan
    again when it closes.  An exclusion is recorded in the folder the image came from; a move stays inside it."""

    def __init__(self, parent, data: Dataset, backbone: str | None = None):
        super().__init__(parent)
        self.setObjectName("data_review")
        self.setWindowTitle("Find problems in the data")
        self.resize(900, 640)
        self.data, self.changed, self.report = data, False, None
        self.undo_stack: list[tuple[str, list]] = []
        self.status = QLabel("Starting the review…")
        self.status.setObjectName("review_status")
        self.status.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setObjectName("review_progress")
        self.progress.setRange(0, 0)
        self.note = QLabel(
            "Select images, then exclude them from training or move them to the suggested class. "
            "Nothing is deleted; Undo reverses the last action."
        )
        self.note.setObjectName("review_note")
        self.note.setWordWrap(True)
        self.tabs = QTabWidget()
        self.grids = {}
        for key, name in (
            ("label_issues", "Likely wrong labels"),
            ("duplicates", "Duplicates"),
            ("outliers", "Outliers"),
        ):
            grid = thumbnail_grid(96, 170, 150)
            grid.setObjectName(key)
            grid.setAccessibleName(name)
            grid.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
            grid.itemSelectionChanged.connect(self.update_buttons)
            self.grids[key] = grid
            self.tabs.addTab(grid, name)
        self.tabs.currentChanged.connect(self.update_buttons)
        self.exclude_button = QPushButton(icon("mdi6.eye-off"), "Exclude")
        self.exclude_button.setToolTip("Leave the selected images out of training (recorded in the image folder)")
        self.include_button = QPushButton(icon("mdi6.eye"), "Include again")
        self.move_button = QPushButton(icon("mdi6.folder-move"), "Move to suggested class")
        self.move_button.setToolTip("Move the selected files into the class the review suggests")
        self.undo_button = QPushButton(icon("mdi6.undo"), "Undo")
        for widget, name in (
            (self.exclude_button, "exclude"),
            (self.include_button, "include_again"),
            (self.move_button, "move_to_suggested"),
            (self.undo_button, "undo"),
        ):
            widget.setObjectName(name)
            widget.setAccessibleName(widget.text())
        actions = QHBoxLayout()
        for widget in (self.exclude_button, self.include_button, self.move_button, self.undo_button):
            actions.addWidget(widget)
        actions.addStretch(1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.status)
        layout.addWidget(self.progress)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(self.note)
        layout.addLayout(actions)
        layout.addWidget(buttons)
        self.exclude_button.clicked.connect(self.exclude_selected)
        self.include_button.clicked.connect(self.include_selected)
        self.move_button.clicked.connect(self.move_selected)
        self.undo_button.clicked.connect(self.undo)
        self.finished.connect(lambda _result: self.stop())
        self.update_buttons()
        self.process = EventChild(review_command(data.sources, backbone), self)
        self.process.event.connect(self._event)
        self.process.ended.connect(self._finished)
        self.process.start()

    # --- the child process ------------------------------------------------------------------------------------
    def stop(self) -> None:
        self.process.cancel()

    def _event(self, event: dict) -> None:
        kind = event["event"]
        if kind == "stage":
            self.status.setText(STAGES.get(event["stage"], event["stage"]) + "…")
        elif kind == "progress" and event["total"]:
            self.progress.setRange(0, event["total"])
            self.progress.setValue(event["done"])
            self.status.setText(f"{STAGES.get(event['stage'], event['stage'])}: {event['done']} of {event['total']}")
        elif kind == "review":
            self.report = event

    def _finished(self, outcome) -> None:
        self.progress.hide()
        if outcome.cancelled:
            return
        if not outcome.ok or self.report is None:
            self.status.setText("The review failed: " + outcome.reason("the review"))
            self.status.setStyleSheet(f"color: {tone('bad')}; font-weight: bold;")
            return
        self.show_report(self.report)

    def root_of(self, path: str | Path) -> Path:
        """The folder whose exclusions hold ``path``: the source it came from."""
        source = self.data.source_of(path)
        return source.root() if source else self.data.root

    # --- showing the findings ---------------------------------------------------------------------------------
    def show_report(self, report: dict) -> None:
        issues, groups, outliers = report["label_issues"], report["duplicates"], report["outliers"]
        leaks = sum(g["leak"] for g in groups)
        self.status.setText(
            f"Found {len(issues)} likely wrong label{'s' * (len(issues) != 1)}, {len(groups)} "
            f"duplicate group{'s' * (len(groups) != 1)} ({leaks} leak{'s' * (leaks != 1)} between "
            f"splits) and {len(outliers)} outlier{'s' * (len(outliers) != 1)}."
        )
        self.tabs.setTabText(0, f"Likely wrong labels ({len(issues)})")
        self.tabs.setTabText(1, f"Duplicates ({len(groups)})")
        self.tabs.setTabText(2, f"Outliers ({len(outliers)})")
        for row in issues:
            self._add(
                "label_issues",
                row["path"],
                f"{row['given']} → {row['suggested']}\n{row['score']:.2f}",
                suggested=row["suggested"],
            )
        for number, group in enumerate(groups, 1):
            for path, split, name in zip(group["paths"], group["splits"], group.get("classes", [""] * 99)):
                caption = f"group {number}{' · LEAK' if group['leak'] else ''}\n{name} · {split}"
                self._add("duplicates", path, caption, leak=group["leak"])
        for row in outliers:
            self._add("outliers", row["path"], f"{row.get('label', '')}\n{row['score']:.1f}× usual distance")
        excluded = set().union(*(excluded_files(source.root()) for source in self.data.sources))
        for grid in self.grids.values():
            for i in range(grid.count()):
                self._mark(grid.item(i), Path(grid.item(i).data(Qt.ItemDataRole.UserRole)["path"]) in excluded)
        items = [grid.item(i) for grid in self.grids.values() for i in range(grid.count())][:600]
        load_thumbnails(items, [item.data(Qt.ItemDataRole.UserRole)["path"] for item in items], 96, self)
        self.tabs.setCurrentIndex(next((i for i, rows in enumerate((issues, groups, outliers)) if rows), 0))
        self.update_buttons()

    def _add(self, key: str, path: str, caption: str, suggested: str | None = None, leak: bool = False) -> None:
        source = self.data.source_of(path)
        shown = str(Path(path).relative_to(source.root().parent)) if source else path
        item = QListWidgetItem(f"{Path(path).name}\n{caption}")
        item.setData(
            Qt.ItemDataRole.UserRole,
            {"path": path, "suggested": suggested, "caption": caption, "excluded": False, "moved_from": None},
        )
        item.setToolTip(shown + ("\nA leak: copies in different splits inflate the measured accuracy" if leak else ""))
        if leak:
            item.setBackground(QColor(LEAK_COLOUR))
        self.grids[key].addItem(item)

    def _mark(self, item: QListWidgetItem, excluded: bool) -> None:
        data = item.data(Qt.ItemDataRole.UserRole)
        data["excluded"] = excluded
        item.setData(Qt.ItemDataRole.UserRole, data)
        moved = f"\nmoved to {Path(data['path']).parent.name}" if data["moved_from"] else ""
        item.setText(f"{Path(data['path']).name}\n{data['caption']}{moved}" + ("\n(excluded)" if excluded else ""))
        item.setForeground(QColor("#888888") if excluded else self.palette().text().color())

    def selected(self) -> list[QListWidgetItem]:
        return self.tabs.currentWidget().selectedItems() if self.report else []

    def update_buttons(self, *_args) -> None:
        rows = [item.data(Qt.ItemDataRole.UserRole) for item in self.selected()]
        self.exclude_button.setEnabled(any(not r["excluded"] for r in rows))
        self.include_button.setEnabled(any(r["excluded"] for r in rows))
        self.move_button.setEnabled(any(self.can_move(r) for r in rows))
        stuck = next((r for r in rows if r["suggested"] and not r["moved_from"] and not self.can_move(r)), None)
        if stuck is not None and not self.move_button.isEnabled():  # say why the button is off
            source = self.data.source_of(stuck["path"])
            self._say(
                f"“{stuck['suggested']}” has no class folder in {source.root().name if source else 'its folder'}: "
                "an image moves only inside the folder it came from. Exclude it instead, or move it yourself."
            )
        self.undo_button.setEnabled(bool(self.undo_stack))

    def can_move(self, row: dict) -> bool:
        """A suggested class can take the file only inside the folder of class folders it came from."""
        if not row["suggested"] or row["moved_from"]:
            return False
        source = self.data.source_of(row["path"])
        return bool(source and source.kind == FOLDER and row["suggested"] in class_names(source.root()))

    def _items_for(self, paths: set[str]) -> list[QListWidgetItem]:
        return [
            grid.item(i)
            for grid in self.grids.values()
            for i in range(grid.count())
            if grid.item(i).data(Qt.ItemDataRole.UserRole)["path"] in paths
        ]

    def _say(self, text: str, error: bool = False) -> None:
        self.note.setText(text)
        self.note.setStyleSheet(f"color: {tone('bad')};" if error else "")

    # --- actions (each one click, each reversible) ------------------------------------------------------------
    def _set_exclusions(self, add: set[str], remove: set[str]) -> bool:
        """Each image's exclusion is recorded in the folder it came from."""
        try:
            for root in sorted({self.root_of(p) for p in add | remove}):
                now = excluded_files(root)
                mine = {Path(p).resolve() for p in add | remove if self.root_of(p) == root}
                adding = {Path(p).resolve() for p in add} & mine
                set_excluded(root, (now | adding) - (mine - adding))
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else one_sentence(exc)
            self._say(f"Could not save the exclusions: {reason}.", error=True)
            return False
        for item in self._items_for(add | remove):
            self._mark(item, item.data(Qt.ItemDataRole.UserRole)["path"] in add)
        self.changed = True
        return True

    def exclude_selected(self) -> None:
        paths = {item.data(Qt.ItemDataRole.UserRole)["path"] for item in self.selected()}
        if paths and self._set_exclusions(paths, set()):
            self.undo_stack.append(("exclude", sorted(paths)))
            self._say(f"Excluded {len(paths)} image{'s' * (len(paths) != 1)} from training.")
        self.update_buttons()

    def include_selected(self) -> None:
        paths = {r["path"] for r in (i.data(Qt.ItemDataRole.UserRole) for i in self.selected()) if r["excluded"]}
        if paths and self._set_exclusions(set(), paths):
            self.undo_stack.append(("include", sorted(paths)))
            self._say(f"{len(paths)} image{'s' * (len(paths) != 1)} will be used for training again.")
        self.update_buttons()

    def move_selected(self) -> None:
        moves = []
        for item in self.selected():
            data = item.data(Qt.ItemDataRole.UserRole)
            if not self.can_move(data):
                continue
            try:
                target = review.move_to_class(self.root_of(data["path"]), data["path"], data["suggested"])
            except (OSError, ValueError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else one_sentence(exc)
                self._say(f"Could not move {Path(data['path']).name}: {reason}.", error=True)
                break
            moves.append((str(target), data["path"]))
            self._moved(data["path"], str(target), data["path"])
        if moves:
            self.undo_stack.append(("move", moves))
            self.changed = True
            self._say(
                f"Moved {len(moves)} file{'s' * (len(moves) != 1)} to the suggested class; Undo moves "
                f"{'them' if len(moves) != 1 else 'it'} back."
            )
        self.update_buttons()

    def _moved(self, old: str, new: str, moved_from: str | None) -> None:
        for item in self._items_for({old}):
            data = item.data(Qt.ItemDataRole.UserRole)
            data["path"], data["moved_from"] = new, moved_from
            item.setData(Qt.ItemDataRole.UserRole, data)
            self._mark(item, data["excluded"])

    def undo(self) -> None:
        if not self.undo_stack:
            return
        kind, rows = self.undo_stack.pop()
        if kind == "exclude":
            done = self._set_exclusions(set(), set(rows))
        elif kind == "include":
            done = self._set_exclusions(set(rows), set())
        else:
            done = True
            for new, old in reversed(rows):
                try:
                    back = review.move_back(new, old)
                except OSError as exc:
                    self._say(f"Could not move {Path(new).name} back: {exc.strerror or exc}.", error=True)
                    done = False
                    break
                self._moved(new, str(back), None)
        if done:
            self._say("Undone.")
        self.update_buttons()
