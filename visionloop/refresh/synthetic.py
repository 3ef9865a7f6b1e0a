"""Synthetic camera batches with planted shifts and known truth, for refresh tests and benchmarks.

``render(spec, rng)`` draws one small street-like scene (sky and ground gradients, sensor grain,
"vehicle" boxes and "sign" discs) under a :class:`Shot` that fixes what a drift detector
should see: the camera (EXIF make/model), day or night (a gamma tone curve plus lamps, and an
EXIF capture hour), a colour cast (per-channel gains) and optical blur (Gaussian sigma).
``write_batch`` writes a batch of JPEG files with EXIF and a COCO export of the true boxes, and
returns the truth per file. Same seed, same bytes.

Shifts the refresh benchmark plants (``Batch`` fields): the night share (10% -> 40%), a new
camera whose images carry a colour cast, and more blur.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from visionloop import storage

# camera key -> (EXIF make, EXIF model)
CAMERAS: dict[str, tuple[str, str]] = {
    "cam_a": ("Acme", "A100"),
    "cam_b": ("Birch", "B7"),
    "cam_c": ("Corvid", "C3"),
}
CATEGORIES: tuple[str, ...] = ("vehicle", "sign")
WARM_CAST: tuple[float, float, float] = (1.0, 0.82, 0.55)  # RGB gains: a yellow-orange cast


@dataclass(frozen=True)
class Shot:
    """How one image is taken (what a drift detector should pick up)."""

    camera: str = "cam_a"
    night: bool = False
    cast: tuple[float, float, float] = (1.0, 1.0, 1.0)  # RGB gains
    blur_sigma: float = 0.0  # optical blur, pixels


@dataclass(frozen=True)
class Batch:
    """A batch recipe: shares of the planted conditions over ``n`` images."""

    n: int = 100
    cameras: tuple[tuple[str, float], ...] = (("cam_a", 0.6), ("cam_b", 0.4))
    night_share: float = 0.1
    cast_cameras: tuple[str, ...] = ()  # cameras whose images carry WARM_CAST
    blur_share: float = 0.1  # images with optical blur...
    blur_sigma: tuple[float, float] = (0.6, 1.2)  # ...of a sigma drawn from this range
    width: int = 160
    height: int = 120


def no_shift(n: int = 100, **kw: Any) -> Batch:
    return Batch(n=n, **kw)


def night_shift(n: int = 100, **kw: Any) -> Batch:
    """The night share goes from 10% to 40%."""
    return Batch(n=n, night_share=0.4, **kw)


def new_camera_shift(n: int = 100, **kw: Any) -> Batch:
    """A third camera takes 30% of the images, all with a warm colour cast."""
    cams = (("cam_a", 0.42), ("cam_b", 0.28), ("cam_c", 0.3))
    return Batch(n=n, cameras=cams, cast_cameras=("cam_c",), **kw)


def blur_shift(n: int = 100, **kw: Any) -> Batch:
    """More blur: half the images are soft instead of a tenth."""
    return Batch(n=n, blur_share=0.5, **kw)


SHIFTS = {
    "none": no_shift,
    "night_share": night_shift,
    "new_camera_cast": new_camera_shift,
    "more_blur": blur_shift,
}


@dataclass
class Rendered:
    pixels: np.ndarray  # HxWx3 RGB uint8
    boxes: list[dict[str, Any]] = field(default_factory=list)  # {"category", "bbox": xywh}


def shots(batch: Batch, rng: np.random.Generator) -> list[Shot]:
    """The ``batch.n`` shots of a batch: shares are exact (rounded), order is shuffled."""
    n = batch.n
    names = [c for c, _ in batch.cameras]
    weights = np.array([w for _, w in batch.cameras], dtype=float)
    counts = np.floor(weights / weights.sum() * n).astype(int)
    for i in np.argsort(-(weights / weights.sum() * n - counts))[: n - counts.sum()]:
        counts[i] += 1
    cams = [c for c, k in zip(names, counts, strict=True) for _ in range(k)]
    night = [i < round(batch.night_share * n) for i in range(n)]
    blur = [i < round(batch.blur_share * n) for i in range(n)]
    cams = [cams[i] for i in rng.permutation(n)]
    night = [night[i] for i in rng.permutation(n)]
    blur = [blur[i] for i in rng.permutation(n)]
    out = []
    for cam, is_night, is_blur in zip(cams, night, blur, strict=True):
        sigma = float(rng.uniform(*batch.blur_sigma)) if is_blur else 0.0
        cast = WARM_CAST if cam in batch.cast_cameras else (1.0, 1.0, 1.0)
        out.append(Shot(camera=cam, night=is_night, cast=cast, blur_sigma=sigma))
    return out


def _gradient(top: np.ndarray, bottom: np.ndarray, h: int, w: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    return (top[None, None, :] * (1 - t) + bottom[None, None, :] * t).repeat(w, axis=1)


def render(shot: Shot, rng: np.random.Generator, width: int = 160, height: int = 120) -> Rendered:
    """One scene under ``shot`` (RGB uint8) and the boxes of its objects (xywh pixels)."""
    import cv2

    w, h = width, height
    horizon = int(h * rng.uniform(0.35, 0.6))
    sky = _gradient(rng.uniform(120, 230, 3), rng.uniform(150, 255, 3), horizon, w)
    ground = _gradient(rng.uniform(60, 140, 3), rng.uniform(30, 110, 3), h - horizon, w)
    img = np.concatenate([sky, ground], axis=0).astype(np.float32)
    # a skyline of buildings and a few large shapes: scenes differ in coarse layout, as real
    # ones do (a perceptual hash sees little else at this size)
    x = 0
    while x < w:
        bw = int(rng.uniform(0.08, 0.3) * w)
        top = int(horizon - rng.uniform(0.05, 0.45) * h)
        img[max(0, top) : horizon, x : x + bw] = rng.uniform(40, 220, 3)
        x += bw + int(rng.uniform(0, 0.15) * w)
    for _ in range(int(rng.integers(1, 4))):
        cx, cy = int(rng.uniform(0, w)), int(rng.uniform(horizon, h))
        axes = (int(rng.uniform(0.1, 0.35) * w), int(rng.uniform(0.05, 0.2) * h))
        colour = tuple(float(c) for c in rng.uniform(20, 200, 3))
        cv2.ellipse(img, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
    boxes: list[dict[str, Any]] = []
    for _ in range(int(rng.integers(1, 4))):
        if rng.random() < 0.6:
            bw = float(rng.uniform(0.15, 0.4) * w)
            bh = bw * float(rng.uniform(0.45, 0.65))
            x = float(rng.uniform(0, w - bw))
            y = float(np.clip(horizon - bh * rng.uniform(0.2, 0.8), 0, h - bh))
            colour = rng.uniform(20, 240, 3)
            x0, y0, x1, y1 = int(x), int(y), int(x + bw), int(y + bh)
            img[y0:y1, x0:x1] = colour
            img[y0 + (y1 - y0) // 2 : y1, x0:x1] *= 0.7  # a darker lower body
            boxes.append({"category": "vehicle", "bbox": [x0, y0, x1 - x0, y1 - y0]})
        else:
            r = float(rng.uniform(0.04, 0.09) * w)
            cx, cy = float(rng.uniform(r, w - r)), float(rng.uniform(r, horizon))
            colour = tuple(float(c) for c in rng.uniform(40, 255, 3))
            cv2.circle(img, (int(cx), int(cy)), int(r), colour, -1, lineType=cv2.LINE_AA)
            x0, y0 = int(cx - r), int(cy - r)
            boxes.append({"category": "sign", "bbox": [x0, y0, int(2 * r), int(2 * r)]})
    grain = rng.normal(0.0, rng.uniform(6.0, 10.0), (h, w, 1)).astype(np.float32)
    img = img + cv2.GaussianBlur(grain, (0, 0), 0.7)[..., None]
    img *= np.asarray(shot.cast, dtype=np.float32)[None, None, :]
    img = np.clip(img, 0, 255)
    if shot.night:
        levels = (np.arange(256, dtype=np.float32) / 255.0) ** float(rng.uniform(2.2, 2.8))
        lut = np.clip(255.0 * levels + 0.5, 0, 255).astype(np.uint8)
        img = cv2.LUT(img.astype(np.uint8), lut).astype(np.float32)
        for _ in range(int(rng.integers(2, 5))):
            cx, cy = int(rng.uniform(0, w)), int(rng.uniform(0, horizon))
            cv2.circle(img, (cx, cy), int(rng.uniform(1.5, 3.5)), (255, 236, 180), -1)
    if shot.blur_sigma > 0:
        img = cv2.GaussianBlur(img, (0, 0), shot.blur_sigma)
    noise = rng.normal(0.0, 2.0, img.shape).astype(np.float32)
    pixels = np.clip(img + noise + 0.5, 0, 255).astype(np.uint8)
    return Rendered(pixels=pixels, boxes=boxes)


def capture_time(rng: np.random.Generator, night: bool, day: int | None = None) -> str:
    """An EXIF DateTimeOriginal whose hour says day (08-17) or night (20-05)."""
    hour = (
        int(rng.choice([20, 21, 22, 23, 0, 1, 2, 3, 4, 5])) if night else int(rng.integers(8, 18))
    )
    d = int(rng.integers(1, 29)) if day is None else day
    return (
        f"2024:07:{d:02d} {hour:02d}:{int(rng.integers(0, 60)):02d}:{int(rng.integers(0, 60)):02d}"
    )


def encode(pixels: np.ndarray, camera: str, capture: str, quality: int = 92) -> bytes:
    """JPEG bytes with EXIF make, model and capture time."""
    from PIL import Image

    make, model = CAMERAS[camera]
    exif = Image.Exif()
    exif[0x010F] = make
    exif[0x0110] = model
    exif.get_ifd(0x8769)[0x9003] = capture
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=quality, exif=exif.tobytes())
    return buf.getvalue()


def write_batch(
    out_dir: str,
    batch: Batch,
    seed: int,
    *,
    prefix: str = "batch",
    coco: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Write ``batch`` as ``<out_dir>/<camera>/<prefix>_<seed>_<i>.jpg``; returns the truth
    per relative path (shot, capture time, boxes). ``coco``: also write the true boxes there as
    a COCO file (file names relative to ``out_dir``)."""
    rng = np.random.default_rng(seed)
    truth: dict[str, dict[str, Any]] = {}
    for i, shot in enumerate(shots(batch, rng)):
        scene = render(shot, rng, batch.width, batch.height)
        cap = capture_time(rng, shot.night)
        rel = f"{shot.camera}/{prefix}_{seed:04d}_{i:05d}.jpg"
        storage.write_bytes_atomic(
            storage.join(out_dir, rel), encode(scene.pixels, shot.camera, cap)
        )
        truth[rel] = {**asdict(shot), "capture_time": cap, "boxes": scene.boxes}
    if coco is not None:
        storage.write_text_atomic(coco, json.dumps(coco_document(truth, batch), indent=1))
    return truth


def coco_document(truth: dict[str, dict[str, Any]], batch: Batch) -> dict[str, Any]:
    """The true boxes of a batch as a COCO instances document."""
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(CATEGORIES)]
    ids = {n: i + 1 for i, n in enumerate(CATEGORIES)}
    images, annotations = [], []
    for k, (rel, t) in enumerate(sorted(truth.items()), start=1):
        images.append({"id": k, "file_name": rel, "width": batch.width, "height": batch.height})
        for box in t["boxes"]:
            x, y, bw, bh = box["bbox"]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": k,
                    "category_id": ids[box["category"]],
                    "bbox": [x, y, bw, bh],
                    "area": float(bw * bh),
                    "iscrowd": 0,
                }
            )
    return {"images": images, "annotations": annotations, "categories": cats}


def expected_shift_features(name: str) -> set[str]:
    """The global drift features a planted shift must flag (what the benchmark scores)."""
    return {
        "none": set(),
        "night_share": {"day_night"},
        "new_camera_cast": {"camera"},
        "more_blur": {"blur"},
    }[name]


def hours_are_night(capture: str) -> bool:
    hour = int(capture[11:13])
    return hour >= 20 or hour < 6


__all__ = [
    "CAMERAS",
    "SHIFTS",
    "Batch",
    "Shot",
    "coco_document",
    "encode",
    "expected_shift_features",
    "measured_batch",
    "measured_row",
    "render",
    "shots",
    "write_batch",
]


def iso(capture: str) -> str:
    """EXIF "YYYY:MM:DD HH:MM:SS" -> the manifest's ISO 8601 "YYYY-MM-DDTHH:MM:SS"."""
    date, clock = capture.split(" ")
    return f"{date.replace(':', '-')}T{clock}"


def measured_row(
    data: bytes,
    rel_path: str,
    camera: str,
    capture: str,
    *,
    work_max_side: int = 512,
    embed_max_side: int = 256,
) -> dict[str, Any]:
    """What the pipeline would know of one accepted image without running it: collect's
    columns, curate's metrics and day/night (default params) and the refresh embedding.

    For benchmarks and unit tests that need thousands of measured items in seconds; the
    end-to-end tests run the real stages."""
    import hashlib

    from visionloop.config import CurateParams
    from visionloop.curate import metrics
    from visionloop.refresh.embed import embed_pixels

    cp = CurateParams()
    image, _ = metrics.decode_for_metrics(data, None, None, work_max_side=work_max_side)
    m = metrics.compute_metrics(image, work_max_side, "bgr")
    day_night, _ = metrics.calc_day_night(
        iso(capture),
        float(m["brightness"]),
        day_start_hour=cp.day_start_hour,
        night_start_hour=cp.night_start_hour,
        night_brightness=cp.night_brightness,
    )
    make, model = CAMERAS[camera]
    item = hashlib.sha256(data).hexdigest()
    emb = embed_pixels(image, embed_max_side)
    return {
        "item_id": item,
        "source_uri": f"source/{rel_path}",
        "rel_path": rel_path,
        "status": "accepted",
        "width": int(image.shape[1]),
        "height": int(image.shape[0]),
        "camera_make": make,
        "camera_model": model,
        "capture_time": iso(capture),
        "curate_blur_score": float(m["blur"]),
        "curate_brightness": float(m["brightness"]),
        "curate_brightness_low": float(m["brightness_low"]),
        "curate_brightness_high": float(m["brightness_high"]),
        "curate_entropy": float(m["entropy"]),
        "curate_day_night": day_night,
        **emb,
    }


def measured_batch(batch: Batch, seed: int, prefix: str = "batch") -> pd.DataFrame:
    """``batch`` rendered, JPEG-encoded and measured in memory (see ``measured_row``)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, shot in enumerate(shots(batch, rng)):
        scene = render(shot, rng, batch.width, batch.height)
        cap = capture_time(rng, shot.night)
        rel = f"{shot.camera}/{prefix}_{seed:04d}_{i:05d}.jpg"
        rows.append(measured_row(encode(scene.pixels, shot.camera, cap), rel, shot.camera, cap))
    return pd.DataFrame(rows)
