"""The desktop app (PySide6). Everything Qt lives here; app.core and app.inference know nothing of it."""


def run(argv: list[str]) -> int:
    from .qt_main_window import run as run_window

    return run_window(argv)
