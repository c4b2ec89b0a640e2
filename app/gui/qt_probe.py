"""What the user sees, as JSON lines, for the smoke test that drives the real app under X (off by default).

RETRAIN_STUDIO_UI_LOG=FILE: every 100 ms the visible windows are read and what changed is appended:
window titles, wizard page titles, label / status bar texts, buttons and check boxes (text, enabled,
checked, global rectangle for a real mouse click), line edits, and the cells of small tables and
trees. The test waits for expected text there instead of reading pixels.
RETRAIN_STUDIO_WATCHDOG=1: a 10 ms timer logs event-loop stalls (every new longest gap, and every gap
over 100 ms) to the same file, or to stderr without a UI log.
"""

from __future__ import annotations

import json
import os
import sys
import time

import shiboken6
from PySide6.QtCore import QObject, QTimer
from PySide6.QtWidgets import (
    QAbstractButton,
    QApplication,
    QCheckBox,
    QLabel,
    QLineEdit,
    QStatusBar,
    QTableWidget,
    QTreeWidget,
    QWidget,
    QWizard,
)

STALL_MS = 100  # every gap over this is logged (the smoke test calls those over 250 ms stalls)
SMALL_VIEW = 60  # tables and trees up to this many rows are read cell by cell


class Probe(QObject):
    def __init__(self, app: QApplication, log_path: str | None, watchdog: bool):
        super().__init__(app)
        self.out = open(log_path, "a", encoding="utf-8", buffering=1) if log_path else sys.stderr  # noqa: SIM115
        self.seen: dict[tuple, dict] = {}
        if log_path:
            self.walker = QTimer(self, interval=100, timeout=self.walk)
            self.walker.start()
        if watchdog:
            self.longest, self.last = 0.0, time.monotonic()
            self.ticker = QTimer(self, interval=10, timeout=self.tick)
            self.ticker.start()

    def write(self, **record) -> None:
        self.out.write(json.dumps({"t": round(time.time(), 3), **record}) + "\n")

    def tick(self) -> None:
        now = time.monotonic()
        gap, self.last = (now - self.last) * 1e3, now
        if gap > self.longest or gap > STALL_MS:
            self.longest = max(self.longest, gap)
            self.write(kind="stall", ms=round(gap, 1), longest_ms=round(self.longest, 1))

    def walk(self) -> None:
        current: dict[tuple, dict] = {}
        for window in QApplication.topLevelWidgets():
            if window.isVisible():
                title = window.windowTitle()
                current[("window", title)] = {
                    "kind": "window",
                    "window": title,
                    "modal": window.isModal(),
                    **rect(window),
                }
                for widget in [window, *window.findChildren(QWidget)]:
                    if widget.isVisible():
                        for key, record in read(widget):
                            current[(title, *key)] = {"window": title, **record}
        for key, record in current.items():
            if self.seen.get(key) != record:
                self.write(id=str(key), **record)
        for key in self.seen.keys() - current.keys():
            self.write(id=str(key), kind="gone")
        self.seen = current


def rect(widget: QWidget) -> dict:
    top_left = widget.mapToGlobal(widget.rect().topLeft())
    return {"x": top_left.x(), "y": top_left.y(), "w": widget.width(), "h": widget.height()}


def read(widget: QWidget):
    """(key, record) pairs for what one widget shows."""
    ident = shiboken6.getCppPointer(widget)[0]  # stable, unlike the Python wrapper's id()
    if isinstance(widget, QWizard):
        page = widget.currentPage()
        if page is not None:
            yield ("page", ident), {"kind": "page", "text": page.title()}
    elif isinstance(widget, QStatusBar):
        yield ("status", ident), {"kind": "status", "text": widget.currentMessage()}
    elif isinstance(widget, QLabel) and widget.text():
        yield ("label", ident), {"kind": "label", "text": widget.text()}
    elif isinstance(widget, QAbstractButton):
        yield (
            ("button", ident),
            {
                "kind": "checkbox" if isinstance(widget, QCheckBox) else "button",
                "text": widget.text().replace("&", ""),
                "enabled": widget.isEnabled(),
                "checked": widget.isChecked(),
                "focus": widget.hasFocus(),
                **rect(widget),
            },
        )
    elif isinstance(widget, QLineEdit):
        yield (
            ("edit", ident),
            {
                "kind": "edit",
                "text": widget.text(),
                "name": widget.accessibleName(),
                "focus": widget.hasFocus(),
                **rect(widget),
            },
        )
    elif isinstance(widget, QTableWidget) and widget.rowCount() <= SMALL_VIEW:
        for r in range(widget.rowCount()):
            cells = [widget.item(r, c).text() if widget.item(r, c) else "" for c in range(widget.columnCount())]
            yield ("row", ident, r), {"kind": "row", "cells": cells}
    elif isinstance(widget, QTreeWidget):
        items = [((i,), widget.topLevelItem(i)) for i in range(widget.topLevelItemCount())]
        items += [((p, i), parent.child(i)) for (p,), parent in items for i in range(parent.childCount())]
        for where, item in items[:SMALL_VIEW]:
            area = widget.visualItemRect(item)
            corner = widget.viewport().mapToGlobal(area.topLeft())
            cells = [item.text(c) for c in range(item.columnCount())]
            yield (
                ("item", ident, where),
                {
                    "kind": "item",
                    "cells": cells,
                    "selected": item.isSelected(),
                    "x": corner.x(),
                    "y": corner.y(),
                    "w": area.width(),
                    "h": area.height(),
                },
            )


def install(app: QApplication) -> Probe | None:
    """Start the probe when the environment asks for it; otherwise do nothing."""
    log_path = os.environ.get("RETRAIN_STUDIO_UI_LOG")
    watchdog = os.environ.get("RETRAIN_STUDIO_WATCHDOG") == "1"
    if not (log_path or watchdog):
        return None
    app._probe = Probe(app, log_path, watchdog)  # kept alive with the application
    return app._probe
