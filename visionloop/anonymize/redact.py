"""Pure redaction functions: grow each detected box, then pixelate, blur or fill it.

Everything works at full resolution on a copy of the pixels; nothing outside the grown (and
image-clipped) region changes. The grown box is what gets redacted, so the dilation is the
safety margin for a detector box that is a little tight or a little off.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

Method = Literal["pixelate", "blur", "fill"]
Shape = Literal["box", "ellipse"]


def dilate_boxes(boxes: np.ndarray, dilation: float, width: int, height: int) -> np.ndarray:
    """Integer boxes grown by ``dilation`` x their width/height (half on each side), clipped.

    Coordinates are rounded outwards, so the result always covers the input box. Returns an
    ``(N, 4)`` int64 array of ``x0, y0, x1, y1`` with exclusive ``x1``/``y1``.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    grow_x = (b[:, 2] - b[:, 0]) * dilation / 2
    grow_y = (b[:, 3] - b[:, 1]) * dilation / 2
    out = np.stack(
        [
            np.floor(b[:, 0] - grow_x),
            np.floor(b[:, 1] - grow_y),
            np.ceil(b[:, 2] + grow_x),
            np.ceil(b[:, 3] + grow_y),
        ],
        axis=1,
    )
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
    return out.astype(np.int64)


def shape_mask(height: int, width: int, shape: Shape) -> np.ndarray:
    """Boolean mask of a ``height`` x ``width`` box: all of it, or its inscribed ellipse."""
    if shape == "box":
        return np.ones((height, width), bool)
    if shape != "ellipse":
        raise ValueError(f"unknown redaction shape {shape!r}")
    yy = (np.arange(height) + 0.5 - height / 2) / (height / 2)
    xx = (np.arange(width) + 0.5 - width / 2) / (width / 2)
    return yy[:, None] ** 2 + xx[None, :] ** 2 <= 1.0


def block_size(height: int, width: int, blocks: int) -> int:
    """Side of the square pixelation block: ``blocks`` blocks across the longer side."""
    return max(1, math.ceil(max(height, width) / blocks))


def pixelate(patch: np.ndarray, blocks: int) -> np.ndarray:
    """Replace each square block with its mean colour (ragged last blocks included)."""
    h, w = patch.shape[:2]
    if h == 0 or w == 0:
        return patch.copy()
    bs = block_size(h, w, blocks)
    rows, cols = np.arange(0, h, bs), np.arange(0, w, bs)
    data = patch.astype(np.float64)
    sums = np.add.reduceat(np.add.reduceat(data, rows, axis=0), cols, axis=1)
    counts = np.outer(np.diff(np.append(rows, h)), np.diff(np.append(cols, w)))
    if data.ndim == 3:
        counts = counts[:, :, None]
    means = np.rint(sums / counts).astype(patch.dtype)
    return np.repeat(
        np.repeat(means, np.diff(np.append(rows, h)), axis=0), np.diff(np.append(cols, w)), axis=1
    )


def blur(patch: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with standard deviation ``sigma`` pixels (edges replicated)."""
    import cv2

    if patch.size == 0:
        return patch.copy()
    sigma = max(float(sigma), 0.5)
    ksize = 2 * math.ceil(3 * sigma) + 1
    out = cv2.GaussianBlur(
        patch, (ksize, ksize), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REPLICATE
    )
    return out.reshape(patch.shape)


def fill(patch: np.ndarray, value: int = 0) -> np.ndarray:
    """Solid fill: nothing of the region survives."""
    return np.full_like(patch, value)


def redact_patch(patch: np.ndarray, method: Method, blocks: int) -> np.ndarray:
    """One region's pixels redacted; ``blocks`` sets the strength of pixelate and blur alike.

    Blur uses ``sigma = longer side / blocks``, the scale of one pixelation block, so the two
    methods keep about the same amount of detail for one setting.
    """
    if method == "pixelate":
        return pixelate(patch, blocks)
    if method == "blur":
        return blur(patch, max(patch.shape[:2]) / blocks)
    if method == "fill":
        return fill(patch)
    raise ValueError(f"unknown redaction method {method!r}")


def redact(
    image: np.ndarray,
    boxes: np.ndarray,
    *,
    method: Method = "pixelate",
    shape: Shape = "box",
    dilation: float = 0.2,
    blocks: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Redact every box of ``image`` (H, W[, C]); return the new image and the boxes applied.

    The input array is not modified. Each region is computed from the *original* pixels, so
    overlapping regions do not depend on their order beyond the last write.
    """
    height, width = image.shape[:2]
    applied = dilate_boxes(boxes, dilation, width, height)
    out = image.copy()
    for x0, y0, x1, y1 in applied:
        if x1 <= x0 or y1 <= y0:
            continue
        patch = image[y0:y1, x0:x1]
        redacted = redact_patch(patch, method, blocks)
        mask = shape_mask(y1 - y0, x1 - x0, shape)
        region = out[y0:y1, x0:x1]
        region[mask] = redacted[mask]
    return out, applied
