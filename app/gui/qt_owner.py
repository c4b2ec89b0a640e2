"""One owner thread per loaded classifier: it opens the model and makes every call into it.

Why not the Qt thread pool: a pooled thread outlives the Python thread state PySide creates for
each runnable, and the pybind11 code that LiteRT and TensorFlow share caches a thread state per
OS thread. Loading a SavedModel on a reused pool thread after LiteRT had run there crashed the
whole app (segfault in ``gil_scoped_acquire`` with a stale thread state, issue 8). A plain
``threading.Thread`` keeps one thread state for its whole life, and one thread per model also
means no two calls ever run into the same TensorFlow object at once.

Results cross back to the GUI thread through a queued signal; no Qt widget is touched on the
owner thread. Every callback runs on the GUI thread.
"""
from __future__ import annotations

import atexit
import queue
import threading
import weakref
from typing import Callable

from PySide6.QtCore import QObject, Signal

_LIVE: "weakref.WeakSet[ModelOwner]" = weakref.WeakSet()


@atexit.register
def shutdown(timeout: float = 10.0) -> None:
    """Close every owner and wait for its thread, so no TensorFlow object dies during interpreter teardown."""
    owners = list(_LIVE)
    for owner in owners:
        owner.close(discard=True)
    for owner in owners:
        owner.join(timeout)


class Job:
    """A unit of work for the owner thread; ``cancel()`` asks a running job to stop between items."""

    def __init__(self, owner: "ModelOwner", fn: Callable, on_done, on_error, on_progress):
        self.owner, self.fn = owner, fn
        self.on_done, self.on_error, self.on_progress = on_done, on_error, on_progress
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        self.cancelled.set()

    def progress(self, value) -> None:
        """Called on the owner thread; ``on_progress(value)`` runs on the GUI thread."""
        if self.on_progress is not None:
            self.owner.reply.emit(self.on_progress, value)


class ModelOwner(QObject):
    """``ModelOwner(opener)`` starts a thread that calls ``opener()`` once, then runs submitted jobs in order.

    ``submit(fn, on_done, on_error, on_progress)`` queues ``fn(classifier, job)``. If opening failed,
    every job's ``on_error`` gets the opening error. ``close()`` lets queued work finish, then ends the
    thread (the classifier is released on the thread that made it); ``close(discard=True)`` also stops
    the callbacks, for a dialog or widget that is going away.
    """

    reply = Signal(object, object)  # callback, value — emitted on the owner thread, delivered on the GUI thread

    def __init__(self, opener: Callable, name: str = "model-owner"):
        super().__init__()
        self.closed = False
        self.ready = False  # True once opener() has returned (GUI-side view, set through a reply)
        self.thread_id: int | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self.reply.connect(self._deliver)
        self._thread = threading.Thread(target=self._loop, args=(opener,), name=name, daemon=True)
        self._thread.start()
        _LIVE.add(self)

    def submit(self, fn: Callable, on_done: Callable | None = None, on_error: Callable | None = None,
               on_progress: Callable | None = None) -> Job:
        job = Job(self, fn, on_done, on_error, on_progress)
        self._queue.put(job)
        return job

    def close(self, discard: bool = False) -> None:
        """End the thread once the queued jobs are done; ``discard`` also drops their callbacks (the caller is gone)."""
        self.closed = self.closed or discard
        self._queue.put(None)

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _deliver(self, callback: Callable, value) -> None:
        if not self.closed and callback is not None:
            callback(value)

    def _mark_ready(self, _value) -> None:
        self.ready = True

    def _loop(self, opener: Callable) -> None:
        self.thread_id = threading.get_ident()
        classifier, error = None, None
        try:
            classifier = opener()
        except BaseException as exc:  # reported to each job as one sentence on the GUI thread
            error = exc
        self.reply.emit(self._mark_ready, None)
        while True:
            job = self._queue.get()
            if job is None:
                break
            if error is not None:
                self.reply.emit(job.on_error, error)
                continue
            try:
                result = job.fn(classifier, job)
            except BaseException as exc:
                self.reply.emit(job.on_error, exc)
            else:
                self.reply.emit(job.on_done, result)
        del classifier  # released here, on the thread that loaded it
