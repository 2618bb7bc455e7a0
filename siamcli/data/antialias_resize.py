"""The model's resize in NumPy: `tf.image.resize(images, (S, S), "bilinear", antialias=True)`
without TensorFlow, for the light model (siamcli/models/light.py), whose graph starts after it.

TensorFlow computes that resize with its ScaleAndTranslate op: separable, rows first then
columns, each output pixel a normalised weighted sum of the input pixels its triangle kernel
covers. When shrinking, the kernel is widened by the shrink factor (the antialiasing: every
input pixel contributes); when enlarging, it stays one pixel wide (plain bilinear). The span
positions and weights here follow the op's float32 arithmetic step by step
(tensorflow/core/kernels/image/scale_and_translate_op.cc: ComputeSpansCore, GatherRows,
GatherColumns), and each output pixel is summed as the op sums it, acc += w·x input by input,
every product and sum rounded to float32, the intermediate stored as float32: the result is
the op's bit for bit (tests/test_light_model.py checks equality on 1×1 to 7×9000 images).

Pillow's `Image.resize(..., BILINEAR)` antialiases too, but rounds to 8 bits and places its
kernel differently: pixels up to 1.0 off, and the embeddings of an untrained 64-px model up to
2.8e-4 off on sample_data/ (this resize: 3.6e-7, the network's own float noise), too far.
"""

from __future__ import annotations

import numpy as np

_F = np.float32
_RADIUS = _F(1.0)  # the triangle kernel's
_LONG_ROW = 4096  # values per row from which a loop per output pays for its overhead


def resize_like_model(image: np.ndarray, size: int) -> np.ndarray:
    """(h, w, channels) pixels (uint8 or float, 0–255) → (size, size, channels) float32, as the model's resize."""
    pixels = np.asarray(image)
    if pixels.dtype != np.uint8:  # 8-bit pixels are converted row by row as they are read (exactly)
        pixels = pixels.astype(np.float32)
    rows = _resize_axis(pixels, size, axis=0)
    return _resize_axis(rows, size, axis=1)


def _resize_axis(pixels: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    """One pass of the op: out[y] = Σ_i w[y, i] · in[start[y] + i], summed in that order in float32
    (acc += w·x, each product and sum rounded, as the op's loop does: its result bit for bit)."""
    moved = np.moveaxis(pixels, axis, 0)
    flat = moved.reshape(moved.shape[0], -1)
    starts, table = _spans(moved.shape[0], out_size)
    # Long rows: a loop per output and weight (few, large vector operations); short ones: a loop
    # per weight position over every output at once (the per-output loop would be all overhead).
    summed = _sum_per_output if flat.shape[1] >= _LONG_ROW else _sum_per_position
    out = summed(flat, starts, table)
    return np.moveaxis(out.reshape(out_size, *moved.shape[1:]), 0, axis)


def _sum_per_output(flat: np.ndarray, starts: np.ndarray, table: np.ndarray) -> np.ndarray:
    out = np.zeros((len(starts), flat.shape[1]), np.float32)
    product = np.empty(flat.shape[1], np.float32)
    for acc, start, weights in zip(out, starts, table):
        for offset in np.flatnonzero(weights):  # a zero weight adds 0·x: nothing
            np.multiply(flat[start + offset], weights[offset], out=product)
            acc += product
    return out


def _sum_per_position(flat: np.ndarray, starts: np.ndarray, table: np.ndarray) -> np.ndarray:
    out = np.zeros((len(starts), flat.shape[1]), np.float32)
    product = np.empty_like(out)
    for offset in range(table.shape[1]):
        rows = np.minimum(starts + offset, len(flat) - 1)  # past the end the weight is 0
        np.multiply(flat[rows], table[:, offset:offset + 1], out=product)
        out += product
    return out


def _spans(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(first input index per output, (outputs, span) float32 weights, zero past each span's end),
    as ComputeSpansCore computes them with translation 0 and scale out/in (what tf.image.resize
    passes), every step in float32 as there."""
    scale = _F(out_size) / _F(in_size)
    inv_scale = _F(1.0 / np.float64(scale))
    kernel_scale = max(inv_scale, _F(1.0))
    one_over_kernel_scale = _F(1.0) / kernel_scale
    width = min(2 * int(np.ceil(_RADIUS * kernel_scale)) + 1, in_size)
    sample = (np.arange(out_size, dtype=np.float32) + _F(0.5)) * inv_scale
    starts = np.ceil(sample - _RADIUS * kernel_scale - _F(0.5)).astype(np.int64).clip(0, in_size - 1)
    ends = np.floor(sample + _RADIUS * kernel_scale - _F(0.5)).astype(np.int64).clip(0, in_size - 1) + 1
    offsets = np.arange(width)
    sources = (starts[:, None] + offsets).astype(np.float32)
    weights = np.maximum(_F(1.0) - np.abs((sources + _F(0.5) - sample[:, None]) * one_over_kernel_scale), _F(0.0))
    weights[offsets >= (ends - starts)[:, None]] = 0.0
    totals = np.add.accumulate(weights, axis=1)[:, -1]  # summed in order, as the op does (trailing zeros add nothing)
    usable = np.abs(totals) >= 1000.0 * np.finfo(np.float32).tiny  # else the op leaves the span at zero
    weights *= np.where(usable, _F(1.0) / np.where(usable, totals, _F(1.0)), _F(0.0))[:, None]
    return starts, weights
