"""The crop check: is one image a window of the other, up to re-encoding and brightness?

A perceptual hash compares two images pixel block by pixel block, so a crop of 5–10 % — which
shifts every block — lands as far from its original as another photo of the same scene does.
This check aligns instead. Given greyscale thumbnails A and B (keys.THUMB_SIDE square, aspect
squashed), it finds the window of A — scale s and offset t on each axis, the window inside A,
s ≥ MIN_SCALE — that B shows, by Gauss–Newton on the pixel differences (Lucas–Kanade, coarse
to fine over LEVELS), then scores the fit: the correlation of the two images' gradients after
the alignment, leaving out the TRIM share of pixels that differ most (a watermark, a logo).
Both ways round are tried (either image may be the crop); the better score counts.

The warp is separable (a scale and shift per axis), so resampling a batch of thumbnails is two
batched matrix products; pairs are checked a batch at a time, in about a millisecond a pair.
"""

from __future__ import annotations

import numpy as np

# (side, Gauss–Newton steps, the score at that side a pair needs to go on), coarse to fine: most
# pairs that are not crops stop at 16 px, at an eighth of the cost of the full check.
LEVELS = ((16, 5, 0.93), (32, 4, 0.96), (64, 3, None))
MIN_SCALE = 0.8  # the window is at least this share of the other image on each axis
TRIM = 0.05  # share of gradient values left out of the score: the most different ones
STEP_LIMIT = 0.05  # largest change of a parameter in one step (unit coordinates)
CHUNK = 4096  # pairs aligned at once (their thumbnails, gathered: up to 2 × 4096 × 16 KiB at 64 px)


def aligned_similarity(thumbs: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(P,) for each pair of rows (first[i], second[i]) of the (n, S, S) thumbnails: the better of
    first-onto-second and second-onto-first. A pair that stops at a coarse level scores its (lower) score there."""
    count = len(first)
    rows, local = np.unique(np.concatenate([first, second]), return_inverse=True)
    onto = np.concatenate([local[:count], local[count:]])  # A: the image whose window is sought …
    shown = np.concatenate([local[count:], local[:count]])  # … B: the image that may show it
    params = np.tile(np.array([1.0, 1.0, 0.0, 0.0]), (2 * count, 1))  # sx, sy, tx, ty: b(u) = a(s·u + t)
    scores = np.full(2 * count, -1.0)
    active = np.arange(2 * count)
    for side, steps, go_on in LEVELS:
        needed, position = np.unique(np.concatenate([onto[active], shown[active]]), return_inverse=True)
        level = shrink(np.asarray(thumbs[rows[needed]], np.float32), side)
        a, b = level[position[:len(active)]], level[position[len(active):]]
        standard_b, p = _standardised(b), params[active]
        for _ in range(steps):
            p = _step(a, standard_b, p)
        params[active] = p
        scores[active] = _score(_warp(a, p), b)
        if go_on is not None:
            active = active[scores[active] >= go_on]
        if len(active) == 0:
            break
    return np.maximum(scores[:count], scores[count:])


def _step(a: np.ndarray, b: np.ndarray, params: np.ndarray) -> np.ndarray:
    """One Gauss–Newton step of the four parameters, then kept to a window inside A."""
    side = a.shape[-1]
    warped, std = _standardised(_warp(a, params), return_std=True)
    grad_y, grad_x = np.gradient(warped, axis=(1, 2))
    grad_x, grad_y = grad_x * side, grad_y * side  # per unit of A's coordinates
    u = ((np.arange(side) + 0.5) / side).astype(np.float32)
    jacobian = np.stack([grad_x * u[None, None, :], grad_y * u[None, :, None], grad_x, grad_y], -1).reshape(len(a), -1, 4)
    error = (b - warped).reshape(len(a), -1, 1)
    normal = jacobian.transpose(0, 2, 1) @ jacobian + 1e-3 * np.eye(4)
    change = np.linalg.solve(normal, jacobian.transpose(0, 2, 1) @ error)[..., 0]
    return _inside(params + np.clip(change, -STEP_LIMIT, STEP_LIMIT))


def _inside(params: np.ndarray) -> np.ndarray:
    scale = np.clip(params[:, :2], MIN_SCALE, 1.0)
    shift = np.clip(params[:, 2:], 0.0, 1.0 - scale)
    return np.concatenate([scale, shift], axis=1)


def _warp(a: np.ndarray, params: np.ndarray) -> np.ndarray:
    """(P, n, n): each A resampled (bilinear) over its window."""
    side = a.shape[-1]
    rows, columns = _sampling(params[:, 1], params[:, 3], side), _sampling(params[:, 0], params[:, 2], side)
    return rows @ a @ columns.transpose(0, 2, 1)


def _sampling(scale: np.ndarray, shift: np.ndarray, side: int) -> np.ndarray:
    """(P, side, side) matrices: output pixel i reads the source at (scale·(i+½)/side + shift)·side − ½."""
    position = (scale[:, None] * ((np.arange(side) + 0.5) / side)[None] + shift[:, None]) * side - 0.5
    position = np.clip(position, 0, side - 1)
    low = np.minimum(np.floor(position).astype(np.int64), side - 2)
    weight = (position - low).astype(np.float32)
    matrix = np.zeros((len(scale), side, side), np.float32)
    pair, out = np.meshgrid(np.arange(len(scale)), np.arange(side), indexing="ij")
    matrix[pair, out, low] = 1 - weight
    matrix[pair, out, low + 1] += weight
    return matrix


def shrink(images: np.ndarray, side: int) -> np.ndarray:
    """Box-filtered to side × side (one axis at a time: numpy is slow at reducing two strided axes at once)."""
    count, size = len(images), images.shape[-1]
    factor = size // side
    if factor == 1:
        return images
    columns = images.reshape(count, size, side, factor).mean(axis=3)
    return columns.reshape(count, side, factor, side).mean(axis=2)


def _standardised(images: np.ndarray, return_std: bool = False):
    """Each image with mean 0 and standard deviation 1 (brightness and contrast factored out)."""
    mean = images.mean(axis=(1, 2), keepdims=True)
    std = images.std(axis=(1, 2), keepdims=True) + 1e-3
    out = (images - mean) / std
    return (out, std) if return_std else out


def _score(warped: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Trimmed correlation of the two images' gradients, per pair."""
    features = [np.concatenate([g[:, 1:-1, 1:-1].reshape(len(b), -1) for g in np.gradient(_standardised(x), axis=(1, 2))], 1)
                for x in (warped, b)]
    first, second = (f / (np.linalg.norm(f, axis=1, keepdims=True) + 1e-9) for f in features)
    difference = np.abs(first - second)
    cut = int((1 - TRIM) * difference.shape[1]) - 1
    keep = difference <= np.partition(difference, cut, axis=1)[:, cut:cut + 1]
    first, second = first * keep, second * keep
    return np.einsum("ij,ij->i", first, second) / (np.linalg.norm(first, axis=1) * np.linalg.norm(second, axis=1) + 1e-12)
