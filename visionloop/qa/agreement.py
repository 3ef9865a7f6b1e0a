"""Agreement between annotators, and scoring against gold (honeypot) annotations.

Inter-annotator agreement, on items that two or more human annotators labelled:

- per item, label and pair of annotators, boxes are matched one-to-one with the Hungarian
  algorithm (``scipy.optimize.linear_sum_assignment``) maximising IoU among pairs with
  IoU >= ``qa.agreement_iou``; ``F1 = 2 * matched / (n_a + n_b)`` (each annotator is the
  other's reference) and mean IoU is over matched pairs. Pooled figures sum the counts;
- Krippendorff's alpha with distance ``1 - IoU``: a unit is one object, i.e. the boxes the
  matching joins (for more than two annotators, each new annotator's boxes are matched to the
  units so far, represented by their first box); a box nobody else drew is a unit of one and
  drops out, so alpha measures how consistently the objects both saw are drawn, and F1 how
  consistently objects are seen at all. Reported overall and per label; judged
  (``low_alpha``) only from ``MIN_ALPHA_UNITS`` units on;
- per-annotator scorecards: items shared with others, objects, pooled F1, mean IoU and the share
  of their objects no other annotator drew.

Gold scoring follows CVAT's quality reports: per item, the gold boxes and an annotator's boxes
are matched on IoU >= ``qa.gold_iou`` (0.4) regardless of label, then labels are compared;
``valid`` = matched with the same label, ``mismatched`` = matched with another label,
``missing`` = gold boxes left unmatched, ``extra`` = the annotator's boxes left unmatched, and
``accuracy = valid / (valid + mismatched + missing + extra)`` (CVAT's total is the confusion
matrix's sum, which is ``valid + missing + extra`` when no label is mismatched),
``precision = valid / annotator's boxes``, ``recall = valid / gold boxes``; counts are pooled
over items before dividing, as CVAT accumulates its frames. Gold rows are those of
``qa.gold_annotators`` or with ``"ground_truth": true`` in ``attributes`` (Label Studio's
flag); they take no part in peer agreement. An annotator below ``qa.gold_target`` (0.7) gets a
``gold_below_target`` finding. Model pre-annotations (``annotator`` "prediction:...") are
scored against gold in the gold table but take no part in peer agreement or findings.

Only rows with a usable box count (finite, positive width and height); items are item keys
(``item_id``, else ``image_ref``). An annotator who saw an item and drew nothing leaves no row,
so that case cannot be told from not having seen it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from visionloop.config import QAParams
from visionloop.qa.alpha import AlphaResult, alpha
from visionloop.qa.checks import Finding
from visionloop.qa.frame import finite_box, truthy
from visionloop.qa.shapes import box_iou, box_iou_paired, hungarian

MIN_ALPHA_UNITS = 10  # alpha from fewer units is reported, not judged

PAIR_COLUMNS = (
    "item",
    "image_ref",
    "category",
    "annotator_a",
    "annotator_b",
    "n_a",
    "n_b",
    "matched",
    "f1",
    "mean_iou",
)
SCORECARD_COLUMNS = (
    "annotator",
    "prediction",
    "shared_items",
    "objects",
    "compared_with",
    "matched",
    "unmatched",
    "f1",
    "mean_iou",
    "gold_items",
    "gold_valid",
    "gold_mismatched",
    "gold_missing",
    "gold_extra",
    "gold_accuracy",
    "gold_precision",
    "gold_recall",
    "gold_mean_iou",
    "meets_target",
)
GOLD_COLUMNS = (
    "item",
    "image_ref",
    "annotator",
    "gold_annotator",
    "gold",
    "annotated",
    "valid",
    "mismatched",
    "missing",
    "extra",
    "accuracy",
    "precision",
    "recall",
    "mean_iou",
)


@dataclass
class AgreementResult:
    pairs: pd.DataFrame  # one row per item, label and annotator pair (PAIR_COLUMNS)
    scorecards: pd.DataFrame  # one row per annotator (SCORECARD_COLUMNS)
    gold: pd.DataFrame  # one row per gold item and annotator (GOLD_COLUMNS)
    summary: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)


def _empty(columns: Iterable[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


def usable_boxes(w: pd.DataFrame) -> pd.DataFrame:
    """Rows that can take part: a finite box with positive sides, an item, an annotator."""
    ok = w["_needs_box"].to_numpy() & finite_box(w)
    ok &= (w["_w"].to_numpy() > 0) & (w["_h"].to_numpy() > 0)
    ok &= w["_item"].notna().to_numpy()
    return w[ok]


def gold_mask(w: pd.DataFrame, q: QAParams) -> pd.Series:
    named = w["_annotator"].isin(list(q.gold_annotators))
    flagged = w["_attrs"].map(lambda a: truthy(a.get("ground_truth")) is True)
    return named | flagged


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else float(num / den)


def _boxes(rows: pd.DataFrame) -> np.ndarray:
    return rows[["_x", "_y", "_w", "_h"]].to_numpy(dtype=float)


def agreement(w: pd.DataFrame, q: QAParams) -> AgreementResult:
    """Peer agreement, alpha, scorecards and gold scoring of the working frame ``w``."""
    rows = usable_boxes(w)
    is_gold = gold_mask(rows, q)
    gold_rows = rows[is_gold]
    peers = rows[~is_gold & rows["_human"] & rows["_annotator"].notna()]
    pairs, units, findings = _peer_agreement(peers, q)
    alpha_all, alpha_by = _alphas(units)
    gold_table = _gold(rows[~is_gold & rows["_annotator"].notna()], gold_rows, q)
    scorecards = _scorecards(peers, pairs, gold_table, rows, q)
    findings += _alpha_findings(alpha_all, alpha_by, q)
    findings += _gold_findings(scorecards, q)
    summary = _summary(pairs, alpha_all, alpha_by, gold_table, scorecards, q)
    return AgreementResult(pairs, scorecards, gold_table, summary, findings)


# --- peers -----------------------------------------------------------------------------------


def _runs(keys: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of equal values in a sorted array."""
    if not len(keys):
        return []
    cuts = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    starts = np.r_[0, cuts]
    ends = np.r_[cuts, len(keys)]
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def _peer_agreement(
    peers: pd.DataFrame, q: QAParams
) -> tuple[pd.DataFrame, pd.DataFrame, list[Finding]]:
    """(pair table, alpha units: one row per box with its unit id, low-agreement findings).

    Works on sorted numpy columns (item, label, annotator) rather than pandas groups: a table
    of 10^5 annotations has 10^4 shared items, and pandas' per-group overhead would dominate.
    """
    pair_rows: list[dict[str, Any]] = []
    unit_rows: list[tuple[str, np.ndarray]] = []
    findings: list[Finding] = []
    n_annot = peers.groupby("_item")["_annotator"].nunique() if len(peers) else pd.Series()
    shared = peers[peers["_item"].isin(n_annot.index[n_annot >= 2])] if len(peers) else peers
    if not len(shared):
        return _empty(PAIR_COLUMNS), pd.DataFrame({"unit": [], "box": []}), findings
    shared = shared.sort_values(["_item", "_cat", "_annotator"], kind="stable")
    items = shared["_item"].to_numpy(dtype=object)
    cats = shared["_cat"].to_numpy(dtype=object)
    who = shared["_annotator"].to_numpy(dtype=object)
    images = shared["_image"].to_numpy(dtype=object)
    ann_ids = shared["_ann"].to_numpy(dtype=object)
    boxes = _boxes(shared)
    for s, e in _runs(items):
        item, image = items[s], images[s]
        annotators = sorted(set(who[s:e]))
        by_pair: dict[tuple[str, str], list[int]] = {}
        full = box_iou(boxes[s:e], boxes[s:e])  # once per item; pairs and units slice it
        for cs, ce in _runs(cats[s:e]):
            label = cats[s + cs]
            span = np.arange(cs, ce)
            per = {a: span[who[s + cs : s + ce] == a] for a in annotators}
            for a, b in combinations(annotators, 2):
                ra, rb = per[a], per[b]
                if not len(ra) and not len(rb):
                    continue
                matches = hungarian(full[np.ix_(ra, rb)], q.agreement_iou)
                m = len(matches)
                ious = [v for _, _, v in matches]
                pair_rows.append(
                    {
                        "item": item,
                        "image_ref": image,
                        "category": label,
                        "annotator_a": a,
                        "annotator_b": b,
                        "n_a": len(ra),
                        "n_b": len(rb),
                        "matched": m,
                        "f1": 2 * m / (len(ra) + len(rb)),
                        "mean_iou": float(np.mean(ious)) if ious else None,
                        "_sum_iou": float(np.sum(ious)),
                    }
                )
                tally = by_pair.setdefault((a, b), [0, 0, 0])
                tally[0] += m
                tally[1] += len(ra)
                tally[2] += len(rb)
            unit_rows += _units(f"{item}\x1f{label}", per, annotators, full, boxes[s:e], q)
        for (a, b), (m, na, nb) in sorted(by_pair.items()):
            f1 = 2 * m / (na + nb) if na + nb else 1.0
            if f1 < q.min_agreement_f1:
                mine = (who[s:e] == a) | (who[s:e] == b)
                findings.append(
                    Finding(
                        "low_agreement",
                        f"annotators {a!r} and {b!r} agree on {m} of {na} and {nb} objects "
                        f"(F1 {f1:.3f} < {q.min_agreement_f1:g}, IoU >= {q.agreement_iou:g})",
                        item=item,
                        image_ref=image,
                        annotation_ids=ann_ids[s:e][mine].tolist(),
                        annotator=f"{a},{b}",
                        value=f1,
                        threshold=q.min_agreement_f1,
                    )
                )
    pairs = pd.DataFrame(pair_rows) if pair_rows else _empty((*PAIR_COLUMNS, "_sum_iou"))
    units = pd.DataFrame({"unit": [u for u, _ in unit_rows], "box": [b for _, b in unit_rows]})
    return pairs, units, findings


def _units(
    key: str,
    per: dict[str, np.ndarray],
    annotators: list[str],
    iou: np.ndarray,
    boxes: np.ndarray,
    q: QAParams,
) -> list[tuple[str, np.ndarray]]:
    """Alpha units of one item and label: clusters of boxes, at most one per annotator.

    ``per`` holds each annotator's row positions in the item; ``iou`` is the item's IoU matrix.
    """
    reps: list[int] = []  # each unit's first box (row position)
    members: list[list[int]] = []
    for a in annotators:
        mine = per[a]
        if not len(mine):
            continue
        matched: set[int] = set()
        if reps:
            for i, j, _v in hungarian(iou[np.ix_(mine, reps)], q.agreement_iou):
                members[j].append(int(mine[i]))
                matched.add(i)
        for i, row in enumerate(mine):
            if i not in matched:
                reps.append(int(row))
                members.append([int(row)])
    return [(f"{key}\x1f{u}", boxes[r]) for u, rows in enumerate(members) for r in rows]


def _iou_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return 1.0 - box_iou(a, b)


def _iou_distance_paired(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return 1.0 - box_iou_paired(a, b)


def _alpha_of(units: pd.DataFrame) -> AlphaResult:
    if not len(units):
        return alpha(np.zeros((0, 4)), np.zeros(0), _iou_distance)
    return alpha(
        np.stack(units["box"].tolist()),
        units["unit"].to_numpy(),
        _iou_distance,
        paired=_iou_distance_paired,
    )


def _alphas(units: pd.DataFrame) -> tuple[AlphaResult, dict[str, AlphaResult]]:
    overall = _alpha_of(units)
    by: dict[str, AlphaResult] = {}
    if len(units):
        labels = units["unit"].str.split("\x1f").str[1]
        for label in sorted(set(labels)):
            by[label] = _alpha_of(units[labels == label])
    return overall, by


def _alpha_findings(overall: AlphaResult, by: dict[str, AlphaResult], q: QAParams) -> list[Finding]:
    out = []
    for label, res in [(None, overall), *sorted(by.items())]:
        if res.units < MIN_ALPHA_UNITS or np.isnan(res.alpha) or res.alpha >= q.min_alpha:
            continue
        where = "all labels" if label is None else f"label {label!r}"
        out.append(
            Finding(
                "low_alpha",
                f"Krippendorff's alpha (1 - IoU) over {where} is {res.alpha:.3f} "
                f"(< {q.min_alpha:g}) on {res.units} objects seen by several annotators",
                category=label,
                value=res.alpha,
                threshold=q.min_alpha,
            )
        )
    return out


# --- gold ------------------------------------------------------------------------------------


def _gold(candidates: pd.DataFrame, gold_rows: pd.DataFrame, q: QAParams) -> pd.DataFrame:
    out: list[dict[str, Any]] = []
    if not len(gold_rows):
        return _empty(GOLD_COLUMNS)
    on_gold = candidates[candidates["_item"].isin(set(gold_rows["_item"]))]
    by_item = {k: v for k, v in on_gold.groupby("_item", sort=False)}
    for item, g in gold_rows.groupby("_item", sort=True):
        gold_by = sorted(g["_annotator"].fillna("").unique())
        reference = gold_by[0]  # one gold annotator per item (several: the first by name)
        g = g[g["_annotator"].fillna("") == reference]
        mine = by_item.get(item, on_gold.iloc[:0])
        for annotator, d in mine.groupby("_annotator", sort=True):
            matches = hungarian(box_iou(_boxes(d), _boxes(g)), q.gold_iou)
            valid = sum(1 for i, j, _ in matches if d["_cat"].iloc[i] == g["_cat"].iloc[j])
            mism = len(matches) - valid
            missing, extra = len(g) - len(matches), len(d) - len(matches)
            total = valid + mism + missing + extra
            out.append(
                {
                    "item": item,
                    "image_ref": g["_image"].iloc[0],
                    "annotator": annotator,
                    "gold_annotator": reference,
                    "gold": len(g),
                    "annotated": len(d),
                    "valid": valid,
                    "mismatched": mism,
                    "missing": missing,
                    "extra": extra,
                    "accuracy": _ratio(valid, total),
                    "precision": _ratio(valid, len(d)),
                    "recall": _ratio(valid, len(g)),
                    "mean_iou": float(np.mean([v for *_, v in matches])) if matches else None,
                    "_sum_iou": float(np.sum([v for *_, v in matches])),
                    "_matched": len(matches),
                }
            )
    return pd.DataFrame(out) if out else _empty(GOLD_COLUMNS)


def _gold_findings(scorecards: pd.DataFrame, q: QAParams) -> list[Finding]:
    out = []
    for _, s in scorecards.iterrows():
        acc = s["gold_accuracy"]
        if s["prediction"] or acc is None or pd.isna(acc) or acc >= q.gold_target:
            continue
        out.append(
            Finding(
                "gold_below_target",
                f"annotator {s['annotator']!r} scores accuracy {acc:.3f} on {s['gold_items']} "
                f"gold item(s) (< target {q.gold_target:g}): {s['gold_valid']} valid, "
                f"{s['gold_mismatched']} mismatched, {s['gold_missing']} missing, "
                f"{s['gold_extra']} extra",
                annotator=s["annotator"],
                value=float(acc),
                threshold=q.gold_target,
            )
        )
    return out


# --- scorecards and summary ------------------------------------------------------------------


def _scorecards(
    peers: pd.DataFrame,
    pairs: pd.DataFrame,
    gold: pd.DataFrame,
    rows: pd.DataFrame,
    q: QAParams,
) -> pd.DataFrame:
    prediction = {
        a: not h for a, h in rows.groupby("_annotator")["_human"].all().items()
    }  # an annotator is a model when none of its rows is human
    names = sorted(set(peers["_annotator"].dropna()) | set(gold["annotator"].dropna()))
    out = []
    for a in names:
        mine_a = pairs[pairs["annotator_a"] == a] if len(pairs) else pairs
        mine_b = pairs[pairs["annotator_b"] == a] if len(pairs) else pairs
        matched = int(mine_a["matched"].sum() + mine_b["matched"].sum()) if len(pairs) else 0
        own = int(mine_a["n_a"].sum() + mine_b["n_b"].sum()) if len(pairs) else 0
        other = int(mine_a["n_b"].sum() + mine_b["n_a"].sum()) if len(pairs) else 0
        sum_iou = float(mine_a["_sum_iou"].sum() + mine_b["_sum_iou"].sum()) if len(pairs) else 0
        partners = set(mine_a["annotator_b"]) | set(mine_b["annotator_a"]) if len(pairs) else set()
        shared = set(mine_a["item"]) | set(mine_b["item"]) if len(pairs) else set()
        objects = int(((peers["_annotator"] == a) & peers["_item"].isin(list(shared))).sum())
        g = gold[gold["annotator"] == a] if len(gold) else gold
        gv, gm, gmi, ge = (
            int(g[c].sum()) if len(g) else 0 for c in ("valid", "mismatched", "missing", "extra")
        )
        total = gv + gm + gmi + ge
        acc = _ratio(gv, total)
        out.append(
            {
                "annotator": a,
                "prediction": bool(prediction.get(a, False)),
                "shared_items": len(shared),
                "objects": objects,
                "compared_with": len(partners),
                "matched": matched,
                "unmatched": own - matched,
                "f1": _ratio(2 * matched, own + other),
                "mean_iou": _ratio(sum_iou, matched),
                "gold_items": len(g),
                "gold_valid": gv,
                "gold_mismatched": gm,
                "gold_missing": gmi,
                "gold_extra": ge,
                "gold_accuracy": acc,
                "gold_precision": _ratio(gv, int(g["annotated"].sum())) if len(g) else None,
                "gold_recall": _ratio(gv, int(g["gold"].sum())) if len(g) else None,
                "gold_mean_iou": (
                    _ratio(float(g["_sum_iou"].sum()), int(g["_matched"].sum())) if len(g) else None
                ),
                "meets_target": None if acc is None else bool(acc >= q.gold_target),
            }
        )
    return pd.DataFrame(out, columns=list(SCORECARD_COLUMNS)) if out else _empty(SCORECARD_COLUMNS)


def _summary(
    pairs: pd.DataFrame,
    overall: AlphaResult,
    by: dict[str, AlphaResult],
    gold: pd.DataFrame,
    scorecards: pd.DataFrame,
    q: QAParams,
) -> dict[str, Any]:
    m = int(pairs["matched"].sum()) if len(pairs) else 0
    n = int(pairs["n_a"].sum() + pairs["n_b"].sum()) if len(pairs) else 0
    sum_iou = float(pairs["_sum_iou"].sum()) if len(pairs) else 0.0
    gv = int(gold["valid"].sum()) if len(gold) else 0
    gtotal = (
        int(gold[["valid", "mismatched", "missing", "extra"]].to_numpy().sum()) if len(gold) else 0
    )
    return {
        "items_compared": int(pairs["item"].nunique()) if len(pairs) else 0,
        "annotators": int((~scorecards["prediction"].astype(bool)).sum()) if len(scorecards) else 0,
        "matched": m,
        "objects": n,
        "f1": _ratio(2 * m, n),
        "mean_iou": _ratio(sum_iou, m),
        "iou_threshold": q.agreement_iou,
        "alpha": overall.to_dict(),
        "alpha_per_category": {k: v.to_dict() for k, v in by.items()},
        "gold": {
            "items": int(gold["item"].nunique()) if len(gold) else 0,
            "annotators": sorted(gold["annotator"].unique().tolist()) if len(gold) else [],
            "accuracy": _ratio(gv, gtotal),
            "iou_threshold": q.gold_iou,
            "target": q.gold_target,
        },
    }


def public(df: pd.DataFrame) -> pd.DataFrame:
    """The table without its private bookkeeping columns (``_sum_iou``...)."""
    return df[[c for c in df.columns if not str(c).startswith("_")]].reset_index(drop=True)
