"""The desktop app (PySide6). Everything Qt lives here; app.core and app.inference know nothing of it."""
import sys


def _guard_none_refcount() -> None:
    """PySide6 6.12.0 on CPython 3.11 drops one reference to ``None`` on every call of a void Qt method (CPython
    3.12 made ``None`` immortal, which hides the bug). A session of a few minutes then frees ``None`` and aborts
    ("Fatal Python error: none_dealloc"). When a probe shows the bug, give ``None`` references it can never lose."""
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return
    import ctypes

    from PySide6.QtCore import QObject

    probe = QObject()
    before = sys.getrefcount(None)
    for _ in range(100):
        probe.setObjectName("")  # a void method
    if sys.getrefcount(None) < before - 50:
        ctypes.c_ssize_t.from_address(id(None)).value += 1 << 40  # ob_refcnt is a PyObject's first field


_guard_none_refcount()


def run(argv: list[str]) -> int:
    from .qt_main_window import run as run_window

    return run_window(argv)
