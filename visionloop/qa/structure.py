"""Structure checks: Datumaro's dataset validators on the canonical table, its thresholds.

Datumaro's ``DetectionValidator`` (``datumaro/plugins/validators.py``) reports, with defaults
``few_samples_thr=1``, ``imbalance_ratio_thr=50``, ``far_from_mean_thr=5``,
``dominance_ratio_thr=0.8`` and ``topk_bins=0.1``: items without annotations, undefined labels
and attributes, defined but unused ones, few samples, imbalance, boxes with a side below 1 px,
NaN/infinite values, boxes far from their label's mean (width, height, area, ratio, short and
long side; population standard deviation) and skewed property histograms (10 bins; the top
``round(10 * 0.1)`` bins holding >= 80% of the values). The same here, with these deliberate
differences:

- label imbalance is computed over the labels that are used (Datumaro counts an unused label
  as 0, which makes every dataset with an unused label "imbalanced": that is reported once, as
  ``label_defined_but_unused``);
- a box with a side <= 0 is ``box_nonpositive`` and one with 0 < side < 1 ``box_too_small``
  (Datumaro's ``NegativeLength`` covers both): the first is also a GX expectation of the gate;
- an outlier is reported once per annotation, naming every property that is out;
- a constant property (standard deviation 0) has no outliers (Datumaro's strict comparison can
  flag float noise around the mean), and a histogram of fewer than 2 values is not "skewed";
- distribution statistics count human annotations only (``annotator`` "prediction:..." rows
  are model output); validity checks look at every row.

The label set is ``qa.labels`` if given, else ``categories.json`` of import_annotations, else
the labels the table uses (then no label is undefined, but ids must still be consistent).
Attributes are checked only where a label's attributes are defined (``qa.attributes``, or an
``attributes`` list in ``categories.json``); keys readers use for geometry (``outside``,
``keyframe``, ``occluded``, ``z_order``, ``rotation``...) and keys starting with ``_`` are
not label attributes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from visionloop.config import QAParams
from visionloop.qa.checks import Finding
from visionloop.qa.frame import SYSTEM_ATTRIBUTES, finite_box

ALL_LABELS = "*"
PROPERTIES: tuple[str, ...] = ("width", "height", "area", "ratio", "short", "long")


@dataclass(frozen=True)
class LabelSpec:
    """The label set a table is checked against, and each label's attributes."""

    labels: Mapping[str, int | None]  # name -> canonical id (None when not known)
    attributes: Mapping[str, frozenset[str]] = field(default_factory=dict)  # label or "*"
    source: str = "table"  # "params" | "categories.json" | "table"

    @property
    def from_table(self) -> bool:
        return self.source == "table"

    def allowed_attributes(self, label: str) -> frozenset[str] | None:
        """Attribute names ``label`` may carry; None when its attributes are not defined."""
        if not self.attributes:
            return None
        own = self.attributes.get(label)
        common = self.attributes.get(ALL_LABELS)
        if own is None and common is None:
            return None
        return frozenset(own or ()) | frozenset(common or ())

    @classmethod
    def from_labels(
        cls,
        labels: Iterable[str],
        attributes: Mapping[str, Iterable[str]] | None = None,
        source: str = "params",
    ) -> LabelSpec:
        return cls(
            labels={str(n): None for n in labels},
            attributes={k: frozenset(v) for k, v in (attributes or {}).items()},
            source=source,
        )

    @classmethod
    def from_categories(cls, doc: Mapping[str, Any]) -> LabelSpec:
        """From ``categories.json``: ``{"categories": [{"id", "name", "attributes"?}], ...}``;
        an attribute is a name or an object with a ``name`` (CVAT's spec); a top-level
        ``attributes`` list applies to every label."""
        labels: dict[str, int | None] = {}
        attrs: dict[str, frozenset[str]] = {}
        for cat in doc.get("categories", []):
            name = str(cat["name"])
            labels[name] = int(cat["id"]) if cat.get("id") is not None else None
            if "attributes" in cat:
                attrs[name] = frozenset(_attribute_names(cat["attributes"]))
        if "attributes" in doc:
            attrs[ALL_LABELS] = frozenset(_attribute_names(doc["attributes"]))
        return cls(labels=labels, attributes=attrs, source="categories.json")

    @classmethod
    def inferred(cls, w: pd.DataFrame) -> LabelSpec:
        """The labels the working frame ``w`` uses (nothing is undefined then)."""
        labels = {c: None for c in sorted(set(w["_cat"])) if c.strip()}
        return cls(labels=labels, source="table")

    def with_attributes(self, attributes: Mapping[str, Iterable[str]]) -> LabelSpec:
        return LabelSpec(
            labels=self.labels,
            attributes={k: frozenset(v) for k, v in attributes.items()},
            source=self.source,
        )


def _attribute_names(spec: Any) -> list[str]:
    out = []
    for a in spec or []:
        if isinstance(a, Mapping):
            if a.get("name") is not None:
                out.append(str(a["name"]))
        else:
            out.append(str(a))
    return out


def label_attributes(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The label attributes of an annotation (system and ``_``-prefixed keys removed)."""
    return {
        k: v for k, v in attrs.items() if k not in SYSTEM_ATTRIBUTES and not str(k).startswith("_")
    }


def _ids(rows: pd.DataFrame) -> list[str]:
    return rows["_ann"].tolist()


def structure_findings(
    w: pd.DataFrame,
    spec: LabelSpec,
    q: QAParams,
    items: Iterable[str] | None = None,
) -> list[Finding]:
    """Every structure finding of the working frame ``w`` (see ``frame.prepare``).

    ``items`` is the dataset's item universe (item keys); without it, items without any
    annotation cannot be seen and ``missing_annotation`` is not checked.
    """
    out: list[Finding] = []
    if items is not None:
        out += _missing_annotations(w, items)
    defined = _label_findings(w, spec, out)
    human = w[w["_human"] & defined]
    out += _label_distribution(human, spec, q)
    out += _attribute_findings(human, spec, q)
    valid_box = _box_validity(w, q, out)
    stats_rows = human[valid_box[human.index]]
    out += _outliers_and_skew(stats_rows, spec, q)
    return out


def _missing_annotations(w: pd.DataFrame, items: Iterable[str]) -> list[Finding]:
    labelled = set(w.loc[w["_human"], "_item"].dropna())
    return [
        Finding("missing_annotation", "the item has no annotation", item=item)
        for item in sorted(set(items) - labelled)
    ]


def _label_findings(w: pd.DataFrame, spec: LabelSpec, out: list[Finding]) -> pd.Series:
    """Undefined labels and id mismatches; returns which rows have a defined label."""
    cats = w["_cat"]
    empty = cats.str.strip() == ""
    if spec.from_table:
        undefined = empty
    else:
        undefined = empty | ~cats.isin(list(spec.labels))
    for idx in w.index[undefined]:
        r = w.loc[idx]
        why = (
            "the annotation has an empty label"
            if empty[idx]
            else f"label {r['_cat']!r} is not in the label set ({spec.source})"
        )
        out.append(
            Finding(
                "undefined_label",
                why,
                item=r["_item"],
                image_ref=r["_image"],
                annotation_ids=[r["_ann"]],
                category=r["_cat"],
                annotator=r["_annotator"],
            )
        )
    defined = ~undefined
    ids = w["_catid"]
    known = defined & ids.notna()
    flagged: dict[Any, str] = {}
    if not spec.from_table and any(v is not None for v in spec.labels.values()):
        want = cats.map(lambda c: spec.labels.get(c))
        bad = known & want.notna() & (ids.astype("float") != want.astype("float"))
        for idx in w.index[bad]:
            flagged[idx] = (
                f"label {cats[idx]!r} has id {int(ids[idx])} but the label set ({spec.source}) "
                f"gives it id {int(want[idx])}"
            )
    else:
        sub = w[known]
        for name, grp in sub.groupby("_cat"):
            common = grp["_catid"].mode().iloc[0]
            for idx in grp.index[grp["_catid"] != common]:
                flagged[idx] = (
                    f"label {name!r} has id {int(ids[idx])} here but id {int(common)} on "
                    f"{int((grp['_catid'] == common).sum())} other annotation(s)"
                )
        for cid, grp in sub.groupby("_catid"):
            common_name = grp["_cat"].mode().iloc[0]
            for idx in grp.index[grp["_cat"] != common_name]:
                flagged.setdefault(
                    idx,
                    f"id {int(cid)} names label {cats[idx]!r} here but {common_name!r} on "
                    f"{int((grp['_cat'] == common_name).sum())} other annotation(s)",
                )
    for idx, why in flagged.items():
        r = w.loc[idx]
        out.append(
            Finding(
                "category_id_mismatch",
                why,
                item=r["_item"],
                image_ref=r["_image"],
                annotation_ids=[r["_ann"]],
                category=r["_cat"],
                annotator=r["_annotator"],
            )
        )
    return defined


def _label_distribution(human: pd.DataFrame, spec: LabelSpec, q: QAParams) -> list[Finding]:
    out: list[Finding] = []
    counts = Counter(human["_cat"])
    all_labels = list(spec.labels) if not spec.from_table else sorted(counts)
    if not spec.from_table:
        for label in all_labels:
            if counts.get(label, 0) == 0:
                out.append(
                    Finding(
                        "label_defined_but_unused",
                        f"label {label!r} is defined ({spec.source}) but has no annotation",
                        category=label,
                    )
                )
    used = {k: v for k, v in counts.items() if v > 0}
    if len(used) == 1:
        (label,) = used
        out.append(
            Finding(
                "only_one_label",
                f"all {used[label]} annotation(s) have the label {label!r}",
                category=label,
                value=used[label],
            )
        )
    for label, n in sorted(used.items()):
        if 0 < n <= q.few_samples:
            out.append(
                Finding(
                    "few_samples_in_label",
                    f"label {label!r} has only {n} annotation(s)",
                    category=label,
                    annotation_ids=_ids(human[human["_cat"] == label]),
                    value=n,
                    threshold=q.few_samples,
                )
            )
    if len(used) >= 2:
        most = max(used.items(), key=lambda kv: (kv[1], kv[0]))
        least = min(used.items(), key=lambda kv: (kv[1], kv[0]))
        ratio = most[1] / least[1]
        if ratio >= q.imbalance_ratio:
            out.append(
                Finding(
                    "label_imbalance",
                    f"{most[0]!r} has {most[1]} annotations, {least[0]!r} {least[1]}: "
                    f"ratio {ratio:.1f} >= {q.imbalance_ratio:g}",
                    value=ratio,
                    threshold=q.imbalance_ratio,
                )
            )
    return out


def _attribute_findings(human: pd.DataFrame, spec: LabelSpec, q: QAParams) -> list[Finding]:
    out: list[Finding] = []
    if not spec.attributes or not len(human):
        return out
    dist: dict[tuple[str, str], Counter[str]] = {}
    for r in human[["_cat", "_attrs", "_item", "_image", "_ann", "_annotator"]].to_dict("records"):
        label = r["_cat"]
        allowed = spec.allowed_attributes(label)
        if allowed is None:
            continue
        own = label_attributes(r["_attrs"])
        for name in sorted(allowed):
            dist.setdefault((label, name), Counter())
        for name, value in own.items():
            if name not in allowed:
                out.append(
                    Finding(
                        "undefined_attribute",
                        f"attribute {name!r} is not defined for label {label!r}",
                        item=r["_item"],
                        image_ref=r["_image"],
                        annotation_ids=[r["_ann"]],
                        category=label,
                        attribute=str(name),
                        annotator=r["_annotator"],
                    )
                )
            else:
                dist[(label, name)][str(value)] += 1
        for name in sorted(allowed - set(own)):
            out.append(
                Finding(
                    "missing_attribute",
                    f"label {label!r} defines attribute {name!r} but the annotation has none",
                    item=r["_item"],
                    image_ref=r["_image"],
                    annotation_ids=[r["_ann"]],
                    category=label,
                    attribute=name,
                    annotator=r["_annotator"],
                )
            )
    for (label, name), values in sorted(dist.items()):
        if not values:
            out.append(
                Finding(
                    "attribute_defined_but_unused",
                    f"attribute {name!r} of label {label!r} never has a value",
                    category=label,
                    attribute=name,
                )
            )
            continue
        if len(values) == 1:
            (only,) = values
            out.append(
                Finding(
                    "only_one_attribute_value",
                    f"attribute {name!r} of label {label!r} is always {only!r}",
                    category=label,
                    attribute=name,
                )
            )
        for value, n in sorted(values.items()):
            if n <= q.few_samples:
                out.append(
                    Finding(
                        "few_samples_in_attribute",
                        f"attribute {name!r} of label {label!r} is {value!r} only {n} time(s)",
                        category=label,
                        attribute=name,
                        value=n,
                        threshold=q.few_samples,
                    )
                )
        most, least = max(values.values()), min(values.values())
        if len(values) >= 2 and most / least >= q.imbalance_ratio:
            out.append(
                Finding(
                    "attribute_imbalance",
                    f"attribute {name!r} of label {label!r}: most / least frequent value "
                    f"{most / least:.1f} >= {q.imbalance_ratio:g}",
                    category=label,
                    attribute=name,
                    value=most / least,
                    threshold=q.imbalance_ratio,
                )
            )
    return out


def _box_validity(w: pd.DataFrame, q: QAParams, out: list[Finding]) -> pd.Series:
    """NaN/infinite, non-positive and too small boxes; returns which rows are usable boxes."""
    needs = w["_needs_box"].to_numpy()
    finite = finite_box(w)
    vals = w[["_x", "_y", "_w", "_h"]].to_numpy(dtype=float)
    names = ("bbox_x", "bbox_y", "bbox_w", "bbox_h")
    for pos in np.flatnonzero(needs & ~finite):
        r = w.iloc[pos]
        bad = [
            f"{n} is {_word(v)}"
            for n, v in zip(names, vals[pos], strict=True)
            if not np.isfinite(v)
        ]
        out.append(
            Finding(
                "invalid_value",
                f"{r['_shape']} annotation: " + ", ".join(bad),
                item=r["_item"],
                image_ref=r["_image"],
                annotation_ids=[r["_ann"]],
                category=r["_cat"],
                annotator=r["_annotator"],
            )
        )
    side = np.where(finite, np.minimum(vals[:, 2], vals[:, 3]), np.nan)
    nonpos = needs & finite & (side <= 0)
    small = needs & finite & (side > 0) & (side < q.min_box_side)
    for pos in np.flatnonzero(nonpos | small):
        r = w.iloc[pos]
        check = "box_nonpositive" if nonpos[pos] else "box_too_small"
        out.append(
            Finding(
                check,
                f"box is {r['_w']:g} x {r['_h']:g} px"
                + ("" if nonpos[pos] else f" (a side below {q.min_box_side:g} px)"),
                item=r["_item"],
                image_ref=r["_image"],
                annotation_ids=[r["_ann"]],
                category=r["_cat"],
                annotator=r["_annotator"],
                value=float(side[pos]),
                threshold=0.0 if nonpos[pos] else q.min_box_side,
            )
        )
    usable = needs & finite & (side >= q.min_box_side) & (side > 0)
    return pd.Series(usable, index=w.index)


def _word(v: float) -> str:
    if np.isnan(v):
        return "NaN or missing"
    return "infinite"


def box_properties(rows: pd.DataFrame) -> pd.DataFrame:
    """Datumaro's box properties: width, height, area (w x h), ratio (w / h), short, long."""
    wv = rows["_w"].to_numpy(dtype=float)
    hv = rows["_h"].to_numpy(dtype=float)
    return pd.DataFrame(
        {
            "width": wv,
            "height": hv,
            "area": wv * hv,
            "ratio": wv / hv,
            "short": np.minimum(wv, hv),
            "long": np.maximum(wv, hv),
        },
        index=rows.index,
    )


def _outliers_and_skew(rows: pd.DataFrame, spec: LabelSpec, q: QAParams) -> list[Finding]:
    out: list[Finding] = []
    if not len(rows):
        return out
    props = box_properties(rows)
    for label, grp in rows.groupby("_cat", sort=True):
        p = props.loc[grp.index]
        out += _far_from_mean(grp, p, q, "far_from_label_mean", str(label), None, None)
        out += _skewed(p, q, "skewed_distribution", str(label), None, None)
    if spec.attributes:
        groups: dict[tuple[str, str, str], list[Any]] = {}
        for idx, label, attrs in zip(rows.index, rows["_cat"], rows["_attrs"], strict=True):
            allowed = spec.allowed_attributes(label)
            if not allowed:
                continue
            for name, value in label_attributes(attrs).items():
                if name in allowed:
                    groups.setdefault((label, name, str(value)), []).append(idx)
        for (label, name, value), idxs in sorted(groups.items()):
            grp = rows.loc[idxs]
            p = props.loc[idxs]
            out += _far_from_mean(grp, p, q, "far_from_attribute_mean", label, name, value)
            out += _skewed(p, q, "skewed_distribution_in_attribute", label, name, value)
    return out


def _far_from_mean(
    grp: pd.DataFrame,
    p: pd.DataFrame,
    q: QAParams,
    check: str,
    label: str,
    attr: str | None,
    value: str | None,
) -> list[Finding]:
    mean = p.mean(axis=0)
    std = p.std(axis=0, ddof=0)  # population, as Datumaro (np.std)
    usable = std > 1e-12 * np.maximum(1.0, mean.abs())
    if not usable.any() or len(p) < 2:
        return []
    z = (p.loc[:, usable] - mean[usable]).abs() / std[usable]
    far = z > q.far_from_mean
    where = f"label {label!r}" + (f", {attr}={value!r}" if attr else "")
    out = []
    for idx in far.index[far.any(axis=1)]:
        cols = [c for c in far.columns if far.at[idx, c]]
        parts = [
            f"{c} {p.at[idx, c]:.4g} (mean {mean[c]:.4g}, sd {std[c]:.4g}: {z.at[idx, c]:.1f} sd)"
            for c in cols
        ]
        r = grp.loc[idx]
        out.append(
            Finding(
                check,
                f"box far from the mean of {where}: " + "; ".join(parts),
                item=r["_item"],
                image_ref=r["_image"],
                annotation_ids=[r["_ann"]],
                category=label,
                attribute=attr,
                annotator=r["_annotator"],
                value=float(z.loc[idx, cols].max()),
                threshold=q.far_from_mean,
            )
        )
    return out


def _skewed(
    p: pd.DataFrame,
    q: QAParams,
    check: str,
    label: str,
    attr: str | None,
    value: str | None,
) -> list[Finding]:
    if len(p) < 2:
        return []
    bins = q.histogram_bins
    topk = max(1, int(np.around(bins * q.topk_bins)))
    where = f"label {label!r}" + (f", {attr}={value!r}" if attr else "")
    out = []
    for prop in PROPERTIES:
        vals = p[prop].to_numpy(dtype=float)
        counts, _edges = np.histogram(vals, bins=bins)
        share = float(np.sort(counts)[-topk:].sum() / counts.sum())
        if share >= q.dominance_ratio:
            out.append(
                Finding(
                    check,
                    f"box {prop} of {where}: the top {topk} of {bins} histogram bins hold "
                    f"{share:.0%} of {len(vals)} values (>= {q.dominance_ratio:.0%})",
                    category=label,
                    attribute=attr,
                    value=share,
                    threshold=q.dominance_ratio,
                )
            )
    return out
