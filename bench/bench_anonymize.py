"""Face-recall probe and throughput of the anonymize stage (prints figures; not a unit test).

Labelled probe: the 100 LFW face crops that ship in scikit-image (25x25, grey) are upscaled to
40, 60, 90 and 140 px and pasted at known places onto 30 face-free 640x480 backgrounds (19
scikit-image photos/scans without people + 11 synthetic textures). A face counts as found when
a detection overlaps it with IoU >= 0.3 or covers its centre. False positives are detections on
the bare backgrounds. Detection runs once at a low threshold; each candidate threshold is a
filter of those results (exact: NMS is greedy by score, so higher-threshold NMS keeps the same
boxes). Throughput compares the whole per-image pipeline (decode, detect, redact, encode,
verify) with plain ``cv2.imdecode`` of the same JPEG files.

    python bench/bench_anonymize.py [--threshold 0.25] [--max-side 1920] [--large]
"""

from __future__ import annotations

import argparse
import time
import warnings

import cv2
import numpy as np

SIZES = (40, 60, 90, 140)
PER_IMAGE = {40: 6, 60: 5, 90: 4, 140: 2}
THRESHOLDS = (0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7)
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
            img = _rgb(getattr(sd, name)())
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


def lfw_faces() -> np.ndarray:
    import skimage.data as sd

    return (sd.lfw_subset()[:100] * 255).astype(np.uint8)


def paste_faces(
    bg: np.ndarray, faces: np.ndarray, size: int, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Paste ``count`` faces (upscaled to ``size`` px) into free grid cells; boxes are truth."""
    img = bg.copy()
    h, w = img.shape[:2]
    cell = int(size * 1.5)
    cells = [(x, y) for y in range(0, h - cell + 1, cell) for x in range(0, w - cell + 1, cell)]
    picks = rng.choice(len(cells), size=min(count, len(cells)), replace=False)
    boxes = []
    for k in picks:
        cx, cy = cells[k]
        x = cx + int(rng.integers(0, cell - size + 1))
        y = cy + int(rng.integers(0, cell - size + 1))
        face = cv2.resize(
            faces[int(rng.integers(len(faces)))], (size, size), interpolation=cv2.INTER_CUBIC
        )
        img[y : y + size, x : x + size] = face[:, :, None]
        boxes.append([x, y, x + size, y + size])
    return img, np.asarray(boxes, np.float32)


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


def matches(truth: np.ndarray, dets: np.ndarray) -> np.ndarray:
    """(N, M) bool: detection m finds face n (IoU >= 0.3 or covers its centre)."""
    if len(truth) == 0 or len(dets) == 0:
        return np.zeros((len(truth), len(dets)), bool)
    cx = (truth[:, 0] + truth[:, 2]) / 2
    cy = (truth[:, 1] + truth[:, 3]) / 2
    covers = (
        (dets[None, :, 0] <= cx[:, None])
        & (cx[:, None] <= dets[None, :, 2])
        & (dets[None, :, 1] <= cy[:, None])
        & (cy[:, None] <= dets[None, :, 3])
    )
    return (iou(truth, dets) >= 0.3) | covers


def probe(detector, bgs, faces, sizes, scale: int = 1, seed: int = 1) -> dict:
    """Recall per size and false positives per threshold."""
    rng = np.random.default_rng(seed)
    stats = {s: {t: [0, 0] for t in THRESHOLDS} for s in sizes}  # found, total
    fp_faces = {t: 0 for t in THRESHOLDS}
    for size in sizes:
        for bg in bgs:
            big = bg if scale == 1 else cv2.resize(bg, None, fx=scale, fy=scale)
            img, truth = paste_faces(big, faces, size, PER_IMAGE[size] * scale, rng)
            regions = detector.detect(img)
            m = matches(truth, regions.boxes)
            for t in THRESHOLDS:
                keep = regions.scores >= t
                stats[size][t][0] += int(m[:, keep].any(axis=1).sum())
                stats[size][t][1] += len(truth)
                fp_faces[t] += int((~m[:, keep].any(axis=0)).sum())
    return {"recall": stats, "fp_in_face_images": fp_faces}


def false_positives(detector, bgs) -> dict:
    fp = {t: 0 for t in THRESHOLDS}
    images = {t: 0 for t in THRESHOLDS}
    top = []
    for bg in bgs:
        r = detector.detect(bg)
        top.append(float(r.scores.max()) if len(r) else 0.0)
        for t in THRESHOLDS:
            n = int((r.scores >= t).sum())
            fp[t] += n
            images[t] += n > 0
    return {"detections": fp, "images_with_fp": images, "max_score": max(top)}


def end_to_end(bgs, faces, threshold: float, max_side: int) -> dict:
    """Run the stage's per-image function on JPEGs of the probe; measure what stays visible.

    Per true face box (the whole LFW crop, ears and hair included): the fraction of it inside
    the redacted boxes (regions JSON). Also counts fill passes and verification quarantines.
    """
    import json

    from visionloop.config import AnonymizeParams
    from visionloop.stages.anonymize import anonymize_image, build_detector

    p = AnonymizeParams(score_threshold=threshold, detect_max_side=max_side)
    det = build_detector(p)
    rng = np.random.default_rng(3)
    coverage: list[float] = []
    residual = retried = 0
    for size in SIZES:
        for bg in bgs:
            img, truth = paste_faces(bg, faces, size, PER_IMAGE[size], rng)
            _, enc = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            out = anonymize_image(enc.tobytes(), "JPEG", det, p)
            mask = np.zeros(img.shape[:2], bool)
            for r in json.loads(out["regions"]):
                x0, y0, x1, y1 = r["box"]
                mask[y0:y1, x0:x1] = True
            coverage += [float(mask[y0:y1, x0:x1].mean()) for x0, y0, x1, y1 in truth.astype(int)]
            residual += out["residual"] > 0
            retried += out["retried"]
    c = np.asarray(coverage)
    return {
        "total": len(c),
        "covered_90": int((c >= 0.9).sum()),
        "covered_50": int((c >= 0.5).sum()),
        "untouched": int((c < 0.1).sum()),
        "residual_images": residual,
        "fill": retried,
    }


def throughput(bgs, faces, max_side: int) -> dict:
    """ms/image: detection alone, the full per-image pipeline, and cv2.imdecode (baseline)."""
    from visionloop.config import AnonymizeParams
    from visionloop.stages.anonymize import anonymize_image, build_detector

    rng = np.random.default_rng(7)
    files = []
    for bg in bgs:
        img, _ = paste_faces(bg, faces, 90, 2, rng)
        _, enc = cv2.imencode(
            ".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92]
        )
        files.append(enc.tobytes())
    p = AnonymizeParams(detect_max_side=max_side)
    det = build_detector(p)
    anonymize_image(files[0], "JPEG", det, p)  # warm-up
    t0 = time.perf_counter()
    for data in files:
        cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    t_decode = (time.perf_counter() - t0) / len(files)
    t0 = time.perf_counter()
    for bg in bgs:
        det.detect(bg)
    t_detect = (time.perf_counter() - t0) / len(bgs)
    t0 = time.perf_counter()
    for data in files:
        anonymize_image(data, "JPEG", det, p)
    t_full = (time.perf_counter() - t0) / len(files)
    return {"decode_ms": t_decode * 1e3, "detect_ms": t_detect * 1e3, "pipeline_ms": t_full * 1e3}


def main() -> None:
    from visionloop.anonymize.centerface import CenterFaceDetector
    from visionloop.config import AnonymizeParams

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = AnonymizeParams()
    ap.add_argument("--max-side", type=int, default=defaults.detect_max_side)
    ap.add_argument("--threshold", type=float, default=defaults.score_threshold)
    ap.add_argument("--large", action="store_true", help="also 2560x1920 images, faces 40-90 px")
    args = ap.parse_args()

    det = CenterFaceDetector(score_threshold=min(THRESHOLDS) / 2, max_side=args.max_side)
    bgs, faces = backgrounds(), lfw_faces()
    res = probe(det, bgs, faces, SIZES)
    fp = false_positives(det, bgs)
    print(f"CenterFace ({det.version}, sha256 {det.model_sha256[:12]}), max side {args.max_side}")
    print(f"probe: {len(bgs)} backgrounds 640x480, LFW faces; found = IoU>=0.3 or centre covered")
    header = "threshold " + "".join(f"{s:>7}px" for s in SIZES) + "     all  FP/30bg  bg>0  FPface"
    print(header)
    for t in THRESHOLDS:
        found = [res["recall"][s][t] for s in SIZES]
        total = [sum(f[0] for f in found), sum(f[1] for f in found)]
        print(
            f"{t:>9.2f} "
            + "".join(f"{f / n:>9.3f}" for f, n in found)
            + f"{total[0] / total[1]:>8.3f}{fp['detections'][t]:>9d}{fp['images_with_fp'][t]:>6d}"
            + f"{res['fp_in_face_images'][t]:>8d}"
        )
    n_faces = {s: res["recall"][s][THRESHOLDS[0]][1] for s in SIZES}
    print(f"faces per size: {n_faces}; max score on face-free backgrounds: {fp['max_score']:.3f}")

    if args.large:
        for side in sorted({1280, args.max_side, 2560}):
            big = CenterFaceDetector(score_threshold=min(THRESHOLDS) / 2, max_side=side)
            r = probe(big, bgs[:15], faces, (40, 60, 90), scale=4)
            line = ", ".join(
                f"{s}px {r['recall'][s][args.threshold][0] / r['recall'][s][args.threshold][1]:.3f}"
                for s in (40, 60, 90)
            )
            print(f"2560x1920, detect max side {side}, threshold {args.threshold}: recall {line}")

    e2e = end_to_end(bgs, faces, args.threshold, args.max_side)
    print(
        f"end to end (threshold {args.threshold}, dilation {AnonymizeParams().dilation}), of"
        f" {e2e['total']} faces: >=90% of the crop redacted {e2e['covered_90']}, >=50%"
        f" {e2e['covered_50']}, untouched {e2e['untouched']}; verification: {e2e['fill']} fill"
        f" pass(es), {e2e['residual_images']} image(s) quarantined"
    )

    tp = throughput(bgs, faces, args.max_side)
    print(
        f"640x480 JPEG: detect {tp['detect_ms']:.1f} ms, full pipeline {tp['pipeline_ms']:.1f} ms"
        f" ({1000 / tp['pipeline_ms']:.1f} images/s), cv2.imdecode {tp['decode_ms']:.2f} ms"
        f" ({1000 / tp['decode_ms']:.0f} images/s); pipeline/imdecode time ratio"
        f" {tp['pipeline_ms'] / tp['decode_ms']:.0f}x (1 onnxruntime thread)"
    )


if __name__ == "__main__":
    main()
