"""Track checks: video annotations whose rows carry ``track_id`` and ``frame``.

A track is the rows of one ``track_id`` in one sequence (source file and subset) by one
annotator; a negative id (MOT's ``-1``) means "no track" and is ignored. Per-shape flags come
from the ``attributes`` JSON keys ``outside`` (the object is not in view from this frame on,
CVAT's convention) and ``keyframe`` (drawn by a person rather than interpolated); they are
checked only when a track's rows carry them.

- ``track_duplicate_frame``: two shapes of one track in one frame;
- ``track_label_change``: a track with more than one label;
- ``track_gap``: consecutive shapes of a track more than ``qa.track_max_gap`` frames apart while
  the earlier one is not ``outside`` and the later one is not a keyframe. CVAT writes a shape
  for every frame of a track between keyframes, so missing frames there mean the object was
  outside (the CVAT reader drops ``outside`` shapes): the object must then come back on a
  keyframe, else it is ``track_reappears_without_keyframe``; without keyframe flags (MOT) a
  gap is ``track_gap``. The frame step is the greatest common divisor of the sequence's frame
  differences, so a CVAT export with ``frame_filter=step=3`` (frames 10, 13, 16...) has no
  gaps;
- ``id_switch``: between consecutive frames of a sequence, the boxes of each label are matched
  one-to-one on IoU (Hungarian, IoU >= ``qa.id_switch_iou``); a match joining two different
  track ids is a swap or a fragmented track;
- ``track_starts_outside``, ``track_first_not_keyframe``, ``track_outside_not_keyframe``,
  ``track_reappears_without_keyframe``: CVAT's rules that a track starts with a visible
  keyframe, that ``outside`` shapes are keyframes, and that an object comes back into view
  (after an ``outside`` shape, or after missing frames) on a keyframe.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import reduce
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd

from visionloop.config import QAParams
from visionloop.qa.checks import Finding
from visionloop.qa.frame import finite_box, truthy
from visionloop.qa.shapes import box_iou, hungarian


def track_rows(w: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``w`` that belong to a track (id >= 0 and a frame number)."""
    t = w["_track"]
    keep = t.notna() & w["_frame"].notna()
    keep &= t.fillna(-1) >= 0
    sub = w[keep].copy()
    sub["_who"] = sub["_annotator"].fillna("")
    sub["_outside"] = sub["_attrs"].map(lambda a: truthy(a.get("outside")))
    sub["_keyframe"] = sub["_attrs"].map(lambda a: truthy(a.get("keyframe")))
    return sub


def frame_step(frames: np.ndarray) -> int:
    """The sequence's frame step: gcd of the differences between its distinct frames."""
    uniq = np.unique(frames.astype(np.int64))
    if len(uniq) < 2:
        return 1
    return int(reduce(math.gcd, np.diff(uniq).tolist())) or 1


def _base(r: Mapping[str, Any], check: str, reason: str, **kw: object) -> Finding:
    return Finding(
        check,
        reason,
        item=r["_item"],
        image_ref=r["_image"],
        annotation_ids=[r["_ann"]],
        category=r["_cat"],
        annotator=r["_annotator"],
        track_id=int(r["_track"]),
        frame=int(r["_frame"]),
        **kw,  # type: ignore[arg-type]
    )


def track_findings(w: pd.DataFrame, q: QAParams) -> list[Finding]:
    """Every track finding of the working frame ``w`` (see ``frame.prepare``)."""
    rows = track_rows(w)
    out: list[Finding] = []
    if not len(rows):
        return out
    for _seq, seq in rows.groupby("_seq", sort=True):
        step = frame_step(seq["_frame"].to_numpy())
        for (_who, tid), trk in seq.groupby(["_who", "_track"], sort=True):
            out += _one_track(trk.sort_values("_frame", kind="stable"), int(tid), step, q)
        for _who, mine in seq.groupby("_who", sort=True):
            out += _id_switches(mine, step, q)
    return out


def _one_track(trk: pd.DataFrame, tid: int, step: int, q: QAParams) -> list[Finding]:
    out: list[Finding] = []
    first = trk.iloc[0]
    dup = trk[trk.duplicated("_frame", keep=False)]
    for frame, grp in dup.groupby("_frame", sort=True):
        out.append(
            Finding(
                "track_duplicate_frame",
                f"track {tid} has {len(grp)} shapes in frame {int(frame)}",
                item=grp["_item"].iloc[0],
                image_ref=grp["_image"].iloc[0],
                annotation_ids=grp["_ann"].tolist(),
                category=grp["_cat"].iloc[0],
                annotator=first["_annotator"],
                track_id=tid,
                frame=int(frame),
            )
        )
    labels = trk["_cat"].value_counts()
    if len(labels) > 1:
        main = labels.index[0]
        others = trk[trk["_cat"] != main]
        spans = ", ".join(
            f"{lab!r} on {n} shape(s) (frames {int(g['_frame'].min())}-{int(g['_frame'].max())})"
            for lab, g in trk.groupby("_cat", sort=True)
            for n in [len(g)]
        )
        out.append(
            Finding(
                "track_label_change",
                f"track {tid} changes label: {spans}",
                item=others["_item"].iloc[0],
                image_ref=others["_image"].iloc[0],
                annotation_ids=others["_ann"].tolist(),
                category=str(main),
                annotator=first["_annotator"],
                track_id=tid,
                frame=int(others["_frame"].iloc[0]),
            )
        )
    shapes = trk.drop_duplicates("_frame", keep="first")
    outside = shapes["_outside"].tolist()
    key = shapes["_keyframe"].tolist()
    frames = shapes["_frame"].astype("int64").tolist()
    records = shapes[["_item", "_image", "_ann", "_cat", "_annotator", "_track", "_frame"]]
    rows = records.to_dict("records")
    if outside[0] is True:
        out.append(_base(rows[0], "track_starts_outside", f"track {tid} starts outside the view"))
    if key[0] is False:
        out.append(
            _base(
                rows[0],
                "track_first_not_keyframe",
                f"track {tid} starts on a shape that is not a keyframe",
            )
        )
    for i in range(len(shapes)):
        r = rows[i]
        if outside[i] is True and key[i] is False:
            out.append(
                _base(
                    r,
                    "track_outside_not_keyframe",
                    f"track {tid} is marked outside in frame {frames[i]} on a non-keyframe",
                )
            )
        if i and outside[i - 1] is True and outside[i] is not True and key[i] is False:
            out.append(
                _base(
                    r,
                    "track_reappears_without_keyframe",
                    f"track {tid} comes back into view in frame {frames[i]} (outside since "
                    f"frame {frames[i - 1]}) without a keyframe",
                )
            )
        if i + 1 < len(shapes) and outside[i] is not True:
            missing = (frames[i + 1] - frames[i]) // step - 1
            if missing <= q.track_max_gap or key[i + 1] is True:
                continue  # no gap, or the object re-entered the view on a keyframe
            if key[i + 1] is False:  # readers that drop outside shapes leave only the gap
                out.append(
                    _base(
                        rows[i + 1],
                        "track_reappears_without_keyframe",
                        f"track {tid} comes back into view in frame {frames[i + 1]} after "
                        f"{missing} frame(s) without a shape (last seen in frame {frames[i]}) "
                        "without a keyframe",
                        value=float(missing),
                        threshold=float(q.track_max_gap),
                    )
                )
                continue
            out.append(
                _base(
                    r,
                    "track_gap",
                    f"track {tid} jumps from frame {frames[i]} to {frames[i + 1]}: "
                    f"{missing} frame(s) missing (step {step}) without an outside shape",
                    value=float(missing),
                    threshold=float(q.track_max_gap),
                )
            )
    return out


def _id_switches(rows: pd.DataFrame, step: int, q: QAParams) -> list[Finding]:
    vis = rows[(rows["_outside"] != True) & finite_box(rows)]  # noqa: E712 (None counts)
    vis = vis[(vis["_w"] > 0) & (vis["_h"] > 0)]
    out: list[Finding] = []
    if not len(vis):
        return out
    vis = vis.sort_values(["_frame", "_cat"], kind="stable")
    frames = vis["_frame"].to_numpy(dtype=np.int64)
    cats = vis["_cat"].to_numpy(dtype=object)
    tracks = vis["_track"].to_numpy(dtype=np.int64)
    boxes = vis[["_x", "_y", "_w", "_h"]].to_numpy(dtype=float)
    meta = vis[["_ann", "_item", "_image", "_annotator"]].to_numpy(dtype=object)
    cuts = np.flatnonzero(frames[1:] != frames[:-1]) + 1
    spans = {
        int(frames[s]): (int(s), int(e))
        for s, e in zip(np.r_[0, cuts], np.r_[cuts, len(frames)], strict=True)
    }
    for f0, f1 in pairwise(sorted(spans)):
        if f1 - f0 != step:
            continue
        (s0, e0), (s1, e1) = spans[f0], spans[f1]
        for label in sorted(set(cats[s0:e0]) & set(cats[s1:e1])):
            p = s0 + np.flatnonzero(cats[s0:e0] == label)
            c = s1 + np.flatnonzero(cats[s1:e1] == label)
            for i, j, v in hungarian(box_iou(boxes[p], boxes[c]), q.id_switch_iou):
                a, b = p[i], c[j]
                if tracks[a] == tracks[b]:
                    continue
                out.append(
                    Finding(
                        "id_switch",
                        f"the {label!r} box of track {tracks[a]} in frame {f0} continues "
                        f"as track {tracks[b]} in frame {f1} (IoU {v:.3f})",
                        item=meta[b][1],
                        image_ref=meta[b][2],
                        annotation_ids=[meta[a][0], meta[b][0]],
                        category=str(label),
                        annotator=meta[a][3],
                        track_id=int(tracks[a]),
                        frame=f1,
                        value=v,
                        threshold=q.id_switch_iou,
                    )
                )
    return out
