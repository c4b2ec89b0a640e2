"""Write ``MODELS_DIR/NAME/VERSION/``: SavedModel + TFLite + labels + warm-up + metadata.

The version folder is assembled under a hidden temporary name inside ``MODELS_DIR/NAME``
and renamed into place only when complete.  TF Serving loads only folders whose name is
an integer, so neither it nor ``--model`` ever sees half a model, even if the process
is killed.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from app.store import (
    BATCHING_PARAMETERS_FILE,
    BYTES_INPUT,
    CLASS_INDEX_INPUT,
    CLASS_NAME_OUTPUT,
    CLASS_NAMES_SIGNATURE,
    CLASSES_OUTPUT,
    IMAGES_INPUT,
    IMAGES_SIGNATURE,
    LABELS_FILE,
    MODELS_CONFIG_FILE,
    OOD_SCORE_OUTPUT,
    PROBABILITIES_OUTPUT,
    SAVED_MODEL_FILE,
    SCORES_OUTPUT,
    SERVING_SIGNATURE,
    TFLITE_FILES,
    UNKNOWN_OUTPUT,
    WARMUP_FILE,
    Metadata,
    next_version,
    tflite_outputs,
    write_metadata,
)

from . import export_graphs
from .atomic import remove_stale_temps, temp_folder

MAX_NAME = 100
NAME_RE = re.compile(rf"[A-Za-z0-9_-][A-Za-z0-9_.-]{{0,{MAX_NAME - 1}}}")
RESERVED_NAMES = {MODELS_CONFIG_FILE, BATCHING_PARAMETERS_FILE}  # files TF Serving reads beside the model folders
MIN_FREE_BYTES = 200 * 2**20  # a version is ~30-60 MB (SavedModel + TFLite variants) written beside the last


class OutputError(ValueError):
    """The model name or models folder cannot take a new version; the message is one plain sentence."""


def check_name(name: str) -> str:
    """``name`` if it is one safe folder name inside MODELS_DIR.

    Letters, digits, ``_``, ``.`` and ``-``, not starting with ``.``, at most MAX_NAME: no separators,
    ``..``, hidden or absolute names, nothing a shell, TF Serving or a URL would read differently.  The
    CLI, the training API and the GUI all ask here.

    Args:
        name: the model name asked for.

    Returns:
        ``name`` unchanged.

    Raises:
        OutputError: the name is not allowed (one sentence saying what is).
    """
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or name in RESERVED_NAMES:
        shown = repr(name) if len(repr(name)) <= 60 else repr(name)[:57] + "..."
        raise OutputError(
            f"the model name {shown} is not allowed; use 1-{MAX_NAME} letters, digits, "
            "'_', '.' or '-', not starting with '.'"
        )
    return name


def safe_name(text: str, fallback: str = "classifier") -> str:
    """A name ``check_name`` accepts, made from any text (a folder's name): bad characters become ``_``.

    Args:
        text: any text.
        fallback: the name when nothing usable is left.

    Returns:
        The name.
    """
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", text)
    name = re.sub(r"^\.", "_", name)[:MAX_NAME]
    return name if name and name not in RESERVED_NAMES else fallback


def check_output(models_dir: str | Path, name: str, min_free: int = MIN_FREE_BYTES) -> Path:
    """``MODELS_DIR/NAME`` if a new version can be written there: asked before any work.

    The folder that will be written into is the nearest existing one of NAME, MODELS_DIR and
    MODELS_DIR's parents (the missing ones get created): it must be a writable folder with
    ``min_free`` bytes free.  Only NAME's folder matters when it exists: a read-only MODELS_DIR
    holding a writable NAME still takes a version (then ``models.config`` is only warned about).

    Args:
        models_dir: the models folder.
        name: the model name.
        min_free: bytes a version needs.

    Returns:
        The model's base folder (it may not exist yet).

    Raises:
        OutputError: a bad name, an over-long folder name, a file in the way, no write access, too little space.
    """
    base = Path(models_dir).expanduser() / check_name(name)
    try:
        name_max = os.pathconf("/", "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if any(len(os.fsencode(part)) > name_max for part in base.parts):
        raise OutputError(f"the models folder {models_dir} has a folder name longer than {name_max} bytes")
    try:
        folder = base
        while not os.path.lexists(folder) and folder.parent != folder:
            folder = folder.parent
        if not folder.is_dir():
            raise OutputError(f"{folder} is not a folder, so no model can be written under {models_dir}")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputError(f"the folder {folder} is not writable, so no model can be written there")
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        raise OutputError(f"the models folder {models_dir} cannot be used ({exc.strerror or exc})") from exc
    if free < min_free:
        raise OutputError(
            f"only {free / 2**20:.0f} MB is free in {folder}; a model version needs about {min_free / 2**20:.0f} MB"
        )
    return base


def head_values(
    head_kernel: np.ndarray,
    head_bias: np.ndarray,
    labels: Sequence[str],
    prototypes: np.ndarray | None,
    unknown_threshold: float | None,
) -> dict[str, np.ndarray]:
    """The numbers (and labels) of a version that are not the backbone's: ``build_module``'s variables.

    Everything else in the exported graph depends only on the backbone, the input size and the number of
    classes, which is what lets ``export_graphs`` reuse a graph by writing just these.

    Args:
        head_kernel: the softmax head's weights [D, K] (calibrated, see ``build_module``).
        head_bias: its bias [K].
        labels: the K class names.
        prototypes: ``trust.class_prototypes`` [K, D], or None (zero rows: every ood_score is 1).
        unknown_threshold: the unknown-input threshold, or None (never unknown).

    Returns:
        {``build_module``'s attribute (so its checkpoint key): value}; prototypes transposed to [D, K], as
        the graph uses them.
    """
    if prototypes is None:
        prototypes = np.zeros((len(labels), head_kernel.shape[0]), np.float32)
    return {
        "head_kernel": np.asarray(head_kernel, np.float32),
        "head_bias": np.asarray(head_bias, np.float32),
        "prototypes": np.ascontiguousarray(np.asarray(prototypes, np.float32).T),
        "unknown_threshold": np.float32(np.inf if unknown_threshold is None else unknown_threshold),
        "labels": np.array([label.encode() for label in labels], dtype=object),
    }


def build_module(
    backbone,
    head_kernel: np.ndarray,
    head_bias: np.ndarray,
    labels: Sequence[str],
    image_size: int,
    labels_file: str,
    prototypes: np.ndarray | None = None,
    unknown_threshold: float | None = None,
):
    """A tf.Module with the three serving signatures and a TFLite-friendly probabilities function.

    Args:
        backbone: callable images [N, H, W, 3] float32 -> features [N, D].
        head_kernel: the softmax head's weights [D, K], already divided by the calibration temperature, so
            every signature and .tflite answers with the calibrated probabilities.
        head_bias: its bias [K] (divided likewise).
        labels: the K class names.
        image_size: the square input side in pixels.
        labels_file: a text file of the labels, saved as the asset ``store.LABELS_FILE``.
        prototypes: ``trust.class_prototypes`` [K, D] for the ``ood_score`` output (None: zero rows, so every
            score is 1 and, without a threshold, nothing is unknown).
        unknown_threshold: ``unknown`` is ``ood_score > unknown_threshold`` (None: never unknown).

    Returns:
        The module (signature and input/output names from ``app.store``).
    """
    import tensorflow as tf

    from .graph_preprocess import load_image

    size = image_size
    values = head_values(head_kernel, head_bias, labels, prototypes, unknown_threshold)

    class ImageClassifier(tf.Module):
        def __init__(self):
            super().__init__(name="retrain_studio_classifier")
            self.backbone = backbone
            for attribute, value in values.items():  # the attribute names are the checkpoint's keys
                setattr(self, attribute, tf.Variable(value, trainable=False, name=attribute))
            self.labels_file = tf.saved_model.Asset(labels_file)

        def _scores(self, images):
            """(calibrated probabilities [N, K], ood_score [N]): trust.ood_scores' arithmetic, in the graph."""
            features = self.backbone(images)
            probabilities = tf.nn.softmax(tf.matmul(features, self.head_kernel) + self.head_bias)
            similarity = tf.matmul(tf.math.l2_normalize(features, axis=1), self.prototypes)
            return probabilities, 1.0 - tf.reduce_max(similarity, axis=1)

        def _outputs(self, images):
            probabilities, ood_score = self._scores(images)
            top = tf.argmax(probabilities, axis=1, output_type=tf.int32)
            return {
                PROBABILITIES_OUTPUT: probabilities,
                CLASSES_OUTPUT: tf.gather(self.labels, top),
                SCORES_OUTPUT: tf.reduce_max(probabilities, axis=1),
                UNKNOWN_OUTPUT: tf.greater(ood_score, self.unknown_threshold),
                OOD_SCORE_OUTPUT: ood_score,
            }

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=BYTES_INPUT)], autograph=False)
        def serve_bytes(self, image_bytes):
            images = tf.map_fn(
                lambda data: load_image(data, size, size),
                image_bytes,
                fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32),
            )
            return self._outputs(images)

        @tf.function(
            input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name=IMAGES_INPUT)], autograph=False
        )
        def serve_images(self, images):
            return self._outputs(images)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, name=CLASS_INDEX_INPUT)], autograph=False)
        def class_names(self, class_index):
            return {CLASS_NAME_OUTPUT: tf.gather(self.labels, class_index)}

        @tf.function(
            input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32, name=IMAGES_INPUT)], autograph=False
        )
        def tflite_probabilities(self, images):
            # a tuple, not a dict (whose keys would be sorted): output 0 stays the probabilities, as apps expect
            return self._scores(images)

    return ImageClassifier()


def _convert_tflite(module, mode: str, representative: Callable[[], np.ndarray] | None) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.tflite_probabilities.get_concrete_function()], module
    )
    if mode in ("dynamic", "int8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "int8":

        def dataset():
            for image in representative():
                yield [image[None].astype(np.float32)]

        converter.representative_dataset = dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return _probabilities_first(converter.convert())


def _probabilities_first(model: bytes) -> bytes:
    """The .tflite with its outputs listed probabilities first, as apps reading output 0 expect.

    The converter lists the function's outputs in an order of its own (ood_score came first); only the
    subgraph's output list is reordered, so tensors, names and the signature stay as they are.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    parsed = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    graph = parsed.subgraphs[0]
    outputs = list(graph.outputs)
    ranked = sorted(outputs, key=lambda index: -len(graph.tensors[index].shape))  # [1, K] before [1]
    if ranked == outputs:
        return model
    graph.outputs = ranked
    return bytes(flatbuffer_utils.convert_object_to_bytearray(parsed))


def _warmup_record(model_name: str, example_jpeg: bytes) -> bytes:
    """One PredictionLog, as TF Serving reads from ``WARMUP_FILE`` (assets.extra/tf_serving_warmup_requests)."""
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model_name, signature_name=SERVING_SIGNATURE)
    )
    request.inputs[BYTES_INPUT].CopyFrom(tf.make_tensor_proto([example_jpeg], dtype=tf.string))
    log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
    return log.SerializeToString()


def example_jpeg(image: np.ndarray) -> bytes:
    """A small JPEG of a preprocessed [H, W, 3] image in [0, 1], for warm-up requests."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def export(
    models_dir: str | Path,
    name: str,
    *,
    load_backbone: Callable[[], object],
    head: tuple[np.ndarray, np.ndarray],
    labels: Sequence[str],
    image_size: int,
    metadata: Metadata,
    tflite: Sequence[str] = ("float",),
    warmup_image: bytes | None = None,
    representative: Callable[[], np.ndarray] | None = None,
    on_stage: Callable[[str], None] = lambda s: None,
    side_files: Mapping[str, Callable[[Path], None]] | None = None,
    prototypes: np.ndarray | None = None,
    unknown_threshold: float | None = None,
    verify: Callable[[Path, Mapping[str, str]], dict] | None = None,
    kept_graph: Path | None = None,
) -> Path:
    """Write a complete new version and return its folder ``MODELS_DIR/NAME/VERSION``.

    Everything is written into a hidden temporary folder, metadata.json last, and renamed to the next
    version number (``store.next_version``) only when complete.

    Args:
        models_dir: the models folder.
        name: the model name (checked with ``check_name``).
        load_backbone: returns the feature extractor to bake into the SavedModel; called only when the graph
            is built (not when a kept one is reused), so a warm retrain need not load it.
        head: (kernel [D, K], bias [K]) of the softmax head.
        labels: the class names, in output order.
        image_size: the square input side in pixels.
        metadata: the version's metadata; ``name``, ``version`` and ``files`` are filled in here.
        tflite: the TFLite variants to convert (keys of ``store.TFLITE_FILES``).
        warmup_image: an encoded image for TF Serving's warm-up record, or None for none.
        representative: images for int8 calibration (needed only for ``"int8"``).
        on_stage: told each step ("saving SavedModel", "converting to TFLite (float)").
        side_files: {file name: function writing that file given its path}, e.g. the test results:
            written into the hidden folder like the rest, so a version never appears without them.
        prototypes: the unknown-input detector's class prototypes (``build_module``).
        unknown_threshold: its threshold.
        verify: given the hidden folder and the files written ({what: path}), returns metadata.json's
            ``fidelity`` record (``measure_fidelity``); run before the rename, so a version never appears
            without its proof.
        kept_graph: where ``export_graphs`` keeps the graph for this backbone, size and number of classes
            (None: neither reuse nor keep one, e.g. after fine-tuning changed the backbone's weights).  Used
            when it exists and only the float .tflite is asked for, and published only when ``verify``
            proves it (without test images to prove it, the export is done in full); kept after a full
            export that passed ``verify``.

    Returns:
        The new version folder.

    Raises:
        OutputError: the name is not allowed.
        OSError: the folder cannot be written (nothing half-written is left visible).
    """
    import tensorflow as tf

    base = Path(models_dir).expanduser() / check_name(name)
    base.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(base)
    tmp = temp_folder(base)
    tmp.mkdir()
    values = head_values(*head, labels, prototypes, unknown_threshold)
    labels_text = "".join(f"{label}\n" for label in labels)
    reusable = export_graphs.reusable(kept_graph, tflite)

    def write_model(reuse: bool) -> tuple[dict, bool]:
        """({what: file} of the model files written into ``tmp``, whether a kept graph was reused)."""
        if reuse and export_graphs.write(kept_graph, tmp, values, labels_text, "float" in tflite):
            on_stage("writing the new numbers into the graph kept from an earlier export")
            files = {"saved_model": SAVED_MODEL_FILE, "labels": LABELS_FILE}
            return {**files, **{f"tflite_{mode}": TFLITE_FILES[mode] for mode in tflite}}, True
        with tempfile.TemporaryDirectory() as scratch:
            labels_file = Path(scratch, Path(LABELS_FILE).name)  # the Asset keeps its name: assets/labels.txt
            labels_file.write_text(labels_text, encoding="utf-8")
            module = build_module(
                load_backbone(), *head, labels, image_size, str(labels_file), prototypes, unknown_threshold
            )
            on_stage("saving SavedModel")
            tf.saved_model.save(
                module,
                str(tmp),
                # the functions, not traces of them: save traces each once, in its save context, for both
                # the signature and the attribute (a trace made before would be saved as a second copy)
                signatures={
                    SERVING_SIGNATURE: module.serve_bytes,
                    IMAGES_SIGNATURE: module.serve_images,
                    CLASS_NAMES_SIGNATURE: module.class_names,
                },
            )
        files = {"saved_model": SAVED_MODEL_FILE, "labels": LABELS_FILE}
        for mode in tflite:
            on_stage(f"converting to TFLite ({mode})")
            (tmp / TFLITE_FILES[mode]).write_bytes(_convert_tflite(module, mode, representative))
            files[f"tflite_{mode}"] = TFLITE_FILES[mode]
        return files, False

    try:
        files, reused = write_model(reusable)
        files.update(_write_rest(tmp, name, warmup_image, side_files))
        fidelity, proven = None, None
        if verify is not None:
            on_stage("checking that every exported file answers like the trained model")
            fidelity, proven = _verified(verify, tmp, files, reused)
        if reused and proven is not True:  # a reused graph is published only when shown to answer right
            if proven is False:  # a kept graph that no longer answers right (or cannot be read): drop it
                export_graphs.forget(kept_graph)
            shutil.rmtree(tmp)
            tmp.mkdir()
            files, reused = write_model(False)
            files.update(_write_rest(tmp, name, warmup_image, side_files))
            if verify is not None:
                fidelity, proven = _verified(verify, tmp, files, reused)
        if verify is not None:
            metadata = replace(metadata, fidelity=fidelity)
        target = _publish(tmp, base, replace(metadata, name=name, files=files))
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if kept_graph is not None and not reused and proven and "float" in tflite:
        export_graphs.keep(kept_graph.parent, kept_graph.name, target, values)
    return target


def _write_rest(
    folder: Path, name: str, warmup_image: bytes | None, side_files: Mapping[str, Callable[[Path], None]] | None
) -> dict[str, str]:
    """The warm-up record and the side files beside the model; returns their metadata ``files`` entries."""
    import tensorflow as tf

    written = {}
    if warmup_image is not None:
        (folder / WARMUP_FILE).parent.mkdir()
        with tf.io.TFRecordWriter(str(folder / WARMUP_FILE)) as writer:
            writer.write(_warmup_record(name, warmup_image))
        written["warmup"] = WARMUP_FILE
    for file_name, write in (side_files or {}).items():
        write(folder / file_name)
        written[Path(file_name).stem] = file_name
    return written


def _verified(
    verify: Callable[[Path, Mapping[str, str]], dict], folder: Path, files: Mapping[str, str], reused: bool
) -> tuple[dict | None, bool | None]:
    """(``verify``'s fidelity record, ``_all_within_tolerance`` of it) for the files in ``folder``.

    Files written from a kept graph that a library cannot even load (a damaged kept file) count as not
    answering right, (None, False): the kept graph's failure, never the run's.  A full export's error is raised.
    """
    try:
        fidelity = verify(folder, files)
    except Exception:  # noqa: BLE001 (any library's error on a reused graph's files only costs the reuse)
        if not reused:
            raise
        return None, False
    return fidelity, _all_within_tolerance(fidelity)


def _all_within_tolerance(fidelity: dict) -> bool | None:
    """Whether every file answered like the trained model (None: no test image to tell)."""
    verdicts = [row["within_tolerance"] for row in fidelity.get("artifacts", {}).values()]
    if not verdicts or None in verdicts:
        return None
    return all(verdicts)


def _publish(tmp: Path, base: Path, metadata: Metadata) -> Path:
    """Rename the complete ``tmp`` to the next free version number of ``base`` (metadata.json written last)."""
    version = next_version(base)
    while True:
        write_metadata(tmp, replace(metadata, version=version))
        target = base / str(version)
        try:
            os.rename(tmp, target)
            return target
        except OSError:
            if not target.exists():
                raise
            version += 1  # another export took this number first


def _tflite_scores(model_file: Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(probabilities [N, K], ood_score [N] or None) of a .tflite file, one image at a time (batch 1), on as
    many threads as the embed stage (2 threads: 50 images through a dynamic-range file 0.86 -> 0.61 s)."""
    from ai_edge_litert.interpreter import Interpreter

    from .backbones import LITERT_THREADS

    interpreter = Interpreter(model_path=str(model_file), num_threads=LITERT_THREADS)
    interpreter.allocate_tensors()
    probabilities_out, ood_out = tflite_outputs(interpreter.get_output_details())
    index = interpreter.get_input_details()[0]["index"]
    probabilities, ood = [], []
    for image in images:
        interpreter.set_tensor(index, image[None].astype(np.float32))
        interpreter.invoke()
        probabilities.append(interpreter.get_tensor(probabilities_out["index"])[0])
        if ood_out is not None:
            ood.append(interpreter.get_tensor(ood_out["index"])[0])
    return np.array(probabilities).reshape(-1, int(probabilities_out["shape"][-1])), (
        np.array(ood) if ood_out is not None else None
    )


def measure_fidelity(
    folder: Path,
    files: Mapping[str, str],
    encoded: Sequence[bytes],
    images: np.ndarray,
    reference_probabilities: np.ndarray,
    reference_unknown: np.ndarray,
    unknown_threshold: float | None,
    batch_size: int = 32,
) -> dict:
    """Run the same images through every file of a version and compare each with the training-time answers.

    A quantized .tflite gets every image given; the float files an evenly spread ``trust.FIDELITY_FLOAT_IMAGES``
    of them (each row says how many).

    The SavedModel's bytes signature gets the encoded files (decoded in its graph), its images signature
    and every .tflite the host-preprocessed pixels (``app.imaging``), as the backends send them.

    Args:
        folder: the (not yet published) version folder.
        files: {what: path} as written (``saved_model``, ``tflite_float``, ...).
        encoded: the test images' file bytes.
        images: the same images preprocessed on the host [N, H, W, 3].
        reference_probabilities: training-time calibrated probabilities [N, K].
        reference_unknown: training-time unknown flags [N].
        unknown_threshold: metadata's threshold, applied to each .tflite's ood_score.
        batch_size: images per SavedModel call.

    Returns:
        {"images", "reference", "artifacts": {artifact: ``trust.fidelity`` row}}.
    """
    import tensorflow as tf

    from .trust import FIDELITY_FLOAT_IMAGES, fidelity, fidelity_sample

    threshold = np.inf if unknown_threshold is None else unknown_threshold
    few = fidelity_sample(len(encoded), FIDELITY_FLOAT_IMAGES)  # enough for a float file (trust.py says why)
    artifacts: dict = {}
    if len(encoded):
        model = tf.saved_model.load(str(folder))
        for signature, inputs, make in (
            (SERVING_SIGNATURE, [encoded[i] for i in few], lambda chunk: {BYTES_INPUT: tf.constant(list(chunk))}),
            (IMAGES_SIGNATURE, images[few], lambda chunk: {IMAGES_INPUT: tf.constant(chunk, tf.float32)}),
        ):
            outs = [
                model.signatures[signature](**make(inputs[i : i + batch_size]))
                for i in range(0, len(inputs), batch_size)
            ]
            probabilities = np.concatenate([o[PROBABILITIES_OUTPUT].numpy() for o in outs])
            unknown = np.concatenate([o[UNKNOWN_OUTPUT].numpy() for o in outs])
            artifacts[f"saved_model:{signature}"] = fidelity(
                reference_probabilities[few], reference_unknown[few], probabilities, unknown, "float"
            )
        del model
        for mode, name in TFLITE_FILES.items():
            if f"tflite_{mode}" in files:
                picks = few if mode == "float" else list(range(len(encoded)))
                probabilities, ood = _tflite_scores(folder / name, images[picks])
                unknown = None if ood is None else ood > threshold
                kind = "float" if mode == "float" else "quantized"
                artifacts[name] = fidelity(
                    reference_probabilities[picks], reference_unknown[picks], probabilities, unknown, kind
                )
    return {
        "images": len(encoded),
        "reference": "the test split's calibrated probabilities computed at training from the embedding cache",
        "artifacts": artifacts,
    }
