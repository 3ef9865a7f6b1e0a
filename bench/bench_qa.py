"""Label-QA benchmark: every check on a synthetic annotation table with planted defects.

Prints one JSON document. Times are the best of ``--repeat`` runs, reported as ratios against
a baseline measured in the same run on the same table: reading it from Parquet (``read``) and
one pandas ``groupby(...).describe()`` of its boxes per label (``describe``, the least a
statistics pass costs). Each check family is also timed alone, and the planted defects are
counted back (found == planted is asserted, so a fast but blind run cannot pass).

The table: N annotations (20,000; 200,000 with ``--full``) on N/6 images of 640x480, 5 labels,
one annotator per image plus a second one re-drawing 30% of the images with jitter (agreement),
10% polygons, a 300-frame video with 20 tracks, and planted: boxes below 1 px, same-annotator
duplicates, boxes past the image edge, self-intersecting polygons, an id switch and a gap.
Alpha's expected disagreement is exact up to 4,000 values and estimated above (timed too).

    python bench/bench_qa.py [--full] [--n 20000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from visionloop.config import Params  # noqa: E402
from visionloop.qa.agreement import agreement  # noqa: E402
from visionloop.qa.alpha import alpha  # noqa: E402
from visionloop.qa.frame import prepare  # noqa: E402
from visionloop.qa.geometry import geometry_findings  # noqa: E402
from visionloop.qa.run import run_qa  # noqa: E402
from visionloop.qa.shapes import box_iou, box_iou_paired  # noqa: E402
from visionloop.qa.structure import LabelSpec, structure_findings  # noqa: E402
from visionloop.qa.tracks import track_findings  # noqa: E402
from visionloop.schema import ANNOTATION_SCHEMA  # noqa: E402

LABELS = ("car", "person", "bike", "sign", "bus")
PLANT = {"box_too_small": 25, "duplicate_annotation": 25, "box_outside_image": 25}
SELF_INTERSECTING = 25


def synthetic(n: int, seed: int = 0) -> tuple[pd.DataFrame, dict[str, int]]:
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    planted = dict(PLANT)
    n_items = max(1, n // 6)

    def row(k: int, item: int, label: str, box: tuple[float, ...], who: str, **kw: Any) -> None:
        rows.append(
            {
                "annotation_id": f"a{k}",
                "image_ref": f"img_{item:06d}.jpg",
                "category": label,
                "category_id": LABELS.index(label),
                "bbox_x": box[0],
                "bbox_y": box[1],
                "bbox_w": box[2],
                "bbox_h": box[3],
                "image_width": 640,
                "image_height": 480,
                "annotator": who,
                "source_format": "coco",
                "source_file": "export.json",
                "source_pointer": f"/annotations/{k}",
                "match_status": "matched",
                **kw,
            }
        )

    k = 0
    frames, tracks = 300, 20  # the video: 6,000 annotations
    base_n = max(0, n - frames * tracks)
    while k < base_n:
        item = int(rng.integers(n_items))
        label = LABELS[int(rng.integers(len(LABELS)))]
        w, h = rng.uniform(20, 120), rng.uniform(20, 120)
        x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
        seg = None
        if rng.random() < 0.1:
            seg = json.dumps([[x, y, x + w, y, x + w, y + h, x, y + h]])
        row(k, item, label, (x, y, w, h), "alice", segmentation=seg)
        k += 1
        if item % 10 < 3 and k < base_n:  # a second annotator re-draws 30% of the images
            jx, jy = rng.normal(0, 3, 2)
            bx, by = float(np.clip(x + jx, 0, 640 - w)), float(np.clip(y + jy, 0, 480 - h))
            row(k, item, label, (bx, by, w, h), "bob")
            k += 1
    # planted defects, each on its own image beyond the random ones
    base = n_items + 1
    for i in range(PLANT["box_too_small"]):
        row(k, base + i, "car", (10.0, 10.0, 0.5, 30.0), "alice")
        k += 1
    for i in range(PLANT["duplicate_annotation"]):
        for dx in (0.0, 0.5):
            row(k, base + 100 + i, "person", (100.0 + dx, 100.0, 60.0, 80.0), "alice")
            k += 1
    for i in range(PLANT["box_outside_image"]):
        row(k, base + 200 + i, "sign", (620.0, 10.0, 60.0, 30.0), "alice")
        k += 1
    for i in range(SELF_INTERSECTING):
        bowtie = json.dumps([[10, 10, 60, 60, 60, 10, 10, 60]])
        row(k, base + 300 + i, "bike", (10.0, 10.0, 50.0, 50.0), "alice", segmentation=bowtie)
        k += 1
    planted["self_intersecting_polygon"] = SELF_INTERSECTING
    # a video: 20 tracks moving right, 300 frames; one id switch (track 3 -> 99 at frame 150)
    # and one gap (track 5 skips frames 200-204)
    for f in range(frames):
        for t in range(tracks):
            if t == 5 and 200 <= f < 205:
                continue
            tid = 99 if (t == 3 and f >= 150) else t
            box = (5.0 + 0.5 * f, 20.0 * t + 40.0, 40.0, 18.0)
            row(k, 10**6 + f, "car", box, "alice", track_id=tid, frame=f, source_file="video.xml")
            k += 1
    planted["id_switch"] = 1
    planted["track_gap"] = 1
    df = pd.DataFrame(rows)
    for c in (*ANNOTATION_SCHEMA.names, "track_id", "frame"):
        if c not in df.columns:
            df[c] = None
    df["track_id"] = df["track_id"].astype("Int64")
    df["frame"] = df["frame"].astype("Int64")
    return df, planted


def best(fn: Any, repeat: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="200,000 annotations")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    n = args.n or (200_000 if args.full else 20_000)
    params = Params()
    q = params.validate_.qa
    df, planted = synthetic(n)
    buf = io.BytesIO()
    df.to_parquet(buf)
    data = buf.getvalue()

    t_read, _ = best(lambda: pd.read_parquet(io.BytesIO(data)), args.repeat)
    t_desc, _ = best(lambda: df.groupby("category")[["bbox_w", "bbox_h"]].describe(), args.repeat)
    t_qa, res = best(lambda: run_qa(df, params), args.repeat)
    counts = res.findings["check"].value_counts().to_dict()
    found = {c: int(counts.get(c, 0)) for c in planted}
    assert found == planted, f"found {found} but planted {planted}"

    w = prepare(df)
    spec = LabelSpec.inferred(w)
    families = {
        "prepare": lambda: prepare(df),
        "structure": lambda: structure_findings(w, spec, q),
        "geometry": lambda: geometry_findings(w, q),
        "tracks": lambda: track_findings(w, q),
        "agreement": lambda: agreement(w, q),
    }
    t_fam = {name: round(best(fn, args.repeat)[0], 3) for name, fn in families.items()}

    boxes = df[["bbox_x", "bbox_y", "bbox_w", "bbox_h"]].to_numpy(float)[:20_000]
    units = np.repeat(np.arange(len(boxes) // 2), 2)[: len(boxes)]

    def dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return 1 - box_iou(a, b)

    def paired(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return 1 - box_iou_paired(a, b)

    small = min(4000, len(boxes))
    t_exact, exact = best(lambda: alpha(boxes[:small], units[:small], dist, paired=paired), 1)
    t_est, est = best(
        lambda: alpha(boxes[:small], units[:small], dist, max_exact=0, paired=paired), 1
    )
    t_big, big = best(lambda: alpha(boxes, units, dist, paired=paired), 1)

    doc = {
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or "?"},
        "annotations": len(df),
        "items": int(df["image_ref"].nunique()),
        "planted_found": found,
        "findings": {s: int(v) for s, v in res.findings["severity"].value_counts().items()},
        "seconds": {
            "run_qa": round(t_qa, 3),
            "baseline_read_parquet": round(t_read, 4),
            "baseline_describe": round(t_desc, 4),
            "per_family": t_fam,
        },
        "ratios": {
            "run_qa_vs_read_parquet": round(t_qa / t_read, 1),
            "run_qa_vs_describe": round(t_qa / t_desc, 1),
        },
        "annotations_per_second": round(len(df) / t_qa),
        "alpha": {
            "values_exact": small,
            "exact_s": round(t_exact, 3),
            "estimated_s": round(t_est, 3),
            "exact_alpha": round(exact.alpha, 4),
            "estimated_alpha": round(est.alpha, 4),
            "estimate_se_of_expected": round(est.expected_se, 5),
            "values_20k_estimated_s": round(t_big, 3),
            "values_20k_exact": big.exact,
        },
    }
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
