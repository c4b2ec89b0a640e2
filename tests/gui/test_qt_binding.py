"""The Qt binding itself must not corrupt the interpreter: PySide6 6.12.0 on CPython 3.11 dropped one reference
to ``None`` per call of a void Qt method, so a few minutes of use freed ``None`` and aborted the app
("Fatal Python error: none_dealloc"). pyproject.toml keeps that release out; this test catches a binding that
brings the bug back."""

import sys

from PySide6.QtCore import QObject


def test_void_qt_calls_keep_none_alive():
    probe = QObject()
    before = sys.getrefcount(None)
    for _ in range(1000):
        probe.setObjectName("")  # a void method: returns None
    assert sys.getrefcount(None) >= before - 10, "the Qt binding leaks references to None"
