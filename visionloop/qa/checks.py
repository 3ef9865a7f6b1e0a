"""The catalogue of label-QA checks and the findings table they all write into.

Every check has a name, a family, a default severity and one line saying what it means.
Severities follow Datumaro's validators where Datumaro has the check (``error`` for data that is
wrong, ``warning`` for data that needs a look, ``info`` for statistics worth knowing); a
project can change any of them, or turn a check off, with ``validate.qa.severity`` in
``params.yaml``. Error-level findings block the ``import_annotations`` gate.

A finding is one row: which check, how severe, the items and annotations concerned, and a
reason a person can act on. The table is the same whether it comes from the validate stage
(``<data>/validate/qa_findings.parquet``) or from ``visionloop labels qa``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import pandas as pd
import pyarrow as pa

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[str, ...] = ("error", "warning", "info")
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
OFF = "off"  # a severity override that turns a check off

STRUCTURE = "structure"
GEOMETRY = "geometry"
TRACK = "track"
AGREEMENT = "agreement"
GOLD = "gold"
FAMILIES: tuple[str, ...] = (STRUCTURE, GEOMETRY, TRACK, AGREEMENT, GOLD)


@dataclass(frozen=True)
class CheckInfo:
    name: str
    family: str
    severity: Severity  # the default
    what: str  # one line: what a finding of this check means
    datumaro: str | None = None  # the Datumaro validator report this check reproduces


def _c(
    name: str, family: str, severity: Severity, what: str, datumaro: str | None = None
) -> CheckInfo:
    return CheckInfo(name, family, severity, what, datumaro)


_CHECKS: dict[str, CheckInfo] = {
    c.name: c
    for c in (
        # --- structure (Datumaro's DetectionValidator, default thresholds) ---
        _c(
            "missing_annotation",
            STRUCTURE,
            "warning",
            "an item of the dataset has no annotation",
            "MissingAnnotation",
        ),
        _c(
            "undefined_label",
            STRUCTURE,
            "error",
            "an annotation's label is not in the label set",
            "UndefinedLabel",
        ),
        _c(
            "category_id_mismatch",
            STRUCTURE,
            "error",
            "a label appears with another id than the label set gives it (or an id with two names)",
        ),
        _c(
            "label_defined_but_unused",
            STRUCTURE,
            "warning",
            "a label of the label set has no annotation",
            "LabelDefinedButNotFound",
        ),
        _c("only_one_label", STRUCTURE, "info", "only one label is used", "OnlyOneLabel"),
        _c(
            "few_samples_in_label",
            STRUCTURE,
            "info",
            "a label has very few annotations (<= qa.few_samples)",
            "FewSamplesInLabel",
        ),
        _c(
            "label_imbalance",
            STRUCTURE,
            "info",
            "most / least frequent label >= qa.imbalance_ratio",
            "ImbalancedLabels",
        ),
        _c(
            "undefined_attribute",
            STRUCTURE,
            "error",
            "an annotation has an attribute its label does not define",
            "UndefinedAttribute",
        ),
        _c(
            "missing_attribute",
            STRUCTURE,
            "warning",
            "an annotation lacks an attribute its label defines",
            "MissingAttribute",
        ),
        _c(
            "attribute_defined_but_unused",
            STRUCTURE,
            "warning",
            "a defined attribute never has a value",
            "AttributeDefinedButNotFound",
        ),
        _c(
            "only_one_attribute_value",
            STRUCTURE,
            "info",
            "an attribute always has the same value",
            "OnlyOneAttributeValue",
        ),
        _c(
            "few_samples_in_attribute",
            STRUCTURE,
            "info",
            "an attribute value is very rare (<= qa.few_samples)",
            "FewSamplesInAttribute",
        ),
        _c(
            "attribute_imbalance",
            STRUCTURE,
            "info",
            "most / least frequent attribute value >= qa.imbalance_ratio",
            "ImbalancedAttribute",
        ),
        _c(
            "invalid_value",
            STRUCTURE,
            "error",
            "a box coordinate is NaN, infinite or missing",
            "InvalidValue",
        ),
        _c(
            "box_nonpositive",
            STRUCTURE,
            "error",
            "a box has zero or negative width or height",
            "NegativeLength",
        ),
        _c(
            "box_too_small",
            STRUCTURE,
            "error",
            "a box is thinner than qa.min_box_side pixels",
            "NegativeLength",
        ),
        _c(
            "far_from_label_mean",
            STRUCTURE,
            "warning",
            "a box's width, height, area, ratio, short or long side is more than "
            "qa.far_from_mean standard deviations from its label's mean",
            "FarFromLabelMean",
        ),
        _c(
            "far_from_attribute_mean",
            STRUCTURE,
            "warning",
            "as far_from_label_mean, within the annotations of one attribute value",
            "FarFromAttrMean",
        ),
        _c(
            "skewed_distribution",
            STRUCTURE,
            "info",
            "the top qa.topk_bins of a label's box-property histogram hold "
            ">= qa.dominance_ratio of its values",
            "ImbalancedDistInLabel",
        ),
        _c(
            "skewed_distribution_in_attribute",
            STRUCTURE,
            "info",
            "as skewed_distribution, within the annotations of one attribute value",
            "ImbalancedDistInAttribute",
        ),
        # --- geometry ---
        _c(
            "invalid_geometry",
            GEOMETRY,
            "error",
            "a segmentation, outline or point list cannot be read",
        ),
        _c(
            "box_outside_image",
            GEOMETRY,
            "error",
            "a box reaches past the image edge (more than validate.bbox_tolerance_px)",
        ),
        _c(
            "shape_outside_image",
            GEOMETRY,
            "error",
            "a polygon vertex or point lies outside the image (beyond the tolerance)",
        ),
        _c(
            "mask_size_mismatch",
            GEOMETRY,
            "error",
            "a mask's size is not its image's size",
        ),
        _c(
            "degenerate_polygon",
            GEOMETRY,
            "error",
            "a polygon has fewer than 3 points or zero area",
        ),
        _c(
            "self_intersecting_polygon",
            GEOMETRY,
            "warning",
            "a polygon's edges cross (its filled area is ambiguous)",
        ),
        _c(
            "mask_bbox_mismatch",
            GEOMETRY,
            "warning",
            "a mask's or polygon's extent and the box disagree by more than "
            "qa.mask_bbox_tolerance_px",
        ),
        _c("empty_mask", GEOMETRY, "error", "a mask has no foreground pixel"),
        _c(
            "duplicate_annotation",
            GEOMETRY,
            "warning",
            "one annotator drew the same label twice on an item (box IoU > qa.duplicate_iou)",
        ),
        # --- tracks ---
        _c(
            "track_duplicate_frame",
            TRACK,
            "error",
            "a track has two shapes in one frame",
        ),
        _c("track_label_change", TRACK, "error", "a track changes label"),
        _c(
            "track_gap",
            TRACK,
            "warning",
            "a track skips frames without being marked outside",
        ),
        _c(
            "id_switch",
            TRACK,
            "warning",
            "a box continues in the next frame under another track id",
        ),
        _c(
            "track_starts_outside",
            TRACK,
            "warning",
            "a track's first shape is marked outside (nothing visible starts it)",
        ),
        _c(
            "track_first_not_keyframe",
            TRACK,
            "warning",
            "a track's first shape is not a keyframe",
        ),
        _c(
            "track_outside_not_keyframe",
            TRACK,
            "warning",
            "a shape marked outside is not a keyframe",
        ),
        _c(
            "track_reappears_without_keyframe",
            TRACK,
            "warning",
            "a track becomes visible again after outside without a keyframe",
        ),
        # --- agreement and gold ---
        _c(
            "low_agreement",
            AGREEMENT,
            "warning",
            "two annotators of an item agree below qa.min_agreement_f1 (F1 of matched objects)",
        ),
        _c(
            "low_alpha",
            AGREEMENT,
            "warning",
            "Krippendorff's alpha (distance 1 - IoU) is below qa.min_alpha",
        ),
        _c(
            "gold_below_target",
            GOLD,
            "warning",
            "an annotator's accuracy on gold items is below qa.gold_target (CVAT's definition)",
        ),
    )
}
CHECKS = MappingProxyType(_CHECKS)

# Checks whose condition the annotation suite of the import_annotations gate already expresses
# as its own GX expectations (same tolerance): the QA suite does not check them a second time,
# so one bad box fails one expectation. The findings table still lists them.
GX_COVERED: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "box_nonpositive": ("bbox_w_positive", "bbox_h_positive"),
        "box_outside_image": (
            "bbox_x_inside",
            "bbox_y_inside",
            "bbox_right_inside",
            "bbox_bottom_inside",
        ),
    }
)


def severity_of(check: str, overrides: Mapping[str, str] | None = None) -> str:
    """The configured severity of ``check`` (``"off"`` when a project turned it off)."""
    if check not in _CHECKS:
        raise KeyError(f"unknown QA check {check!r}; known: {', '.join(sorted(_CHECKS))}")
    return (overrides or {}).get(check, _CHECKS[check].severity)


def error_checks(overrides: Mapping[str, str] | None = None) -> list[str]:
    """Checks whose findings block the gate, in catalogue order."""
    return [c for c in _CHECKS if severity_of(c, overrides) == "error"]


# --------------------------------------------------------------------------------------------
# The findings table

FINDINGS_SCHEMA = pa.schema(
    [
        pa.field("check", pa.string(), nullable=False),
        pa.field("severity", pa.string(), nullable=False),  # error | warning | info
        pa.field("family", pa.string(), nullable=False),  # structure | geometry | track | ...
        pa.field("item", pa.string()),  # item_id, else the export's image_ref; null: dataset
        pa.field("image_ref", pa.string()),
        pa.field("annotation_ids", pa.list_(pa.string()), nullable=False),
        pa.field("category", pa.string()),
        pa.field("attribute", pa.string()),
        pa.field("annotator", pa.string()),
        pa.field("track_id", pa.int64()),
        pa.field("frame", pa.int64()),
        pa.field("value", pa.float64()),  # the measured figure (ratio, IoU, z-score, pixels...)
        pa.field("threshold", pa.float64()),  # the threshold it was held against
        pa.field("reason", pa.string(), nullable=False),  # what is wrong, in words
    ]
)
FINDING_COLUMNS: tuple[str, ...] = tuple(FINDINGS_SCHEMA.names)


@dataclass
class Finding:
    """One problem found by one check (``severity`` is filled from the catalogue + params)."""

    check: str
    reason: str
    item: str | None = None
    image_ref: str | None = None
    annotation_ids: tuple[str, ...] | list[str] = field(default_factory=tuple)
    category: str | None = None
    attribute: str | None = None
    annotator: str | None = None
    track_id: int | None = None
    frame: int | None = None
    value: float | None = None
    threshold: float | None = None
    severity: str = ""
    family: str = ""

    def row(self) -> dict[str, Any]:
        info = _CHECKS[self.check]
        return {
            "check": self.check,
            "severity": self.severity or info.severity,
            "family": self.family or info.family,
            "item": _text(self.item),
            "image_ref": _text(self.image_ref),
            "annotation_ids": [str(a) for a in self.annotation_ids],
            "category": _text(self.category),
            "attribute": _text(self.attribute),
            "annotator": _text(self.annotator),
            "track_id": _int(self.track_id),
            "frame": _int(self.frame),
            "value": _float(self.value),
            "threshold": _float(self.threshold),
            "reason": self.reason,
        }


def _text(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return None
    return str(v)


def _int(v: Any) -> int | None:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return None
    return int(v)


def _float(v: Any) -> float | None:
    if v is None or v is pd.NA:
        return None
    f = float(v)
    return None if math.isnan(f) else f


def empty_findings() -> pd.DataFrame:
    return FINDINGS_SCHEMA.empty_table().to_pandas()


def findings_frame(
    findings: Iterable[Finding], overrides: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """Findings -> the findings table: configured severities applied, checks turned off
    dropped, sorted errors first (then by check, item and annotation) for stable output."""
    rows = []
    for f in findings:
        sev = severity_of(f.check, overrides)
        if sev == OFF:
            continue
        f.severity = sev
        rows.append(f.row())
    if not rows:
        return empty_findings()
    df = pd.DataFrame(rows, columns=list(FINDING_COLUMNS))
    order = df.assign(
        _rank=df["severity"].map(SEVERITY_RANK),
        _ids=df["annotation_ids"].map(lambda ids: ",".join(ids)),
        _item=df["item"].fillna(""),
        _cat=df["category"].fillna(""),
    ).sort_values(["_rank", "check", "_item", "_cat", "_ids", "reason"], kind="stable")
    df = df.loc[order.index].reset_index(drop=True)
    for col in ("track_id", "frame"):
        df[col] = df[col].astype("Int64")
    return df


def findings_to_arrow(df: pd.DataFrame) -> pa.Table:
    """The findings table with exactly ``FINDINGS_SCHEMA`` (for writing Parquet)."""
    out = df.copy()
    out["annotation_ids"] = out["annotation_ids"].map(lambda v: [str(a) for a in list(v)])
    return pa.Table.from_pandas(
        out[list(FINDING_COLUMNS)], schema=FINDINGS_SCHEMA, preserve_index=False
    )


def counts(df: pd.DataFrame) -> dict[str, Any]:
    """How many findings per severity and per check (for reports and artifacts)."""
    by_sev = {s: int((df["severity"] == s).sum()) for s in SEVERITIES} if len(df) else {}
    by_check: dict[str, dict[str, int]] = {}
    for (check, sev), n in df.groupby(["check", "severity"]).size().items() if len(df) else []:
        by_check.setdefault(str(check), {})[str(sev)] = int(n)
    return {
        "findings": len(df),
        "by_severity": {s: by_sev.get(s, 0) for s in SEVERITIES},
        "by_check": dict(sorted(by_check.items())),
    }
