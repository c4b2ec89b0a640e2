"""Trust in each answer: calibrated confidence, "none of these" (unknown input), and export fidelity.

Numpy only (no TensorFlow, no Qt): training calls these on the cached embeddings and logits; the
exported graph repeats the same arithmetic (``export.build_module``), and the fidelity table compares
what every exported file answers with what training computed here.

Example::

    temperature = fit_temperature(val_logits, val_labels)          # probabilities = softmax(logits / T)
    prototypes = class_prototypes(train_vectors, train_labels, k)    # [K, D] unit vectors
    threshold = unknown_threshold(ood_scores(val_vectors, prototypes), target_rate=0.05)
    unknown = ood_scores(vectors, prototypes) > threshold
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

OOD_KIND = "prototype_cosine"  # 1 - the highest cosine similarity to a class's mean unit embedding
ECE_BINS = 15
MIN_HELDOUT = 20  # fewer held-out images than this: the threshold also uses the training images (said in metadata)
FIDELITY_IMAGES = 128  # test images the export's fidelity check runs through a quantized file (spread over the split):
# enough to measure its agreement with training to ~1 %; the whole split of 8,000 images (800) made the export most of
# a warm retrain, and 60,000 (6,000) would add minutes and GBs of pixels.
FIDELITY_FLOAT_IMAGES = 32  # ... and through each float file (the SavedModel's two signatures, the float .tflite):
# a float file answers like training to 1e-5 or is broken, which any image shows; each image costs ~40 ms of CPU in
# TensorFlow, so 128 of them were 3 s of a 6 s export.

# How far an exported file may answer from the training-time numbers before `classify` and the export page warn:
# float files differ only by float rounding (the backbone runs in LiteRT at training, in TensorFlow in the
# SavedModel); quantized files approximate every weight, so their probabilities and scores move more.
# Measured on real exports (docs/benchmarks.md): float files 3e-6 at most; dynamic-range 0.097 at most, 0.0035 on
# average, 98.8 % top-1 agreement; int8 0.31 at most (one image), 0.0097 on average, 96.3 % top-1 agreement.  For a
# quantized file the mean and the agreements judge it; the largest difference only catches a broken file.
TOLERANCES = {
    "float": {"max_abs_diff": 1e-5, "mean_abs_diff": 1e-6, "top1_agreement": 1.0, "unknown_agreement": 0.99},
    "quantized": {"max_abs_diff": 0.5, "mean_abs_diff": 0.02, "top1_agreement": 0.95, "unknown_agreement": 0.9},
}


def fidelity_sample(count: int, most: int = FIDELITY_IMAGES) -> list[int]:
    """Which of ``count`` test images the export's fidelity check runs: all, or ``most`` spread evenly.

    The test split lists images class by class, so evenly spaced picks keep every class in the check,
    while its time and memory stay bounded at any size of data set.

    Args:
        count: Test images.
        most: The most to check.

    Returns:
        Ascending indices into the test split.

    >>> fidelity_sample(5, most=3)
    [0, 2, 4]
    """
    if count <= most:
        return list(range(count))
    return sorted({int(i) for i in np.linspace(0, count - 1, most).round()})


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits.

    Args:
        logits: [N, K].

    Returns:
        [N, K] probabilities (float64); an empty input stays empty.
    """
    logits = np.asarray(logits, dtype=np.float64)
    if not logits.size:
        return logits
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: Sequence[int], low: float = 0.05, high: float = 20.0) -> float:
    """The temperature T minimising the negative log-likelihood of ``softmax(logits / T)`` (Guo et al. 2017).

    One number, so accuracy never changes (the top class is the same at every T); it only makes the
    probabilities mean what they say.  Label smoothing leaves a head under-confident (T < 1), a head
    trained long on few images over-confident (T > 1).  Golden-section search over log T: the NLL is
    convex in 1/T.

    Args:
        logits: held-out (validation) logits [N, K].
        labels: their true class indices [N].
        low: the smallest temperature considered.
        high: the largest.

    Returns:
        T, or 1.0 when there is nothing to fit on.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if not len(labels) or not np.isfinite(logits).all():
        return 1.0
    a, b = np.log(low), np.log(high)
    ratio = (np.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = _nll(logits, labels, np.exp(c)), _nll(logits, labels, np.exp(d))
    for _ in range(60):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = _nll(logits, labels, np.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = _nll(logits, labels, np.exp(d))
    best = float(np.exp((a + b) / 2))
    return best if _nll(logits, labels, best) <= _nll(logits, labels, 1.0) else 1.0


def expected_calibration_error(probabilities: np.ndarray, labels: Sequence[int], bins: int = ECE_BINS) -> float | None:
    """Expected calibration error: the image-weighted mean gap between confidence and accuracy per confidence bin.

    Args:
        probabilities: [N, K].
        labels: true class indices [N].
        bins: equal-width confidence bins over [0, 1].

    Returns:
        The ECE in [0, 1], or None without images.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if not len(labels):
        return None
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    which = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    total = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            total += members.sum() * abs(confidence[members].mean() - correct[members].mean())
    return float(total / len(labels))


def calibration_summary(
    temperature: float, val_logits: np.ndarray, val_labels, test_logits: np.ndarray, test_labels
) -> dict:
    """What metadata.json records about calibration: T, and the ECE before and after on validation and test.

    Args:
        temperature: the fitted T.
        val_logits: validation logits (what T was fitted on).
        val_labels: their classes.
        test_logits: test logits (the honest measurement).
        test_labels: their classes.

    Returns:
        {"method", "temperature", "fitted_on", "fitted_images", "ece_bins", "test_ece_before",
        "test_ece_after", "validation_ece_before", "validation_ece_after"} (an ECE is None without images).
    """

    def ece(logits, labels, t):
        return None if not len(labels) else round(expected_calibration_error(softmax(logits / t), labels), 5)

    return {
        "method": "temperature",
        "temperature": round(float(temperature), 6),
        "fitted_on": "validation",
        "fitted_images": len(val_labels),
        "ece_bins": ECE_BINS,
        "test_ece_before": ece(test_logits, test_labels, 1.0),
        "test_ece_after": ece(test_logits, test_labels, temperature),
        "validation_ece_before": ece(val_logits, val_labels, 1.0),
        "validation_ece_after": ece(val_logits, val_labels, temperature),
    }


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1 (a zero row stays zero), as ``tf.math.l2_normalize`` does in the graph."""
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.sqrt(np.maximum((vectors**2).sum(axis=1, keepdims=True), 1e-12))
    return vectors / norms


def class_prototypes(vectors: np.ndarray, labels: Sequence[int], k: int) -> np.ndarray:
    """Each class's prototype: the mean of its unit embeddings, scaled to length 1.

    Args:
        vectors: training embeddings [N, D].
        labels: their classes [N].
        k: the number of classes.

    Returns:
        [K, D] float32; a class without embeddings gets a zero row (nothing is near it).
    """
    vectors = unit_rows(vectors)
    labels = np.asarray(labels, dtype=np.int64)
    means = np.zeros((k, vectors.shape[1]), np.float64)
    for c in range(k):
        if (labels == c).any():
            means[c] = vectors[labels == c].mean(axis=0)
    return unit_rows(means).astype(np.float32)


def ood_scores(vectors: np.ndarray, prototypes: np.ndarray) -> np.ndarray:
    """The out-of-distribution score of each embedding: 1 - its highest cosine similarity to a class prototype.

    0 for an image exactly like a class's average, up to 2 for the opposite direction; an image of none of
    the classes lies far from every prototype.  Chosen over nearest-neighbour and Mahalanobis distances on
    real data (Fashion-MNIST, docs/benchmarks.md): as good, and only K x D numbers in the exported model.

    Args:
        vectors: embeddings [N, D].
        prototypes: ``class_prototypes`` [K, D].

    Returns:
        [N] float64 scores (higher: less like any class).
    """
    if not len(vectors):
        return np.zeros(0)
    return 1.0 - (unit_rows(vectors) @ np.asarray(prototypes, np.float64).T).max(axis=1)


def unknown_threshold(scores: np.ndarray, target_rate: float) -> float:
    """The score above which an image is called unknown, so that at most ``target_rate`` of held-out images are.

    Halfway between the held-out score at the (1 - target_rate) quantile and the next higher one, so a
    float32 graph and float64 numpy put no held-out image on different sides of it.

    Args:
        scores: held-out in-distribution images' ``ood_scores``.
        target_rate: the false-unknown rate wanted, in (0, 1).

    Returns:
        The threshold, or +inf without scores.
    """
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    if not len(scores):
        return float("inf")
    index = min(len(scores) - 1, max(0, int(np.ceil((1.0 - target_rate) * len(scores))) - 1))
    upper = scores[index + 1] if index + 1 < len(scores) else scores[index] + 1e-3
    return float((scores[index] + upper) / 2)


def fit_unknown(
    train_vectors: np.ndarray,
    train_labels,
    heldout_vectors: np.ndarray,
    k: int,
    target_rate: float,
) -> tuple[np.ndarray, dict]:
    """Fit the unknown-input detector: prototypes on the training images, threshold on held-out images.

    With fewer than ``MIN_HELDOUT`` held-out images the threshold also uses the training images (whose
    scores are optimistic: they shaped the prototypes), and metadata says so.

    Args:
        train_vectors: training embeddings [N, D] (one per image, no augmented copies).
        train_labels: their classes.
        heldout_vectors: validation embeddings (images the prototypes never saw).
        k: the number of classes.
        target_rate: the false-unknown rate wanted on in-distribution images.

    Returns:
        (prototypes [K, D] float32, metadata.json's ``unknown`` record: kind, threshold, target rate, the
        rate measured on the images the threshold was chosen on, and which those were).
    """
    prototypes = class_prototypes(train_vectors, train_labels, k)
    heldout = ood_scores(heldout_vectors, prototypes)
    chosen_on = "validation"
    if len(heldout) < MIN_HELDOUT:
        heldout = np.concatenate([heldout, ood_scores(train_vectors, prototypes)])
        chosen_on = "validation+train"
    threshold = unknown_threshold(heldout, target_rate)
    record = {
        "kind": OOD_KIND,
        "threshold": threshold if np.isfinite(threshold) else None,
        "target_unknown_rate": target_rate,
        "chosen_on": chosen_on,
        "chosen_on_images": int(len(heldout)),
        "chosen_on_unknown_rate": round(float(np.mean(heldout > threshold)), 4) if len(heldout) else None,
    }
    return prototypes, record


def artifact_name(backend: str, model_file: str | None = None) -> str:
    """The fidelity table's name for what a local backend runs: the .tflite file's name, or the bytes signature."""
    return model_file if backend == "tflite" and model_file else "saved_model:serving_default"


def fidelity(
    reference_probabilities: np.ndarray,
    reference_unknown: np.ndarray,
    probabilities: np.ndarray,
    unknown: np.ndarray | None,
    kind: str,
) -> dict:
    """How one exported file's answers compare with the training-time ones on the same images.

    Args:
        reference_probabilities: training-time calibrated probabilities [N, K].
        reference_unknown: training-time unknown flags [N].
        probabilities: the file's probabilities for the same images.
        unknown: the file's unknown flags (None when it gives none).
        kind: ``"float"`` or ``"quantized"``: which of ``TOLERANCES`` applies.

    Returns:
        {"images", "top1_agreement", "max_abs_diff", "mean_abs_diff", "unknown_agreement", "tolerance",
        "within_tolerance"}.
    """
    ref = np.asarray(reference_probabilities, np.float64)
    got = np.asarray(probabilities, np.float64)
    tolerance = TOLERANCES[kind]
    if not len(ref):
        return {"images": 0, "tolerance": {"kind": kind, **tolerance}, "within_tolerance": None}
    diff = np.abs(ref - got)
    row = {
        "images": len(ref),
        "top1_agreement": round(float(np.mean(ref.argmax(1) == got.argmax(1))), 5),
        "max_abs_diff": float(f"{diff.max():.3g}"),
        "mean_abs_diff": float(f"{diff.mean():.3g}"),
        "unknown_agreement": None
        if unknown is None
        else round(float(np.mean(np.asarray(reference_unknown, bool) == np.asarray(unknown, bool))), 5),
    }
    row["tolerance"] = {"kind": kind, **tolerance}
    row["within_tolerance"] = bool(
        row["top1_agreement"] >= tolerance["top1_agreement"]
        and row["max_abs_diff"] <= tolerance["max_abs_diff"]
        and row["mean_abs_diff"] <= tolerance["mean_abs_diff"]
        and (row["unknown_agreement"] is None or row["unknown_agreement"] >= tolerance["unknown_agreement"])
    )
    return row


def fidelity_warnings(table: dict | None, artifact: str | None = None) -> list[str]:
    """One sentence per exported file whose answers differ from training beyond its tolerance.

    Args:
        table: metadata.json's ``fidelity`` ({"artifacts": {name: ``fidelity`` row}}), or None.
        artifact: only this file's row (``model.tflite``, ``saved_model:serving_default``); None: every file.

    Returns:
        The sentences (empty when every file agrees, or nothing was recorded).
    """
    rows = (table or {}).get("artifacts") if isinstance(table, dict) else None
    if not isinstance(rows, dict):
        return []
    out = []
    for name, row in rows.items():
        if artifact is not None and name != artifact:
            continue
        if isinstance(row, dict) and row.get("within_tolerance") is False:
            out.append(
                f"{name} answers differently from the trained model beyond its tolerance "
                f"(top-1 agreement {row.get('top1_agreement')}, largest probability difference "
                f"{row.get('max_abs_diff')}, unknown-flag agreement {row.get('unknown_agreement')})"
            )
    return out


# --- why: occlusion saliency ----------------------------------------------------------------------------------
OCCLUSION_PATCH = 4  # a patch covers 1/4 of the side ...
OCCLUSION_STRIDE = 8  # ... and moves by 1/8 of it: 7 x 7 overlapping positions


def occlusion_images(image: np.ndarray, patch_fraction: int = OCCLUSION_PATCH, stride_fraction: int = OCCLUSION_STRIDE):
    """The image with each square patch in turn painted over with the image's median colour.

    Args:
        image: the model input [H, W, 3] float32 in [0, 1].
        patch_fraction: the patch side is H // patch_fraction.
        stride_fraction: patches move by H // stride_fraction.

    Returns:
        (occluded images [P, H, W, 3] float32, boxes [(top, left, bottom, right)] of each patch).
    """
    height, width = image.shape[:2]
    ph, pw = max(1, height // patch_fraction), max(1, width // patch_fraction)
    sh, sw = max(1, height // stride_fraction), max(1, width // stride_fraction)
    fill = np.median(image.reshape(-1, image.shape[-1]), axis=0)  # the background's colour, as near as one gets
    boxes = [
        (top, left, top + ph, left + pw)
        for top in range(0, height - ph + 1, sh)
        for left in range(0, width - pw + 1, sw)
    ]
    out = np.repeat(image[None], len(boxes), axis=0).astype(np.float32)
    for n, (top, left, bottom, right) in enumerate(boxes):
        out[n, top:bottom, left:right] = fill
    return out, boxes


def occlusion_saliency(base: float, occluded: np.ndarray, boxes, shape: tuple[int, int]) -> np.ndarray:
    """How much hiding each pixel lowers the top class's probability, averaged over the patches that cover it.

    Args:
        base: the top class's probability on the whole image.
        occluded: its probability with each patch hidden [P].
        boxes: each patch's (top, left, bottom, right), as ``occlusion_images`` returns them.
        shape: the model input's (H, W).

    Returns:
        float32 [H, W] >= 0 (0 where hiding never lowered the probability).
    """
    total = np.zeros(shape, np.float64)
    count = np.zeros(shape, np.float64)
    for drop, (top, left, bottom, right) in zip(np.maximum(0.0, base - np.asarray(occluded, np.float64)), boxes):
        total[top:bottom, left:right] += drop
        count[top:bottom, left:right] += 1
    return (total / np.maximum(count, 1)).astype(np.float32)
