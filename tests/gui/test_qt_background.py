"""Background work lets go of the GUI's objects on the GUI thread, never on a worker thread."""

from __future__ import annotations

import threading

from PySide6.QtWidgets import QWidget

from app.gui.qt_common import run_in_background


class Witness:
    """Records which thread destroyed it (a Qt object captured by a callback would be destroyed there too)."""

    def __init__(self, seen: list):
        self.seen = seen

    def __del__(self):
        self.seen.append(threading.current_thread())


def test_a_finished_job_drops_what_its_callbacks_hold_on_the_gui_thread(qtbot):
    """The asker lets go of the job first, so the worker would hold the last reference: a Qt wrapper freed on
    a pool thread waits for the GIL inside its destructor while the GUI thread may wait for that destructor
    (a deadlock seen under load). Whatever the callbacks hold must be destroyed on the GUI thread."""
    owner = QWidget()
    destroyed, answers = [], []
    for i in range(20):  # a race made certain: the worker finishes only after the asker dropped everything
        asker_done = threading.Event()
        witness = Witness(destroyed)

        def work(job, asker_done=asker_done, i=i):
            asker_done.wait(10)
            return i

        job = run_in_background(work, lambda value, w=witness: answers.append(value), answers.append, owner)
        del job, witness
        asker_done.set()
        qtbot.waitUntil(lambda i=i: len(destroyed) == i + 1, timeout=10_000)
    assert answers == list(range(20))
    assert len(destroyed) == 20
    assert all(thread is threading.main_thread() for thread in destroyed), {t.name for t in destroyed}
