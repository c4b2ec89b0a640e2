"""Classify many files with reading and decoding overlapped with inference, in bounded memory.

Example::

    for path, prediction in zip(paths, classify_files(classifier, paths, batch=8)):
        print(path, prediction.label)

Worker threads read each file (and, for a backend that decodes on the host, decode and resize it with
the classifier's ``prepare``, which touches no model state) a few files ahead of the one thread that
calls the model, so the disk, Pillow and the model work at the same time. At most ``read_ahead`` files
are held at once, so memory stays flat however many files there are. Answers come back in order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from app.imaging import ImageError, read_image_file

from .base import Classifier, Prediction


def classify_files(
    classifier: Classifier,
    paths: Iterable[str | Path],
    batch: int = 1,
    top_k: int = 5,
    read_ahead: int | None = None,
    workers: int = 2,
) -> Iterator[Prediction]:
    """One Prediction per path, in order; reading and decoding run ahead of inference on worker threads.

    Only the calling thread touches the classifier's model (``classify`` / ``classify_prepared``); the
    workers call ``read_image_file`` and the classifier's ``prepare`` when it has one (TFLite: decode and
    resize on the host). A file that cannot be read or decoded is its own error; the rest go on.

    Args:
        classifier: any backend; one with ``prepare`` and ``classify_prepared`` gets its decoding overlapped.
        paths: files to classify (consumed lazily).
        batch: images per ``classify`` call (a remote backend with ``batch_size`` >= this sends one request).
        top_k: labels kept per image.
        read_ahead: files read or decoded but not yet classified, at most (default: 2 batches + 4).
        workers: reading / decoding threads.

    Returns:
        An iterator of Predictions, one per path, in the paths' order.

    Raises:
        ValueError: ``batch`` or ``workers`` below 1.
        ModelError: the backend cannot be used any more (a server gone), as ``classify`` raises it.
    """
    if batch < 1 or workers < 1:
        raise ValueError("batch and workers must be at least 1")
    prepare = getattr(classifier, "prepare", None)
    classify_prepared = getattr(classifier, "classify_prepared", None)
    if not (callable(prepare) and callable(classify_prepared)):
        prepare = classify_prepared = None
    ahead = max(read_ahead or 2 * batch + 4, batch)

    def load(path):
        try:
            data = read_image_file(Path(path))
        except ImageError as exc:
            return Prediction(error=str(exc))
        return prepare(data) if prepare else data

    remaining = iter(paths)
    pool = ThreadPoolExecutor(workers, thread_name_prefix="classify-read")
    pending: deque = deque()
    try:
        while True:
            while len(pending) < ahead and (path := next(remaining, None)) is not None:
                pending.append(pool.submit(load, path))
            if not pending:
                return
            items = [pending.popleft().result() for _ in range(min(batch, len(pending)))]
            todo = [i for i, item in enumerate(items) if not isinstance(item, Prediction)]
            if todo:
                inputs = [items[i] for i in todo]
                answers = classify_prepared(inputs, top_k) if prepare else classifier.classify(inputs, top_k=top_k)
                for i, answer in zip(todo, answers, strict=True):
                    items[i] = answer
            yield from items
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
