"""The expectation suites of the five gates, built from ``Params`` as plain data.

A gate is named after the stage whose output it checks (``collect``, ``anonymize``, ``curate``,
``import_annotations``, ``refresh``). Each suite is a list of :class:`Check` values: the GX
expectation type, its kwargs (thresholds come from ``params.validate`` and the stage sections),
a severity (``error`` blocks the pipeline, ``warning`` is only reported) and a stable key.

Keeping the checks as plain data, and importing Great Expectations only in :func:`build_suite`,
lets the CLI and the validate stage name suites and hash their versions without paying GX's
import (about 9 s and 230 MB). Row conditions are GX's serialised ``Condition`` dicts so that
they round-trip unchanged into the stored suite JSON.

Fractions and counts are GX expectations (``mostly=...``, ``expect_table_row_count_...``) rather
than numbers computed in pandas, so that Data Docs show the observed figures.

A gate may also validate *companion* tables derived from its own (``GATE_COMPANIONS``), each with
its own GX suite and asset named ``<gate>_<table>``: the ``import_annotations`` gate validates
the label-QA findings (``visionloop/qa``) with one error-level expectation per QA check whose
configured severity is ``error`` (so Data Docs and the gate's result name the failing check),
skipping the QA checks the annotation suite already expresses with the same tolerance
(``qa.checks.GX_COVERED``: one bad box fails one expectation). QA warnings and infos are
reported by the QA outputs, not as GX expectations. The gate's version (``gate_suite_hash``)
covers its own checks and its companions'.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from visionloop.config import Params
from visionloop.schema import STAGES, Reason, Status

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuite

Severity = Literal["error", "warning"]

GATES: tuple[str, ...] = ("collect", "anonymize", "curate", "import_annotations", "refresh")

# The table each gate checks, relative to the gate's stage folder.
GATE_TABLES: dict[str, str] = {
    "collect": "manifest.parquet",
    "anonymize": "manifest.parquet",
    "curate": "manifest.parquet",
    "import_annotations": "annotations.parquet",
    "refresh": "drift.parquet",
}

MATCH_STATUSES: tuple[str, ...] = ("matched", "quarantined_item", "unmatched")
DRIFT_COLUMNS: tuple[str, ...] = (
    "feature",
    "test",
    "statistic",
    "p_value",
    "threshold",
    "drifted",
    "n_reference",
    "n_current",
)
# Derived columns the import_annotations gate adds before validation (see prepare_table): how
# far a box reaches past the right/bottom image edge, in pixels; NaN when the size is unknown.
BBOX_RIGHT_OVERFLOW = "bbox_right_overflow"
BBOX_BOTTOM_OVERFLOW = "bbox_bottom_overflow"

SHA256_HEX = r"^[0-9a-f]{64}$"
PHASH_HEX = r"^[0-9a-f]{16}$"
# Value ranges that are definitions of the metrics (see COLUMNS.md), not tunable thresholds.
UNIT_RANGE = (0.0, 1.0)
ENTROPY_RANGE = (0.0, 8.0)  # bits of an 8-bit histogram
LEVEL_RANGE = (0.0, 255.0)  # a difference of 8-bit levels

_NAMESPACE = uuid.UUID("6f1c3a52-8d3e-4b8e-9a57-2f0c6f6b7a10")  # for stable GX ids


@dataclass(frozen=True)
class Check:
    """One expectation of a gate, as plain data (hashable into the suite version)."""

    key: str  # unique within the suite, stable across versions: how results map back
    type: str  # GX expectation type, e.g. "expect_column_values_to_not_be_null"
    kwargs: dict[str, Any] = field(default_factory=dict)
    severity: Severity = "error"
    why: str = ""  # one line for reports and Data Docs

    def config(self) -> dict[str, Any]:
        """The canonical, JSON-able form used for hashing and comparison."""
        return {
            "key": self.key,
            "type": self.type,
            "kwargs": self.kwargs,
            "severity": self.severity,
            "why": self.why,
        }


# Row conditions in GX's serialised Condition form (great_expectations.expectations.row_conditions)
def _eq(column: str, value: str) -> dict[str, Any]:
    return {"type": "comparison", "column": {"name": column}, "operator": "==", "parameter": value}


def _not_null(column: str) -> dict[str, Any]:
    return {"type": "nullity", "column": {"name": column}, "is_null": False}


def _or(*conditions: dict[str, Any]) -> dict[str, Any]:
    return {"type": "or", "conditions": list(conditions)}


def _and(*conditions: dict[str, Any]) -> dict[str, Any]:
    return {"type": "and", "conditions": list(conditions)}


ACCEPTED = _eq("status", Status.ACCEPTED.value)
QUARANTINED = _eq("status", Status.QUARANTINED.value)


def suite_name(gate: str) -> str:
    return f"visionloop_{gate}"


# Companion tables a gate validates besides its own, each with its own suite and GX asset
# ``<gate>_<table>`` (see the module docstring).
QA_TABLE = "qa"
GATE_COMPANIONS: dict[str, tuple[str, ...]] = {"import_annotations": (QA_TABLE,)}


def companion_asset(gate: str, table: str) -> str:
    """The GX asset (and, with ``suite_name``, suite/checkpoint name) of a companion table."""
    return f"{gate}_{table}"


def _manifest_checks(gate: str, params: Params) -> list[Check]:
    """Invariants every manifest must keep at every gate, plus the per-stage volume checks."""
    v = params.validate_
    # Rows the stage looked at: still accepted, or quarantined by this stage. Earlier
    # quarantines are not this stage's doing, so they don't count against its fraction.
    seen = None if gate == "collect" else _or(ACCEPTED, _eq("quarantined_by", gate))
    fraction_kwargs: dict[str, Any] = {
        "column": "status",
        "value_set": [Status.QUARANTINED.value],
        "mostly": round(1.0 - v.max_quarantine_fraction, 10),
    }
    if seen is not None:
        fraction_kwargs["row_condition"] = seen
    return [
        Check(
            "item_id_not_null",
            "expect_column_values_to_not_be_null",
            {"column": "item_id"},
            why="every input file has an item id",
        ),
        Check(
            "item_id_sha256",
            "expect_column_values_to_match_regex",
            {"column": "item_id", "regex": SHA256_HEX},
            why="item_id is the sha256 of the original bytes: 64 lowercase hex digits",
        ),
        Check(
            "source_uri_unique",
            "expect_column_values_to_be_unique",
            {"column": "source_uri"},
            why="one row per input file",
        ),
        Check(
            "status_in_set",
            "expect_column_values_to_be_in_set",
            {"column": "status", "value_set": [s.value for s in Status]},
            why="status is accepted or quarantined",
        ),
        Check(
            "status_not_null",
            "expect_column_values_to_not_be_null",
            {"column": "status"},
            why="every row ends in exactly one state",
        ),
        Check(
            "reason_in_set",
            "expect_column_values_to_be_in_set",
            {"column": "reason", "value_set": [r.value for r in Reason]},
            why="quarantine reasons come from the Reason vocabulary",
        ),
        Check(
            "reason_when_quarantined",
            "expect_column_values_to_not_be_null",
            {"column": "reason", "row_condition": QUARANTINED},
            why="a quarantined row carries a machine-readable reason",
        ),
        Check(
            "quarantined_by_stage",
            "expect_column_values_to_be_in_set",
            {"column": "quarantined_by", "value_set": list(STAGES), "row_condition": QUARANTINED},
            why="a quarantined row names the stage that quarantined it",
        ),
        Check(
            "accepted_item_id_unique",
            "expect_column_values_to_be_unique",
            {"column": "item_id", "row_condition": ACCEPTED},
            why="byte-identical files are accepted once (others are duplicate_exact)",
        ),
        Check(
            "quarantine_fraction",
            "expect_column_values_to_not_be_in_set",
            fraction_kwargs,
            why=f"at most validate.max_quarantine_fraction of the rows {gate} saw is quarantined",
        ),
        Check(
            "min_accepted",
            "expect_table_row_count_to_be_between",
            {"min_value": v.min_accepted, "row_condition": ACCEPTED},
            why="at least validate.min_accepted items remain accepted",
        ),
    ]


def _collect_checks(params: Params) -> list[Check]:
    checks = [
        Check(
            "storage_or_path_problems",
            "expect_column_values_to_not_be_in_set",
            {
                "column": "reason",
                "value_set": [Reason.UNREADABLE.value, Reason.PATH_ESCAPE.value],
            },
            severity="warning",
            why="unreadable files (often transient storage errors) or paths escaping the root",
        )
    ]
    for col in ("width", "height"):
        checks.append(
            Check(
                f"accepted_{col}_not_null",
                "expect_column_values_to_not_be_null",
                {"column": col, "row_condition": ACCEPTED},
                why=f"an accepted image has a decoded {col}",
            )
        )
        checks.append(
            Check(
                f"accepted_{col}_positive",
                "expect_column_values_to_be_between",
                {"column": col, "min_value": 1, "row_condition": ACCEPTED},
                why=f"an accepted image is at least one pixel in {col}",
            )
        )
    checks.append(
        Check(
            "accepted_object_uri_not_null",
            "expect_column_values_to_not_be_null",
            {"column": "object_uri", "row_condition": ACCEPTED},
            why="an accepted image has a content-addressed copy",
        )
    )
    return checks


def _anonymize_checks(params: Params) -> list[Check]:
    """Fail closed on privacy: every accepted row must carry a complete, clean audit."""
    checks = [
        Check(
            "anonymize_failures",
            "expect_column_values_to_not_be_in_set",
            {"column": "reason", "value_set": [Reason.ANONYMIZE_FAILED.value]},
            severity="warning",
            why="detection or redaction raised on some images (they were held back)",
        )
    ]
    for col, what in (
        ("anonymize_audit_complete", "its anonymization audit is complete"),
        ("anonymize_metadata_stripped", "its metadata was stripped"),
    ):
        checks.append(
            Check(
                f"{col}_not_null",
                "expect_column_values_to_not_be_null",
                {"column": col, "row_condition": ACCEPTED},
                why=f"an accepted image records whether {what}",
            )
        )
        checks.append(
            Check(
                f"{col}_true",
                "expect_column_values_to_be_in_set",
                {"column": col, "value_set": [True], "row_condition": ACCEPTED},
                why=f"an accepted image is published only if {what}",
            )
        )
    checks += [
        Check(
            "anonymize_residual_not_null",
            "expect_column_values_to_not_be_null",
            {"column": "anonymize_residual", "row_condition": ACCEPTED},
            why="an accepted image was verified after redaction",
        ),
        Check(
            "anonymize_residual_zero",
            "expect_column_values_to_be_between",
            {
                "column": "anonymize_residual",
                "min_value": 0,
                "max_value": 0,
                "row_condition": ACCEPTED,
            },
            why="verification finds no face left in a published image",
        ),
        Check(
            "anonymize_object_uri_not_null",
            "expect_column_values_to_not_be_null",
            {"column": "anonymize_object_uri", "row_condition": ACCEPTED},
            why="an accepted image has a published (redacted) copy",
        ),
        Check(
            "anonymize_sha256_hex",
            "expect_column_values_to_match_regex",
            {"column": "anonymize_sha256", "regex": SHA256_HEX, "row_condition": ACCEPTED},
            why="the published bytes are pinned by sha256",
        ),
    ]
    return checks


def _curate_checks(params: Params) -> list[Check]:
    c = params.curate
    checks = []
    for col, (lo, hi) in (
        ("curate_blur_score", UNIT_RANGE),
        ("curate_brightness", UNIT_RANGE),
        ("curate_entropy", ENTROPY_RANGE),
        ("curate_clip_low", UNIT_RANGE),
        ("curate_clip_high", UNIT_RANGE),
        ("curate_channel_spread", LEVEL_RANGE),
    ):
        checks.append(
            Check(
                f"accepted_{col}_not_null",
                "expect_column_values_to_not_be_null",
                {"column": col, "row_condition": ACCEPTED},
                why="an accepted image has its quality metrics",
            )
        )
        # Every computed value (also on rows curate quarantined) must be in range.
        checks.append(
            Check(
                f"{col}_range",
                "expect_column_values_to_be_between",
                {"column": col, "min_value": lo, "max_value": hi},
                why=f"{col} is defined on [{lo:g}, {hi:g}]",
            )
        )
    checks += [
        Check(
            "curate_color_cast_range",
            "expect_column_values_to_be_between",
            {"column": "curate_color_cast", "min_value": 0.0},
            why="a colour cast (mean chroma / chroma spread) is not negative",
        ),
        Check(
            "curate_aspect_ratio_range",
            "expect_column_values_to_be_between",
            {"column": "curate_aspect_ratio", "min_value": 1.0},
            why="the aspect ratio is the longer side over the shorter one",
        ),
    ]
    # Flags that quarantine (params.curate.quarantine) should not remain on accepted rows.
    for flag in c.quarantine:
        checks.append(
            Check(
                f"accepted_not_{flag}",
                "expect_column_values_to_not_be_in_set",
                {"column": f"curate_is_{flag}", "value_set": [True], "row_condition": ACCEPTED},
                severity="warning",
                why=f"an image curate flagged as {flag} is still accepted",
            )
        )
    checks += [
        Check(
            "accepted_curate_phash_not_null",
            "expect_column_values_to_not_be_null",
            {"column": "curate_phash", "row_condition": ACCEPTED},
            why="an accepted image has a perceptual hash for dedup and refresh",
        ),
        Check(
            "curate_phash_hex",
            "expect_column_values_to_match_regex",
            {"column": "curate_phash", "regex": PHASH_HEX},
            why="a 64-bit perceptual hash is 16 lowercase hex digits",
        ),
        Check(
            "curate_day_night_in_set",
            "expect_column_values_to_be_in_set",
            {"column": "curate_day_night", "value_set": ["day", "night"]},
            why="the day/night slice is day or night",
        ),
        # Coverage: every accepted image sits in a joint cell of params.curate.coverage that
        # holds at least coverage_min_count images and at most coverage_max_share of them.
        # (Cells with no image at all are listed in data/curate/gaps.parquet.)
        Check(
            "coverage_min_count",
            "expect_column_values_to_be_between",
            {
                "column": "curate_cell_count",
                "min_value": c.coverage_min_count,
                "row_condition": ACCEPTED,
            },
            severity=c.coverage_severity,
            why="accepted images in coverage cells with fewer than curate.coverage_min_count "
            "images (gaps: data/curate/gaps.parquet)",
        ),
        Check(
            "coverage_max_share",
            "expect_column_values_to_be_between",
            {
                "column": "curate_cell_share",
                "max_value": c.coverage_max_share,
                "row_condition": ACCEPTED,
            },
            severity=c.coverage_severity,
            why="accepted images in coverage cells holding more than "
            "curate.coverage_max_share of the dataset",
        ),
    ]
    return checks


def _import_annotations_checks(params: Params) -> list[Check]:
    v = params.validate_
    tol = float(v.bbox_tolerance_px)
    size_known = _and(_not_null("image_width"), _not_null("image_height"))
    return [
        Check(
            "annotation_id_not_null",
            "expect_column_values_to_not_be_null",
            {"column": "annotation_id"},
            why="every annotation has a stable id",
        ),
        Check(
            "annotation_id_unique",
            "expect_column_values_to_be_unique",
            {"column": "annotation_id"},
            why="an annotation is imported once",
        ),
        Check(
            "category_not_null",
            "expect_column_values_to_not_be_null",
            {"column": "category"},
            why="every annotation names its category",
        ),
        Check(
            "match_status_in_set",
            "expect_column_values_to_be_in_set",
            {"column": "match_status", "value_set": list(MATCH_STATUSES)},
            why="match_status is matched, quarantined_item or unmatched",
        ),
        Check(
            "matched_item_id_not_null",
            "expect_column_values_to_not_be_null",
            {"column": "item_id", "row_condition": _eq("match_status", "matched")},
            why="a matched annotation points at an item",
        ),
        Check(
            "bbox_w_positive",
            "expect_column_values_to_be_between",
            {"column": "bbox_w", "min_value": 0, "strict_min": True},
            why="a box has positive width",
        ),
        Check(
            "bbox_h_positive",
            "expect_column_values_to_be_between",
            {"column": "bbox_h", "min_value": 0, "strict_min": True},
            why="a box has positive height",
        ),
        Check(
            "bbox_x_inside",
            "expect_column_values_to_be_between",
            {"column": "bbox_x", "min_value": -tol},
            why="a box starts inside the image (validate.bbox_tolerance_px slack)",
        ),
        Check(
            "bbox_y_inside",
            "expect_column_values_to_be_between",
            {"column": "bbox_y", "min_value": -tol},
            why="a box starts inside the image (validate.bbox_tolerance_px slack)",
        ),
        Check(
            "bbox_right_inside",
            "expect_column_values_to_be_between",
            {"column": BBOX_RIGHT_OVERFLOW, "max_value": tol, "row_condition": size_known},
            why="x + w <= image_width (+ tolerance) where the image size is known",
        ),
        Check(
            "bbox_bottom_inside",
            "expect_column_values_to_be_between",
            {"column": BBOX_BOTTOM_OVERFLOW, "max_value": tol, "row_condition": size_known},
            why="y + h <= image_height (+ tolerance) where the image size is known",
        ),
        Check(
            "unmatched_fraction",
            "expect_column_values_to_not_be_in_set",
            {
                "column": "match_status",
                "value_set": ["unmatched"],
                "mostly": round(1.0 - v.max_unmatched_annotation_fraction, 10),
            },
            why="at most validate.max_unmatched_annotation_fraction of annotations match no image",
        ),
        Check(
            "on_quarantined_items",
            "expect_column_values_to_not_be_in_set",
            {"column": "match_status", "value_set": ["quarantined_item"]},
            severity="warning",
            why="annotations on quarantined images are dropped from the snapshot",
        ),
    ]


def _refresh_checks(params: Params) -> list[Check]:
    r = params.refresh
    return [
        Check(
            "drift_columns",
            "expect_table_columns_to_match_set",
            {"column_set": list(DRIFT_COLUMNS), "exact_match": False},
            why="the drift table has every column of the contract",
        ),
        Check(
            "feature_not_null",
            "expect_column_values_to_not_be_null",
            {"column": "feature"},
            why="every drift row names its feature",
        ),
        Check(
            "feature_test_unique",
            "expect_compound_columns_to_be_unique",
            {"column_list": ["feature", "test"]},
            why="one row per feature and test",
        ),
        Check(
            "p_value_range",
            "expect_column_values_to_be_between",
            {"column": "p_value", "min_value": 0.0, "max_value": 1.0},
            why="a p-value is a probability",
        ),
        Check(
            "drifted_not_null",
            "expect_column_values_to_not_be_null",
            {"column": "drifted"},
            why="every feature has a drift verdict",
        ),
        Check(
            "drifted_share",
            "expect_column_values_to_not_be_in_set",
            {
                "column": "drifted",
                "value_set": [True],
                "mostly": round(1.0 - r.dataset_drift_share, 10),
            },
            severity="warning",
            why="share of drifted features above refresh.dataset_drift_share: the data drifted",
        ),
        Check(
            "statistic_non_negative",
            "expect_column_values_to_be_between",
            {"column": "statistic", "min_value": 0.0},
            why="every drift statistic is a distance or an effect size (>= 0)",
        ),
        # The verdicts of visionloop/refresh/drift.py's dataset and image-level rows: the
        # refresh snapshot's gate (severity refresh.drift_severity: warning reports, error
        # blocks the snapshot until someone looks).
        Check(
            "dataset_not_drifted",
            "expect_column_values_to_not_be_in_set",
            {"column": "drifted", "value_set": [True], "row_condition": _eq("feature", "dataset")},
            severity=r.drift_severity,
            why="the incoming items drifted as a whole (refresh.dataset_drift_share of features)",
        ),
        Check(
            "embedding_not_drifted",
            "expect_column_values_to_not_be_in_set",
            {
                "column": "drifted",
                "value_set": [True],
                "row_condition": _eq("feature", "embedding"),
            },
            severity=r.drift_severity,
            why="the incoming images differ from the reference (MMD on the image embedding)",
        ),
    ]


_BUILDERS = {
    "collect": lambda p: _collect_checks(p),
    "anonymize": lambda p: _anonymize_checks(p),
    "curate": lambda p: _curate_checks(p),
    "import_annotations": lambda p: _import_annotations_checks(p),
    "refresh": lambda p: _refresh_checks(p),
}


def _qa_checks(params: Params) -> list[Check]:
    """The QA findings table: its contract, and no finding of an error-level check."""
    from visionloop.qa.checks import CHECKS, FINDING_COLUMNS, GX_COVERED, SEVERITIES, error_checks

    q = params.validate_.qa
    checks = [
        Check(
            "qa_findings_columns",
            "expect_table_columns_to_match_set",
            {"column_set": list(FINDING_COLUMNS), "exact_match": False},
            why="the label-QA findings table has every column of its contract",
        ),
        Check(
            "qa_severity_in_set",
            "expect_column_values_to_be_in_set",
            {"column": "severity", "value_set": list(SEVERITIES)},
            why="a QA finding is an error, a warning or an info",
        ),
        Check(
            "qa_check_known",
            "expect_column_values_to_be_in_set",
            {"column": "check", "value_set": sorted(CHECKS)},
            why="every QA finding comes from a catalogued check",
        ),
    ]
    if not q.enabled:
        return checks
    for name in error_checks(q.severity):
        if name in GX_COVERED:
            continue
        checks.append(
            Check(
                f"qa_{name}",
                "expect_column_values_to_not_be_in_set",
                {"column": "check", "value_set": [name]},
                why=f"label QA (error level): {CHECKS[name].what}",
            )
        )
    return checks


_COMPANION_BUILDERS = {QA_TABLE: _qa_checks}


def companion_checks(gate: str, params: Params) -> dict[str, list[Check]]:
    """The checks of each companion table of ``gate`` (``{}`` for most gates)."""
    if gate not in _BUILDERS:
        raise KeyError(f"unknown gate {gate!r}; known: {', '.join(GATES)}")
    return {t: _COMPANION_BUILDERS[t](params) for t in GATE_COMPANIONS.get(gate, ())}


def companion_tables(
    gate: str, df: pd.DataFrame, params: Params, ws: Any = None
) -> dict[str, pd.DataFrame]:
    """Build the companion tables of ``gate`` from its table ``df`` (``ws``, a Workspace, lets
    QA see the curate manifest and categories.json; without it QA sees the table alone)."""
    out: dict[str, pd.DataFrame] = {}
    for table in GATE_COMPANIONS.get(gate, ()):
        if table == QA_TABLE:
            from visionloop.qa.run import qa_findings_for_gate

            out[table] = qa_findings_for_gate(df, params, ws)
    return out


def gate_checks(gate: str, params: Params) -> list[Check]:
    """The checks of one gate's own table, in a fixed order (the order of the stored suite)."""
    if gate not in _BUILDERS:
        raise KeyError(f"unknown gate {gate!r}; known: {', '.join(GATES)}")
    checks = _manifest_checks(gate, params) if GATE_TABLES[gate] == "manifest.parquet" else []
    checks += _BUILDERS[gate](params)
    keys = [c.key for c in checks]
    if len(keys) != len(set(keys)):  # a programming error, caught by the tests
        raise ValueError(f"duplicate check keys in gate {gate!r}: {keys}")
    return checks


def suite_hash(checks: list[Check]) -> str:
    """A short version id of a suite: sha256 of its canonical check configs (12 hex digits)."""
    blob = json.dumps([c.config() for c in checks], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


def gate_suite_hash(gate: str, params: Params) -> str:
    """The gate's version: its own checks and its companion tables' checks."""
    checks = gate_checks(gate, params)
    for table_checks in companion_checks(gate, params).values():
        checks += table_checks
    return suite_hash(checks)


def prepare_table(gate: str, df: pd.DataFrame) -> pd.DataFrame:
    """Add the derived columns a gate's checks refer to (a copy; the input is not changed).

    GX has no pandas expectation comparing a sum of two columns with a third, so the box
    overflow past the right/bottom edge is derived here and checked as a plain column range.
    """
    if gate != "import_annotations":
        return df
    out = df.copy()
    for name, pos, size, extent in (
        (BBOX_RIGHT_OVERFLOW, "bbox_x", "bbox_w", "image_width"),
        (BBOX_BOTTOM_OVERFLOW, "bbox_y", "bbox_h", "image_height"),
    ):
        if all(c in out.columns for c in (pos, size, extent)):
            vals = (
                pd.to_numeric(out[pos], errors="coerce")
                + pd.to_numeric(out[size], errors="coerce")
                - pd.to_numeric(out[extent], errors="coerce")
            )
            out[name] = vals.astype("float64")
        else:
            out[name] = np.nan
    return out


def _stable_id(*parts: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, "/".join(parts)))


def build_suite(gate: str, params: Params, table: str | None = None) -> ExpectationSuite:
    """Build the GX suite of a gate (or of its companion ``table``) with ids derived from its
    content (byte-stable JSON).

    GX gives new suites and expectations random ids; stable ids make the stored suite file a
    pure function of the params, so rerunning with the same params leaves ``gx/expectations/``
    byte-identical and a changed threshold shows up as a meaningful diff.
    """
    import great_expectations as gx
    from great_expectations.expectations.metadata_types import FailureSeverity
    from great_expectations.expectations.registry import get_expectation_impl
    from great_expectations.expectations.row_conditions import deserialize_row_condition

    version = gate_suite_hash(gate, params)
    meta: dict[str, Any] = {"visionloop_suite_hash": version, "visionloop_gate": gate}
    if table is None:
        checks = gate_checks(gate, params)
        name = suite_name(gate)
    else:
        companions = companion_checks(gate, params)
        if table not in companions:
            raise KeyError(f"gate {gate!r} has no companion table {table!r}")
        checks = companions[table]
        name = suite_name(companion_asset(gate, table))
        meta["visionloop_table"] = table
    suite = gx.ExpectationSuite(name=name, id=_stable_id(name, version), meta=meta)
    for check in checks:
        kwargs = dict(check.kwargs)
        if "row_condition" in kwargs:
            kwargs["row_condition"] = deserialize_row_condition(kwargs["row_condition"])
        impl = get_expectation_impl(check.type)
        expectation = impl(
            **kwargs,
            id=_stable_id(name, version, check.key),
            severity=(
                FailureSeverity.CRITICAL if check.severity == "error" else FailureSeverity.WARNING
            ),
            meta={"key": check.key, "severity": check.severity, "why": check.why},
        )
        suite.expectations.append(expectation)
    return suite
