"""A deterministic sample dataset with known truth, for demos, tests and stage benchmarks.

``build_sample(out_dir)`` writes what a small fleet of two cameras and an annotation vendor
would deliver, with every answer recorded in ``truth.json``::

    out_dir/images/cam_a/img_0000.jpg ...   camera "Acme A100"  (COCO export covers these)
    out_dir/images/cam_b/img_0000.jpg ...   camera "Birch B7"   (YOLO export covers these)
    out_dir/images/cam_a/clips/street.avi   a 3.2 s MJPG clip of cam_a (no labels)
    out_dir/images/notes.txt                a stray text file
    out_dir/annotations/coco/instances.json category ids 1 face, 3 vehicle, 7 sign
    out_dir/annotations/yolo/data.yaml + labels/cam_b/<stem>.txt
    out_dir/truth.json                      expected status/reason per file, boxes, totals

Scenes are synthetic (sky/ground gradients, texture, distractor shapes, sensor noise) with
annotated "vehicle" rectangles and "sign" ellipses, day and night capture times, EXIF camera and
GPS, and real faces pasted in: photos that ship inside the scikit-image and matplotlib wheels
(astronaut, Grace Hopper, the LFW subset), so a real face detector has something to find.
Planted defects (blur, dark, overexposed, exact and near duplicates, corrupt, truncated, wrong
extension, a rotated EXIF orientation, a text file) stay below ~15% of the files at n=240 so
the default quarantine gate passes. Same seed, same bytes.

The clip (10 fps, 32 frames) is what collect turns into 4 frame rows at its default
``video_fps`` of 1: a camera panning along a street after a passer-by with a real face, so the
sampled frames differ (pHashes 14+ bits apart over seeds 0-39, 22 at seed 0, against
``curate.phash_radius`` 8), pass every quality check and are all expected ``accepted`` with the
face redacted. ``truth["files"]`` is keyed like the manifest: one entry per sampled frame
(``<clip>/frame_000010.png``, kind ``video_frame``), none for the clip itself;
``truth["videos"]`` lists each clip's frames.

All boxes are ``[x0, y0, x1, y1]`` in pixels of the image *as displayed* (EXIF-oriented).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, TiffImagePlugin

from visionloop import storage
from visionloop.schema import Reason, Status

CAMERAS: dict[str, tuple[str, str]] = {"cam_a": ("Acme", "A100"), "cam_b": ("Birch", "B7")}
# Where each camera's GPS fixes fall: one southern/eastern, one northern/western hemisphere.
GPS_CENTRES: dict[str, tuple[float, float]] = {
    "cam_a": (-33.8688, 151.2093),
    "cam_b": (40.7128, -74.0060),
}
COCO_CATEGORY_IDS: dict[str, int] = {"face": 1, "vehicle": 3, "sign": 7}  # gaps on purpose
YOLO_NAMES: list[str] = ["face", "vehicle", "sign"]
WIDTH, HEIGHT = 640, 480
JPEG_QUALITY = 90
NEAR_DUPLICATE_QUALITY = 60
NEAR_DUPLICATE_SCALE = 0.95
NIGHT_SHARE = 0.3
GPS_SHARE = 0.4
FACE_SHARE = 0.4  # of the clean images: about a third of all files carry faces

# Planted defects as a share of the files (at least one each); the fixed ones are one file each.
MIX: dict[str, float] = {
    "blurry": 0.035,
    "dark": 0.025,
    "overexposed": 0.02,
    "exact_duplicate": 0.025,
    "near_duplicate": 0.025,
}
SINGLES: tuple[str, ...] = ("corrupt", "truncated", "wrong_extension", "orientation_6")

# kind -> (expected final status, reason, stage that should decide it)
EXPECTED: dict[str, tuple[Status, Reason | None, str | None]] = {
    "clean": (Status.ACCEPTED, None, None),
    "orientation_6": (Status.ACCEPTED, None, None),
    "blurry": (Status.QUARANTINED, Reason.BLURRY, "curate"),
    "dark": (Status.QUARANTINED, Reason.TOO_DARK, "curate"),
    "overexposed": (Status.QUARANTINED, Reason.OVEREXPOSED, "curate"),
    "exact_duplicate": (Status.QUARANTINED, Reason.DUPLICATE_EXACT, "collect"),
    "near_duplicate": (Status.QUARANTINED, Reason.NEAR_DUPLICATE, "curate"),
    "corrupt": (Status.QUARANTINED, Reason.CORRUPT, "collect"),
    "truncated": (Status.QUARANTINED, Reason.TRUNCATED, "collect"),
    "wrong_extension": (Status.QUARANTINED, Reason.EXTENSION_MISMATCH, "collect"),
    "text": (Status.QUARANTINED, Reason.UNSUPPORTED_FORMAT, "collect"),
    "video_frame": (Status.ACCEPTED, None, None),
}
_ANNOTATED_KINDS = frozenset(
    {
        "clean",
        "orientation_6",
        "blurry",
        "dark",
        "overexposed",
        "exact_duplicate",
        "near_duplicate",
        "wrong_extension",
    }
)
MIN_N = 24
# Surface grain amplitude (grey levels). Calibrated with curate's blur score: clean scenes score
# 0.56-0.72 and the planted blur 0.09-0.19 (n=240), on either side of curate.blur_threshold.
GRAIN_AMPLITUDE = (6.0, 12.0)

Box = list[float]


# --------------------------------------------------------------------------------------------
# Face photos from wheels
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FacePatch:
    name: str
    pixels: np.ndarray  # HxWx3 uint8
    face: tuple[float, float, float, float]  # face box as fractions of the patch
    soft_ellipse: bool  # blend with an elliptical mask (head-and-shoulders crops)


def _crop_around(img: np.ndarray, face: tuple[int, int, int, int], name: str) -> FacePatch:
    """Head-and-shoulders crop with context around a face box, so it blends like a portrait."""
    x0, y0, x1, y1 = face
    fw, fh = x1 - x0, y1 - y0
    cx0, cy0 = max(0, int(x0 - 0.45 * fw)), max(0, int(y0 - 0.55 * fh))
    cx1, cy1 = min(img.shape[1], int(x1 + 0.45 * fw)), min(img.shape[0], int(y1 + 0.35 * fh))
    patch = np.ascontiguousarray(img[cy0:cy1, cx0:cx1, :3])
    pw, ph = cx1 - cx0, cy1 - cy0
    rel = ((x0 - cx0) / pw, (y0 - cy0) / ph, (x1 - cx0) / pw, (y1 - cy0) / ph)
    return FacePatch(name, patch, rel, soft_ellipse=True)


@functools.lru_cache(maxsize=1)
def face_bank() -> tuple[FacePatch, ...]:
    """Real face photos shipped in wheels (no download): 2 portraits + 100 LFW face crops.

    Face boxes: astronaut and Grace Hopper boxes were measured once with the CenterFace model;
    the LFW crops are face-tight 25x25 images whose face box (as CenterFace draws it, mean of
    the 100 crops) spans x 0.07-0.83 and y 0.03-0.95 of the crop.
    """
    import matplotlib.cbook
    import skimage.data

    patches = [_crop_around(skimage.data.astronaut(), (181, 58, 270, 178), "astronaut")]
    with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as g:
        hopper = np.asarray(g.convert("RGB"))
    patches.append(_crop_around(hopper, (173, 128, 358, 334), "grace_hopper"))
    lfw = skimage.data.lfw_subset()[:100]  # the first 100 are faces
    for i, face in enumerate(lfw):
        gray = np.clip(face * 255.0 + 0.5, 0, 255).astype(np.uint8)
        patches.append(
            FacePatch(
                f"lfw_{i:03d}", np.repeat(gray[..., None], 3, 2), (0.07, 0.03, 0.83, 0.95), False
            )
        )
    return tuple(patches)


# --------------------------------------------------------------------------------------------
# Scene synthesis
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _noise_field(w: int, h: int) -> np.ndarray:
    """One fixed field of unit sensor noise; each image adds a differently offset window of it
    (drawing fresh normals per image was half the build time)."""
    return np.random.default_rng(20240601).standard_normal((h + 64, w + 64, 3), dtype=np.float32)


@functools.lru_cache(maxsize=4)
def _texture_field(w: int, h: int) -> np.ndarray:
    """Fixed surface texture (grain of 2-3 px, unit variance, one channel), windowed per image.

    Real surfaces (asphalt, foliage, walls) carry fine detail that a sharp lens keeps and a
    blurred one loses; flat synthetic shapes alone read as soft to a sharpness metric.
    """
    import cv2

    rng = np.random.default_rng(20240602)
    coarse = rng.standard_normal(((h + 64) // 2, (w + 64) // 2), dtype=np.float32)
    fine = cv2.resize(coarse, (w + 64, h + 64), interpolation=cv2.INTER_LINEAR)
    return fine / max(float(fine.std()), 1e-6)


def _color(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in rng.integers(lo, hi, 3))
    return r, g, b


def _background(rng: np.random.Generator, w: int, h: int) -> tuple[np.ndarray, int]:
    """Sky and ground gradients with a random horizon, plus a smooth wave texture (uint8).

    Everything here is low-frequency, so it is drawn at quarter size and upscaled (the soft
    horizon that results looks more natural than a hard edge, at a sixteenth of the cost).
    """
    import cv2

    sw, sh = max(2, w // 4), max(2, h // 4)
    y = np.arange(sh, dtype=np.float32)[:, None] * (h / sh)
    x = np.arange(sw, dtype=np.float32)[None, :] * (w / sw)
    horizon = int(rng.uniform(0.3, 0.65) * h)
    sky_top, sky_low = rng.uniform(60, 230, 3), rng.uniform(60, 230, 3)
    ground_top, ground_low = rng.uniform(30, 200, 3), rng.uniform(30, 200, 3)
    t_sky = np.clip(y / max(horizon, 1), 0, 1)
    t_ground = np.clip((y - horizon) / max(h - horizon, 1), 0, 1)
    rows = np.where(
        y < horizon,
        sky_top * (1 - t_sky) + sky_low * t_sky,
        ground_top * (1 - t_ground) + ground_low * t_ground,
    )
    fx, fy, phase = rng.uniform(-0.06, 0.06), rng.uniform(-0.06, 0.06), rng.uniform(0, 6.3)
    amp = rng.uniform(8, 25, 3)
    wave = np.sin(fx * x + fy * y + phase)
    small = rows[:, None, :] + wave[..., None] * amp
    small = np.clip(small + 0.5, 0, 255).astype(np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), horizon


def _overlaps(box: Box, taken: list[Box], margin: float = 4) -> bool:
    x0, y0, x1, y1 = box
    return any(
        x0 < b[2] + margin and b[0] < x1 + margin and y0 < b[3] + margin and b[1] < y1 + margin
        for b in taken
    )


def _place(
    rng: np.random.Generator, w: int, h: int, bw: float, bh: float, y_lo: float, taken: list[Box]
) -> Box | None:
    """A free spot for a bw x bh box with its top at or below y_lo, or None."""
    for _ in range(40):
        x0 = float(rng.uniform(0, max(1.0, w - bw - 1)))
        y0 = float(rng.uniform(min(y_lo, h - bh - 1), max(y_lo, h - bh - 1)))
        box = [x0, y0, x0 + bw, y0 + bh]
        if box[2] <= w and box[3] <= h and box[1] >= 0 and not _overlaps(box, taken):
            return box
    return None


def _draw_distractors(rng: np.random.Generator, draw: ImageDraw.ImageDraw, w: int, h: int) -> None:
    """Unlabelled clutter: buildings, hills, poles and wires."""
    for _ in range(int(rng.integers(4, 12))):
        kind = int(rng.integers(0, 3))
        col = _color(rng, 20, 236)
        if kind == 0:
            x0, y0 = float(rng.uniform(-50, w)), float(rng.uniform(0, h))
            pts = [
                (x0, y0),
                (x0 + rng.uniform(40, 250), y0),
                (x0 + rng.uniform(10, 120), y0 - rng.uniform(30, 150)),
            ]
            draw.polygon([(float(a), float(b)) for a, b in pts], fill=col)
        elif kind == 1:
            x0, y1 = float(rng.uniform(0, w)), float(rng.uniform(h * 0.3, h))
            draw.rectangle([x0, y1 - rng.uniform(40, 200), x0 + rng.uniform(30, 120), y1], fill=col)
        else:
            a = (float(rng.uniform(0, w)), float(rng.uniform(0, h)))
            b = (float(rng.uniform(0, w)), float(rng.uniform(0, h)))
            draw.line([a, b], fill=col, width=int(rng.integers(1, 6)))


def _draw_vehicle(rng: np.random.Generator, draw: ImageDraw.ImageDraw, box: Box) -> None:
    x0, y0, x1, y1 = box
    r = (y1 - y0) * 0.22  # wheel radius; wheels hang r below the body
    body_bottom = y1 - r
    draw.rectangle([x0, y0 + (body_bottom - y0) * 0.35, x1, body_bottom], fill=_color(rng, 30, 230))
    cab = (x0 + (x1 - x0) * 0.2, y0, x0 + (x1 - x0) * 0.75, y0 + (body_bottom - y0) * 0.4)
    draw.rectangle(cab, fill=_color(rng, 30, 230))
    draw.rectangle(
        [cab[0] + 4, cab[1] + 4, cab[2] - 4, cab[3] - 2],
        fill=tuple(int(v) for v in rng.integers(150, 230, 3)),
    )
    for cx in (x0 + (x1 - x0) * 0.2, x0 + (x1 - x0) * 0.8):
        draw.ellipse([cx - r, y1 - 2 * r, cx + r, y1], fill=(20, 20, 22))
        draw.ellipse(
            [cx - r / 2.5, y1 - r - r / 2.5, cx + r / 2.5, y1 - r + r / 2.5], fill=(150, 150, 150)
        )


def _draw_sign(
    rng: np.random.Generator, draw: ImageDraw.ImageDraw, box: Box, post_end: float
) -> None:
    x0, y0, x1, y1 = box
    cx = (x0 + x1) / 2
    post = y1 + (post_end - y1) * float(rng.uniform(0.6, 1.0))
    draw.line([(cx, y1), (cx, post)], fill=(90, 90, 95), width=max(2, int((x1 - x0) / 10)))
    rim = ((200, 30, 30), (30, 60, 190), (230, 190, 20))[int(rng.integers(0, 3))]
    draw.ellipse(box, fill=rim)
    inset = (x1 - x0) * 0.18
    draw.ellipse([x0 + inset, y0 + inset, x1 - inset, y1 - inset], fill=(245, 245, 240))


def _paste_face(
    canvas: np.ndarray, patch: FacePatch, x: int, y: int, pw: int, ph: int, flip: bool, gain: float
) -> Box:
    import cv2

    src = patch.pixels
    interp = cv2.INTER_AREA if pw < src.shape[1] else cv2.INTER_CUBIC
    face = cv2.resize(src, (pw, ph), interpolation=interp).astype(np.float32) * gain
    if patch.soft_ellipse:
        mask = np.zeros((ph, pw), np.float32)
        cv2.ellipse(mask, (pw // 2, ph // 2), (pw // 2 - 2, ph // 2 - 2), 0, 0, 360, 1.0, -1)
        mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, pw * 0.03))
    else:
        mask = np.ones((ph, pw), np.float32)
        mask[[0, -1], :] = 0.5
        mask[:, [0, -1]] = 0.5
    fx0, fy0, fx1, fy1 = patch.face
    if flip:
        face, mask = face[:, ::-1], mask[:, ::-1]
        fx0, fx1 = 1.0 - fx1, 1.0 - fx0
    region = canvas[y : y + ph, x : x + pw].astype(np.float32)
    blend = region * (1 - mask[..., None]) + face * mask[..., None]
    canvas[y : y + ph, x : x + pw] = np.clip(blend + 0.5, 0, 255).astype(np.uint8)
    return [x + fx0 * pw, y + fy0 * ph, x + fx1 * pw, y + fy1 * ph]


@dataclass
class Scene:
    pixels: np.ndarray  # HxWx3 uint8 as displayed
    faces: list[Box] = field(default_factory=list)
    face_sources: list[str] = field(default_factory=list)
    objects: list[dict[str, Any]] = field(default_factory=list)


def luminance(pixels: np.ndarray) -> float:
    """Mean ITU-R BT.601 luma of an RGB image (0..255)."""
    import cv2

    r, g, b = cv2.mean(np.ascontiguousarray(pixels))[:3]
    return float(0.299 * r + 0.587 * g + 0.114 * b)


def _night_tone(pixels: np.ndarray, target: float) -> np.ndarray:
    """Darken to a mean luma of about ``target`` with a power curve, not a gain.

    A gain would squash the highlights too; night photos keep their lit surfaces bright
    while the rest sinks, so the brightest percent stays well above a "too dark" frame.
    """
    import cv2

    probe = pixels[::4, ::4]
    lo, hi = 1.0, 8.0
    levels = np.arange(256, dtype=np.float32) / 255.0
    for _ in range(18):  # bisection on the exponent, measured on a 1/16 sample
        gamma = (lo + hi) / 2
        lut = np.clip(255.0 * levels**gamma + 0.5, 0, 255).astype(np.uint8)
        if luminance(cv2.LUT(probe, lut)) > target:
            lo = gamma
        else:
            hi = gamma
    lut = np.clip(255.0 * levels ** ((lo + hi) / 2) + 0.5, 0, 255).astype(np.uint8)
    return cv2.LUT(np.ascontiguousarray(pixels), lut)


def render_scene(
    rng: np.random.Generator, w: int, h: int, night: bool, n_faces: int, noise: bool = True
) -> Scene:
    """One annotated scene: background, clutter, vehicles, signs, faces, lighting, noise.

    ``noise=False`` leaves the sensor noise out (and draws nothing for it): a video's frames
    are cut from one wide scene and each gets noise of its own, as a sensor would add.
    """
    canvas, horizon = _background(rng, w, h)
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    _draw_distractors(rng, draw, w, h)
    taken: list[Box] = []
    objects: list[dict[str, Any]] = []
    for _ in range(int(rng.choice([0, 1, 1, 2, 2, 3, 4]))):
        if rng.random() < 0.6:
            bw = float(rng.uniform(70, 200))
            bh = bw * float(rng.uniform(0.45, 0.65))
            box = _place(rng, w, h, bw, bh, horizon - bh * 0.5, taken)
            if box is None:
                continue
            _draw_vehicle(rng, draw, box)
            objects.append({"category": "vehicle", "box": box})
            taken.append(box)
        else:
            bw = float(rng.uniform(26, 70))
            bh = bw * float(rng.uniform(0.9, 1.1))
            room = _place(rng, w, h, bw, bh * 2.2, 0, taken)  # the post stands below the sign
            if room is None:
                continue
            box = [room[0], room[1], room[2], room[1] + bh]
            _draw_sign(rng, draw, box, room[3])
            objects.append({"category": "sign", "box": box})
            taken.append(room)
    ox, oy = (int(v) for v in rng.integers(0, 64, 2))
    grain = _texture_field(w, h)[oy : oy + h, ox : ox + w, None]
    grain = grain * float(rng.uniform(*GRAIN_AMPLITUDE))
    pixels = np.clip(np.asarray(img) + grain + 0.5, 0, 255).astype(np.uint8)
    scene = Scene(pixels=np.empty(0), objects=objects)
    bank = face_bank()
    for _ in range(n_faces):
        portrait = rng.random() < 0.3
        patch = bank[int(rng.integers(0, 2))] if portrait else bank[2 + int(rng.integers(0, 100))]
        face_h = float(rng.uniform(60, 150 if portrait else 110))
        _, fy0, _, fy1 = patch.face
        ph = round(face_h / (fy1 - fy0))
        pw = round(ph * patch.pixels.shape[1] / patch.pixels.shape[0])
        spot = _place(rng, w, h, pw, ph, 0, taken)
        flip, gain = bool(rng.random() < 0.5), float(rng.uniform(0.85, 1.1))
        if spot is None:
            continue
        x, y = int(spot[0]), int(spot[1])
        face = _paste_face(pixels, patch, x, y, pw, ph, flip, gain)
        taken.append([x, y, x + pw, y + ph])
        scene.faces.append(face)
        scene.face_sources.append(patch.name)
    if night:
        dimmed = _night_tone(pixels, float(rng.uniform(44, 56)))
        lamps = Image.fromarray(dimmed)
        ld = ImageDraw.Draw(lamps)
        for _ in range(int(rng.integers(2, 7))):
            cx, cy, r = (
                float(rng.uniform(0, w)),
                float(rng.uniform(0, h * 0.6)),
                float(rng.uniform(2, 6)),
            )
            ld.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(255, 236, 180))
        pixels = np.asarray(lamps)
    if not noise:
        scene.pixels = np.ascontiguousarray(pixels)
        return scene
    ox, oy = (int(v) for v in rng.integers(0, 64, 2))
    grain_noise = _noise_field(w, h)[oy : oy + h, ox : ox + w] * float(rng.uniform(2.5, 4.5))
    scene.pixels = np.clip(pixels + grain_noise + 0.5, 0, 255).astype(np.uint8)
    return scene


# --------------------------------------------------------------------------------------------
# Encoding with deterministic EXIF
# --------------------------------------------------------------------------------------------


def _dms(value: float) -> tuple[tuple[int, int, int], float]:
    """Degrees as (deg, min, sec*10000) integers, and the exact decimal they encode."""
    v = abs(value)
    deg = int(v)
    minutes = int((v - deg) * 60)
    sec_e4 = round(((v - deg) * 60 - minutes) * 60 * 10000)
    if sec_e4 >= 600000:
        sec_e4 = 599999
    exact = deg + minutes / 60 + sec_e4 / 10000 / 3600
    return (deg, minutes, sec_e4), (-exact if value < 0 else exact)


def exif_bytes(
    camera: str, capture: str, gps: tuple[float, float] | None, orientation: int = 1
) -> tuple[bytes, tuple[float, float] | None]:
    """EXIF block (Make, Model, DateTimeOriginal, GPS, orientation) and the exact GPS written."""
    make, model = CAMERAS[camera]
    exif = Image.Exif()
    exif[0x010F] = make
    exif[0x0110] = model
    if orientation != 1:
        exif[0x0112] = orientation
    exif.get_ifd(0x8769)[0x9003] = capture
    written = None
    if gps is not None:
        (ld, lm, ls), lat = _dms(gps[0])
        (od, om, os_), lon = _dms(gps[1])
        gps_ifd = exif.get_ifd(0x8825)
        rational = TiffImagePlugin.IFDRational
        gps_ifd[1] = "N" if gps[0] >= 0 else "S"
        gps_ifd[2] = (rational(ld, 1), rational(lm, 1), rational(ls, 10000))
        gps_ifd[3] = "E" if gps[1] >= 0 else "W"
        gps_ifd[4] = (rational(od, 1), rational(om, 1), rational(os_, 10000))
        written = (lat, lon)
    return exif.tobytes(), written


def encode_jpeg(pixels: np.ndarray, quality: int, exif: bytes | None) -> bytes:
    buf = io.BytesIO()
    kwargs: dict[str, Any] = {"quality": quality, "optimize": False, "subsampling": 2}
    if exif:
        kwargs["exif"] = exif
    Image.fromarray(pixels).save(buf, "JPEG", **kwargs)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# A short video clip
# --------------------------------------------------------------------------------------------

CLIP_NAME = "cam_a/clips/street.avi"  # relative to images/
CLIP_FPS = 10.0
CLIP_FRAMES = 32  # 3.2 s: collect's default 1 frame per second samples frames 0, 10, 20, 30
# Camera pan in px per frame (150 px/s): frames one second apart share under 4/5 of their view,
# and their pHashes lie 20+ bits apart (curate.phash_radius is 8): not near duplicates.
CLIP_PAN = 15
# The camera follows a passer-by who walks a little faster than the pan: the face drifts right
# by CLIP_WALK px per frame, 40 px between sampled frames, so its boxes in consecutive sampled
# frames overlap (IoU ~0.4 for a 100 px box) and anonymize links them into one track.
CLIP_WALK = 4
CLIP_JPEG_QUALITY = 90  # of each MJPG frame, as the still images
CLIP_FACE_HEIGHT = (90.0, 120.0)  # px: a passer-by near the camera, well inside detector range
CLIP_STREAM = 1  # the clip draws from default_rng((seed, CLIP_STREAM)): the same for every n


@dataclass
class _ClipFrame:
    pixels: np.ndarray  # HxWx3 uint8 RGB, as rendered (before MJPG)
    faces: list[Box]
    objects: list[dict[str, Any]]


def _objects_in_view(objects: list[dict[str, Any]], offset: int, w: int) -> list[dict[str, Any]]:
    """Objects of the wide scene as seen through the frame starting at ``offset``: boxes clipped
    to the frame; an object with less than a third of its box in view is left out."""
    seen = []
    for o in objects:
        x0, y0, x1, y1 = o["box"]
        vx0, vx1 = max(x0 - offset, 0.0), min(x1 - offset, float(w))
        if vx1 - vx0 >= (x1 - x0) / 3:
            seen.append({"category": o["category"], "box": [vx0, y0, vx1, y1]})
    return seen


def render_clip(rng: np.random.Generator) -> tuple[list[_ClipFrame], str]:
    """Frames of a street clip and the face source: the camera pans right across one wide day
    scene, following a passer-by (a real portrait from :func:`face_bank`) who walks right a
    little faster, so the face drifts from left of centre to right of it. Each frame gets
    sensor noise of its own."""
    span = CLIP_PAN * (CLIP_FRAMES - 1)
    wide = render_scene(rng, WIDTH + span, HEIGHT, night=False, n_faces=0, noise=False)
    patch = face_bank()[int(rng.integers(0, 2))]  # astronaut or Grace Hopper
    _, fy0, _, fy1 = patch.face
    ph = round(float(rng.uniform(*CLIP_FACE_HEIGHT)) / (fy1 - fy0))
    pw = round(ph * patch.pixels.shape[1] / patch.pixels.shape[0])
    y = int(rng.integers(10, HEIGHT - ph - 10))
    x_first = int(rng.integers(WIDTH // 4 - pw // 2, WIDTH // 2 - pw // 2))
    x_last = min(x_first + CLIP_WALK * (CLIP_FRAMES - 1), WIDTH - pw - 10)
    flip, gain = bool(rng.random() < 0.5), float(rng.uniform(0.9, 1.05))
    amplitude = float(rng.uniform(2.5, 4.5))
    noise = _noise_field(WIDTH, HEIGHT)
    frames = []
    for i in range(CLIP_FRAMES):
        offset = i * CLIP_PAN
        canvas = wide.pixels[:, offset : offset + WIDTH].copy()
        x = round(x_first + (x_last - x_first) * i / (CLIP_FRAMES - 1))
        face = _paste_face(canvas, patch, x, y, pw, ph, flip, gain)
        ox, oy = (int(v) for v in rng.integers(0, 64, 2))
        grain_noise = noise[oy : oy + HEIGHT, ox : ox + WIDTH] * amplitude
        pixels = np.clip(canvas + grain_noise + 0.5, 0, 255).astype(np.uint8)
        objects = _objects_in_view(wide.objects, offset, WIDTH)
        frames.append(_ClipFrame(pixels, [face], objects))
    return frames, patch.name


def encode_clip(frames: list[np.ndarray], fps: float = CLIP_FPS) -> bytes:
    """MJPG-in-AVI bytes of RGB frames, written by OpenCV's own MJPEG writer (not FFmpeg's):
    same frames, same bytes (checked across processes and OpenCV thread counts), and the
    FFmpeg backend that collect reads videos with decodes it."""
    import os
    import tempfile

    import cv2

    h, w = frames[0].shape[:2]
    fd, tmp = tempfile.mkstemp(suffix=".avi")
    os.close(fd)
    try:
        writer = cv2.VideoWriter(
            tmp, cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h)
        )
        if not writer.isOpened():  # pragma: no cover - the built-in writer needs no codec
            raise RuntimeError("OpenCV's MJPEG writer did not open")
        writer.set(cv2.VIDEOWRITER_PROP_QUALITY, CLIP_JPEG_QUALITY)
        for rgb in frames:
            writer.write(np.ascontiguousarray(rgb[:, :, ::-1]))
        writer.release()
        with open(tmp, "rb") as fh:
            return fh.read()
    finally:
        os.unlink(tmp)


def sampled_frames(data: bytes) -> list[Any]:
    """The frames collect will sample from video ``data`` at its default ``video_fps`` and
    ``video_max_frames`` (:class:`visionloop.video.Frame`), decoded the way collect does."""
    import os
    import tempfile

    from visionloop import video
    from visionloop.config import CollectParams

    defaults = CollectParams()
    fd, tmp = tempfile.mkstemp(suffix=".avi")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return list(video.sample_frames(tmp, defaults.video_fps, defaults.video_max_frames))
    finally:
        os.unlink(tmp)


def _clip_truth(seed: int) -> tuple[bytes, dict[str, Any], dict[str, dict[str, Any]]]:
    """The clip's bytes, its ``truth["videos"]`` entry and one truth entry per sampled frame
    (keyed by the frame's rel_path as collect writes it)."""
    from visionloop import video
    from visionloop.stages.collect import frame_rel_path

    frames, source = render_clip(np.random.default_rng((seed, CLIP_STREAM)))
    data = encode_clip([f.pixels for f in frames])
    entries: dict[str, dict[str, Any]] = {}
    for frame in sampled_frames(data):
        drawn = frames[frame.index]
        height, width = frame.rgb.shape[:2]
        entries[frame_rel_path(CLIP_NAME, frame.index)] = _truth_entry_frame(
            drawn,
            source,
            frame.index,
            width,
            height,
            luminance(frame.rgb),
            hashlib.sha256(video.encode_png(frame.rgb)).hexdigest(),
        )
    clip = {
        "frames": list(entries),
        "fps": CLIP_FPS,
        "frames_total": CLIP_FRAMES,
        "codec": "MJPG",
        "width": WIDTH,
        "height": HEIGHT,
        "sha256": hashlib.sha256(data).hexdigest(),
        "face_source": source,
    }
    return data, clip, entries


# --------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------


@dataclass
class _Slot:
    index: int
    camera: str
    name: str  # relative to images/
    kind: str
    night: bool = False
    capture: str = ""
    gps: tuple[float, float] | None = None
    data: bytes = b""
    scene: Scene | None = None
    width: int | None = None
    height: int | None = None
    orientation: int | None = None
    mean_luma: float | None = None
    source: str | None = None  # duplicate source (relative name)
    defect: dict[str, Any] = field(default_factory=dict)


def _counts(n: int) -> dict[str, int]:
    return {k: max(1, round(v * n)) for k, v in MIX.items()}


def _assign_kinds(rng: np.random.Generator, n_images: int, n: int) -> list[str]:
    kinds = [k for k, c in _counts(n).items() for _ in range(c)] + list(SINGLES)
    kinds += ["clean"] * (n_images - len(kinds))
    return [kinds[i] for i in rng.permutation(len(kinds))]


def _capture_time(rng: np.random.Generator, night: bool) -> str:
    day = int(rng.integers(1, 29))
    hour = (
        int(rng.choice([20, 21, 22, 23, 0, 1, 2, 3, 4, 5])) if night else int(rng.integers(8, 18))
    )
    minute, second = int(rng.integers(0, 60)), int(rng.integers(0, 60))
    return f"2024:06:{day:02d} {hour:02d}:{minute:02d}:{second:02d}"


def _round_box(box: Box) -> Box:
    return [round(float(v), 2) for v in box]


def _scaled(box: Box, sx: float, sy: float) -> Box:
    return _round_box([box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy])


def _pick_sources(rng: np.random.Generator, slots: list[_Slot]) -> None:
    """Give every duplicate a distinct clean source that sorts before it in the same camera.

    Sorting first means the collect stage (which keeps the first by source URI) keeps the
    original; a duplicate with no earlier clean image swaps places with a later clean one.
    """
    used: set[int] = set()
    for slot in slots:
        if slot.kind not in ("exact_duplicate", "near_duplicate"):
            continue
        earlier = [
            s.index
            for s in slots
            if s.kind == "clean"
            and s.camera == slot.camera
            and s.index < slot.index
            and s.index not in used
        ]
        if not earlier:
            later = [
                s
                for s in slots
                if s.kind == "clean" and s.camera == slot.camera and s.index > slot.index
            ]
            swap = later[int(rng.integers(0, len(later)))]
            swap.kind, slot.kind = slot.kind, "clean"
            continue  # the swapped slot is visited later in this loop
        src = earlier[int(rng.integers(0, len(earlier)))]
        used.add(src)
        slot.source = slots[src].name


def build_sample(out_dir: str, n: int = 240, seed: int = 0) -> dict[str, Any]:
    """Write the sample dataset (``n`` files in total under images/, the clip among them) and
    return its summary (``truth["totals"]``: ``files`` on disk, manifest ``rows``, ``frames``).

    Rewrites ``images/``, ``annotations/`` and ``truth.json`` below ``out_dir`` (local or s3://);
    nothing else there is touched. ``truth.json`` maps each manifest rel_path (a path below
    images/, or a sampled frame of the clip) to: ``status`` /
    ``reason`` (the final expected outcome), ``expected`` (the same plus the deciding ``stage``),
    ``collect`` (what the collect stage alone should decide), ``kind`` and ``defect``,
    ``duplicate_of`` / ``near_duplicate_of``, ``camera``, ``make``, ``model``, ``day_night``,
    ``capture_time``, ``gps``, ``orientation``, ``width`` / ``height`` (displayed), ``mean_luma``,
    ``sha256`` (of the file; of the frame's PNG as collect stores it), ``faces`` (boxes),
    ``face_sources``, ``objects`` ({category, box}; clipped to a frame's view) and ``video`` /
    ``frame_index`` (a frame's clip and frame number, else null). ``truth["videos"]`` maps the
    clip to its sampled ``frames``, ``fps``, ``frames_total``, ``codec``, size and ``sha256``.
    """
    if n < MIN_N:
        raise ValueError(f"n={n}: the sample needs at least {MIN_N} files to plant every defect")
    rng = np.random.default_rng(seed)
    for sub in ("images", "annotations"):
        storage.remove(storage.join(out_dir, sub), recursive=True)
    n_images = n - 1  # plus notes.txt; the clip then takes the place of one image (below)
    kinds = _assign_kinds(rng, n_images, n)
    per_cam: Counter[str] = Counter()
    slots: list[_Slot] = []
    for i, kind in enumerate(kinds):
        camera = "cam_a" if i % 2 == 0 else "cam_b"
        slots.append(_Slot(i, camera, f"{camera}/img_{per_cam[camera]:04d}.jpg", kind))
        per_cam[camera] += 1
    _pick_sources(rng, slots)

    for slot in slots:  # first pass: every file that is not derived from another
        if slot.kind in ("exact_duplicate", "near_duplicate"):
            continue
        _render_slot(rng, slot)
    # The clip takes the place of the last clean cam_a image that no duplicate copies: drawn
    # (so the random stream stays as it was) but not written, so every other image keeps the
    # bytes it had before the sample had a clip, and the tests calibrated on them still hold.
    sources = {s.source for s in slots}
    spare = max(
        (s for s in slots if s.kind == "clean" and s.camera == "cam_a" and s.name not in sources),
        key=lambda s: s.index,
    )
    slots.remove(spare)
    by_name = {s.name: s for s in slots}
    for slot in slots:  # second pass: duplicates of files written in the first pass
        if slot.kind in ("exact_duplicate", "near_duplicate"):
            _derive_slot(slot, by_name[str(slot.source)])

    images_dir = storage.join(out_dir, "images")
    for slot in slots:
        storage.write_bytes_atomic(storage.join(images_dir, *slot.name.split("/")), slot.data)
    notes = (
        "Delivery notes from the camera vendor.\n"
        "cam_a: Acme A100, cam_b: Birch B7. Firmware 2.4.1. Contact ops for re-uploads.\n"
    )
    storage.write_text_atomic(storage.join(images_dir, "notes.txt"), notes)
    clip_data, clip, frame_entries = _clip_truth(seed)
    storage.write_bytes_atomic(storage.join(images_dir, *CLIP_NAME.split("/")), clip_data)

    files = {s.name: _truth_entry(s) for s in slots}
    files["notes.txt"] = _truth_entry_text()
    files.update(frame_entries)
    videos = {CLIP_NAME: clip}
    annotations = _write_annotations(out_dir, slots, per_cam)
    truth = {
        "version": 1,
        "seed": seed,
        "n": n,
        "box_format": "[x0, y0, x1, y1] in pixels of the EXIF-oriented (displayed) image",
        "paths": "relative to images/",
        "files": dict(sorted(files.items())),
        "videos": videos,
        "annotations": annotations,
        "totals": _totals(files, videos),
    }
    storage.write_text_atomic(
        storage.join(out_dir, "truth.json"), json.dumps(truth, indent=1, sort_keys=False) + "\n"
    )
    return {"out_dir": out_dir, **truth["totals"], "annotations": annotations}


def _render_slot(rng: np.random.Generator, slot: _Slot) -> None:
    kind = slot.kind
    slot.night = kind != "overexposed" and bool(rng.random() < NIGHT_SHARE)
    slot.capture = _capture_time(rng, slot.night)
    gps_wanted = bool(rng.random() < GPS_SHARE)
    lat0, lon0 = GPS_CENTRES[slot.camera]
    gps_guess = (lat0 + float(rng.uniform(-0.05, 0.05)), lon0 + float(rng.uniform(-0.08, 0.08)))
    n_faces = 0
    if kind in ("clean", "orientation_6") and (
        kind == "orientation_6" or rng.random() < FACE_SHARE
    ):
        n_faces = int(rng.choice([1, 1, 1, 2, 2, 3]))
    w, h = (HEIGHT, WIDTH) if kind == "orientation_6" else (WIDTH, HEIGHT)
    scene = render_scene(rng, w, h, slot.night, n_faces)
    pixels = scene.pixels
    if kind == "blurry":
        import cv2

        sigma = float(rng.uniform(4.0, 6.0))
        pixels = cv2.GaussianBlur(pixels, (0, 0), sigma)
        slot.defect = {"sigma": round(sigma, 3)}
    elif kind == "dark":
        target = float(rng.uniform(5, 12))
        pixels = np.clip(pixels.astype(np.float32) * (target / max(luminance(pixels), 1.0)), 0, 255)
        pixels = (pixels + 0.5).astype(np.uint8)
        slot.defect = {"target_mean": round(target, 2)}
    elif kind == "overexposed":
        gap = float(rng.uniform(0.03, 0.08))
        pixels = (255 - (255 - pixels.astype(np.float32)) * gap + 0.5).astype(np.uint8)
        slot.defect = {"white_gap": round(gap, 3)}
    scene.pixels = np.empty(0, np.uint8)  # keep boxes only: 240 frames would hold ~220 MB
    slot.scene = scene
    slot.width, slot.height = w, h
    slot.mean_luma = luminance(pixels)
    if kind == "wrong_extension":  # a PNG named .jpg: no EXIF, as screenshots and exports go
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "PNG", compress_level=6)
        slot.data = buf.getvalue()
        slot.capture, slot.gps = "", None
        return
    orientation = 6 if kind == "orientation_6" else 1
    exif, slot.gps = exif_bytes(
        slot.camera, slot.capture, gps_guess if gps_wanted else None, orientation
    )
    stored = np.ascontiguousarray(np.rot90(pixels, k=1)) if orientation == 6 else pixels
    slot.orientation = orientation
    data = encode_jpeg(stored, JPEG_QUALITY, exif)
    if kind == "truncated":
        data = data[: int(len(data) * 0.6)]
        slot.scene = None  # not an image any more: no boxes to find
    elif kind == "corrupt":
        data = _random_non_image(rng, len(data))
        slot.scene = None
    slot.data = data


def _random_non_image(rng: np.random.Generator, size: int) -> bytes:
    """Random bytes that no image parser recognises (checked, so the truth holds)."""
    from visionloop import imaging

    for _ in range(20):
        data = rng.bytes(size)
        try:
            imaging.probe_and_decode(data, 10**8)
        except imaging.ImageRejected as err:
            if err.reason == Reason.CORRUPT:
                return data
    raise RuntimeError("could not draw random bytes that parse as no format")  # pragma: no cover


def _derive_slot(slot: _Slot, src: _Slot) -> None:
    """Exact duplicate: the source's bytes. Near duplicate: resized 95% and re-encoded q60."""
    assert src.scene is not None
    slot.night, slot.capture, slot.gps = src.night, src.capture, src.gps
    slot.orientation = src.orientation
    if slot.kind == "exact_duplicate":
        slot.data = src.data
        slot.scene = src.scene
        slot.width, slot.height, slot.mean_luma = src.width, src.height, src.mean_luma
        return
    with Image.open(io.BytesIO(src.data)) as im:
        exif = im.info.get("exif")
        w = round(im.width * NEAR_DUPLICATE_SCALE)
        h = round(im.height * NEAR_DUPLICATE_SCALE)
        small = np.asarray(im.convert("RGB").resize((w, h), Image.Resampling.BILINEAR))
    slot.data = encode_jpeg(small, NEAR_DUPLICATE_QUALITY, exif)
    sx, sy = w / im.width, h / im.height
    if src.orientation in (5, 6, 7, 8):  # stored sizes are turned; boxes live in displayed ones
        sx, sy = sy, sx
    assert src.width is not None and src.height is not None
    slot.width, slot.height = round(src.width * sx), round(src.height * sy)
    slot.scene = Scene(
        pixels=np.empty(0),
        faces=[_scaled(b, sx, sy) for b in src.scene.faces],
        face_sources=list(src.scene.face_sources),
        objects=[
            {"category": o["category"], "box": _scaled(o["box"], sx, sy)} for o in src.scene.objects
        ],
    )
    slot.mean_luma = src.mean_luma
    slot.defect = {"quality": NEAR_DUPLICATE_QUALITY, "scale": NEAR_DUPLICATE_SCALE}


def _iso(capture: str) -> str | None:
    if not capture:
        return None
    date, clock = capture.split(" ")
    return f"{date.replace(':', '-')}T{clock}"


def _truth_entry(slot: _Slot) -> dict[str, Any]:
    status, reason, stage = EXPECTED[slot.kind]
    at_collect = stage == "collect"
    scene = slot.scene
    return {
        "camera": slot.camera,
        "make": CAMERAS[slot.camera][0] if slot.kind != "wrong_extension" else None,
        "model": CAMERAS[slot.camera][1] if slot.kind != "wrong_extension" else None,
        "kind": slot.kind,
        "defect": slot.defect or None,
        "status": status.value,  # final expected outcome (= expected.status / .reason)
        "reason": reason.value if reason else None,
        "expected": {
            "status": status.value,
            "reason": reason.value if reason else None,
            "stage": stage,
        },
        "collect": {
            "status": status.value if at_collect else Status.ACCEPTED.value,
            "reason": reason.value if (reason and at_collect) else None,
        },
        "duplicate_of": slot.source if slot.kind == "exact_duplicate" else None,
        "near_duplicate_of": slot.source if slot.kind == "near_duplicate" else None,
        "day_night": "night" if slot.night else "day",
        "capture_time": _iso(slot.capture),
        "gps": {"lat": slot.gps[0], "lon": slot.gps[1]} if slot.gps else None,
        "orientation": slot.orientation,
        "width": slot.width if scene is not None else None,
        "height": slot.height if scene is not None else None,
        "mean_luma": round(slot.mean_luma, 2) if slot.mean_luma is not None and scene else None,
        "sha256": hashlib.sha256(slot.data).hexdigest(),
        "faces": [_round_box(b) for b in scene.faces] if scene else [],
        "face_sources": list(scene.face_sources) if scene else [],
        "objects": (
            [{"category": o["category"], "box": _round_box(o["box"])} for o in scene.objects]
            if scene
            else []
        ),
        "video": None,
        "frame_index": None,
    }


def _truth_entry_frame(
    frame: _ClipFrame,
    face_source: str,
    index: int,
    width: int,
    height: int,
    mean_luma: float,
    sha256: str,
) -> dict[str, Any]:
    """A sampled frame of the clip, as collect will record it: a PNG without EXIF (no make,
    model, capture time, GPS or orientation), item id = sha256 of that PNG."""
    status, _, stage = EXPECTED["video_frame"]
    return {
        "camera": CLIP_NAME.split("/")[0],
        "make": None,
        "model": None,
        "kind": "video_frame",
        "defect": None,
        "status": status.value,
        "reason": None,
        "expected": {"status": status.value, "reason": None, "stage": stage},
        "collect": {"status": status.value, "reason": None},
        "duplicate_of": None,
        "near_duplicate_of": None,
        "day_night": "day",
        "capture_time": None,
        "gps": None,
        "orientation": None,
        "width": width,
        "height": height,
        "mean_luma": round(mean_luma, 2),
        "sha256": sha256,
        "faces": [_round_box(b) for b in frame.faces],
        "face_sources": [face_source] * len(frame.faces),
        "objects": [
            {"category": o["category"], "box": _round_box(o["box"])} for o in frame.objects
        ],
        "video": CLIP_NAME,
        "frame_index": index,
    }


def _truth_entry_text() -> dict[str, Any]:
    status, reason, stage = EXPECTED["text"]
    assert reason is not None
    return {
        "camera": None,
        "make": None,
        "model": None,
        "kind": "text",
        "defect": None,
        "status": status.value,
        "reason": reason.value,
        "expected": {"status": status.value, "reason": reason.value, "stage": stage},
        "collect": {"status": status.value, "reason": reason.value},
        "duplicate_of": None,
        "near_duplicate_of": None,
        "day_night": None,
        "capture_time": None,
        "gps": None,
        "orientation": None,
        "width": None,
        "height": None,
        "mean_luma": None,
        "sha256": None,
        "faces": [],
        "face_sources": [],
        "objects": [],
        "video": None,
        "frame_index": None,
    }


def _labels(entry: dict[str, Any]) -> list[tuple[str, Box]]:
    return [("face", b) for b in entry["faces"]] + [
        (o["category"], o["box"]) for o in entry["objects"]
    ]


def _write_annotations(out_dir: str, slots: list[_Slot], per_cam: Counter[str]) -> dict[str, Any]:
    """COCO for cam_a, YOLO for cam_b, written as a vendor would."""
    entries = {s.name: _truth_entry(s) for s in slots if s.kind in _ANNOTATED_KINDS}
    ann_dir = storage.join(out_dir, "annotations")

    images, anns = [], []
    for name, e in entries.items():
        if e["camera"] != "cam_a":
            continue
        image_id = len(images) + 1
        images.append(
            {"id": image_id, "file_name": name, "width": e["width"], "height": e["height"]}
        )
        for category, box in _labels(e):
            x0, y0, x1, y1 = box
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": COCO_CATEGORY_IDS[category],
                    "bbox": [x0, y0, round(x1 - x0, 2), round(y1 - y0, 2)],
                    "area": round((x1 - x0) * (y1 - y0), 2),
                    "iscrowd": 0,
                    "segmentation": [],
                }
            )
    missing = f"cam_a/img_{per_cam['cam_a'] + 500:04d}.jpg"  # labelled, but never delivered
    images.append({"id": len(images) + 1, "file_name": missing, "width": WIDTH, "height": HEIGHT})
    anns.append(
        {
            "id": len(anns) + 1,
            "image_id": images[-1]["id"],
            "category_id": COCO_CATEGORY_IDS["vehicle"],
            "bbox": [100.0, 260.0, 150.0, 80.0],
            "area": 12000.0,
            "iscrowd": 0,
            "segmentation": [],
        }
    )
    coco = {
        "info": {"description": "visionloop sample: cam_a labels", "version": "1.0", "year": 2024},
        "licenses": [],
        "images": images,
        "annotations": anns,
        "categories": [
            {"id": cid, "name": name, "supercategory": "person" if name == "face" else "object"}
            for name, cid in COCO_CATEGORY_IDS.items()
        ],
    }
    storage.write_text_atomic(
        storage.join(ann_dir, "coco", "instances.json"), json.dumps(coco, indent=1) + "\n"
    )

    yolo_dir = storage.join(ann_dir, "yolo")
    data_yaml = (
        "# Ultralytics layout: labels/cam_b/<stem>.txt labels images/cam_b/<stem>.jpg\n"
        "path: .\n"
        "train: images/cam_b\n"
        "val: images/cam_b\n"
        f"nc: {len(YOLO_NAMES)}\n"
        f"names: [{', '.join(YOLO_NAMES)}]\n"
    )
    storage.write_text_atomic(storage.join(yolo_dir, "data.yaml"), data_yaml)
    label_files = label_lines = 0
    for name, e in entries.items():
        if e["camera"] != "cam_b":
            continue
        labels = _labels(e)
        if not labels:
            continue
        w, h = e["width"], e["height"]
        lines = []
        for category, (x0, y0, x1, y1) in labels:
            cx, cy = (x0 + x1) / 2 / w, (y0 + y1) / 2 / h
            bw, bh = (x1 - x0) / w, (y1 - y0) / h
            lines.append(f"{YOLO_NAMES.index(category)} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}")
        stem = name.rsplit("/", 1)[1].rsplit(".", 1)[0]
        storage.write_text_atomic(
            storage.join(yolo_dir, "labels", "cam_b", f"{stem}.txt"), "\n".join(lines) + "\n"
        )
        label_files += 1
        label_lines += len(lines)
    return {
        "coco": {
            "file": "annotations/coco/instances.json",
            "images": len(images),
            "annotations": len(anns),
            "unmatched_annotations": 1,
            "missing_image": missing,
        },
        "yolo": {
            "dir": "annotations/yolo",
            "label_files": label_files,
            "annotations": label_lines,
        },
    }


def _totals(files: dict[str, dict[str, Any]], videos: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Counts over manifest rows (``files`` = truth entries: a video's frames stand for it),
    except ``files`` itself: the files on disk below images/."""
    expected = Counter(e["expected"]["status"] for e in files.values())
    collect = Counter(e["collect"]["status"] for e in files.values())
    objects = Counter(o["category"] for e in files.values() for o in e["objects"])
    frames = sum(len(v["frames"]) for v in videos.values())
    return {
        "files": len(files) - frames + len(videos),
        "rows": len(files),
        "videos": len(videos),
        "frames": frames,
        "kinds": dict(sorted(Counter(e["kind"] for e in files.values()).items())),
        "expected": {
            "accepted": expected[Status.ACCEPTED.value],
            "quarantined": expected[Status.QUARANTINED.value],
            "reasons": dict(
                sorted(
                    Counter(
                        e["expected"]["reason"] for e in files.values() if e["expected"]["reason"]
                    ).items()
                )
            ),
        },
        "collect": {
            "accepted": collect[Status.ACCEPTED.value],
            "quarantined": collect[Status.QUARANTINED.value],
            "reasons": dict(
                sorted(
                    Counter(
                        e["collect"]["reason"] for e in files.values() if e["collect"]["reason"]
                    ).items()
                )
            ),
        },
        "day_night": dict(
            sorted(Counter(e["day_night"] for e in files.values() if e["day_night"]).items())
        ),
        "with_gps": sum(e["gps"] is not None for e in files.values()),
        "faces": sum(len(e["faces"]) for e in files.values()),
        "images_with_faces": sum(bool(e["faces"]) for e in files.values()),
        "objects": dict(sorted(objects.items())),
        "planted_bad_fraction": round(expected[Status.QUARANTINED.value] / max(len(files), 1), 4),
    }
