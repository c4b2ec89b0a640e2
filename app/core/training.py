"""The whole training run: scan -> embed (cached) -> [review] -> train head -> [fine-tune] -> evaluate -> export.

Example::

    done = run(TrainSettings("photos/", "models/"), on_event=print)
    done["model_dir"], done["metrics"]["test_accuracy"]

Each stage is a small function below ``run``, timed and announced by ``_Stages``.  Every step reports
through ``on_event`` (see ``events``); the CLI prints those as JSON lines and the GUI reads them from a
child process.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from app import store
from app.imaging import DecodedImages, ImageError, load_image, read_image_file

from . import backbones, events, export, export_graphs, features, review, serving_config, trust
from .dataset import Dataset, ImageItem, Skipped, scan
from .evaluation import evaluate, save_results, summary

CALIBRATION_IMAGES = 100  # int8 calibration: enough images to measure each activation's range


@dataclass
class TrainSettings:
    image_dir: str
    models_dir: str
    name: str | None = None
    backbone: str = backbones.DEFAULT_BACKBONE
    epochs: int = 100
    batch_size: int = 64
    learning_rate: float = 0.001
    validation_percent: float = 10.0
    test_percent: float = 10.0
    augment: bool = False
    augment_copies: int = 2
    fine_tune: bool = False
    fine_tune_epochs: int = 3
    fine_tune_learning_rate: float = 1e-4
    label_smoothing: float = 0.1
    dropout: float = 0.2
    patience: int = 8
    seed: int = 42
    cache_dir: str | None = None
    tflite: str = "float"  # float | dynamic | int8 | none
    trust_backbone: bool = False  # run a local SavedModel backbone even if its graph touches files or code
    unknown_rate: float = 0.05  # the false-unknown rate the unknown-input threshold is chosen for (held-out data)
    min_accuracy: float | None = None  # refuse to publish a version whose test accuracy is below this
    review: bool = True  # look for wrong labels, duplicates, leaks and outliers; leaks leave the held-out splits
    sources: list | None = None  # dataset.Source list; None: image_dir alone, a folder of class folders

    def all_sources(self) -> list:
        """The sources to scan: ``sources`` if given, else ``image_dir`` as one folder of class folders."""
        from .dataset import as_sources

        return as_sources(self.sources if self.sources else self.image_dir)

    def model_name(self) -> str:
        """The given name if safe (else OutputError), or one made from the image folder's name."""
        if self.name:
            return export.check_name(self.name)
        return export.safe_name(Path(self.image_dir).resolve().name)

    def check(self) -> TrainSettings:
        """Refuse numbers that would fail or silently misbehave later (nan, inf, negatives), before any work."""

        def whole(field: str, low: int, high: int = 2**31 - 1) -> None:
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                bounds = f"from {low} to {high}" if high < 2**31 - 1 else f"of at least {low}"
                raise SettingsError(f"{_flag(field)} must be a whole number {bounds}, not {value!r}")

        def real(field: str, low: float, high: float = math.inf, low_ok: bool = False) -> None:
            value = getattr(self, field)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or not (low <= value if low_ok else low < value)
                or not value < high
            ):
                bounds = f"{'at least' if low_ok else 'above'} {low:g}"
                bounds += f" and below {high:g}" if high < math.inf else ""
                raise SettingsError(f"{_flag(field)} must be a finite number {bounds}, not {value!r}")

        for field in ("epochs", "batch_size", "patience"):
            whole(field, 1)
        for field in ("augment_copies", "fine_tune_epochs", "seed"):
            whole(field, 0)
        for field in ("learning_rate", "fine_tune_learning_rate"):
            real(field, 0.0)
        for field in ("validation_percent", "test_percent"):
            real(field, 0.0, 100.0, low_ok=True)
        for field in ("label_smoothing", "dropout"):
            real(field, 0.0, 1.0, low_ok=True)
        real("unknown_rate", 0.0, 1.0)
        if self.min_accuracy is not None:
            real("min_accuracy", 0.0, 1.0 + 1e-9, low_ok=True)
        if self.validation_percent + self.test_percent >= 100:
            raise SettingsError("--validation-percent and --test-percent must add up to less than 100")
        if self.tflite not in ("float", "dynamic", "int8", "none"):
            raise SettingsError(f"--tflite must be float, dynamic, int8 or none, not {self.tflite!r}")
        return self


class SettingsError(ValueError):
    """A training setting out of range; the message is one plain sentence naming the flag."""


class TrainingError(ValueError):
    """Training could not produce a usable model; the message is one plain sentence."""


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


class _Stages:
    """Names, times and announces the stages of a run: ``with stages("scan", "Scanning …"):``.

    Entering a stage emits its ``stage`` event (when given a message); leaving it adds the wall time to
    ``seconds[key or name]``, which the ``done`` event reports.  The value bound by ``as`` announces more
    of the same stage (``say("saving SavedModel")``).
    """

    def __init__(self, on_event: events.EventSink):
        self.on_event = on_event
        self.seconds: dict[str, float] = {}
        self._start = time.perf_counter()

    @contextmanager
    def __call__(self, name: str, message: str | None = None, key: str | None = None):
        start = time.perf_counter()
        say = lambda text: self.on_event(events.stage(name, text))  # noqa: E731
        if message is not None:
            say(message)
        yield say
        key = key or name
        self.seconds[key] = round(self.seconds.get(key, 0.0) + time.perf_counter() - start, 3)

    def total(self) -> dict[str, float]:
        """Every stage's seconds plus ``total``, the whole run's."""
        return {**self.seconds, "total": round(time.perf_counter() - self._start, 3)}


def _one_hot(labels: np.ndarray, k: int) -> np.ndarray:
    return np.eye(k, dtype=np.float32)[labels]


def class_weights(labels: np.ndarray, k: int) -> dict[int, float]:
    """Inverse-frequency weights (mean 1), so a small class counts as much as a big one.

    Args:
        labels: class index per example.
        k: number of classes.

    Returns:
        {class index: weight}; 1.0 for a class without examples.
    """
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    return {c: float(len(labels) / (k * n)) if n else 1.0 for c, n in enumerate(counts)}


class _EpochReporter:
    """tf_keras callback turning logs into ``epoch`` events (built lazily: keras is heavy)."""

    @staticmethod
    def make(on_event, offset: int = 0, total: int = 0, stage: str = "train"):
        import tf_keras as keras

        class Reporter(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                on_event(events.epoch(offset + epoch + 1, {k: v for k, v in (logs or {}).items()}))
                on_event(events.progress(stage, epoch + 1, total))

        return Reporter()


def train_head(
    x_train, y_train, x_val, y_val, k: int, s: TrainSettings, on_event: events.EventSink = events.ignore
) -> tuple[np.ndarray, np.ndarray, int]:
    """A softmax head on frozen features.

    A plain TensorFlow loop (Adam, dropout, label smoothing, class weights, early stopping
    on validation loss with the best weights restored) compiled one epoch per call: the
    head trains in about a second, where Keras ``fit`` spent most of its time in overhead.

    Args:
        x_train: training features [N, D].
        y_train: their class indices [N].
        x_val: validation features (may be empty: then the training loss is monitored).
        y_val: their class indices.
        k: number of classes.
        s: the settings (epochs, batch size, learning rate, dropout, smoothing, patience, seed).
        on_event: gets ``epoch`` and ``progress`` events, and a warning if training diverges.

    Returns:
        (kernel [D, K], bias [K], epochs run): the best epoch's weights.

    Raises:
        TrainingError: the weights stopped being finite numbers in the first epoch.
    """
    import tensorflow as tf

    tf.random.set_seed(s.seed)
    rng = np.random.default_rng(s.seed)
    n, d = x_train.shape
    limit = np.sqrt(6.0 / (d + k))  # Glorot uniform, as a Dense layer starts
    kernel = tf.Variable(rng.uniform(-limit, limit, (d, k)).astype(np.float32))
    bias = tf.Variable(np.zeros(k, np.float32))
    params = [kernel, bias]
    moments = [tf.Variable(tf.zeros_like(p)) for p in params for _ in range(2)]
    step = tf.Variable(0.0)
    beta1, beta2, epsilon = 0.9, 0.999, 1e-7
    x = tf.constant(x_train, tf.float32)
    targets = tf.constant(_smoothed(y_train, k, s.label_smoothing))
    weights = tf.constant(np.array([class_weights(y_train, k)[c] for c in y_train], np.float32))
    batch = min(s.batch_size, n)
    steps = (n + batch - 1) // batch

    # explicit tf.while_loop, no AutoGraph: a frozen (PyInstaller) app has no source for AutoGraph to read
    @tf.function(autograph=False)
    def run_epoch(order):
        def body(i, loss_sum, correct):
            idx = order[i * batch : (i + 1) * batch]
            xb, yb, wb = tf.gather(x, idx), tf.gather(targets, idx), tf.gather(weights, idx)
            with tf.GradientTape() as tape:
                logits = tf.matmul(tf.nn.dropout(xb, s.dropout, seed=s.seed) if s.dropout else xb, kernel) + bias
                loss = tf.reduce_mean(wb * tf.nn.softmax_cross_entropy_with_logits(yb, logits))
            grads = tape.gradient(loss, params)
            t = step.assign_add(1.0)
            for p, g, m, v in zip(params, grads, moments[0::2], moments[1::2]):
                m_new = m.assign(beta1 * m + (1 - beta1) * g)
                v_new = v.assign(beta2 * v + (1 - beta2) * tf.square(g))
                m_hat, v_hat = m_new / (1 - beta1**t), v_new / (1 - beta2**t)
                p.assign_sub(s.learning_rate * m_hat / (tf.sqrt(v_hat) + epsilon))
            hits = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, 1), tf.argmax(yb, 1)), tf.float32))
            return i + 1, loss_sum + loss * tf.cast(tf.shape(idx)[0], tf.float32), correct + hits

        _, loss_sum, correct = tf.while_loop(
            lambda i, *_: i < steps, body, (tf.constant(0), tf.constant(0.0), tf.constant(0.0))
        )
        return loss_sum / n, correct / n

    def measure(xs, ys):
        logits = xs @ kernel.numpy() + bias.numpy()
        z = logits - logits.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        loss = float(-(np.asarray(_smoothed(ys, k, s.label_smoothing)) * log_p).sum(axis=1).mean())
        return loss, float(np.mean(np.argmax(logits, 1) == ys))

    probe = x_train[:256]

    def usable(weights) -> bool:
        """Finite weights that give finite logits: a model that can be exported and served."""
        return all(np.isfinite(w).all() for w in weights) and np.isfinite(probe @ weights[0] + weights[1]).all()

    # Early stopping on the monitored loss; the first epoch's weights are always kept, so a loss
    # that never improves (NaN) still leaves finite weights. Weights gone non-finite end the run.
    has_val = len(y_val) > 0
    best, best_loss, waited, epochs_run = None, np.inf, 0, 0
    with np.errstate(all="ignore"):
        for epoch_index in range(s.epochs):
            loss, accuracy = run_epoch(tf.constant(rng.permutation(n), tf.int32))
            metrics = {"loss": float(loss), "accuracy": float(accuracy)}
            if has_val:
                metrics["val_loss"], metrics["val_accuracy"] = measure(x_val, y_val)
            epochs_run = epoch_index + 1
            on_event(events.epoch(epochs_run, metrics))
            on_event(events.progress("train", epochs_run, s.epochs))
            weights = (kernel.numpy(), bias.numpy())
            if not usable(weights):
                if best is None:
                    raise TrainingError(
                        "training diverged in the first epoch (the weights are no longer finite "
                        "numbers); try a smaller learning rate"
                    )
                on_event(
                    events.warning(
                        f"training diverged at epoch {epochs_run} (the weights are no longer finite "
                        "numbers); keeping the best earlier weights"
                    )
                )
                break
            monitored = metrics["val_loss"] if has_val else metrics["loss"]
            if best is None or monitored < best_loss - 1e-6:
                best, waited = weights, 0
                best_loss = monitored if math.isfinite(monitored) else np.inf
            else:
                waited += 1
                if waited >= s.patience:
                    break
    return best[0], best[1], epochs_run


def _smoothed(labels: np.ndarray, k: int, smoothing: float) -> np.ndarray:
    return _one_hot(labels, k) * (1.0 - smoothing) + smoothing / k


def _image_batches(items, size: int, batch_size: int, k: int, seed: int, augment: bool):
    """The fine-tuning input: a ``tf.data`` pipeline that decodes in the graph, on parallel calls.

    Files are read with ``imaging.read_image_file`` (regular files only, size-limited: a file swapped for a
    FIFO since the scan cannot hang training), then decoded and resized by ``graph_preprocess.load_image``,
    the same maths as the host, on ``num_parallel_calls`` threads, batched and prefetched.  Augmentation
    (``augment``) is random mirror, crop-and-zoom up to 20 % and brightness/contrast, in the graph.  An image
    that no longer decodes is dropped with a log line (the embed stage already warned about changed files).
    """
    import tensorflow as tf

    from app.imaging import ImageError, read_image_file

    from .graph_preprocess import load_image as graph_load_image

    paths = [os.fsencode(i.path) for i in items]  # bytes: a name need not be UTF-8
    labels = _one_hot(np.array([i.label for i in items], np.int64), k)

    def read(path: bytes) -> bytes:
        try:
            return read_image_file(bytes(path))
        except ImageError:
            return b""  # fails to decode below: dropped

    def load(index, path, label):
        data = tf.numpy_function(read, [path], tf.string, stateful=False)
        data.set_shape([])
        image = graph_load_image(data, size, size)
        if augment:
            image = _augment_in_graph(image, tf.stack([tf.cast(seed, tf.int64), index]), size)
        return image, label

    dataset = tf.data.Dataset.from_tensor_slices((tf.range(len(paths), dtype=tf.int64), paths, labels))
    dataset = dataset.shuffle(max(1, len(paths)), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    return dataset.ignore_errors(log_warning=True).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _augment_in_graph(image, seed, size: int):
    """``features.augment``'s kind of variant in TensorFlow ops (mirror, zoom up to 20 %, brightness/contrast)."""
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(seed, 4)
    image = tf.image.stateless_random_flip_left_right(image, seeds[0])
    zoom = tf.random.stateless_uniform([], seeds[1], 0.8, 1.0)
    side = tf.cast(tf.round(zoom * size), tf.int32)
    image = tf.image.stateless_random_crop(image, tf.stack([side, side, 3]), seeds[2])
    image = tf.image.resize(image, (size, size), method="bilinear")
    image = tf.image.stateless_random_contrast(image, 0.8, 1.2, seeds[3])
    image = tf.image.stateless_random_brightness(image, 0.1, seeds[3][::-1])
    return tf.clip_by_value(image, 0.0, 1.0)


def fine_tune(location: str, head, data: Dataset, size: int, s: TrainSettings, on_event, epoch_offset: int):
    """Unfreeze the backbone and train it with the head, at a small learning rate.

    Args:
        location: the backbone's SavedModel folder.
        head: (kernel, bias) trained on the frozen features, the starting point.
        data: the data set (train and validation splits are decoded on the fly).
        size: the input side in pixels.
        s: the settings.
        on_event: gets ``epoch`` and ``progress`` events (numbered after ``epoch_offset``).
        epoch_offset: epochs already run by ``train_head``.

    Returns:
        (backbone, (kernel, bias)), or None if any weight stopped being a finite number.
    """
    import tensorflow_hub as hub
    import tf_keras as keras

    k = len(data.classes)
    layer = hub.KerasLayer(location, trainable=True)
    dense = keras.layers.Dense(k)
    model = keras.Sequential(
        [
            keras.layers.InputLayer(input_shape=(size, size, 3)),
            layer,
            keras.layers.Dropout(s.dropout, seed=s.seed),
            dense,
        ]
    )
    dense.set_weights(list(head))
    model.compile(
        optimizer=keras.optimizers.SGD(s.fine_tune_learning_rate, momentum=0.9),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=s.label_smoothing),
        metrics=["accuracy"],
    )
    train, val = data.split("train"), data.split("validation")
    model.fit(
        _image_batches(train, size, s.batch_size, k, s.seed, s.augment),
        validation_data=_image_batches(val, size, s.batch_size, k, s.seed, False) if val else None,
        epochs=s.fine_tune_epochs,
        verbose=0,
        class_weight=class_weights(np.array([i.label for i in train]), k),
        callbacks=[_EpochReporter.make(on_event, epoch_offset, s.fine_tune_epochs, "fine_tune")],
    )
    if not all(np.isfinite(w).all() for w in model.get_weights()):
        return None  # diverged: the caller keeps the frozen backbone and its head
    kernel, bias = dense.get_weights()
    return layer.resolved_object, (kernel, bias)


def run(s: TrainSettings, on_event: events.EventSink = events.ignore) -> dict:
    """Train a classifier on ``s``'s images and export it as a new version.

    Stages, each a function below, timed and announced by ``_Stages``: scan, load_backbone, embed,
    [review], train, [fine_tune], evaluate, export.

    Args:
        s: the settings (checked first: a bad number, name or models folder fails before any work).
        on_event: receives every event (``events``) as it happens.

    Returns:
        The ``done`` event, also emitted last.

    Raises:
        SettingsError, OutputError, DatasetError, BackboneError, TrainingError: one plain sentence each.
    """
    s.check()
    export.check_output(s.models_dir, s.model_name())  # before any work: a bad name or folder fails now
    stages = _Stages(on_event)
    info = backbones.resolve(s.backbone, trust=s.trust_backbone)
    size = info.image_size
    sources = s.all_sources()
    cache = features.EmbeddingCache(
        backbones.cache_root(s.cache_dir), backbones.fingerprint(info), size, on_event=on_event
    )
    decoded = DecodedImages()
    with stages("scan", f"Scanning {', '.join(source.path for source in sources)}"):
        data = _scan(sources, s, size, on_event, known_valid=cache, decoded=decoded)
    copies = s.augment_copies if s.augment else 0
    with stages("backbone", f"Loading backbone {info.id}", key="load_backbone"):
        extractor = backbones.FeatureExtractor(info, s.cache_dir, on_event)
        new = new_images(data, cache, copies)
        if new:  # a warm cache never starts the backbone's forward pass
            extractor.prepare()
    with stages("embed") as say:
        splits, vectors = _embed(data, cache, extractor, copies, new, on_event, say, decoded)
    del decoded
    # TensorFlow and the backbone as a TF object (for export and fine-tuning) load while the review runs, not
    # earlier: importing TensorFlow holds the interpreter lock for seconds and would stall the embed loop.
    # Reusing a graph kept from an earlier export needs only TensorFlow, not the backbone (1-2 s more).
    k = len(data.classes)
    kept_graph = None if s.fine_tune else _kept_graph(info, size, k, s.cache_dir)
    reuse = export_graphs.reusable(kept_graph, store.tflite_variants(s.tflite))
    loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="load-backbone")
    tf_backbone = loader.submit(_import_tensorflow if reuse else extractor.tf_model)
    loader.shutdown(wait=False)
    review_summary = None
    if s.review:
        with stages("review", "Looking for wrong labels, duplicates and outliers"):
            review_summary = _review(data, splits, vectors, copies, s.cache_dir, on_event)
    else:
        on_event(
            events.warning(
                "the data review is off: copies shared between the splits were not looked for, "
                "so the test accuracy may be inflated"
            )
        )
    labels = {name: np.array([i.label for i in items], dtype=np.int64) for name, items in splits.items()}
    with stages("train", "Training the classifier head"):
        kernel, bias, epochs_run = train_head(
            vectors["train"],
            np.repeat(labels["train"], copies + 1),
            vectors["validation"],
            labels["validation"],
            k,
            s,
            on_event,
        )
    with stages("backbone", key="load_backbone"):  # announced above; waits for the TensorFlow object
        backbone = tf_backbone.result()  # raises what loading raised; None when only TensorFlow was imported
        location = backbones.materialise(info, s.cache_dir)
    head, test_vectors, frozen = (kernel, bias), vectors["test"], backbone
    if s.fine_tune:
        with stages("fine_tune", "Fine-tuning the backbone"):
            backbone, head, test_vectors, splits["test"] = _fine_tune_or_keep(
                location, (backbone, head, test_vectors), data, splits["test"], size, s, on_event, epochs_run
            )
            labels["test"] = np.array([i.label for i in splits["test"]], dtype=np.int64)
    with stages("calibrate", "Calibrating confidence and fitting the unknown-input detector"):
        fitted = _fit_trust(s, vectors, labels, splits, copies, backbone, frozen, head, test_vectors, size, k)
    head = fitted.head  # divided by the temperature: every exported file answers with calibrated probabilities
    with stages("evaluate", "Evaluating on the test split"):
        probabilities = _softmax(test_vectors @ head[0] + head[1] if len(test_vectors) else np.zeros((0, k)))
        report = evaluate(probabilities, labels["test"], data.classes, [i.path for i in splits["test"]])
        val_accuracy = None if s.fine_tune else _accuracy(vectors["validation"], labels["validation"], kernel, bias)
    metrics = {**summary(report), "validation_accuracy": val_accuracy, **fitted.metrics}
    _check_min_accuracy(s, metrics["test_accuracy"])
    metadata = store.new_metadata(
        data.classes,
        size,
        backbone=info.to_dict(),
        split_sizes={name: len(items) for name, items in splits.items()},
        skipped_files=len(data.skipped),
        review=review_summary,
        metrics=metrics,  # the rest: results.npz
        calibration=fitted.calibration,
        unknown=fitted.unknown,
        training={
            **{
                key: value
                for key, value in asdict(s).items()
                if key not in ("image_dir", "models_dir", "cache_dir", "sources")
            },
            "epochs_run": epochs_run,
            "image_dir": str(data.root),
            "sources": data.source_records(),
        },
    )
    with stages("export", "Exporting SavedModel and TFLite") as say:
        if backbone is not frozen:
            kept_graph = None  # fine-tuning changed the backbone's weights: this graph is this run's alone
        load_backbone = extractor.tf_model if backbone is None else lambda: backbone
        model_dir = _export(
            s, load_backbone, head, metadata, splits, probabilities, labels["test"], say, fitted, kept_graph
        )
        config = _write_serving_config(s.models_dir, on_event)
    done = events.done(
        str(model_dir), config and str(config), {**metrics, "epochs_run": epochs_run}, data.classes, stages.total()
    )
    on_event(done)
    return done


def _kept_graph(info: backbones.BackboneInfo, size: int, classes: int, cache_dir: str | None) -> Path:
    """Where ``export_graphs`` keeps the exported graph for this backbone, input size and number of classes."""
    key = export_graphs.key(backbones.fingerprint(info), size, classes)
    return export_graphs.graphs_dir(backbones.cache_root(cache_dir)) / key


def _import_tensorflow() -> None:
    """Import TensorFlow (on the loader thread, while the review runs) without loading the backbone."""
    import tensorflow  # noqa: F401


def _scan(sources: list, s: TrainSettings, size: int, on_event: events.EventSink, **options) -> Dataset:
    """The scan stage: the data set, announced by the ``dataset`` event and a warning per scan note.

    ``options`` go to ``dataset.scan`` (``known_valid``, ``decoded``).
    """
    data = scan(
        sources,
        validation_percent=s.validation_percent,
        test_percent=s.test_percent,
        target=(size, size),
        on_event=on_event,
        **options,
    )
    on_event(events.dataset(data))
    for note in data.warnings:
        on_event(events.warning(note))
    return data


def _embed(
    data: Dataset,
    cache: features.EmbeddingCache,
    extractor,
    copies: int,
    new: int,
    on_event: events.EventSink,
    say,
    decoded=None,
) -> tuple[dict, dict]:
    """The embed stage: (splits, feature vectors per split), through the embedding cache.

    ``new`` images (``new_images``) run through ``extractor``; pixels the scan kept in ``decoded`` are not
    decoded again.  Images that cannot be read any more (changed since the scan) are left out, as the
    scan would have.
    """
    splits = {name: data.split(name) for name in ("train", "validation", "test")}
    on_event(events.new_images(new, len(data.items)))
    engine = f" in {'LiteRT' if extractor.engine == 'litert' else 'TensorFlow'}" if new and extractor.engine else ""
    say(
        f"Computing image features{engine}: {new} new image{'s' if new != 1 else ''} "
        f"({len(data.items) - new} already cached)"
    )
    vectors, failed = {}, {}
    for name, items in splits.items():
        vectors[name] = features.embed(
            [i.path for i in items],
            [i.digest for i in items],
            extractor,
            cache,
            extractor.info.image_size,
            variants=copies if name == "train" else 0,
            batch_size=32,
            on_event=on_event,
            stage=f"embed_{name}",
            on_error=lambda i, reason, items=items: failed.setdefault(items[i].path, reason),
            decoded=decoded,
        )
    if failed:
        _leave_out(data, failed, on_event)
        splits = {name: data.split(name) for name in splits}
    return splits, vectors


def _fine_tune_or_keep(
    location: str,
    frozen: tuple,
    data: Dataset,
    test_items: list,
    size: int,
    s: TrainSettings,
    on_event: events.EventSink,
    epochs_run: int,
) -> tuple:
    """The fine-tune stage: (backbone, head, test vectors, test items) fine-tuned, or ``frozen`` as given (and
    every test item) if it diverged.  Test images unreadable since the embed stage are left out."""
    tuned = fine_tune(location, frozen[1], data, size, s, on_event, epochs_run)
    if tuned is None:
        on_event(
            events.warning(
                "fine-tuning diverged (the weights are no longer finite numbers); exporting the model without it"
            )
        )
        return (*frozen, test_items)
    backbone, head = tuned
    test_vectors, kept = _features_of(backbone, test_items, size)
    return backbone, head, test_vectors, [test_items[i] for i in kept]


def _accuracy(vectors: np.ndarray, labels: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> float | None:
    """Top-1 accuracy of the head on ``vectors`` (None without any)."""
    return float(np.mean(np.argmax(vectors @ kernel + bias, 1) == labels)) if len(labels) else None


def _export(
    s: TrainSettings,
    load_backbone,
    head: tuple,
    metadata: store.Metadata,
    splits: dict,
    probabilities: np.ndarray,
    test_labels: np.ndarray,
    say,
    fitted: _Trust,
    kept_graph: Path | None,
) -> Path:
    """The export stage: the new version folder, with the test results and the fidelity table beside the model."""
    size = metadata.input["height"]
    example = splits["test"][0] if splits["test"] else splits["train"][0]
    train_items, test_items = splits["train"], splits["test"]

    def verify(folder: Path, files) -> dict:
        sample = trust.fidelity_sample(len(test_items))
        readable = [(sample[i], data, pixels) for i, data, pixels in _readable([test_items[j] for j in sample], size)]
        kept = [index for index, _, _ in readable]
        encoded = [data for _, data, _ in readable]
        images = np.stack([pixels for _, _, pixels in readable]) if readable else np.zeros((0,))
        return export.measure_fidelity(
            folder,
            files,
            encoded,
            images,
            probabilities[kept],
            fitted.test_unknown[kept],
            fitted.unknown["threshold"],
        )

    return export.export(
        s.models_dir,
        s.model_name(),
        load_backbone=load_backbone,
        head=head,
        labels=metadata.labels,
        image_size=size,
        metadata=metadata,
        tflite=store.tflite_variants(s.tflite),
        warmup_image=export.example_jpeg(next(_readable([example], size), (0, b"", np.full((size, size, 3), 0.5)))[2]),
        representative=lambda: (pixels for _, _, pixels in _readable(calibration_items(train_items), size)),
        on_stage=say,
        prototypes=fitted.prototypes,
        unknown_threshold=fitted.unknown["threshold"],
        verify=verify,
        kept_graph=kept_graph,
        side_files={
            store.RESULTS_FILE: lambda path: save_results(
                path, probabilities, test_labels, metadata.labels, [i.path for i in test_items]
            )
        },
    )


def calibration_items(items: Sequence[ImageItem], least: int = CALIBRATION_IMAGES) -> list[ImageItem]:
    """The training images an int8 export calibrates on: every class in turn, at least one image of each.

    The int8 model's value ranges are measured on these images only, and the split lists images in class
    order: the first ``least`` alone could all be of the first classes, leaving the others' activations
    outside the ranges and their answers distorted.  So classes take turns (the first image of each class,
    then the second of each, ...), and a data set with more classes than ``least`` gets one image per class.

    Args:
        items: The training split.
        least: How many images to take when there are enough (more when there are more classes).

    Returns:
        Up to ``max(least, number of classes)`` items, in turn by class.
    """
    by_class: dict[int, list[ImageItem]] = {}
    for item in items:
        by_class.setdefault(item.label, []).append(item)
    turns = [item for row in itertools.zip_longest(*by_class.values()) for item in row if item is not None]
    return turns[: max(least, len(by_class))]


@dataclass
class _Trust:
    """What the calibrate stage fitted: the calibrated head and the unknown-input detector."""

    head: tuple[np.ndarray, np.ndarray]  # (kernel / T, bias / T)
    calibration: dict  # trust.calibration_summary
    prototypes: np.ndarray  # [K, D]
    unknown: dict  # trust.fit_unknown's record (+ the measured test rate)
    test_unknown: np.ndarray  # [N_test] bool, the training-time flags the fidelity table compares with
    metrics: dict  # the headline numbers for metrics / the done event


def _fit_trust(
    s: TrainSettings,
    vectors: dict,
    labels: dict,
    splits: dict,
    copies: int,
    backbone,
    frozen,
    head: tuple,
    test_vectors: np.ndarray,
    size: int,
    k: int,
) -> _Trust:
    """The calibrate stage: temperature scaling on validation, prototypes and threshold for "none of these".

    After fine-tuning the cached vectors no longer describe the exported backbone, so the training and
    validation images are embedded again with it.
    """
    if backbone is frozen:  # the cached vectors came from this very backbone
        train_vectors, val_vectors = vectors["train"][:: copies + 1], vectors["validation"]
    else:
        train_vectors, kept = _features_of(backbone, splits["train"], size)
        train_labels = labels["train"][kept]
        val_vectors, kept = _features_of(backbone, splits["validation"], size)
        labels = {**labels, "validation": labels["validation"][kept], "train": train_labels}
    kernel, bias = head
    val_logits = val_vectors @ kernel + bias if len(val_vectors) else np.zeros((0, k))
    test_logits = test_vectors @ kernel + bias if len(test_vectors) else np.zeros((0, k))
    temperature = trust.fit_temperature(val_logits, labels["validation"])
    calibration = trust.calibration_summary(temperature, val_logits, labels["validation"], test_logits, labels["test"])
    prototypes, unknown = trust.fit_unknown(train_vectors, labels["train"], val_vectors, k, s.unknown_rate)
    threshold = np.inf if unknown["threshold"] is None else unknown["threshold"]
    test_unknown = trust.ood_scores(test_vectors, prototypes) > threshold
    unknown["test_unknown_rate"] = round(float(test_unknown.mean()), 4) if len(test_unknown) else None
    metrics = {
        "temperature": calibration["temperature"],
        "test_ece_before": calibration["test_ece_before"],
        "test_ece_after": calibration["test_ece_after"],
        "unknown_threshold": unknown["threshold"],
        "test_unknown_rate": unknown["test_unknown_rate"],
    }
    calibrated = (
        (kernel / temperature).astype(np.float32),
        (bias / temperature).astype(np.float32),
    )
    return _Trust(calibrated, calibration, prototypes, unknown, test_unknown, metrics)


def _check_min_accuracy(s: TrainSettings, accuracy: float | None) -> None:
    """The accuracy gate: refuse to publish (before anything is written) below ``--min-accuracy``."""
    if s.min_accuracy is None:
        return
    if accuracy is None:
        raise TrainingError(
            f"no test images to measure the accuracy against --min-accuracy {s.min_accuracy:g}, so no version "
            "was published; raise --test-percent"
        )
    if accuracy < s.min_accuracy:
        raise TrainingError(
            f"the test accuracy {accuracy:.3f} is below --min-accuracy {s.min_accuracy:g}, so no version was published"
        )


def _write_serving_config(models_dir: str, on_event: events.EventSink) -> Path | None:
    """``models.config`` rewritten for every model; a failure is only a warning (the version is published)."""
    try:
        return serving_config.write_models_config(models_dir)
    except (OSError, ValueError) as exc:
        on_event(
            events.warning(
                f"the model was exported, but {Path(models_dir) / store.MODELS_CONFIG_FILE} could "
                f"not be updated ({getattr(exc, 'strerror', None) or exc}); run serve-config later"
            )
        )
        return None


def new_images(data: Dataset, cache: features.EmbeddingCache, copies: int = 0) -> int:
    """Images with at least one vector (the image or an augmented variant) not in the cache yet.

    Args:
        data: the scanned data set.
        cache: the embedding cache for this backbone and input size.
        copies: augmented copies per training image.

    Returns:
        How many images the backbone has to run on.
    """
    return sum(
        1
        for item in data.items
        if any(
            features.cache_key(item.digest, v) not in cache for v in range(copies + 1 if item.split == "train" else 1)
        )
    )


def _review(data: Dataset, splits: dict, vectors: dict, copies: int, cache_dir, on_event) -> dict:
    """The review stage: the data reviewed on the features just computed (the ``review`` event).

    Leaking near-copies are taken out of the validation and test splits (``splits`` and ``vectors`` are
    changed in place).  Returns the summary metadata.json keeps.
    """
    items = [item for name in ("train", "validation", "test") for item in splits[name]]
    parts = [part for part in (vectors["train"][:: copies + 1], vectors["validation"], vectors["test"]) if len(part)]
    rows = np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)
    failed: dict = {}
    thumbs = review.thumbnail_vectors(
        [i.path for i in items], [i.digest for i in items], cache_dir, on_event, on_error=failed.setdefault
    )
    event = review.find_problems(
        rows,
        [i.label for i in items],
        [i.split for i in items],
        [i.digest for i in items],
        [i.path for i in items],
        data.classes,
        None if failed else thumbs,
    )
    event["images"] = len(items)
    on_event(event)
    leaked = review.held_out_leaks(event)
    for name in ("validation", "test"):
        keep = [n for n, item in enumerate(splits[name]) if str(item.path) not in leaked]
        if len(keep) < len(splits[name]):
            splits[name] = [splits[name][n] for n in keep]
            vectors[name] = vectors[name][keep]
    if leaked:
        on_event(
            events.warning(
                f"{len(leaked)} validation or test image{'s have' if len(leaked) != 1 else ' has'} "
                "a near-copy in an earlier split; left out of evaluation so the accuracy is not "
                "inflated"
            )
        )
    return review.summary(event, len(leaked))


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True) if len(logits) else logits
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True) if len(logits) else e


def _leave_out(data: Dataset, failed: dict, on_event: events.EventSink) -> None:
    """Drop images that could not be read at the embed stage; each is named in a warning."""
    data.items = [item for item in data.items if item.path not in failed]
    data.skipped += [Skipped(path, reason) for path, reason in failed.items()]
    for path, reason in failed.items():
        on_event(events.warning(f"{path} was left out: it changed after the scan ({reason})"))


def _readable(items, size: int):
    """(index, file bytes, model-size pixels) of each item that can still be read and decoded.

    The stages after the embed stage (fine-tuned features, calibration, the export's checks) read files
    again; one changed since into something unreadable (junk, a FIFO, gone) is left out of them, never the
    run's error: the embed stage has already said which files changed.
    """
    for index, item in enumerate(items):
        try:
            data = read_image_file(item.path)
            yield index, data, load_image(data, (size, size))
        except (ImageError, OSError):
            continue


def _features_of(extractor, items, size: int, batch_size: int = 32) -> tuple[np.ndarray, list[int]]:
    """The features of the ``items`` still readable (``_readable``), and which items those are."""
    out, kept, batch = [], [], []
    for index, _, pixels in _readable(items, size):
        kept.append(index)
        batch.append(pixels)
        if len(batch) == batch_size:
            out.append(np.asarray(extractor(np.stack(batch))))
            batch = []
    if batch:
        out.append(np.asarray(extractor(np.stack(batch))))
    return (np.concatenate(out) if out else np.zeros((0, 1), np.float32)), kept


def newest_classes(models_dir: str | Path, name: str) -> list[str] | None:
    """The class names of MODELS_DIR/NAME's newest version, or None when there is none (or it cannot be read)."""
    import json

    try:
        versions = store.version_folders(Path(models_dir).expanduser() / name)
    except OSError:  # an unusable MODELS_DIR is said by check_output, in its own words
        return None
    if not versions:
        return None
    folder = versions[-1][1]
    try:
        return list(json.loads((folder / "metadata.json").read_text(encoding="utf-8"))["labels"])
    except (OSError, ValueError, KeyError, TypeError):
        try:
            return (folder / "assets" / "labels.txt").read_text(encoding="utf-8").splitlines()
        except OSError:
            return None


def class_change(s: TrainSettings) -> tuple[list[str], list[str]] | None:
    """(old, new) when this run would add a version of NAME with other classes than its newest version.

    A TF Serving client of NAME would switch class sets silently, so callers refuse unless told otherwise.
    Cheap: reads one metadata file and lists the sources' sub-folders (no image is opened).
    """
    from .dataset import class_names

    old = newest_classes(s.models_dir, s.model_name())
    new = class_names(s.all_sources())
    return (old, new) if old is not None and new and sorted(old) != sorted(new) else None


def free_name(models_dir: str | Path, name: str, classes: list[str]) -> str:
    """NAME-2, NAME-3 … : the first name that is unused or already holds exactly ``classes``."""
    for n in range(2, 1000):
        candidate = f"{name}-{n}"
        old = newest_classes(models_dir, candidate)
        if (
            old is None
            and not (Path(models_dir).expanduser() / candidate).exists()
            or old is not None
            and sorted(old) == sorted(classes)
        ):
            return candidate
    return f"{name}-{datetime.now(timezone.utc):%Y%m%d%H%M%S}"


def recorded_settings(model: str | Path, cache_dir: str | None = None) -> tuple[TrainSettings, dict]:
    """(settings, newest metadata): MODELS_DIR/NAME's newest version's sources and settings, to train the next one.

    ``model`` may also be a version folder (its model is meant).  Raises TrainingError in one sentence when there
    is nothing to retrain from; versions made before sources were recorded retrain from their ``image_dir``.
    """
    import json
    from dataclasses import fields

    from .dataset import DatasetError, Source

    base = Path(model).expanduser().resolve()
    if base.name.isdigit() and (base / "saved_model.pb").exists():
        base = base.parent
    versions = store.version_folders(base)
    if not versions:
        raise TrainingError(f"{base} has no model versions to retrain; train one first")
    newest = versions[-1][1]
    try:
        metadata = json.loads((newest / "metadata.json").read_text(encoding="utf-8"))
        recorded = metadata["training"]
        rows = recorded.get("sources") or [{"path": recorded["image_dir"], "kind": "folder"}]
        sources = [Source.from_dict(row) for row in rows]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, DatasetError):
        raise TrainingError(
            f"{newest / 'metadata.json'} does not record how the model was trained; "
            "train it again with `retrain-studio train`"
        ) from None
    known = {f.name for f in fields(TrainSettings)} - {"image_dir", "models_dir", "name", "cache_dir", "sources"}
    settings = TrainSettings(
        sources[0].path,
        str(base.parent),
        name=base.name,
        cache_dir=cache_dir,
        sources=sources,
        **{k: v for k, v in recorded.items() if k in known},
    )
    try:
        settings.check()
    except SettingsError as exc:
        raise TrainingError(f"the recorded settings of {newest} cannot be used: {exc}") from None
    return settings, metadata


def count_new_images(s: TrainSettings, on_event: events.EventSink = events.ignore) -> tuple[int, Dataset]:
    """How many of ``s``'s images the backbone would have to run on: what a retraining costs before it starts.

    Scans the sources as ``run`` would (so a folder that cannot be trained on fails here, in one sentence) and
    looks each image up in the feature cache; the backbone is never loaded, nor TensorFlow imported.

    Args:
        s: the settings of the training to come (sources, backbone, splits, augmentation, cache folder).
        on_event: receives the scan's ``progress`` events.

    Returns:
        (images not in the cache yet, the scanned data set).

    Raises:
        DatasetError, BackboneError: the sources or the backbone cannot be used.
    """
    info = backbones.resolve(s.backbone, trust=True)  # only its name and weight file's size are read, never its graph
    size = info.image_size
    data = scan(
        s.all_sources(),
        validation_percent=s.validation_percent,
        test_percent=s.test_percent,
        target=(size, size),
        on_event=on_event,
    )
    cache = features.EmbeddingCache(backbones.cache_root(s.cache_dir), backbones.fingerprint(info), size)
    return new_images(data, cache, s.augment_copies if s.augment else 0), data
