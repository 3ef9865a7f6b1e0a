"""Licence plates without a model: a classical detector, offline, Apache-2.0 like the project.

No permissively licensed plate model ships on PyPI (``platedet`` is AGPL-3.0: never a default;
a user who accepts its licence can install it and register it through the
``visionloop.detectors`` entry-point group). This detector looks for what a plate *is*:

1. candidates: (a) closed contours of the edge map whose minimum-area rectangle has a plate's
   aspect ratio (the plate's rim), and (b) blobs of dark strokes (morphological black-hat,
   horizontal gradient, closing with a wide kernel) at several stroke scales (the characters);
2. verification of each candidate, rectified to a fixed height: 3-10 dark connected components
   of character size (similar heights, one baseline, spread over the plate) on a light ground
   that differs from the surroundings (a plate is a plaque, not a line of text on a page).

The score combines the number of character-like components, their alignment and the contrast
with the surroundings, in [0, 1].

Measured (bench/bench_anonymize.py, generated plates with cv2.putText text, 40-200 px wide,
rotated up to 15 degrees, on 30 face-free backgrounds, 3 seeds; threshold 0.5): see
:data:`MEASURED`. Plates narrower than ~50 px, strongly perspective-distorted plates, plates
without a light ground (dark plates with light characters are searched too, but less well)
and plates whose ground matches the car's paint are its known misses; text on signs can be
a false positive. Treat it as a safety net, not as proof that no plate remains.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from visionloop.anonymize.detectors import Regions, to_rgb
from visionloop.anonymize.multiscale import merge

VERSION = "classical-1"
# Filled in from bench/bench_anonymize.py (python bench/bench_anonymize.py --plates-only).
MEASURED = (
    "threshold 0.5: recall 0.861 for plates >= 60 px wide (216), 0.500 for 40-60 px (54); "
    "0.23 false positives per image with plates, 0.27 per bare background (mostly printed text "
    "in the 'page' and 'text' samples); 36 ms per 640x480 image"
)

_H = 40  # rectified candidate height (px)
MIN_ASPECT, MAX_ASPECT = 1.6, 7.0
MIN_SHORT_SIDE = 8  # px at detection resolution


def _box_points(rect: tuple) -> np.ndarray:
    import cv2

    return cv2.boxPoints(rect).astype(np.float32)


def _normalised(rect: tuple) -> tuple[tuple[float, float], tuple[float, float], float]:
    """minAreaRect with width >= height (angle adjusted), so 'long side' is always width."""
    (cx, cy), (w, h), angle = rect
    if h > w:
        w, h, angle = h, w, angle - 90
    while angle <= -90:
        angle += 180
    while angle > 90:
        angle -= 180
    return (cx, cy), (w, h), angle


def _rectify(gray: np.ndarray, rect: tuple, pad: float) -> tuple[np.ndarray, np.ndarray]:
    """The rotated rectangle (grown by ``pad`` of its height) warped to height ``_H``; and a
    same-size mask of where the original rectangle lies."""
    import cv2

    (cx, cy), (w, h), angle = rect
    scale = _H / max(h, 1.0)
    out_w = max(8, round(w * scale))
    grow = pad * _H
    W, H = round(out_w + 2 * grow), round(_H + 2 * grow)
    m = cv2.getRotationMatrix2D((cx, cy), angle, scale)
    m[0, 2] += W / 2 - cx
    m[1, 2] += H / 2 - cy
    patch = cv2.warpAffine(gray, m, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    mask = np.zeros((H, W), bool)
    g = round(grow)
    mask[g : g + _H, g : g + out_w] = True
    return patch, mask


def _characters(inner: np.ndarray) -> tuple[int, float]:
    """Count character-like dark components in a rectified plate; and their alignment (0..1)."""
    import cv2

    h, w = inner.shape
    if w < 2 * h * 0.8 or h < 8:
        return 0, 0.0
    _, binary = cv2.threshold(inner, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    n, _, stats, centroids = cv2.connectedComponentsWithStats(binary, connectivity=8)
    chars = []
    for i in range(1, n):
        x, y, cw, ch, area = stats[i]
        if x == 0 or y == 0 or x + cw >= w or y + ch >= h:
            continue  # touches the rim: border or background, not a character
        if not (0.35 * h <= ch <= 0.95 * h and 0.04 * h <= cw <= 1.0 * h):
            continue
        if not 0.12 <= area / (cw * ch) <= 0.95:
            continue
        chars.append((centroids[i][0], centroids[i][1], ch))
    if len(chars) < 3:
        return len(chars), 0.0
    xs = np.array([c[0] for c in chars])
    ys = np.array([c[1] for c in chars])
    hs = np.array([c[2] for c in chars])
    spread = (xs.max() - xs.min()) / w
    height_cv = hs.std() / hs.mean()
    baseline = ys.std() / h
    align = max(0.0, 1 - 2 * height_cv) * max(0.0, 1 - 6 * baseline) * min(1.0, spread / 0.5)
    return len(chars), float(align)


def plate_score(gray: np.ndarray, rect: tuple) -> float:
    """Plate-likeness in [0, 1] of a rotated rectangle of ``gray`` (see the module docstring)."""
    (_, _), (w, h), _ = rect
    if h < MIN_SHORT_SIDE or not MIN_ASPECT <= w / max(h, 1e-6) <= MAX_ASPECT:
        return 0.0
    patch, mask = _rectify(gray, rect, pad=0.3)
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    inset = max(1, round(0.08 * (y1 - y0)))
    inner = patch[y0 + inset : y1 - inset, x0 + inset : x1 - inset]
    best = 0.0
    for polarity, plate in ((1, inner), (-1, 255 - inner)):  # dark-on-light, light-on-dark
        n, align = _characters(plate)
        if n < 3 or n > 12 or align <= 0:
            continue
        ground = np.percentile(plate, 75)  # the plate's ground (characters are the dark part)
        ring = (patch if polarity == 1 else 255 - patch)[~mask]
        surround = np.median(ring)
        strokes = np.percentile(plate, 10)
        contrast = (ground - strokes) / 255.0
        standout = abs(float(ground) - float(surround)) / 255.0
        chars = min(1.0, (n - 1) / 3)
        s = chars * align * min(1.0, contrast / 0.3) * min(1.0, 0.45 + standout / 0.12)
        best = max(best, float(s))
    return best


def _candidates(gray: np.ndarray) -> list[tuple]:
    """Rotated rectangles that could be plates: rims (edge contours) and stroke blobs."""
    import cv2

    rects: list[tuple] = []

    def keep(contour: np.ndarray, min_fill: float) -> None:
        rect = _normalised(cv2.minAreaRect(contour))
        (_, _), (w, h), _ = rect
        if h < MIN_SHORT_SIDE or not MIN_ASPECT <= w / max(h, 1e-6) <= MAX_ASPECT:
            return
        if cv2.contourArea(contour) < min_fill * w * h:
            return
        rects.append(rect)

    edges = cv2.Canny(gray, 60, 160)
    edges = cv2.dilate(edges, np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(edges, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    for c in contours:
        if len(c) >= 4:
            keep(c, 0.5)
    for k in (3, 5, 9):  # stroke widths at the detection resolution
        kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (4 * k + 1, 2 * k + 1))
        for img in (gray, 255 - gray):
            hat = cv2.morphologyEx(img, cv2.MORPH_BLACKHAT, kernel)
            grad = np.abs(cv2.Sobel(hat, cv2.CV_32F, 1, 0, ksize=3))
            grad = cv2.normalize(grad, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
            _, bw = cv2.threshold(grad, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
            bw = cv2.morphologyEx(bw, cv2.MORPH_CLOSE, np.ones((max(3, k), 3 * k + 2), np.uint8))
            bw = cv2.morphologyEx(bw, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
            contours, _ = cv2.findContours(bw, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            for c in contours:
                if len(c) >= 4:
                    rect = _normalised(cv2.minAreaRect(c))
                    (cx, cy), (w, h), a = rect
                    keep(c, 0.35)
                    # characters' blob is inside the plate: also try it grown to a plate
                    rects.append(((cx, cy), (w * 1.15 + 0.3 * h, h * 1.5), a))
    return rects


class PlateDetector:
    """Licence plates by shape and characters (no weights; see the module docstring)."""

    name = "plate"
    version = VERSION
    model_sha256 = ""  # no weights file
    licence = "Apache-2.0"

    def __init__(
        self,
        score_threshold: float = 0.5,
        max_side: int = 1280,
        max_candidates: int = 400,
        **_: Any,
    ) -> None:
        if not 0 < score_threshold < 1:
            raise ValueError(f"score_threshold must be in (0, 1), got {score_threshold}")
        self.score_threshold = float(score_threshold)
        self.max_side = int(max_side)
        self.max_candidates = int(max_candidates)

    def detect_size(self, width: int, height: int) -> tuple[int, int]:
        scale = min(1.0, self.max_side / max(width, height))
        return max(1, round(width * scale)), max(1, round(height * scale))

    def detect(self, image_rgb: np.ndarray) -> Regions:
        import cv2

        rgb = to_rgb(image_rgb)
        height, width = rgb.shape[:2]
        w, h = self.detect_size(width, height)
        scale = w / width
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        if scale < 1:
            gray = cv2.resize(gray, (w, h), interpolation=cv2.INTER_AREA)
        rects = _candidates(gray)
        # Largest first, bounded: a cluttered image cannot make the detector unbounded in time.
        rects.sort(key=lambda r: -r[1][0] * r[1][1])
        boxes, scores = [], []
        for rect in _dedupe(rects)[: self.max_candidates]:
            s = plate_score(gray, rect)
            if s >= self.score_threshold:
                pts = _box_points(rect)
                boxes.append([*pts.min(axis=0), *pts.max(axis=0)])
                scores.append(s)
        if not boxes:
            return Regions.empty()
        found = Regions(np.asarray(boxes) / scale, scores, ["plate"] * len(boxes))
        return merge(found.clipped(width, height))


def _dedupe(rects: list[tuple]) -> list[tuple]:
    """Drop near-identical candidates (same centre, size and angle within a few percent)."""
    out: list[tuple] = []
    seen: set[tuple[int, int, int, int, int]] = set()
    for (cx, cy), (w, h), a in rects:
        q = max(2.0, h / 4)
        key = (round(cx / q), round(cy / q), round(w / q), round(h / q), round(a / 5))
        if key in seen:
            continue
        seen.add(key)
        out.append(((cx, cy), (w, h), a))
    return out


def render_plate(
    text: str, width: int, rng: np.random.Generator, aspect: float | None = None
) -> np.ndarray:
    """A synthetic plate (RGB uint8): light ground, dark rim, ``text`` by cv2.putText.

    Used by the tests and the bench; ``aspect`` defaults to a draw between 2 (US) and 4.7 (EU).
    """
    import cv2

    aspect = float(rng.uniform(2.0, 4.7)) if aspect is None else aspect
    scale = 4  # draw big, then shrink: anti-aliased small plates
    W, H = width * scale, max(8, round(width / aspect)) * scale
    grounds = ((245, 245, 245), (250, 215, 40), (235, 235, 225))
    ground = grounds[int(rng.integers(len(grounds)))]
    img = np.full((H, W, 3), ground, np.uint8)
    rim = max(2, H // 14)
    cv2.rectangle(
        img, (rim // 2, rim // 2), (W - rim // 2 - 1, H - rim // 2 - 1), (20, 20, 20), rim
    )
    font = cv2.FONT_HERSHEY_DUPLEX
    thick = max(2, H // 12)
    (tw, th), _ = cv2.getTextSize(text, font, 1.0, thick)
    fs = min(0.8 * W / tw, 0.62 * H / th)
    thick = max(2, round(thick * fs / 1.5))
    (tw, th), _ = cv2.getTextSize(text, font, fs, thick)
    org = ((W - tw) // 2, (H + th) // 2)
    cv2.putText(img, text, org, font, fs, (15, 15, 15), thick, cv2.LINE_AA)
    return cv2.resize(img, (W // scale, H // scale), interpolation=cv2.INTER_AREA)


def paste_rotated(
    scene: np.ndarray, patch: np.ndarray, centre: tuple[float, float], angle: float
) -> np.ndarray:
    """``patch`` rotated by ``angle`` degrees pasted at ``centre``; returns its (4,) bbox."""
    import cv2

    ph, pw = patch.shape[:2]
    m = cv2.getRotationMatrix2D((pw / 2, ph / 2), angle, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    bw, bh = math.ceil(pw * cos + ph * sin), math.ceil(pw * sin + ph * cos)
    m[0, 2] += bw / 2 - pw / 2
    m[1, 2] += bh / 2 - ph / 2
    rotated = cv2.warpAffine(patch, m, (bw, bh), flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(np.full((ph, pw), 255, np.uint8), m, (bw, bh)) > 127
    x0, y0 = round(centre[0] - bw / 2), round(centre[1] - bh / 2)
    sh, sw = scene.shape[:2]
    xa, ya, xb, yb = max(0, x0), max(0, y0), min(sw, x0 + bw), min(sh, y0 + bh)
    if xb <= xa or yb <= ya:
        return np.zeros(4, np.float32)
    sub = mask[ya - y0 : yb - y0, xa - x0 : xb - x0]
    scene[ya:yb, xa:xb][sub] = rotated[ya - y0 : yb - y0, xa - x0 : xb - x0][sub]
    ys, xs = np.nonzero(mask)
    return np.array(
        [x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1], np.float32
    ).clip(0, [sw, sh, sw, sh])
