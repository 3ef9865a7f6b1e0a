"""Rebalancing: augment under-represented classes or slices up to a target, train split only.

``plan_rebalance`` (cheap: tables only) counts the train-eligible accepted items per group
(``refresh.rebalance.by``: ``class`` = the categories of an item's matched annotations, or
slice dimensions such as ``day_night``), sets the target ``max(min_target, ceil(target_ratio x
largest group))`` and lists the derivations that fill each group up to it: parents of the
group taken in turn, at most ``max_per_parent`` each and ``max_items`` in all, each with its
own seed. ``derive`` (pixel work, in the stage's ``process``) runs one derivation.

Every derived item records its parent (``parent_item_id`` and the sha256 of the published
parent bytes), the albumentations pipeline serialised by ``albumentations.to_dict`` (JSON, with
the library version) and the seed: ``replay(parent_bytes, transform, seed, boxes)`` rebuilds
the same pixels. Boxes of the parent's matched annotations are carried through the transform
(``BboxParams`` in COCO xywh); other geometry is not carried (reported).

Split safety: a parent must be in the ``train`` split (or, with ``allow_unsplit``, in none);
every derived item is ``train`` and carries its parent as ``family_id`` so a later split keeps
the family together. ``assert_train_only`` fails loudly if anything else slipped through.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from visionloop.schema import Status

TRAIN = "train"
MAX_REDRAWS = 8
HELD_OUT = frozenset({"val", "valid", "validation", "test", "testing"})
AUGMENT_FORMAT = "augment"
DERIVATION_COLUMNS = [
    "parent_item_id",
    "parent_sha256",
    "parent_object_uri",
    "parent_source_uri",
    "group",
    "pipeline",
    "spec",  # the pipeline as declared in params (JSON)
    "spec_sha256",  # spec_sha256(): part of the cache key
    "seed",
    "k",  # the k-th derivation of this parent for this group
    "boxes",  # JSON [{"category", "category_id", "bbox": xywh, "annotator"}] of the parent
]
AUGMENTED_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),  # sha256 of the derived bytes
        pa.field("parent_item_id", pa.string(), nullable=False),
        pa.field("parent_sha256", pa.string()),  # the published parent bytes it was made from
        pa.field("parent_source_uri", pa.string()),
        pa.field("family_id", pa.string(), nullable=False),  # = parent_item_id: split together
        pa.field("group", pa.string()),
        pa.field("pipeline", pa.string()),
        pa.field("spec_sha256", pa.string()),  # cache key part: the pipeline as declared
        pa.field("transform", pa.string(), nullable=False),  # albumentations.to_dict JSON
        pa.field("seed", pa.int64(), nullable=False),  # the draw that made it (replay with it)
        pa.field("plan_seed", pa.int64()),  # the planned seed (cache key; differs on redraws)
        pa.field("k", pa.int32()),
        pa.field("split", pa.string(), nullable=False),  # always "train"
        pa.field("object_uri", pa.string()),  # data-root relative
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("boxes", pa.string()),  # JSON of the transformed boxes
        pa.field("boxes_dropped", pa.int32()),  # parent boxes cropped below min_visibility
        pa.field("why", pa.string()),
        pa.field("error", pa.string()),
    ]
)
AUGMENTED_COLUMNS = AUGMENTED_SCHEMA.names


class SplitLeakError(AssertionError):
    """A derived item would enter a validation or test split."""


def spec_json(spec: Sequence[Mapping[str, Any]]) -> str:
    return json.dumps(list(spec), sort_keys=True, separators=(",", ":"))


def spec_sha256(spec: Sequence[Mapping[str, Any]], bbox_visibility: float) -> str:
    """Cache key of a declared pipeline (with the library version that interprets it)."""
    from importlib.metadata import version

    blob = f"{spec_json(spec)}|vis={bbox_visibility}|albumentations={version('albumentations')}"
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def derive_seed(base: int, parent: str, group: str, k: int) -> int:
    """A 31-bit seed per (run seed, parent, group, k): stable, independent of order."""
    digest = hashlib.sha256(f"{base}|{parent}|{group}|{k}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def build_pipeline(spec: Sequence[Mapping[str, Any]], min_visibility: float, seed: int) -> Any:
    """An ``albumentations.Compose`` from a declared list of transforms."""
    import albumentations as A

    transforms = []
    for t in spec:
        args = {k: v for k, v in t.items() if k != "name"}
        cls = getattr(A, str(t["name"]), None)
        if cls is None:
            raise ValueError(f"refresh.rebalance: unknown albumentations transform {t['name']!r}")
        transforms.append(cls(**args))
    bbox = A.BboxParams(format="coco", label_fields=["labels"], min_visibility=min_visibility)
    return A.Compose(transforms, bbox_params=bbox, seed=seed)


def serialise(compose: Any) -> str:
    import albumentations as A

    return json.dumps(A.to_dict(compose), sort_keys=True, separators=(",", ":"))


def replay(
    parent_bytes: bytes, transform: str, seed: int, boxes: Sequence[Mapping[str, Any]] = ()
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Rebuild a derived image (RGB) and its boxes from the parent bytes and the record."""
    import albumentations as A

    compose = A.from_dict(json.loads(transform))
    compose.set_random_seed(seed)
    return _apply(compose, _decode_rgb(parent_bytes), boxes)


def _decode_rgb(data: bytes) -> np.ndarray:
    import cv2

    img = cv2.imdecode(
        np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    )
    if img is None:
        raise ValueError("the parent image does not decode")
    return np.ascontiguousarray(img[..., ::-1])


def _apply(
    compose: Any, rgb: np.ndarray, boxes: Sequence[Mapping[str, Any]]
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    h, w = rgb.shape[:2]
    kept = [b for b in boxes if _box_ok(b["bbox"], w, h)]
    bxs = [_clip(b["bbox"], w, h) for b in kept]
    out = compose(image=rgb, bboxes=bxs, labels=list(range(len(kept))))
    new_boxes = []
    for bbox, idx in zip(out["bboxes"], out["labels"], strict=True):
        src = dict(kept[int(idx)])
        src["bbox"] = [round(float(v), 3) for v in bbox]
        new_boxes.append(src)
    return out["image"], new_boxes


def _box_ok(b: Sequence[float], w: int, h: int) -> bool:
    x, y, bw, bh = (float(v) for v in b)
    return bw > 0 and bh > 0 and x < w and y < h and x + bw > 0 and y + bh > 0


def _clip(b: Sequence[float], w: int, h: int) -> list[float]:
    x, y, bw, bh = (float(v) for v in b)
    x0, y0 = max(0.0, x), max(0.0, y)
    x1, y1 = min(float(w), x + bw), min(float(h), y + bh)
    return [x0, y0, x1 - x0, y1 - y0]


def derive(
    parent_bytes: bytes,
    spec: Sequence[Mapping[str, Any]],
    seed: int,
    boxes: Sequence[Mapping[str, Any]],
    *,
    min_visibility: float,
    jpeg_quality: int,
) -> dict[str, Any]:
    """Run one derivation: encoded JPEG bytes, its item id, the replayable record, boxes.

    A draw in which no transform fired would only copy the parent: the seed is then moved on
    (at most ``MAX_REDRAWS`` times) and the seed actually used is returned (``seed``)."""
    import cv2

    rgb = _decode_rgb(parent_bytes)
    compose = build_pipeline(spec, min_visibility, seed)
    transform = serialise(compose)
    for attempt in range(MAX_REDRAWS + 1):
        used = (seed + attempt) & 0x7FFFFFFF
        compose.set_random_seed(used)
        image, new_boxes = _apply(compose, rgb, boxes)
        if image.shape != rgb.shape or not np.array_equal(image, rgb):
            break
    else:
        raise ValueError(f"the pipeline left the parent unchanged in {MAX_REDRAWS + 1} draws")
    ok, buf = cv2.imencode(
        ".jpg", np.ascontiguousarray(image[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]
    )
    if not ok:
        raise ValueError("the derived image does not encode")
    data = buf.tobytes()
    return {
        "data": data,
        "item_id": hashlib.sha256(data).hexdigest(),
        "seed": used,
        "transform": transform,
        "width": int(image.shape[1]),
        "height": int(image.shape[0]),
        "boxes": new_boxes,
        "boxes_dropped": len(boxes) - len(new_boxes),
    }


# ------------------------------------------------------------------------------------------
# Planning
# ------------------------------------------------------------------------------------------


def split_of(manifest: pd.DataFrame) -> pd.Series:
    """Each row's split (lower case) from curate's ``curate_split``; None when unknown."""
    if "curate_split" not in manifest.columns:
        return pd.Series(None, index=manifest.index, dtype=object)
    s = manifest["curate_split"].astype(object)
    return s.where(s.notna(), None).map(lambda v: None if v is None else str(v).lower())


def eligible_parents(manifest: pd.DataFrame, allow_unsplit: bool) -> pd.Series:
    """Accepted rows that may be augmented: in the train split (or in none, when allowed)."""
    split = split_of(manifest)
    acc = manifest["status"] == Status.ACCEPTED
    ok = split.map(lambda s: s == TRAIN or (s is None and allow_unsplit)).astype(bool)
    return acc & ok & manifest["anonymize_object_uri"].notna()


def item_groups(
    manifest: pd.DataFrame, annotations: pd.DataFrame | None, by: Sequence[str]
) -> pd.Series:
    """Each row's groups (a list): its classes for ``["class"]``, else its joint slice cell."""
    if list(by) == ["class"]:
        if annotations is None or not len(annotations):
            return pd.Series([[] for _ in range(len(manifest))], index=manifest.index)
        rows = annotations
        if "match_status" in rows.columns:
            rows = rows[rows["match_status"] == "matched"]
        if "annotator" in rows.columns:
            rows = rows[~rows["annotator"].fillna("").astype(str).str.startswith("prediction:")]
        per_item = rows.groupby("item_id")["category"].agg(lambda s: sorted(set(map(str, s))))
        got = manifest["item_id"].map(per_item)
        return got.map(lambda v: v if isinstance(v, list) else [])
    from visionloop.refresh.features import slice_values

    parts = [slice_values(manifest, d).astype(str) for d in by]
    label = parts[0]
    for p in parts[1:]:
        label = label + " | " + p
    return label.map(lambda v: [v])


def parent_boxes(annotations: pd.DataFrame | None) -> dict[str, list[dict[str, Any]]]:
    """item id -> its matched human boxes (COCO xywh), for carrying through a transform."""
    if annotations is None or not len(annotations):
        return {}
    rows = annotations
    if "match_status" in rows.columns:
        rows = rows[rows["match_status"] == "matched"]
    rows = rows[rows[["bbox_x", "bbox_y", "bbox_w", "bbox_h"]].notna().all(axis=1)]
    if "annotator" in rows.columns:
        rows = rows[~rows["annotator"].fillna("").astype(str).str.startswith("prediction:")]
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows.sort_values("annotation_id").itertuples(index=False):
        out.setdefault(str(r.item_id), []).append(
            {
                "category": str(r.category),
                "category_id": int(r.category_id) if pd.notna(r.category_id) else None,
                "bbox": [float(r.bbox_x), float(r.bbox_y), float(r.bbox_w), float(r.bbox_h)],
                "annotator": None if pd.isna(getattr(r, "annotator", None)) else str(r.annotator),
                "parent_annotation_id": str(r.annotation_id),
            }
        )
    return out


def plan_rebalance(
    manifest: pd.DataFrame, annotations: pd.DataFrame | None, rp: Any
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The derivations that bring every group up to the target, and a report per group.

    ``rp`` is ``params.refresh.rebalance``. Returns (DERIVATION_COLUMNS frame, report)."""
    empty = pd.DataFrame(columns=DERIVATION_COLUMNS)
    report: dict[str, Any] = {"enabled": bool(rp.enabled), "by": list(rp.by), "groups": {}}
    if not rp.enabled or not len(manifest):
        return empty, report
    df = manifest.reset_index(drop=True)
    ok = eligible_parents(df, rp.allow_unsplit)
    groups = item_groups(df, annotations, rp.by)
    counts: dict[str, int] = {}
    members: dict[str, list[int]] = {}
    for i in np.flatnonzero(ok.to_numpy()):
        for g in groups.iat[i]:
            counts[g] = counts.get(g, 0) + 1
            members.setdefault(g, []).append(int(i))
    if not counts:
        report["note"] = "no eligible parent has a group (no labels yet, or no train split)"
        return empty, report
    largest = max(counts.values())
    target = max(int(rp.min_target), math.ceil(rp.target_ratio * largest))
    report["target"] = target
    boxes = parent_boxes(annotations)
    spec_fp = {name: spec_sha256(spec, rp.min_visibility) for name, spec in rp.pipelines.items()}
    wanted: dict[str, list[tuple[int, int]]] = {}
    for g in sorted(counts):
        need = max(0, target - counts[g])
        pipeline = rp.assign.get(g, rp.assign.get("*"))
        report["groups"][g] = {"items": counts[g], "needed": need, "pipeline": pipeline}
        if not need or pipeline is None:
            continue
        parents = sorted(members[g], key=lambda i: str(df.at[i, "item_id"]))
        cap = len(parents) * rp.max_per_parent
        if need > cap:
            report["groups"][g]["short_by"] = need - cap
        wanted[g] = [(parents[j % len(parents)], j // len(parents)) for j in range(min(need, cap))]
    # Spend max_items across groups in turns, so one big deficit cannot starve the others.
    chosen: list[tuple[str, int, int]] = []
    rnd = 0
    while len(chosen) < rp.max_items and any(rnd < len(v) for v in wanted.values()):
        for g in sorted(wanted):
            if rnd < len(wanted[g]) and len(chosen) < rp.max_items:
                chosen.append((g, *wanted[g][rnd]))
        rnd += 1
    rows = []
    for g, i, k in chosen:
        pipeline = rp.assign.get(g, rp.assign.get("*"))
        spec = rp.pipelines[pipeline]
        item = str(df.at[i, "item_id"])
        group_boxes = boxes.get(item, [])
        rows.append(
            {
                "parent_item_id": item,
                "parent_sha256": df.at[i, "anonymize_sha256"]
                if "anonymize_sha256" in df.columns
                else None,
                "parent_object_uri": str(df.at[i, "anonymize_object_uri"]),
                "parent_source_uri": str(df.at[i, "source_uri"]),
                "group": g,
                "pipeline": pipeline,
                "spec": spec_json(spec),
                "spec_sha256": spec_fp[pipeline],
                "seed": derive_seed(rp.seed, item, g, k),
                "k": k,
                "boxes": json.dumps(group_boxes, sort_keys=True),
            }
        )
        report["groups"][g]["planned"] = report["groups"][g].get("planned", 0) + 1
    report["planned"] = len(rows)
    return (pd.DataFrame(rows, columns=DERIVATION_COLUMNS) if rows else empty), report


def assert_train_only(augmented: pd.DataFrame, manifest: pd.DataFrame) -> None:
    """Raise ``SplitLeakError`` if a derived item is not train, or comes from a parent in (or
    shares its pixels with an item of) a validation or test split."""
    if not len(augmented):
        return
    bad_split = augmented["split"].astype(str) != TRAIN
    if bad_split.any():
        raise SplitLeakError(
            f"{int(bad_split.sum())} derived item(s) are not in the train split: "
            f"{augmented.loc[bad_split, 'item_id'].head(3).tolist()}"
        )
    split = split_of(manifest)
    held = set(manifest.loc[split.isin(HELD_OUT).to_numpy(), "item_id"].astype(str))
    leaking = augmented["parent_item_id"].astype(str).isin(held)
    if leaking.any():
        raise SplitLeakError(
            f"{int(leaking.sum())} derived item(s) come from validation/test parents: "
            f"{augmented.loc[leaking, 'parent_item_id'].head(3).tolist()}"
        )
    same = augmented["item_id"].astype(str).isin(held)
    if same.any():
        raise SplitLeakError(f"{int(same.sum())} derived item(s) equal a validation/test item")


def derived_annotations(augmented: pd.DataFrame) -> pd.DataFrame:
    """The boxes of the derived items as canonical annotation rows (match_status matched)."""
    from visionloop.annotations.table import with_all_columns

    rows = []
    for r in augmented.itertuples(index=False):
        if r.error is not None and not (isinstance(r.error, float) and math.isnan(r.error)):
            continue
        for j, b in enumerate(json.loads(r.boxes or "[]")):
            x, y, w, h = b["bbox"]
            rows.append(
                {
                    "annotation_id": f"augment:{r.item_id}#{j}",
                    "item_id": r.item_id,
                    "image_ref": r.object_uri,
                    "category": b["category"],
                    "category_id": b.get("category_id"),
                    "bbox_x": x,
                    "bbox_y": y,
                    "bbox_w": w,
                    "bbox_h": h,
                    "iscrowd": False,
                    "image_width": r.width,
                    "image_height": r.height,
                    "annotator": b.get("annotator"),
                    "attributes": json.dumps(
                        {"parent_annotation_id": b.get("parent_annotation_id")}, sort_keys=True
                    ),
                    "source_format": AUGMENT_FORMAT,
                    "source_file": "refresh/augmented/manifest.parquet",
                    "source_pointer": f"/{r.item_id}/{j}",
                    "match_status": "matched",
                    "subset": TRAIN,
                    "shape": "box",
                }
            )
    return with_all_columns(pd.DataFrame(rows))


__all__ = [
    "AUGMENTED_COLUMNS",
    "AUGMENTED_SCHEMA",
    "DERIVATION_COLUMNS",
    "SplitLeakError",
    "assert_train_only",
    "build_pipeline",
    "derive",
    "derive_seed",
    "derived_annotations",
    "eligible_parents",
    "plan_rebalance",
    "replay",
    "serialise",
    "spec_sha256",
]
