"""Synthetic images with planted truth for the curate tests (numpy + OpenCV, no files needed)."""

from __future__ import annotations

import cv2
import numpy as np


def texture(rng: np.random.Generator, w: int = 320, h: int = 240, noise: float = 6.0) -> np.ndarray:
    """A 'natural-ish' BGR image: smooth colour gradient, random hard-edged shapes, sensor noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    for c in range(3):
        a, b, d = rng.uniform(-0.25, 0.25, 3)
        img[..., c] = 110 + 70 * np.sin(a * xx / 20 + b * yy / 20 + d * 6)
    for _ in range(int(rng.integers(15, 40))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1 = x0 + int(rng.integers(2, max(3, w // 3)))
        y1 = y0 + int(rng.integers(2, max(3, h // 3)))
        col = tuple(float(v) for v in rng.integers(0, 256, 3))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            cv2.rectangle(img, (x0, y0), (x1, y1), col, -1)
        elif kind == 1:
            center = ((x0 + x1) // 2, (y0 + y1) // 2)
            cv2.ellipse(img, center, ((x1 - x0) // 2, (y1 - y0) // 2), 0, 0, 360, col, -1)
        else:
            cv2.line(img, (x0, y0), (x1, y1), col, int(rng.integers(1, 6)))
    img += rng.normal(0, noise, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def blurred(img: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), sigma)


def jpeg(img: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def roundtrip(img: np.ndarray, quality: int = 90) -> np.ndarray:
    """Encode as JPEG and decode again, as the published images are."""
    return cv2.imdecode(np.frombuffer(jpeg(img, quality), np.uint8), cv2.IMREAD_COLOR)


def near_copy(img: np.ndarray, scale: float = 0.95, quality: int = 60) -> np.ndarray:
    """The peer benchmark's near duplicate: resized to 95 % and re-encoded at q=60."""
    h, w = img.shape[:2]
    small = cv2.resize(img, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_LINEAR)
    return roundtrip(small, quality)


def flat(rng: np.random.Generator, w: int = 320, h: int = 240) -> np.ndarray:
    """An almost uniform frame (lens cap, blank wall): one colour plus faint noise."""
    base = np.full((h, w, 3), rng.integers(60, 200, 3), np.float32)
    return np.clip(base + rng.normal(0, 0.8, base.shape), 0, 255).astype(np.uint8)


def darkened(img: np.ndarray, gain: float) -> np.ndarray:
    return (img.astype(np.float32) * gain).astype(np.uint8)


def washed_out(img: np.ndarray, white_gap: float) -> np.ndarray:
    return np.clip(255 - (255 - img.astype(np.float32)) * white_gap, 0, 255).astype(np.uint8)
