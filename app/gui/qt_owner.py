"""One owner thread per loaded classifier: it opens the model and makes every call into it.

Why not the Qt thread pool: a pooled thread outlives the Python thread state PySide creates for
each runnable, and the pybind11 code that LiteRT and TensorFlow share caches a thread state per
OS thread. Loading a SavedModel on a reused pool thread after LiteRT had run there crashed the
whole app (segfault in ``gil_scoped_acquire`` with a stale thread state, issue 8). A plain
``threading.Thread`` keeps one thread state for its whole life, and one thread per model also
means no two calls ever run into the same TensorFlow object at once.

Each call is a ``qt_common.Job``, the same unit ``run_in_background`` runs on the pool: results
cross back to the GUI thread through its queued signal; no Qt widget is touched on the owner
thread. Every callback runs on the GUI thread.
"""

from __future__ import annotations

import atexit
import contextlib
import queue
import threading
import weakref
from collections.abc import Callable

from .qt_common import Job, post

_LIVE: weakref.WeakSet[ModelOwner] = weakref.WeakSet()


@atexit.register
def shutdown(timeout: float = 10.0) -> None:
    """Close every owner and wait for its thread, so no TensorFlow object dies during interpreter teardown."""
    owners = list(_LIVE)
    for owner in owners:
        owner.close(discard=True)
    for owner in owners:
        owner.join(timeout)


class ModelOwner:
    """``ModelOwner(opener)`` starts a thread that calls ``opener()`` once, then runs submitted jobs in order.

    ``submit(fn, on_done, on_error, on_progress)`` queues a ``qt_common.Job`` that calls ``fn(classifier, job)``.
    If opening failed, every job's ``on_error`` gets the opening error. ``close()`` lets queued work finish,
    then closes the classifier (its ``close()``: a gRPC channel, an HTTP connection) and drops it on the thread
    that made it, and the thread ends; ``close(discard=True)`` also stops the callbacks, for a dialog or widget
    that is going away.
    """

    def __init__(self, opener: Callable, name: str = "model-owner"):
        self.closed = False
        self.ready = False  # True once opener() has returned (GUI-side view, set through a reply)
        self.thread_id: int | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, args=(opener,), name=name, daemon=True)
        self._thread.start()
        _LIVE.add(self)

    def submit(
        self,
        fn: Callable,
        on_done: Callable | None = None,
        on_error: Callable | None = None,
        on_progress: Callable | None = None,
    ) -> Job:
        job = Job(fn, on_done, on_error, on_progress, alive=lambda: not self.closed)
        self._queue.put(job)
        return job

    def close(self, discard: bool = False) -> None:
        """End the thread once the queued jobs are done; ``discard`` also drops their callbacks (the caller is gone)."""
        self.closed = self.closed or discard
        self._queue.put(None)

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _mark_ready(self, _value) -> None:
        self.ready = True

    def _loop(self, opener: Callable) -> None:
        self.thread_id = threading.get_ident()
        classifier, error = None, None
        try:
            classifier = opener()
        except BaseException as exc:  # reported to each job as one sentence on the GUI thread
            error = exc
        post(self._mark_ready, None)
        while (job := self._queue.get()) is not None:
            if error is not None:
                job.fail(error)
            else:
                job.run(classifier)
        if error is None:
            _release(classifier)


def _release(classifier) -> None:
    """Close a classifier on its owner thread (a REST connection is per thread); the caller's frame drops it."""
    close = getattr(classifier, "close", None)
    with contextlib.suppress(Exception):  # a connection already broken: nothing is left to release
        if callable(close):
            close()
