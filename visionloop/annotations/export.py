"""Export the canonical table to annotation formats, with a loss report that says exactly what
the target could not carry (it never drops anything silently).

``export_table(df, categories, fmt, out)`` dispatches to the format module's ``save_<fmt>``
(``WRITERS``: coco, yolo, label_studio, cvat). Each writer fills a ``LossReport``:

- ``not_written``: rows the format cannot hold at all (a polyline in COCO, a row without an
  image size in YOLO), by reason, with counts and example annotation ids;
- ``lost``: rows that were written but lost or changed something (an oriented box written as a
  polygon, an annotator YOLO has no place for), by column/feature, with counts and examples.

A round trip import -> export -> import gives back the same ``CONTENT_COLUMNS`` for every row
the report does not name; the provenance columns (ids, source file and pointer, source ids) and
the match columns describe where a row came from and are expected to change.

Tables are read and written with their category map beside them:
``TABLE.parquet`` + ``TABLE.categories.json`` (the import stage's ``categories.json`` layout).
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import pandas as pd

from visionloop import storage
from visionloop.annotations.table import (
    AnnotationImportError,
    CategoryMap,
    annotations_to_arrow,
    ref_escape,
    with_all_columns,
)

log = logging.getLogger(__name__)

# What a row *is*; the rest is where it came from (provenance) or what it matched.
CONTENT_COLUMNS: tuple[str, ...] = (
    "image_ref",
    "subset",
    "category",
    "category_id",
    "shape",
    "bbox_x",
    "bbox_y",
    "bbox_w",
    "bbox_h",
    "segmentation",
    "obb",
    "keypoints",
    "iscrowd",
    "image_width",
    "image_height",
    "image_sha256",
    "annotator",
    "score",
    "attributes",
    "track_id",
    "frame",
)
MAX_EXAMPLES = 5

_WRITERS: dict[str, str] = {
    "coco": "visionloop.annotations.formats.coco:save_coco",
    "yolo": "visionloop.annotations.formats.yolo:save_yolo",
    "label_studio": "visionloop.annotations.formats.label_studio:save_label_studio",
    "cvat": "visionloop.annotations.formats.cvat:save_cvat",
}
WRITERS = MappingProxyType(_WRITERS)


@dataclass
class _Tally:
    why: str
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, example: str) -> None:
        self.count += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(example)


@dataclass
class LossReport:
    """What an export wrote, and everything it could not carry."""

    format: str
    rows: int = 0
    written: int = 0
    files: list[str] = field(default_factory=list)
    not_written: dict[str, _Tally] = field(default_factory=dict)
    lost: dict[str, _Tally] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def skip(self, row_id: str, reason: str, why: str) -> None:
        """A row that is not in the output at all."""
        self.not_written.setdefault(reason, _Tally(why)).add(row_id)

    def lose(self, row_id: str, what: str, why: str) -> None:
        """A written row that lost or changed ``what`` (a column or a feature)."""
        self.lost.setdefault(what, _Tally(why)).add(row_id)

    @property
    def lossless(self) -> bool:
        return not self.not_written and not self.lost

    @property
    def skipped(self) -> int:
        return sum(t.count for t in self.not_written.values())

    def to_dict(self) -> dict[str, Any]:
        def tallies(d: Mapping[str, _Tally]) -> dict[str, Any]:
            return {
                k: {"count": t.count, "why": t.why, "examples": t.examples}
                for k, t in sorted(d.items())
            }

        return {
            "format": self.format,
            "rows": self.rows,
            "written": self.written,
            "not_written": self.skipped,
            "lossless": self.lossless,
            "files": self.files,
            "not_written_by_reason": tallies(self.not_written),
            "lost_by_feature": tallies(self.lost),
            "notes": self.notes,
        }

    def lines(self) -> list[str]:
        """Human-readable summary (what the CLI prints)."""
        out = [f"{self.format}: {self.written} of {self.rows} annotation(s) written"]
        for reason, t in sorted(self.not_written.items()):
            out.append(f"  NOT WRITTEN {t.count}: {reason}: {t.why} (e.g. {t.examples[0]})")
        for what, t in sorted(self.lost.items()):
            out.append(f"  LOST {t.count}: {what}: {t.why} (e.g. {t.examples[0]})")
        out.extend(f"  note: {n}" for n in self.notes)
        return out


# --------------------------------------------------------------------------------------------
# Row helpers shared by the writers


def is_null(v: Any) -> bool:
    if v is None:
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def value(row: Any, name: str) -> Any:
    """A row attribute as a plain Python value, None for nulls."""
    v = getattr(row, name, None)
    if is_null(v):
        return None
    if hasattr(v, "item"):
        return v.item()
    return v


def attributes_of(row: Any) -> dict[str, Any]:
    raw = value(row, "attributes")
    if not raw:
        return {}
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError:
        return {"_attributes": raw}
    return doc if isinstance(doc, dict) else {"_attributes": doc}


def json_value(row: Any, name: str) -> Any:
    raw = value(row, name)
    return None if raw is None else json.loads(raw)


def note_columns(report: LossReport, row: Any, columns: Iterable[str], fmt_name: str) -> None:
    """Record a loss for each of ``columns`` this row has a value in."""
    for col in columns:
        v = value(row, col)
        if v is None or (col == "iscrowd" and not v) or (col == "attributes" and v in ("{}",)):
            continue
        report.lose(row.annotation_id, col, f"{fmt_name} has no place for {col}")


def polygon_area(poly: list[float]) -> float:
    xs, ys = poly[0::2], poly[1::2]
    n = len(xs)
    return abs(sum(xs[i] * ys[(i + 1) % n] - xs[(i + 1) % n] * ys[i] for i in range(n))) / 2


def fmt_num(v: float) -> str:
    """A float as short as it round-trips (ints without ".0" only when integral)."""
    return repr(float(v))


# --------------------------------------------------------------------------------------------
# Tables on disk


def categories_path(table_path: str) -> str:
    base = table_path[: -len(".parquet")] if table_path.endswith(".parquet") else table_path
    return f"{base}.categories.json"


def write_annotation_table(df: pd.DataFrame, categories: CategoryMap, path: str) -> None:
    """``TABLE.parquet`` (ANNOTATION_SCHEMA) + ``TABLE.categories.json`` beside it."""
    storage.write_table(path, annotations_to_arrow(df))
    storage.write_text_atomic(
        categories_path(path), json.dumps(categories.to_json(), indent=2) + "\n"
    )


def read_annotation_table(path: str) -> tuple[pd.DataFrame, CategoryMap]:
    """A table and its category map (from the sibling ``.categories.json``, or the import
    stage's ``categories.json`` in the same folder, else derived from the rows)."""
    if not storage.exists(path):
        raise AnnotationImportError(f"annotation table {path} does not exist")
    df = with_all_columns(storage.read_table(path))
    for cand in (categories_path(path), storage.join(storage.dirname(path), "categories.json")):
        if storage.exists(cand):
            return df, CategoryMap.from_json(json.loads(storage.read_text(cand)))
    cmap = CategoryMap()
    pairs = df[["category_id", "category"]].drop_duplicates().sort_values("category_id")
    for cid, name in pairs.itertuples(index=False):
        cmap._ids.setdefault(str(name), int(cid))
    return df, cmap


def check_categories(df: pd.DataFrame, categories: CategoryMap) -> None:
    """Every row's (category, category_id) must agree with the map: a writer numbers classes
    from it, and a mismatch would silently relabel objects."""
    if not len(df):
        return
    pairs = df[["category", "category_id"]].drop_duplicates()
    for name, cid in pairs.itertuples(index=False):
        if name not in categories or categories.id_of(name) != int(cid):
            raise AnnotationImportError(
                f"row category {name!r} (id {cid}) is not in the category map as such; "
                "rebuild the map (e.g. re-import) before exporting"
            )


def export_table(
    df: pd.DataFrame,
    categories: CategoryMap,
    fmt: str,
    out: str,
    **options: Any,
) -> LossReport:
    """Write ``df`` as ``fmt`` at ``out``; returns the loss report (also written beside the
    output as ``<out>.loss.json`` unless ``report=False``)."""
    if fmt not in _WRITERS:
        raise KeyError(f"unknown export format {fmt!r}; known: {', '.join(sorted(_WRITERS))}")
    df = with_all_columns(df)
    check_categories(df, categories)
    module, func = _WRITERS[fmt].split(":")
    write_report = options.pop("report", True)
    # An image reference that leaves the dataset root is never written anywhere.
    unsafe = df["image_ref"].map(lambda r: ref_escape(r) is not None).astype(bool)
    report: LossReport = getattr(importlib.import_module(module), func)(
        df[~unsafe], categories, out, **options
    )
    for rid, ref in df.loc[unsafe, ["annotation_id", "image_ref"]].itertuples(index=False):
        report.skip(rid, "path_escape", f"image reference escapes the dataset root ({ref!r})")
    report.rows = len(df)
    if write_report:
        loss_uri = out.rstrip("/") + ".loss.json"
        storage.write_text_atomic(loss_uri, json.dumps(report.to_dict(), indent=2) + "\n")
        report.files.append(loss_uri)
    for line in report.lines():
        log.info(line)
    return report


def label_path(image_ref: str) -> str:
    """A relative path derived from an image reference for files an exporter writes per image
    (URLs give their path part). Raises ``AnnotationImportError`` when it would leave the
    output folder."""
    from visionloop.annotations.table import is_url, safe_join_rel

    ref = image_ref
    if is_url(ref):
        ref = ref.split("://", 1)[1].split("/", 1)[-1] if "/" in ref.split("://", 1)[1] else ""
    ref = ref.split("?", 1)[0]
    stem = posixpath.splitext(ref.replace("\\", "/"))[0]
    return safe_join_rel(stem)


def finite(*values: Any) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def import_to_table(
    path: str,
    fmt: str,
    out: str,
    *,
    images: Any = None,
    limits: Any = None,
) -> Any:
    """Import ``path`` (format ``fmt``) straight into ``out`` (Parquet) + its category map.
    COCO is streamed (bounded memory: ``ImportResult.annotations`` is then empty and
    ``rows`` says how many were written); other formats are read, then written."""
    from visionloop.annotations.formats import get_reader
    from visionloop.annotations.table import DEFAULT_LIMITS, ParquetSink

    limits = limits or DEFAULT_LIMITS
    if fmt == "coco":
        from visionloop.annotations.formats.coco import load_coco

        sink = ParquetSink(out)
        try:
            result = load_coco(path, images=images, limits=limits, sink=sink)
        except BaseException:
            sink.abort()
            raise
        sink.close()
        result.rows = sink.rows
        storage.write_text_atomic(
            categories_path(out), json.dumps(result.categories.to_json(), indent=2) + "\n"
        )
        return result
    result = get_reader(fmt).load(path, images=images, limits=limits)
    write_annotation_table(result.annotations, result.categories, out)
    result.rows = len(result.annotations)
    return result
