"""What the notebook API accepts wherever it takes images, made into what the embedding loop takes.

An image is a path (a file, or a folder whose images are all taken, as `siamcli query` takes
it), an RGB array (h, w, 3), or a PIL image; several come as a list mixing them freely, of any
sizes, or as one (n, h, w, 3) array. Arrays hold RGB 0–255: uint8, or float (or integer) with
values in 0–255 — what a decoded file gives. Floats whose largest value is at most 1 on an
image that is not black are refused: they are 0–1 images (from `/ 255` or a framework's
to-tensor), which the model would see as nearly black and embed wrongly without a word.
PIL images are converted as files are decoded (EXIF orientation, transparency over black), so
`embed(Image.open(p))` equals `embed(p)`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from siamcli.errors import UserError

ARRAY_SHAPES = "an image array is (height, width, 3) RGB, or (n, height, width, 3) for several"


@dataclass
class Inputs:
    names: list  # per image, in order: its path, or its position among the inputs (in-memory images)
    paths: list[tuple[int, str]]  # (row, path) of the images read from files
    pixels: list[tuple[int, np.ndarray]]  # (row, (h, w, 3) RGB 0–255) of the in-memory images
    batch: np.ndarray | None = None  # an (n, h, w, 3) array given whole: embedded as it is


@dataclass
class EmbeddedInputs:
    names: list  # as Inputs.names, for the rows of `vectors`
    vectors: np.ndarray  # (n_ok, d) float32 unit rows, in input order
    failures: list  # Skipped: files that did not decode


def read_inputs(images) -> Inputs:
    """Sort `images` (see the module docstring) into files and in-memory pixels, checked."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        _check_array(images, "images")
        return Inputs(names=list(range(len(images))), paths=[], pixels=[], batch=images)
    items = [images] if _is_single(images) else _as_list(images)
    inputs = Inputs(names=[], paths=[], pixels=[])
    for position, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)):
            from siamcli.index.search import query_paths

            for path in query_paths([str(item)])[0]:  # a folder: its images, as `siamcli query` takes them
                inputs.paths.append((len(inputs.names), path))
                inputs.names.append(path)
        else:
            inputs.pixels.append((len(inputs.names), _pixels(item, position)))
            inputs.names.append(position)
    if not inputs.names:
        raise UserError("no images given")
    return inputs


def embed_inputs(model, images, batch_size: int) -> EmbeddedInputs:
    """Embed `images` through the one embedding loop: files decoded by its pipeline, in-memory
    images resized as the model resizes; rows back in input order (files that fail are left out)."""
    from siamcli.models.embed import embed

    inputs = read_inputs(images)
    if inputs.batch is not None:
        embedded = embed(model, inputs.batch, batch_size=batch_size)
        return EmbeddedInputs(inputs.names, embedded.vectors, embedded.failures)
    vectors = np.zeros((len(inputs.names), int(model.output_shape[-1])), np.float32)
    kept = np.zeros(len(inputs.names), bool)
    failures = []
    for group in (inputs.paths, inputs.pixels):
        if not group:
            continue
        rows = np.array([row for row, _ in group])
        embedded = embed(model, [image for _, image in group], batch_size=batch_size)
        vectors[rows[embedded.kept]] = embedded.vectors
        kept[rows[embedded.kept]] = True
        failures.extend(embedded.failures)
    return EmbeddedInputs([name for name, ok in zip(inputs.names, kept) if ok], vectors[kept], failures)


def one_image(item, name: str):
    """One image for `verify` (pairs/verify.py's verify_images): a file's path as it is, an array
    or a PIL image as checked (h, w, 3) RGB 0–255 pixels; `name` ("a", "b") says which in errors."""
    if isinstance(item, (str, os.PathLike)):
        if os.path.isdir(item):
            raise UserError(f"image {name} is the folder {os.fspath(item)}; give one image file (embed takes folders)")
        return os.fspath(item)
    if isinstance(item, np.ndarray) and item.ndim == 4:
        raise UserError(f"image {name} is {len(item)} images, shape {item.shape}; give one image: an (h, w, 3) RGB array")
    if not (isinstance(item, np.ndarray) or _is_pil(item)):
        raise UserError(f"image {name} is of type {type(item).__name__}; give one image: a path to a file, "
                        "an (h, w, 3) RGB array (uint8 or 0–255 floats) or a PIL image")
    return _pixels(item, name)


def _is_single(images) -> bool:
    return isinstance(images, (str, os.PathLike, np.ndarray)) or _is_pil(images)


def _as_list(images) -> list:
    try:
        return list(images)
    except TypeError:
        raise UserError(_what_images(f"got an object of type {type(images).__name__}")) from None


def _what_images(problem: str) -> str:
    return (f"{problem}; give images as paths (files or folders), RGB arrays (h, w, 3) of uint8 or 0–255 floats, "
            "PIL images, a list of these, or an (n, h, w, 3) array")


def _is_pil(item) -> bool:
    from PIL import Image

    return isinstance(item, Image.Image)


def _pixels(item, position: int | str) -> np.ndarray:
    """An in-memory image as (h, w, 3) RGB 0–255: a PIL image converted as files decode, an array checked."""
    if _is_pil(item):
        from siamcli.data.decode import decode_pil  # the decoder's own conversion (orientation, modes, transparency)

        try:  # Image.open reads pixels lazily: a truncated file fails here
            return decode_pil(item)
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise UserError(f"image {position} (a PIL image) cannot be read: {exc}") from exc
    if isinstance(item, np.ndarray):
        if item.ndim != 3:
            raise UserError(f"image {position} has shape {item.shape}; {ARRAY_SHAPES}")
        _check_array(item[None], f"image {position}")
        return item
    raise UserError(_what_images(f"image {position} is of type {type(item).__name__}"))


def _check_array(images: np.ndarray, name: str) -> None:
    """(n, h, w, 3) RGB 0–255, uint8 or numbers in that range; 0–1 floats refused."""
    if images.shape[-1] != 3:
        shape = images.shape[1:] if len(images) == 1 and name != "images" else images.shape
        raise UserError(f"{name} has shape {shape}; {ARRAY_SHAPES}")
    if images.dtype == np.uint8 or images.size == 0:
        return
    if images.dtype.kind not in "fiu":
        raise UserError(f"{name} has dtype {images.dtype}; give uint8 pixels, or floats with values 0–255")
    if images.dtype.kind == "f" and not np.isfinite(images).all():
        raise UserError(f"{name} holds NaN or infinite values; give RGB values 0–255")
    low, high = float(images.min()), float(images.max())
    if low < 0 or high > 255:
        raise UserError(f"{name} has values from {low:g} to {high:g}; the model takes RGB 0–255 (uint8, or floats in that range)")
    if images.dtype.kind == "f":
        highs = images.reshape(len(images), -1).max(axis=1)
        unit = np.flatnonzero((highs > 0) & (highs <= 1.0))
        if len(unit):
            which = name if len(images) == 1 else f"{name}[{int(unit[0])}]"
            raise UserError(f"{which} holds floats in 0–1 (largest {float(highs[unit[0]]):g}); the model takes RGB 0–255: "
                            "multiply by 255 (or pass uint8 pixels)")
