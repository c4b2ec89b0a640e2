"""Small Qt pieces every view uses: icons, the message bar, settings, background calls."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import (
    QCoreApplication,
    QObject,
    QSettings,
    QSignalBlocker,
    QSize,
    Qt,
    QThreadPool,
    QUrl,
    Signal,
)
from PySide6.QtGui import QDesktopServices, QIcon, QIconEngine, QImage, QImageReader, QPixmap
from PySide6.QtWidgets import QHBoxLayout, QLabel, QMessageBox, QSizePolicy, QToolButton, QWidget

ORGANIZATION, APPLICATION = "RetrainStudio", "Retrain Studio"


def icon(name: str, color: str | None = None, selected: str | None = None) -> QIcon:
    """A vector icon (scales at any DPI) from the Material Design Icons font qtawesome ships: ``"mdi6.NAME"``.

    The font and its name map are read straight from qtawesome's folder and painted by ``GlyphIconEngine``:
    importing qtawesome itself imports qtpy, whose ``from PySide6.QtWidgets import *`` costs about 0.12 s of
    CPU before the window can appear (measured by tests/benchmarks/bench_startup.py). Other prefixes, or a
    missing font, fall back to qtawesome; an empty icon if that fails too.

    Args:
        name: ``"mdi6."`` and a Material Design icon name.
        color: its colour (default: the theme's, ``apply_theme``).
        selected: its colour on a selected item (the palette's highlighted text, for contrast).

    Returns:
        The icon.
    """
    prefix, _, glyph = name.partition(".")
    font = _icon_font() if prefix == "mdi6" else None
    if font is not None and glyph in font[1]:
        return QIcon(GlyphIconEngine(font[0], font[1][glyph], color or _ICON_COLOR[0], selected))
    try:
        import qtawesome

        options = {k: v for k, v in (("color", color or _ICON_COLOR[0]), ("color_selected", selected)) if v}
        return qtawesome.icon(name, **options)
    except Exception:  # a missing icon font must never stop the app
        return QIcon()


_ICON_COLOR = ["#3c4043"]  # the theme's icon colour (apply_theme)
_ICON_FONT: list = []  # [(family, {name: character}) or None], loaded once


def _icon_font() -> tuple[str, dict[str, str]] | None:
    """(font family, {icon name: character}) of qtawesome's Material Design Icons 6 font, or None."""
    if not _ICON_FONT:
        _ICON_FONT.append(None)
        try:
            import importlib.util
            import json

            from PySide6.QtGui import QFontDatabase

            folder = Path(importlib.util.find_spec("qtawesome").origin).parent / "fonts"
            ttf = sorted(folder.glob("materialdesignicons6-webfont-*.ttf"))[-1]
            charmap = folder / ttf.name.replace("-webfont-", "-webfont-charmap-").replace(".ttf", ".json")
            families = QFontDatabase.applicationFontFamilies(QFontDatabase.addApplicationFont(str(ttf)))
            chars = {key: chr(int(code, 16)) for key, code in json.loads(charmap.read_text()).items()}
            _ICON_FONT[0] = (families[0], chars)
        except Exception:  # no qtawesome, or another layout of it: qtawesome's own path is tried
            pass
    return _ICON_FONT[0]


class GlyphIconEngine(QIconEngine):
    """Paints one font glyph at any size, as qtawesome does (glyph 7/8 of the height, centred), in the icon's
    colour, the palette's disabled text colour when disabled, and ``selected`` on a selected item."""

    def __init__(self, family: str, char: str, color: str, selected: str | None = None):
        super().__init__()
        self.family, self.char, self.color, self.selected = family, char, color, selected

    def paint(self, painter, rect, mode, state) -> None:
        from PySide6.QtGui import QColor, QFont, QGuiApplication, QPalette

        if mode == QIcon.Mode.Disabled:
            colour = QGuiApplication.palette().color(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text)
        else:
            colour = QColor(self.selected if mode == QIcon.Mode.Selected and self.selected else self.color)
        font = QFont(self.family)
        font.setPixelSize(max(1, round(0.875 * rect.height())))
        painter.save()
        painter.setFont(font)
        painter.setPen(colour)
        painter.drawText(rect, int(Qt.AlignmentFlag.AlignCenter), self.char)
        painter.restore()

    def pixmap(self, size, mode, state):
        from PySide6.QtGui import QPainter

        pixmap = QPixmap(size)
        pixmap.fill(Qt.GlobalColor.transparent)
        painter = QPainter(pixmap)
        self.paint(painter, pixmap.rect(), mode, state)
        painter.end()
        return pixmap

    def clone(self):
        return GlyphIconEngine(self.family, self.char, self.color, self.selected)


LATER_MODULES = ("qtpy.QtWidgets", "superqt", "pyqtgraph")  # the wizard's Advanced section and charts


def import_later(names=LATER_MODULES) -> threading.Thread:
    """Import modules that pages need later on a background thread, once the window is on screen.

    They are kept out of start-up (qtpy's star imports, superqt and pyqtgraph cost about 0.3 s of CPU), and
    importing them here, while the user looks at the window, spares the first Next click that hitch. Only
    modules are imported on the thread (class definitions); every widget is still made on the GUI thread,
    which gets the GIL back every few milliseconds meanwhile.

    Args:
        names: module names; one that fails to import is left for the page to report.

    Returns:
        The (daemon) thread, already started.
    """
    import contextlib
    import importlib

    def run():
        for name in names:
            with contextlib.suppress(Exception):  # the page that needs it imports it again and says what is wrong
                importlib.import_module(name)

    thread = threading.Thread(target=run, name="import-later", daemon=True)
    thread.start()
    return thread


def settings() -> QSettings:
    # QSettings(org, app) always means NativeFormat; naming the format honours setDefaultFormat
    # (the tests point IniFormat at a temporary folder, so they never touch the user's settings)
    return QSettings(QSettings.defaultFormat(), QSettings.Scope.UserScope, ORGANIZATION, APPLICATION)


def setting(key: str, default=None, kind=str):
    value = settings().value(key, default)
    if value is None:
        return default
    if kind is bool:
        return value if isinstance(value, bool) else str(value).lower() == "true"
    try:
        return kind(value)
    except (TypeError, ValueError):
        return default


def remember(key: str, value) -> None:
    store = settings()
    store.setValue(key, value)
    store.sync()


def thumbnail(path_or_bytes: str | Path | bytes, size: int = 64) -> QImage:
    """A scaled QImage (safe to build on a worker thread; convert to QPixmap on the GUI thread)."""
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QSize

    if isinstance(path_or_bytes, bytes):
        buffer = QBuffer()
        buffer.setData(QByteArray(path_or_bytes))
        buffer.open(QIODevice.OpenModeFlag.ReadOnly)
        reader = QImageReader(buffer)
    else:
        reader = QImageReader(str(path_or_bytes))
    reader.setAutoTransform(True)  # EXIF orientation, like the classifier
    original = reader.size()
    if original.isValid() and original.width() > 0 and original.height() > 0:
        scaled = original.scaled(QSize(size, size), Qt.AspectRatioMode.KeepAspectRatio)
        reader.setScaledSize(scaled)
    image = reader.read()
    if image.isNull():
        return QImage()
    if isinstance(path_or_bytes, bytes):
        buffer.close()
    return image


class MessageBar(QWidget):
    """A fixed-height message line: showing, replacing or clearing a message never moves the layout.

    Every message has a source (a view) and the page it belongs to. A page shows its newest
    message only, so an error raised on Classify is hidden on Models and shown again on return.
    A source's next message replaces its last one (a success clears its error); ``post(source, "")``
    just clears it. Messages stay until replaced or dismissed (×); nothing fades away unread.
    """

    COLORS = {"error": ("#b3261e", "#fdecea"), "warning": ("#7a5200", "#fff4d6"), "info": ("#0b5394", "#e8f0fe")}
    DARK_COLORS = {"error": ("#f28b82", "#3c1e1d"), "warning": ("#fdd663", "#3a2e0a"), "info": ("#a8c7fa", "#1b2a40")}
    changed = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("messageBar")
        self.setAccessibleName("Messages")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 4, 6, 4)
        self.icon_label = QLabel()
        self.icon_label.setFixedWidth(20)
        self.text = QLabel()
        self.text.setObjectName("messageText")
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # it takes the width it is given: a 4,000-character path (no space to wrap at) made the window 29,592 px
        self.text.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.close_button = QToolButton()
        self.close_button.setIcon(icon("mdi6.close"))
        self.close_button.setAutoRaise(True)
        self.close_button.setToolTip("Dismiss")
        self.close_button.setAccessibleName("Dismiss message")
        self.close_button.clicked.connect(self.dismiss)
        keep = self.close_button.sizePolicy()
        keep.setRetainSizeWhenHidden(True)  # the text never reflows when the × comes and goes
        self.close_button.setSizePolicy(keep)
        layout.addWidget(self.icon_label)
        layout.addWidget(self.text, 1)
        layout.addWidget(self.close_button)
        self.setFixedHeight(2 * self.fontMetrics().lineSpacing() + 14)  # two lines, always reserved
        self.setAutoFillBackground(True)
        self.page: int | None = None
        self._messages: dict[str, tuple[int | None, str, str, int]] = {}  # source -> (page, text, level, order)
        self._order = 0
        self._render()

    def post(self, source: str, text: str, level: str = "info", page: int | None = None) -> None:
        """Show ``text`` from ``source`` on ``page`` (None: every page), replacing that source's last message."""
        self._messages.pop(source, None)
        if text:
            for other, (where, _, old_level, _) in list(self._messages.items()):
                if where == page and old_level == "info":
                    del self._messages[other]  # information is superseded; errors wait for their cause
            self._order += 1
            self._messages[source] = (page, text, level if level in self.COLORS else "info", self._order)
        self._render()

    def show_message(self, text: str, level: str = "info") -> None:
        """A message from the window itself, on the current page."""
        self.post("window", text, level, self.page)

    def clear(self, source: str) -> None:
        self.post(source, "")

    def set_page(self, page: int) -> None:
        self.page = page
        self._render()

    def dismiss(self) -> None:
        shown = self._shown()
        if shown:
            del self._messages[shown]
        self._render()

    def errors_on(self, page: int) -> bool:
        return any(where == page and level == "error" for where, _, level, _ in self._messages.values())

    def _shown(self) -> str | None:
        here = [
            (order, source)
            for source, (where, _, _, order) in self._messages.items()
            if where is None or where == self.page
        ]
        return max(here)[1] if here else None

    def _render(self) -> None:
        source = self._shown()
        if source is None:
            self.setStyleSheet("MessageBar { background: transparent; }")
            self.icon_label.clear()
            self.text.clear()
            self.text.setToolTip("")
            self.close_button.setVisible(False)
        else:
            _, text, level, _ = self._messages[source]
            fg, bg = (self.DARK_COLORS if is_dark() else self.COLORS)[level]  # each pair >= 4.5:1
            self.setStyleSheet(f"MessageBar {{ background: {bg}; border-radius: 6px; }} QLabel {{ color: {fg}; }}")
            glyph = {"error": "mdi6.alert-circle", "warning": "mdi6.alert", "info": "mdi6.information"}[level]
            self.icon_label.setPixmap(icon(glyph, fg).pixmap(18, 18))
            self.text.setText(text)
            self.text.setToolTip(text)  # the whole text, should it need more than two lines
            self.close_button.setVisible(True)
        self.changed.emit()


class _Relay(QObject):
    """Carries a callback and its value from any thread to the GUI thread (a queued signal to a GUI object)."""

    reply = Signal(object, object, object)  # callback, value, alive

    def __init__(self):
        super().__init__()
        self.reply.connect(self.deliver)

    def deliver(self, callback: Callable, value, alive: Callable[[], bool]) -> None:
        if alive():
            callback(value)


_RELAY: list[_Relay] = []
_RELAY_LOCK = threading.Lock()


def post(callback: Callable, value, alive: Callable[[], bool] = lambda: True) -> None:
    """Run ``callback(value)`` on the GUI thread, from any thread, unless ``alive()`` is False by then."""
    with _RELAY_LOCK:
        if not _RELAY:
            relay = _Relay()
            relay.moveToThread(QCoreApplication.instance().thread())
            _RELAY.append(relay)
    _RELAY[0].reply.emit(callback, value, alive)


_LETTING_GO: dict[int, tuple] = {}  # a finished job's references until the GUI thread drops them (Job.run)
_TOKENS = itertools.count()


def _let_go(token: int) -> None:
    """Drop a finished job's last references, on the GUI thread (see ``Job.run``)."""
    _LETTING_GO.pop(token, None)


def _gone() -> bool:
    return False


class Job:
    """One piece of background work, the only way the GUI runs work off its thread.

    ``run(*args)`` calls ``fn(*args, job)`` on the calling (worker) thread; then ``on_done(result)`` or
    ``on_error(exc)`` runs on the GUI thread, as ``on_progress(value)`` does for each ``job.progress(value)``
    the work reports. ``cancel()`` asks the work to stop between items (it reads ``job.cancelled``). Every
    answer is dropped once ``alive()`` is False (whoever asked is gone). ``run_in_background`` runs a job on
    the thread pool; ``qt_owner.ModelOwner`` runs jobs on a model's own thread.
    """

    def __init__(
        self,
        fn: Callable,
        on_done: Callable | None = None,
        on_error: Callable | None = None,
        on_progress: Callable | None = None,
        alive: Callable[[], bool] = lambda: True,
    ):
        self.fn, self.on_done, self.on_error, self.on_progress, self.alive = fn, on_done, on_error, on_progress, alive
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        self.cancelled.set()

    def progress(self, value) -> None:
        """Called by the work; ``on_progress(value)`` runs on the GUI thread."""
        self._send(self.on_progress, value)

    def run(self, *args) -> None:
        result = None
        try:
            result = self.fn(*args, self)
        except BaseException as exc:  # reported on the GUI thread as one sentence
            self.fail(exc)
        else:
            self._send(self.on_done, result)
        finally:
            # The work's closures may hold Qt objects (list items, dialogs). If this worker thread dropped
            # the last reference, their wrappers would be destroyed here, off the GUI thread, which can
            # deadlock with it (seen: a pool thread waiting for the GIL inside a Qt destructor while the GUI
            # thread waited for that destructor). So the references end on the GUI thread, in _let_go.
            # Only the dict holds them once this thread has let go, and only the GUI thread removes them.
            token = next(_TOKENS)
            _LETTING_GO[token] = (self.fn, self.on_done, self.on_error, self.on_progress, self.alive, result)
            self.fn = self.on_done = self.on_error = self.on_progress = None
            self.alive = _gone
            result = None
            post(_let_go, token)

    def fail(self, exc: BaseException) -> None:
        # without its traceback: the frames it holds would keep the work's objects (a classifier) alive
        self._send(self.on_error, exc.with_traceback(None))

    def _send(self, callback: Callable | None, value) -> None:
        if callback is not None:
            post(callback, value, self.alive)


def run_in_background(
    fn: Callable, on_done: Callable, on_error: Callable, owner: QObject, on_progress: Callable | None = None
) -> Job:
    """Call ``fn(job)`` on the thread pool; ``on_done(result)`` / ``on_error(exc)`` run on the GUI thread.

    The answer is dropped if ``owner`` was deleted meanwhile (a closed dialog). For work without
    TensorFlow only: a model's calls go through its ``qt_owner.ModelOwner``.
    """
    import shiboken6

    job = Job(fn, on_done, on_error, on_progress, alive=lambda: shiboken6.isValid(owner))
    QThreadPool.globalInstance().start(job.run)
    return job


def load_thumbnails(items: list, paths: list, size: int, owner: QObject) -> Job:
    """Give each list item the thumbnail of its path, decoded in the background; ``cancel()`` the job returned
    to stop decoding and show nothing (another selection). Setting an icon is not an edit: the list's
    ``itemChanged`` stays quiet (a browser that saves ticks on every change wrote the folder without a click)."""

    def decode(job: Job) -> list[QImage]:
        images = []
        for path in paths:
            if job.cancelled.is_set():
                break
            images.append(thumbnail(path, size) if Path(path).is_file() else QImage())  # never open a FIFO
        return images

    def show(images: list[QImage]) -> None:
        if job.cancelled.is_set():
            return
        for item, image in zip(items, images):
            if not image.isNull():
                with QSignalBlocker(item.listWidget()):
                    item.setIcon(QPixmap.fromImage(image))

    job = run_in_background(decode, show, lambda _exc: None, owner)
    return job


def open_in_file_manager(path: str | Path, parent: QWidget) -> None:
    """Open a file or folder with the desktop's handler; where there is none (a bare X session, a server), say so
    and give the path to copy, rather than a button that silently does nothing."""
    if not QDesktopServices.openUrl(QUrl.fromLocalFile(str(path))):
        box = QMessageBox(
            QMessageBox.Icon.Information,
            "No file manager",
            f"No file manager could be started here; the location is {path}",
            parent=parent,
        )
        box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        box.exec()


def one_sentence(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def sentence(text: str) -> str:
    """``text`` as a sentence: capital first letter, final full stop."""
    text = text.strip()
    return (text[:1].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")) if text else text


TONES = {
    "good": ("#188038", "#81c995"),
    "bad": ("#b3261e", "#f28b82"),
    "low": ("#b06000", "#fcad70"),
    "muted": ("#80868b", "#9aa0a6"),
}  # (light, dark): each >= 4.5:1 on its theme's base, "muted" aside


def set_tone(label: QLabel, kind: str | None, bold: bool = False) -> None:
    """Colour a label's text with the theme-aware ``tone(kind)``; None: back to the palette's text colour."""
    label.setStyleSheet((f"color: {tone(kind)};" + (" font-weight: bold;" if bold else "")) if kind else "")


def note(kind: str, name: str = "", bold: bool = False) -> QLabel:
    """A wrapping label for a warning or an error, in the theme-aware tone ``kind`` ("low", "bad")."""
    label = QLabel()
    if name:
        label.setObjectName(name)
    label.setWordWrap(True)
    set_tone(label, kind, bold)
    return label


class ElidedLabel(QLabel):
    """One line that ends in "…" when the window is too narrow for it, instead of running off the edge;
    ``text()`` and the tooltip keep the whole sentence."""

    def paintEvent(self, _event) -> None:
        from PySide6.QtGui import QPainter

        rect = self.contentsRect()
        elided = self.fontMetrics().elidedText(self.text(), Qt.TextElideMode.ElideRight, rect.width())
        QPainter(self).drawText(rect, int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter), elided)

    def minimumSizeHint(self):
        return QSize(self.minimumWidth(), super().minimumSizeHint().height())


def ask(parent, icon: QMessageBox.Icon, title: str, text: str, action: str, details: str = "") -> bool:
    """A question whose safe answer, Cancel, is the default: True only when the user clicks ``action``."""
    box = QMessageBox(icon, title, text, parent=parent)
    if details:
        box.setInformativeText(details)
    button = box.addButton(action, QMessageBox.ButtonRole.DestructiveRole)
    box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(QMessageBox.StandardButton.Cancel)
    box.exec()
    return box.clickedButton() is button


def is_dark() -> bool:
    """True when the current palette is a dark theme (its base colour is dark)."""
    from PySide6.QtGui import QGuiApplication, QPalette

    return QGuiApplication.palette().color(QPalette.ColorRole.Base).lightness() < 128


def tone(kind: str) -> str:
    """The colour for good / bad / low / muted text that stays readable on the current theme's background
    (the light theme's #b3261e red is 2.2:1 on the dark base)."""
    return TONES[kind][is_dark()]


def apply_theme(app, scheme: str | None = None) -> str:
    """Follow the system's light or dark scheme (Fusion + a matching palette); ``scheme`` forces one.

    $RETRAIN_STUDIO_THEME=dark|light overrides both.
    """
    import os

    from PySide6.QtGui import QColor, QPalette

    app.setStyle("Fusion")
    scheme = os.environ.get("RETRAIN_STUDIO_THEME") or scheme
    if scheme is None:
        scheme = "dark" if app.styleHints().colorScheme() == Qt.ColorScheme.Dark else "light"
    _icon_color("#3c4043" if scheme != "dark" else "#e8eaed")
    if scheme != "dark":
        palette = app.style().standardPalette()
        # Fusion's #308cc6 under white text is 3.6:1; this blue is 6.4:1 (WCAG AA asks 4.5:1)
        palette.setColor(QPalette.ColorRole.Highlight, QColor("#0b57d0"))
        palette.setColor(QPalette.ColorRole.HighlightedText, QColor("#ffffff"))
        app.setPalette(palette)
        return "light"
    palette = QPalette()
    role = QPalette.ColorRole
    for r, color in [
        (role.Window, "#202124"),
        (role.WindowText, "#e8eaed"),
        (role.Base, "#292a2d"),
        (role.AlternateBase, "#303134"),
        (role.Text, "#e8eaed"),
        (role.Button, "#303134"),
        (role.ButtonText, "#e8eaed"),
        (role.Highlight, "#8ab4f8"),
        (role.HighlightedText, "#202124"),
        (role.ToolTipBase, "#303134"),
        (role.ToolTipText, "#e8eaed"),
        (role.PlaceholderText, "#9aa0a6"),
        (role.Mid, "#5f6368"),
        (role.Link, "#8ab4f8"),
    ]:
        palette.setColor(r, QColor(color))
    palette.setColor(QPalette.ColorGroup.Disabled, role.ButtonText, QColor("#80868b"))
    palette.setColor(QPalette.ColorGroup.Disabled, role.Text, QColor("#80868b"))
    app.setPalette(palette)
    return "dark"


def _icon_color(color: str) -> None:
    """The theme's icon colour, for ``icon`` (qtawesome is told only once it has been imported: see ``icon``)."""
    import sys

    _ICON_COLOR[0] = color
    if "qtawesome" in sys.modules:
        sys.modules["qtawesome"].set_defaults(color=color)


def thumbnail_grid(icon_px: int, cell_width: int, cell_height: int):
    """A read-only icon grid for image thumbnails with captions."""
    from PySide6.QtCore import QSize
    from PySide6.QtWidgets import QListView, QListWidget

    grid = QListWidget()
    grid.setViewMode(QListView.ViewMode.IconMode)
    grid.setIconSize(QSize(icon_px, icon_px))
    grid.setGridSize(QSize(cell_width, cell_height))
    grid.setResizeMode(QListView.ResizeMode.Adjust)
    grid.setMovement(QListView.Movement.Static)
    return grid


def read_only_table(headers: list[str]):
    """A table the user reads but does not edit, columns sharing the width."""
    from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget

    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(headers)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.verticalHeader().hide()
    return table
