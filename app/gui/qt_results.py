"""The results of a training run, built from what is stored with the version (``results.npz``).

The wizard's Results page and the Models page's "Open results" show the same ResultsView, so
results are never lost when the wizard moves on: they live in the version folder.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QListWidgetItem,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.core.evaluation import Results, ResultsError, load_results, wilson_interval
from app.store import read_version

from .qt_common import (
    Job,
    load_thumbnails,
    note,
    open_in_file_manager,
    read_only_table,
    sentence,
    thumbnail_grid,
)

SMALL_SAMPLE = 30  # fewer test images than this: the accuracy comes with a warning
MATRIX_LIMIT = 30  # more classes than this: the most confused pairs instead of a K x K grid
SHOWN_IMAGES = 200


def accuracy_lines(correct: int, images: int) -> tuple[str, str, str]:
    """(headline, count and 95% interval, small-sample warning or "") for an accuracy."""
    if not images:
        return "No test images", "Set a test split above 0% to measure accuracy.", ""
    low, high = wilson_interval(correct, images)
    headline = f"Test accuracy {correct / images:.1%}"
    detail = f"{correct} of {images} test images correct · 95% confidence interval {low:.0%} to {high:.0%}"
    warning = (
        f"⚠ Only {images} test images: the real accuracy could be anywhere from {low:.0%} to {high:.0%}. "
        "More photos per class (or a larger test split) give a firmer number."
        if images < SMALL_SAMPLE
        else ""
    )
    return headline, detail, warning


class ResultsView(QWidget):
    """Accuracy with its uncertainty, per-class table, confusion matrix (cells open their images), mistakes."""

    def __init__(self, parent=None, reopen_hint: bool = True):
        super().__init__(parent)
        self.reopen_hint = reopen_hint  # the wizard says how to come back; the reopened window need not
        self.results: Results | None = None
        self.version: Path | None = None
        self.accuracy = QLabel()
        self.accuracy.setObjectName("resultsAccuracy")
        self.accuracy.setStyleSheet("font-size: 20pt; font-weight: bold;")
        self.detail = QLabel()
        self.detail.setObjectName("resultsDetail")
        self.detail.setWordWrap(True)  # this line and the matrix's title wrap: the page fits a 1024 px window
        self.warning = note("low", "resultsWarning", bold=True)
        self.where = QLabel()
        self.where.setObjectName("resultsWhere")
        self.where.setWordWrap(True)
        self.where.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.per_class = read_only_table(["Class", "Precision", "Recall", "F1", "Images"])
        self.per_class.setObjectName("resultsPerClass")
        self.per_class.setAccessibleName("Per-class results")
        self.matrix_title = QLabel()
        self.matrix_title.setWordWrap(True)
        self.matrix = read_only_table([])
        self.matrix.setObjectName("resultsMatrix")
        self.matrix.setAccessibleName("Confusion matrix")
        self.cell_title = QLabel("Mistakes")
        self.cell_title.setObjectName("resultsCellTitle")
        self.images = thumbnail_grid(64, 150, 100)
        self.images.setObjectName("resultsImages")
        self.images.setAccessibleName("Test images")
        self.images.setToolTip("Double-click an image to open it")
        left = QVBoxLayout()
        left.addWidget(self.accuracy)
        left.addWidget(self.detail)
        left.addWidget(self.warning)
        left.addWidget(self.per_class, 1)
        right = QVBoxLayout()
        right.addWidget(self.matrix_title)
        right.addWidget(self.matrix, 1)
        grid = QHBoxLayout()
        grid.addLayout(left, 1)
        grid.addLayout(right, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.where)
        layout.addLayout(grid, 2)
        layout.addWidget(self.cell_title)
        layout.addWidget(self.images, 1)
        self.matrix.cellClicked.connect(self.show_cell)
        self.images.itemDoubleClicked.connect(
            lambda item: item.toolTip() and open_in_file_manager(item.toolTip(), self)
        )
        self._pairs: list[tuple[int, int, int]] = []
        self.thumbnails: Job | None = None  # the thumbnails of the cell shown

    def load(self, version: str | Path) -> bool:
        """Show the results stored with ``version``; False (and one sentence in the view) when there are none."""
        self.version = Path(version)
        info = read_version(self.version)
        self.where.setText(
            f"Saved with model <b>{info.model}</b> version {info.version} ({self.version})."
            + (" Reopen them any time: Models → select the version → Open results." if self.reopen_hint else "")
        )
        try:
            self.results = load_results(self.version)
        except ResultsError as exc:
            self.results = None
            self.accuracy.setText(f"Test accuracy {info.accuracy_text()}")
            self.detail.setText(sentence(str(exc)))
            self.warning.clear()
            for table in (self.per_class, self.matrix):
                table.setRowCount(0)
            self.matrix.setColumnCount(0)
            self._clear_images()
            self.cell_title.clear()
            return False
        r = self.results
        headline, detail, warning = accuracy_lines(r.correct, r.images)
        self.accuracy.setText(headline)
        self.detail.setText(detail)
        self.warning.setText(warning)
        self.warning.setVisible(bool(warning))
        self._fill_per_class()
        if len(r.classes) <= MATRIX_LIMIT:
            self._fill_matrix()
        else:
            self._fill_pairs()
        self.show_mistakes()
        return True

    def _fill_per_class(self) -> None:
        table, per_class = self.per_class, self.results.per_class()
        table.setSortingEnabled(False)
        table.setRowCount(len(per_class))
        for r, (name, row) in enumerate(per_class.items()):
            cells = [name, *(f"{row[k]:.2f}" for k in ("precision", "recall", "f1")), row["support"]]
            for c, value in enumerate(cells):
                item = QTableWidgetItem()
                item.setData(Qt.ItemDataRole.DisplayRole, value)
                table.setItem(r, c, item)
        table.setSortingEnabled(True)
        table.sortItems(0, Qt.SortOrder.AscendingOrder)  # class order; a header click sorts by recall etc.

    def _fill_matrix(self) -> None:
        classes, matrix = self.results.classes, self.results.confusion
        self.matrix_title.setText("Confusion matrix (rows: true, columns: predicted). Click a cell for its images.")
        self.matrix.clear()
        self.matrix.setRowCount(len(classes))
        self.matrix.setColumnCount(len(classes))
        self.matrix.setHorizontalHeaderLabels(classes)
        self.matrix.setVerticalHeaderLabels(classes)
        self.matrix.verticalHeader().show()
        peak = max(int(matrix.max()) if matrix.size else 0, 1)
        for r in range(len(classes)):
            for c in range(len(classes)):
                count = int(matrix[r, c])
                item = QTableWidgetItem(str(count))
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                strength = count / peak
                base = (26, 115, 232) if r == c else (217, 48, 37)
                item.setBackground(QColor(*base, int(30 + 200 * strength) if count else 0))
                if count and strength > 0.6:
                    item.setForeground(QColor("white"))
                item.setToolTip(f"True {classes[r]}, predicted {classes[c]}: {count}")
                self.matrix.setItem(r, c, item)
        self._pairs = []

    def _fill_pairs(self) -> None:
        """Too many classes for a grid: the most frequent confusions, each row a cell of the matrix."""
        classes = self.results.classes
        self._pairs = self.results.top_confusions()
        self.matrix_title.setText(f"{len(classes)} classes: the most frequent confusions. Click a row for its images.")
        self.matrix.clear()
        self.matrix.verticalHeader().hide()
        self.matrix.setColumnCount(3)
        self.matrix.setHorizontalHeaderLabels(["True", "Predicted", "Images"])
        self.matrix.setRowCount(len(self._pairs))
        for r, (true, predicted, count) in enumerate(self._pairs):
            for c, text in enumerate((classes[true], classes[predicted], str(count))):
                self.matrix.setItem(r, c, QTableWidgetItem(text))

    def show_cell(self, row: int, column: int) -> None:
        """The images of one confusion-matrix cell (or one row of the most-confused list)."""
        if self.results is None:
            return
        true, predicted = (self._pairs[row][:2]) if self._pairs else (row, column)
        rows = self.results.rows(true=true, predicted=predicted)
        classes = self.results.classes
        self.cell_title.setText(f"True {classes[true]}, predicted {classes[predicted]}: {len(rows)} image(s)")
        self._show_images(rows)

    def show_mistakes(self) -> None:
        mistakes = self.results.rows(mistakes=True) if self.results else []
        self.cell_title.setText(
            f"Misclassified test images ({len(mistakes)})"
            if mistakes
            else "No test image was misclassified."
            if self.results and self.results.images
            else "No test images were set aside."
        )
        self._show_images(mistakes)

    def _clear_images(self) -> None:
        """No images shown; the thumbnails still being decoded for the last ones are not wanted."""
        if self.thumbnails is not None:
            self.thumbnails.cancel()
        self.images.clear()

    def _show_images(self, rows: list[dict]) -> None:
        """Captions at once; thumbnails decoded on the thread pool (photos can be large)."""
        self._clear_images()
        if len(rows) > SHOWN_IMAGES:
            self.cell_title.setText(self.cell_title.text() + f" (the first {SHOWN_IMAGES} shown)")
        rows = rows[:SHOWN_IMAGES]
        for row in rows:
            item = QListWidgetItem(f"{row['true']} → {row['predicted']}\n{row['score']:.2f}")
            item.setToolTip(row["path"])
            self.images.addItem(item)
        items = [self.images.item(i) for i in range(self.images.count())]
        self.thumbnails = load_thumbnails(items, [row["path"] for row in rows], 64, self)


class ResultsDialog(QDialog):
    """A version's stored results in their own window (Models → Open results)."""

    def __init__(self, version: str | Path, parent=None):
        super().__init__(parent)
        version = Path(version)
        self.setObjectName("resultsDialog")
        self.setWindowTitle(f"Results — {version.parent.name} version {version.name}")
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.resize(1000, 720)
        self.view = ResultsView(self, reopen_hint=False)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.close)
        layout = QVBoxLayout(self)
        layout.addWidget(self.view, 1)
        layout.addWidget(buttons)
        self.view.load(version)
