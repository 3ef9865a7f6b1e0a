"""Face-recall probe, plate probe and throughput of the anonymize stage, against `deface`.

Face probe (labelled, built from wheel data): the 100 LFW face crops of
``skimage.data.lfw_subset()`` pasted at 10-120 px (two per size bucket 10-16, 16-32, 32-64,
64-120 px, sizes log-uniform inside a bucket) onto 30 face-free 640x480 backgrounds (19
scikit-image photos and scans without people, ``coffee`` and ``rocket`` among them, + 11
generated textures), with 4 of the 100 LFW *non-face* crops pasted as clutter, for several
seeds. A face counts as found when a detection covers its centre or overlaps it with IoU >= 0.3.
A false positive is a detection that finds no face and lies less than half on one (a box
on a part of a face is not a false alarm for privacy).

Throughput: images per second on ONE core (``taskset`` pins this process and deface alike)
for the whole per-image function (decode, detect, redact, encode, verify) at 640x480 and
1920x1440, and the same PNG files through the `deface` command-line tool (installed by this
script into its own venv under /tmp: ``pip install deface``), whose recall is read from its
output images (solid-fill mode: a face is covered when >= 50 % of its box changed; ours is
scored from the redacted boxes of our audit regions). img/s is per CPU second (process time;
deface: its child process's user + system time, start-up run subtracted), which other work
on a shared machine does not inflate; wall-clock img/s is printed beside it.

Presets compared (``PRESETS``): the params.yaml default (YuNet also on a 4x upscale, 0.4 for
faces <= 16 px; 2x for images up to 1920 px), "balanced" (2x, 0.4 for faces <= 32 px) and
"fast" (no upscale pass).

Plate probe: generated plates (text by cv2.putText on a light plate with a dark border) at
widths 40-200 px and angles up to 15 degrees, pasted onto the same backgrounds; recall and
false positives per image of the ``plate`` detector.

    python bench/bench_anonymize.py [--seeds 3] [--quick] [--no-deface]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import numpy as np

BUCKETS = ((10, 16), (16, 32), (32, 64), (64, 121))
BUCKET_NAMES = ("10-16", "16-32", "32-64", "64+")
FACES_PER_BUCKET = 2
CLUTTER = 4
FACE_FREE = (
    "coffee",
    "coins",
    "horse",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "page",
    "rocket",
    "text",
    "brick",
    "grass",
    "gravel",
    "colorwheel",
    "retina",
    "cell",
    "clock",
    "shepp_logan_phantom",
    "binary_blobs",
    "checkerboard",
)
DEFACE_VENV = Path(tempfile.gettempdir()) / "vl-deface-venv"


def _rgb(img: np.ndarray) -> np.ndarray:
    if img.dtype != np.uint8:
        img = (
            (np.clip(img, 0, 1) * 255).astype(np.uint8) if img.max() <= 1 else img.astype(np.uint8)
        )
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3])


def backgrounds(width: int = 640, height: int = 480, seed: int = 0) -> list[np.ndarray]:
    """30 face-free RGB backgrounds: 19 scikit-image samples + 11 synthetic textures."""
    import skimage.data as sd

    out = []
    for name in FACE_FREE:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # binary_blobs is random unless seeded: the probe must be the same in every run
            args = {"rng": 0} if name == "binary_blobs" else {}
            img = _rgb(getattr(sd, name)(**args))
        out.append(cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA))
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    synth = [
        np.stack([xx * 255 // width, yy * 255 // height, np.full_like(xx, 128)], axis=2),
        rng.integers(0, 256, (height, width, 3)),
        cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3)).astype(np.uint8), (0, 0), 6),
        ((xx // 40 + yy // 40) % 2 * 200 + 30)[:, :, None].repeat(3, axis=2),
        (127 + 120 * np.sin(xx / 7.0))[:, :, None].repeat(3, axis=2),
        np.full((height, width, 3), (200, 180, 150)),
        np.full((height, width, 3), 20),
    ]
    for _ in range(4):  # random rectangles and circles
        img = np.full((height, width, 3), rng.integers(0, 256, 3), np.uint8)
        for _ in range(40):
            color = tuple(int(c) for c in rng.integers(0, 256, 3))
            x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
            if rng.random() < 0.5:
                cv2.rectangle(img, (x, y), (x + int(rng.integers(10, 120)), y + 60), color, -1)
            else:
                cv2.circle(img, (x, y), int(rng.integers(5, 60)), color, -1)
        synth.append(img)
    out += [np.clip(s, 0, 255).astype(np.uint8) for s in synth]
    return out


def lfw() -> tuple[np.ndarray, np.ndarray]:
    """(100 face crops, 100 non-face crops), 25x25 uint8."""
    import skimage.data as sd

    crops = (sd.lfw_subset() * 255).round().astype(np.uint8)
    return crops[:100], crops[100:]


def _resized(crop: np.ndarray, size: int) -> np.ndarray:
    interp = cv2.INTER_AREA if size < crop.shape[0] else cv2.INTER_CUBIC
    return cv2.resize(crop, (size, size), interpolation=interp)


def _place(
    taken: list[tuple[int, int, int, int]], size: int, w: int, h: int, rng: np.random.Generator
) -> tuple[int, int, int, int] | None:
    """A free square of ``size`` px (a margin of size/2 from every other pasted crop)."""
    for _ in range(200):
        x, y = int(rng.integers(0, w - size + 1)), int(rng.integers(0, h - size + 1))
        box = (x, y, x + size, y + size)
        margin = size // 2
        if all(
            box[0] >= b[2] + margin
            or b[0] >= box[2] + margin
            or box[1] >= b[3] + margin
            or b[1] >= box[3] + margin
            for b in taken
        ):
            return box
    return None


def probe_image(
    bg: np.ndarray,
    faces: np.ndarray,
    clutter: np.ndarray,
    rng: np.random.Generator,
    per_bucket: int = FACES_PER_BUCKET,
    n_clutter: int = CLUTTER,
) -> tuple[np.ndarray, np.ndarray]:
    """One probe image and its (N, 4) truth face boxes; big crops are placed first."""
    img = bg.copy()
    h, w = img.shape[:2]
    sizes = [
        round(float(np.exp(rng.uniform(np.log(lo), np.log(hi - 1)))))
        for lo, hi in BUCKETS
        for _ in range(per_bucket)
    ]
    items = [("face", s) for s in sizes]
    items += [("clutter", int(rng.integers(10, 121))) for _ in range(n_clutter)]
    items.sort(key=lambda t: -t[1])
    taken: list[tuple[int, int, int, int]] = []
    truth = []
    for what, size in items:
        box = _place(taken, size, w, h, rng)
        if box is None:
            continue
        taken.append(box)
        src = faces if what == "face" else clutter
        crop = _resized(src[int(rng.integers(len(src)))], size)
        x0, y0, x1, y1 = box
        img[y0:y1, x0:x1] = crop[:, :, None]
        if what == "face":
            truth.append(box)
    return img, np.asarray(truth, np.float32).reshape(-1, 4)


def probe_set(
    seeds: int, width: int = 640, height: int = 480, limit: int | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    faces, clutter = lfw()
    bgs = backgrounds(width, height)
    out = []
    for seed in range(seeds):
        rng = np.random.default_rng(100 + seed)
        for bg in bgs[:limit]:
            out.append(probe_image(bg, faces, clutter, rng))
    return out


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of boxes a (N, 4) and b (M, 4)."""
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter + 1e-9)


def matches(truth: np.ndarray, dets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, M) bool "detection m finds face n", and (M,) bool "detection m lies on a face"."""
    if len(truth) == 0 or len(dets) == 0:
        return np.zeros((len(truth), len(dets)), bool), np.zeros(len(dets), bool)
    cx = (truth[:, 0] + truth[:, 2]) / 2
    cy = (truth[:, 1] + truth[:, 3]) / 2
    covers = (
        (dets[None, :, 0] <= cx[:, None])
        & (cx[:, None] <= dets[None, :, 2])
        & (dets[None, :, 1] <= cy[:, None])
        & (cy[:, None] <= dets[None, :, 3])
    )
    found = (iou(truth, dets) >= 0.3) | covers
    x0 = np.maximum(truth[:, None, 0], dets[None, :, 0])
    y0 = np.maximum(truth[:, None, 1], dets[None, :, 1])
    x1 = np.minimum(truth[:, None, 2], dets[None, :, 2])
    y1 = np.minimum(truth[:, None, 3], dets[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (dets[:, 2] - dets[:, 0]) * (dets[:, 3] - dets[:, 1])
    on_face = (inter / np.maximum(area, 1e-9)[None, :] >= 0.5).any(axis=0)
    return found, on_face


def bucket_of(truth: np.ndarray) -> np.ndarray:
    side = np.maximum(truth[:, 2] - truth[:, 0], truth[:, 3] - truth[:, 1])
    return np.searchsorted([b[1] for b in BUCKETS], side, side="right")


def score(images: list[tuple[np.ndarray, np.ndarray]], detections: list[np.ndarray]) -> dict:
    """Recall per bucket and false positives per image for boxes detected on each image."""
    found = np.zeros(len(BUCKETS), int)
    total = np.zeros(len(BUCKETS), int)
    fp = 0
    for (_, truth), boxes in zip(images, detections, strict=True):
        m, on_face = matches(truth, np.asarray(boxes, np.float32).reshape(-1, 4))
        b = bucket_of(truth)
        hit = m.any(axis=1)
        for k in range(len(BUCKETS)):
            found[k] += int(hit[b == k].sum())
            total[k] += int((b == k).sum())
        fp += int((~m.any(axis=0) & ~on_face).sum())
    return {
        "recall": {n: found[k] / max(total[k], 1) for k, n in enumerate(BUCKET_NAMES)},
        "faces": {n: int(total[k]) for k, n in enumerate(BUCKET_NAMES)},
        "recall_16plus": found[1:].sum() / max(total[1:].sum(), 1),
        "fp_per_image": fp / max(len(images), 1),
    }


def fmt_score(label: str, s: dict) -> str:
    r = s["recall"]
    return (
        f"{label:<34}"
        + "".join(f"{r[n]:>8.3f}" for n in BUCKET_NAMES)
        + f"{s['recall_16plus']:>8.3f}{s['fp_per_image']:>8.2f}"
    )


HEADER = f"{'':<34}" + "".join(f"{n:>8}" for n in BUCKET_NAMES) + f"{'>=16':>8}{'FP/img':>8}"


# ---- detectors on the probe ----

PRESETS: dict[str, dict] = {
    "default (params.yaml)": {},
    "balanced (yunet 2x)": {"upscale": {"yunet": 2.0}, "small_face_max": 32},
    "fast (no upscale pass)": {"upscale": {}, "upscale_large": {}},
}
CONFIGS: dict[str, dict] = {
    **PRESETS,
    "old default (yunet 3x, 0.6)": {"upscale": {"yunet": 3.0}, "small_face_thresholds": {}},
    "centerface, whole image": {"detector": "centerface", "upscale": {}},
    "yunet, whole + 4x pass": {"detector": "yunet"},
}


def run_config(overrides: dict, images: list) -> tuple[dict, float]:
    """Score one anonymize configuration's detector on the probe; ms per detection."""
    from visionloop.config import AnonymizeParams
    from visionloop.stages.anonymize import build_detector

    det = build_detector(AnonymizeParams(**overrides))
    det.detect(images[0][0])  # warm-up (sessions, allocations)
    t0 = time.process_time()
    boxes = [det.detect(img).boxes for img, _ in images]
    ms = (time.process_time() - t0) * 1000 / len(images)
    return score(images, boxes), ms


# ---- end to end: our per-image function and deface on the same files ----


def write_pngs(images: list, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (img, _) in enumerate(images):
        p = folder / f"img{i:04d}.png"
        cv2.imwrite(str(p), img[:, :, ::-1])
        paths.append(p)
    return paths


def coverage_recall(images: list, masks: list[np.ndarray]) -> dict:
    """Recall per bucket where 'found' = at least half of the face box is redacted."""
    dets = []
    for (_, truth), mask in zip(images, masks, strict=True):
        keep = []
        for box in truth.astype(int):
            x0, y0, x1, y1 = box
            if mask[y0:y1, x0:x1].mean() >= 0.5:
                keep.append(box)  # a perfect detection of this face
        dets.append(np.asarray(keep, np.float32).reshape(-1, 4))
    s = score(images, dets)
    s.pop("fp_per_image")
    return s


def ours_end_to_end(images: list, paths: list[Path], overrides: dict) -> tuple[float, float, list]:
    """CPU and wall seconds per image for the whole per-image function (decode, detect, redact,
    encode, verify) on the PNG files, and the redaction mask of each (from the audit regions)."""
    from visionloop.config import AnonymizeParams
    from visionloop.stages.anonymize import anonymize_image, build_detector

    p = AnonymizeParams(**overrides)
    det = build_detector(p)
    data = [path.read_bytes() for path in paths]
    anonymize_image(data[0], "PNG", det, p)  # warm-up (sessions, allocations)
    masks = []
    t0, c0 = time.perf_counter(), time.process_time()
    outs = [anonymize_image(d, "PNG", det, p) for d in data]
    cpu = (time.process_time() - c0) / len(data)
    wall = (time.perf_counter() - t0) / len(data)
    for (img, _), out in zip(images, outs, strict=True):
        mask = np.zeros(img.shape[:2], bool)
        for r in json.loads(out["regions"]):
            x0, y0, x1, y1 = r["box"]
            mask[y0:y1, x0:x1] = True
        masks.append(mask)
    return cpu, wall, masks


def ensure_deface() -> Path | None:
    """The `deface` CLI in its own venv under /tmp (it pulls opencv-python: kept apart)."""
    exe = DEFACE_VENV / "bin" / "deface"
    if exe.exists():
        return exe
    print(f"installing deface into {DEFACE_VENV} ...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(DEFACE_VENV)], check=True)
        pip = [str(DEFACE_VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "deface==1.5.0", "onnx", "onnxruntime"], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"deface could not be installed: {exc}")
        return None
    return exe


def deface_end_to_end(exe: Path, images: list, paths: list[Path]) -> tuple[float, float, list]:
    """deface on the same PNGs, one core, solid boxes (so changed pixels = its redaction).

    CPU and wall seconds per image excluding its start-up (a run on all files minus a run on
    one file), and each output's redaction mask (pixels that differ from the input)."""
    import resource

    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    cmd = [str(exe), "--replacewith", "solid", "--boxes"]

    def children_cpu() -> float:
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return ru.ru_utime + ru.ru_stime

    def run(files: list[Path]) -> tuple[float, float]:
        with tempfile.TemporaryDirectory() as tmp:
            for f in files:
                shutil.copy(f, Path(tmp) / f.name)
            t0, c0 = time.perf_counter(), children_cpu()
            subprocess.run(
                ["taskset", "-c", "0", *cmd, tmp], env=env, check=True, capture_output=True
            )
            cpu, wall = children_cpu() - c0, time.perf_counter() - t0
            for f in files:
                out = Path(tmp) / f"{f.stem}_anonymized{f.suffix}"
                shutil.copy(out, f.with_name(f"{f.stem}_deface{f.suffix}"))
        return cpu, wall

    c_one, w_one = run(paths[:1])
    c_all, w_all = run(paths)
    n = max(len(paths) - 1, 1)
    cpu, wall = (c_all - c_one) / n, (w_all - w_one) / n
    masks = []
    for (img, _), f in zip(images, paths, strict=True):
        out = cv2.imread(str(f.with_name(f"{f.stem}_deface{f.suffix}")))[:, :, ::-1]
        masks.append((out != img).any(axis=2))
    return cpu, wall, masks


# ---- plates ----


def plate_text(rng: np.random.Generator) -> str:
    letters = "ABCDEFGHJKLMNPRSTUVWXYZ"
    head = "".join(rng.choice(list(letters), 2))
    digits = "".join(rng.choice(list("0123456789"), int(rng.integers(2, 5))))
    tail = " " + "".join(rng.choice(list(letters), 2)) if rng.random() < 0.5 else ""
    return f"{head} {digits}{tail}"


def plate_probe(seeds: int) -> dict:
    """Recall (plates < 60 and >= 60 px wide) and false positives per image of ``plate``."""
    from visionloop.anonymize.detectors import get_detector
    from visionloop.anonymize.plates import paste_rotated, render_plate
    from visionloop.config import AnonymizeParams

    p = AnonymizeParams()
    det = get_detector(p.plate_detector, score_threshold=p.thresholds.get("plate", 0.5))
    bgs = backgrounds()
    found = {"<60": [0, 0], ">=60": [0, 0]}
    fp = bare_fp = 0
    t0 = time.perf_counter()
    for seed in range(seeds):
        rng = np.random.default_rng(200 + seed)
        for bg in bgs:
            bare_fp += len(det.detect(bg))
            img, truth, widths = bg.copy(), [], []
            for k in range(3):
                w = int(np.exp(rng.uniform(np.log(40), np.log(200))))
                centre = (110 + 210 * k, float(rng.uniform(100, 380)))
                truth.append(
                    paste_rotated(
                        img, render_plate(plate_text(rng), w, rng), centre, rng.uniform(-15, 15)
                    )
                )
                widths.append(w)
            r = det.detect(img)
            m, on = matches(np.asarray(truth), r.boxes)
            for w, hit in zip(widths, m.any(axis=1), strict=True):
                key = "<60" if w < 60 else ">=60"
                found[key][0] += int(hit)
                found[key][1] += 1
            fp += int((~m.any(axis=0) & ~on).sum())
    n = seeds * len(bgs)
    return {
        "recall": {k: v[0] / max(v[1], 1) for k, v in found.items()},
        "plates": {k: v[1] for k, v in found.items()},
        "fp_per_image": fp / n,
        "fp_per_bare_image": bare_fp / n,
        "ms_per_image": (time.perf_counter() - t0) * 1000 / (2 * n),
        "threshold": det.score_threshold,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="1 seed, fewer images (smoke run)")
    ap.add_argument("--no-deface", action="store_true")
    ap.add_argument("--plates-only", action="store_true")
    args = ap.parse_args()
    seeds = 1 if args.quick else args.seeds
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})  # one core: figures are per core
    cv2.setNumThreads(1)

    if not args.plates_only:
        images = probe_set(seeds, limit=10 if args.quick else None)
        print(
            f"face probe: {len(images)} images 640x480, {FACES_PER_BUCKET} LFW faces per size "
            f"bucket + {CLUTTER} non-face crops each; found = centre covered or IoU >= 0.3"
        )
        print(HEADER + "   ms/detect")
        for label, overrides in CONFIGS.items():
            s, ms = run_config(overrides, images)
            print(fmt_score(label, s) + f"{ms:>10.0f}")
        print(f"faces per bucket: {s['faces']}")
        e2e(images, seeds, args)
    plates = plate_probe(seeds)
    print(
        f"\nplates ({plates['plates']} generated, threshold {plates['threshold']}): recall "
        + ", ".join(f"{k} px wide {v:.3f}" for k, v in plates["recall"].items())
        + f"; false positives {plates['fp_per_image']:.2f}/image with plates,"
        f" {plates['fp_per_bare_image']:.2f}/bare background; {plates['ms_per_image']:.0f} ms/image"
    )


def e2e(images: list, seeds: int, args: argparse.Namespace) -> None:
    """Throughput per core and redaction-coverage recall: our presets and deface."""
    exe = None if args.no_deface else ensure_deface()
    faces, clutter = lfw()
    big = []
    rng = np.random.default_rng(300)
    for bg in backgrounds(1920, 1440)[: 4 if args.quick else 10]:
        big.append(probe_image(bg, faces, clutter, rng, per_bucket=6, n_clutter=8))
    sets = {"640x480": images[: 10 if args.quick else 30], "1920x1440": big}
    print(
        "\nend to end, one core (decode, detect, redact, encode, verify); found = >= 50% of"
        " the face box redacted in the output; img/s per CPU second (wall in brackets)"
    )
    print(f"{'':<34}" + "".join(f"{n:>8}" for n in BUCKET_NAMES) + f"{'>=16':>8}   img/s")
    with tempfile.TemporaryDirectory() as tmp:
        for name, imgs in sets.items():
            paths = write_pngs(imgs, Path(tmp) / name)
            rows = []
            for label, overrides in PRESETS.items():
                cpu, wall, masks = ours_end_to_end(imgs, paths, overrides)
                rows.append((label, coverage_recall(imgs, masks), 1 / cpu, 1 / wall))
            if exe is not None:
                cpu, wall, masks = deface_end_to_end(exe, imgs, paths)
                label = "deface 1.5.0 (defaults, solid)"
                rows.append((label, coverage_recall(imgs, masks), 1 / cpu, 1 / wall))
            print(f"{name} ({len(imgs)} images)")
            for label, s, rate, wall_rate in rows:
                r = s["recall"]
                print(
                    f"  {label:<32}"
                    + "".join(f"{r[n]:>8.3f}" for n in BUCKET_NAMES)
                    + f"{s['recall_16plus']:>8.3f}{rate:>8.2f} ({wall_rate:.2f})"
                )
            if exe is not None:
                deface_rate = rows[-1][2]
                ratios = ", ".join(
                    f"{label.split(' (')[0]} {rate / deface_rate:.2f}"
                    for label, _, rate, _ in rows[:-1]
                )
                print(f"  throughput ratio ours/deface (CPU): {ratios}")


if __name__ == "__main__":
    main()
