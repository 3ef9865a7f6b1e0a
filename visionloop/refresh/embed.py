"""An offline image embedding for drift and diversity: computed, not learned, no download.

Per published image, from one reduced decode (``curate.metrics.decode_for_metrics``):

- a joint RGB colour histogram (4 x 4 x 4 bins, square-rooted so that the Euclidean distance
  between two images is their Hellinger distance): what the scene's colours are;
- the image shrunk to 8 x 8 luminance (area average, 0..1): its coarse layout and exposure;
- scalar statistics the drift tests read by name: RMS contrast (std of luminance, 0..1),
  mean saturation (HSV S, 0..1), mean CIELAB a* and b* (the colour direction: a cast moves
  them) and Hasler-Suesstrunk colourfulness.

``drift.embedding_matrix`` appends curate's metric vector (blur, brightness, entropy...) from
the manifest, so the embedding sees sharpness and exposure as measured by curate.

Rows are cached per item in ``<data>/refresh/embeddings.parquet`` under the key (item_id,
anonymize_sha256, ``embed_fingerprint``): a rerun embeds only new or re-published images.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pyarrow as pa

EMBED_VERSION = "1"
HIST_BINS = 4  # per channel: 4^3 = 64 colour cells
THUMB = 8  # 8 x 8 luminance
VECTOR_DIM = HIST_BINS**3 + THUMB * THUMB
STAT_COLUMNS = ("contrast", "saturation", "colour_a", "colour_b", "colourfulness")

EMBED_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("anonymize_sha256", pa.string()),
        pa.field("fingerprint", pa.string(), nullable=False),
        *[pa.field(c, pa.float64()) for c in STAT_COLUMNS],
        pa.field("vector", pa.list_(pa.float32())),
        pa.field("error", pa.string()),  # why there is no embedding (unreadable, corrupt)
    ]
)
EMBED_COLUMNS = EMBED_SCHEMA.names


def embed_fingerprint(max_side: int) -> str:
    """Identify the embedding code and the settings that change its values."""
    import cv2

    key = f"embed={EMBED_VERSION};max_side={max_side};cv2={cv2.__version__[0]}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def embed_pixels(bgr: np.ndarray, max_side: int = 256) -> dict[str, Any]:
    """Statistics and vector of one decoded image (HxWx3 BGR uint8, or HxW gray)."""
    import cv2

    if bgr.ndim == 2:
        bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
    bgr = np.ascontiguousarray(bgr[..., :3])
    h, w = bgr.shape[:2]
    scale = max_side / max(h, w)
    if scale < 1:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
    lab = cv2.cvtColor(bgr, cv2.COLOR_BGR2Lab)
    rgb = bgr[..., ::-1].astype(np.int32) // (256 // HIST_BINS)
    cells = (rgb[..., 0] * HIST_BINS + rgb[..., 1]) * HIST_BINS + rgb[..., 2]
    hist = np.bincount(cells.ravel(), minlength=HIST_BINS**3).astype(np.float64)
    hist = np.sqrt(hist / max(hist.sum(), 1.0))
    thumb = cv2.resize(gray, (THUMB, THUMB), interpolation=cv2.INTER_AREA) / 255.0
    b, g, r = (bgr[..., i].astype(np.float64) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    colourfulness = (
        float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())) / 255.0
    )
    _, std = cv2.meanStdDev(gray)
    lab_mean = cv2.mean(lab)
    return {
        "contrast": float(std[0, 0]) / 255.0,
        "saturation": float(cv2.mean(hsv)[1]) / 255.0,
        # 8-bit Lab: a = a* + 128, b = b* + 128
        "colour_a": float(lab_mean[1]) - 128.0,
        "colour_b": float(lab_mean[2]) - 128.0,
        "colourfulness": colourfulness,
        "vector": np.concatenate([hist, thumb.ravel()]).astype(np.float32),
    }


def embed_bytes(
    data: bytes, width: int | None, height: int | None, max_side: int = 256
) -> dict[str, Any]:
    """Decode (reduced where the size allows) and embed; ValueError when it does not decode."""
    from visionloop.curate.metrics import decode_for_metrics

    image, _ = decode_for_metrics(data, width, height, work_max_side=max_side)
    return embed_pixels(image, max_side)


__all__ = [
    "EMBED_COLUMNS",
    "EMBED_SCHEMA",
    "STAT_COLUMNS",
    "VECTOR_DIM",
    "embed_bytes",
    "embed_fingerprint",
    "embed_pixels",
]
