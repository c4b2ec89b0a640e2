"""Why the model said it: a saliency map per image, written as an overlay PNG and a float32 ``.npy``.

Example::

    rows = explain("models/clothes", ["cat.jpg"], "why/")   # why/cat.png, why/cat.npy

The method is occlusion (Zeiler & Fergus 2014): each square patch of the model's input is hidden in turn
(painted with the image's median colour, so a
hidden patch of background changes nothing) and the drop in the top class's probability is what that patch
contributed.  It runs through the exported SavedModel's ``serving_images`` signature exactly as any client
sees it, so it explains the very file that serves, for every backbone (bundled, TF Hub, local, fine-tuned)
without exposing or changing the backbone's inner layers; Grad-CAM would need the last convolution's
activations, which the frozen feature-vector SavedModels do not expose.  The price is resolution (a
7 x 7 grid of overlapping patches, 1/4 of the side each) and 50 forward passes per image in one batch.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from app.imaging import ImageError, decode, image_size, read_image_file, resize
from app.store import (
    IMAGES_INPUT,
    IMAGES_SIGNATURE,
    OOD_SCORE_OUTPUT,
    PROBABILITIES_OUTPUT,
    UNKNOWN_OUTPUT,
    ModelError,
    labels_for,
    read_metadata,
    resolve_version,
)

from .atomic import write_bytes
from .trust import occlusion_images, occlusion_saliency

Predict = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None, np.ndarray | None]]


def savedmodel_predictor(model: str | Path) -> tuple[Predict, list[str], int]:
    """(predict, labels, input side) for a version folder, through its ``serving_images`` signature.

    Args:
        model: a version folder, a model's base folder (its highest version) or a version's ``.tflite``.

    Returns:
        predict(images [N, S, S, 3]) -> (probabilities [N, K], unknown [N] or None, ood_score [N] or None).

    Raises:
        ModelError: no such model, or one without the images signature.
    """
    import tensorflow as tf

    version = resolve_version(model)
    if version.suffix == ".tflite":  # a version's .tflite: the SavedModel beside it is explained (the same model)
        version = version.parent
    metadata = read_metadata(version)
    try:
        loaded = tf.saved_model.load(str(version))
    except Exception as exc:
        raise ModelError(f"cannot load SavedModel {version}: {str(exc).splitlines()[0]}") from None
    if IMAGES_SIGNATURE not in loaded.signatures:
        raise ModelError(f"the model has no signature '{IMAGES_SIGNATURE}', so it cannot be explained")
    function = loaded.signatures[IMAGES_SIGNATURE]
    size = int(function.structured_input_signature[1][IMAGES_INPUT].shape[1])

    def predict(images: np.ndarray):
        out = function(**{IMAGES_INPUT: tf.constant(images, tf.float32)})
        trusted = UNKNOWN_OUTPUT in out and OOD_SCORE_OUTPUT in out
        return (
            out[PROBABILITIES_OUTPUT].numpy(),
            out[UNKNOWN_OUTPUT].numpy() if trusted else None,
            out[OOD_SCORE_OUTPUT].numpy() if trusted else None,
        )

    predict.model = loaded  # keeps the SavedModel alive as long as the function
    k = int(function.structured_outputs[PROBABILITIES_OUTPUT].shape[-1])
    return predict, labels_for(metadata.labels, k), size


def saliency(data: bytes, predict: Predict, size: int) -> dict:
    """One image's occlusion saliency at its own (upright) height x width, and the model's answer.

    Args:
        data: the encoded image.
        predict: as ``savedmodel_predictor`` returns.
        size: the model's square input side.

    Returns:
        {"pixels": uint8 [H, W, 3], "saliency": float32 [H, W] >= 0, "class": top index, "score",
        "unknown", "ood_score"}.

    Raises:
        ImageError: the image cannot be read (one sentence).
    """
    from PIL import Image

    width, height = image_size(data)
    pixels = decode(data, (max(width, height), max(width, height)))  # full resolution, EXIF-upright
    image = resize(pixels, (size, size))
    occluded, boxes = occlusion_images(image)
    probabilities, unknown, ood = predict(np.concatenate([image[None], occluded]))
    top = int(np.argmax(probabilities[0]))
    small = occlusion_saliency(float(probabilities[0, top]), probabilities[1:, top], boxes, (size, size))
    full = np.asarray(Image.fromarray(small, mode="F").resize(pixels.shape[1::-1], Image.Resampling.BILINEAR))
    return {
        "pixels": pixels,
        "saliency": np.maximum(full, 0).astype(np.float32),
        "class": top,
        "score": float(probabilities[0, top]),
        "unknown": None if unknown is None else bool(unknown[0]),
        "ood_score": None if ood is None else float(ood[0]),
    }


OVERLAY_MIN_SIDE = 256  # a small image (28 px) is enlarged so its heat map and caption can be read


def overlay_png(pixels: np.ndarray, saliency_map: np.ndarray, caption: str) -> bytes:
    """The image with the saliency as a red-yellow heat layer (transparent where it is 0), under a caption bar.

    An image shorter than ``OVERLAY_MIN_SIDE`` on a side is enlarged by a whole factor (nearest neighbour, so
    its pixels stay visible), and the caption sits in a bar above the image, never over it.

    Args:
        pixels: uint8 [H, W, 3], the image as decoded.
        saliency_map: float [H, W] >= 0.
        caption: one line, e.g. ``caption(label, score, unknown)``.

    Returns:
        PNG bytes, ``k*W`` wide and ``k*H`` plus the bar high.
    """
    from PIL import Image, ImageDraw, ImageFont

    peak = float(saliency_map.max())
    heat = saliency_map / peak if peak > 0 else np.zeros_like(saliency_map)
    colour = np.stack([np.ones_like(heat), heat, np.zeros_like(heat)], axis=-1) * 255  # red -> yellow
    alpha = (0.6 * heat)[..., None]
    blended = (pixels.astype(np.float32) * (1 - alpha) + colour * alpha).round().astype(np.uint8)
    image = Image.fromarray(blended)
    factor = max(1, -(-OVERLAY_MIN_SIDE // min(image.size)))
    if factor > 1:
        image = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    font = ImageFont.load_default(size=max(12, min(24, image.width // 20)))
    bar = font.getbbox(caption + "Ag")[3] + 8
    canvas = Image.new("RGB", (image.width, image.height + bar), (0, 0, 0))
    canvas.paste(image, (0, bar))
    ImageDraw.Draw(canvas).text((4, 4), caption, fill=(255, 255, 255), font=font)
    buffer = io.BytesIO()
    canvas.save(buffer, "PNG")
    return buffer.getvalue()


def caption(label: str, score: float, unknown: bool | None) -> str:
    """What the overlay says: the label and its probability, or that the image is none of the classes."""
    return f"unknown (closest: {label} {score:.2f})" if unknown else f"{label} {score:.2f}"


def explain(model: str | Path, images: Sequence[str | Path], out_dir: str | Path) -> list[dict]:
    """Write ``OUT_DIR/<stem>.png`` (overlay) and ``OUT_DIR/<stem>.npy`` (float32 saliency) per image.

    Two inputs of one stem get ``<stem>-2``, ``<stem>-3`` ...; each file is written atomically.  An image
    that cannot be read gets its row's ``error`` and the others go on.

    Args:
        model: a version folder or a model's base folder.
        images: image files.
        out_dir: the folder to write into (created if needed).

    Returns:
        One row per image: {"path", "png", "npy", "label", "score", "unknown", "ood_score", "error"}.

    Raises:
        ModelError: the model cannot be loaded.
    """
    predict, labels, size = savedmodel_predictor(model)
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    rows, used = [], set()
    for path in map(Path, images):
        row = {"path": str(path), "png": None, "npy": None, "label": None, "score": None}
        row.update(unknown=None, ood_score=None, error=None)
        try:
            result = saliency(read_image_file(path), predict, size)
        except ImageError as exc:
            row["error"] = str(exc)
            rows.append(row)
            continue
        stem, n = path.stem or "image", 1
        while (stem if n == 1 else f"{stem}-{n}") in used:
            n += 1
        stem = stem if n == 1 else f"{stem}-{n}"
        used.add(stem)
        label = labels[result["class"]]
        buffer = io.BytesIO()
        np.save(buffer, result["saliency"])
        write_bytes(out / f"{stem}.npy", buffer.getvalue())
        png = overlay_png(result["pixels"], result["saliency"], caption(label, result["score"], result["unknown"]))
        write_bytes(out / f"{stem}.png", png)
        row.update(
            png=str(out / f"{stem}.png"),
            npy=str(out / f"{stem}.npy"),
            label=label,
            score=result["score"],
            unknown=result["unknown"],
            ood_score=result["ood_score"],
        )
        rows.append(row)
    return rows
