"""The canonical annotation table, its category map and the coordinate checks every reader uses.

Readers (one module per format under ``formats/``) turn an export into ``AnnotationRecord``s and
``ImportIssue``s; this module owns what is common to all of them, so that a box with NaN or a
negative width is rejected the same way whether it came from COCO or YOLO:

- ``check_box`` / ``check_polygons``: geometry in absolute pixels is finite, non-degenerate,
  not absurd, and inside the image (a small overhang, e.g. YOLO-OBB corners a tenth of a pixel
  outside, is clipped with a warning; anything further out is an error and is not imported).
- ``CategoryMap``: canonical ids 0..K-1 in *first-seen* order (sources in the order they are
  listed, and within a source in ascending source-id order), with every source's
  source-id -> canonical-id map kept beside it. First-seen rather than sorted-by-name so that
  adding a category later appends an id instead of renumbering the existing ones, and so that a
  YOLO export's class indices usually equal the canonical ids.
- ``TableBuilder``: records -> Arrow batches (bounded memory for large exports) -> DataFrame with
  ``ANNOTATION_SCHEMA``.
- ``combine_results``: several ``ImportResult``s -> one table with one category map.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa

from visionloop.schema import ANNOTATION_SCHEMA

UNMATCHED = "unmatched"

# Images a reader may look sizes up in (the curate manifest): relative path -> (width, height).
KnownImages = Mapping[str, tuple[int | None, int | None]]

IMAGE_COLUMNS: tuple[str, ...] = (
    "image_ref",
    "subset",
    "width",
    "height",
    "image_sha256",
    "source_format",
    "source_file",
    "source_pointer",
)


class AnnotationImportError(ValueError):
    """A source cannot be read at all (missing path, unknown layout); per-record problems are
    ``ImportIssue``s instead, so one bad box never stops an import."""


@dataclass(frozen=True)
class ImportIssue:
    """One problem found while importing: where (file + JSON pointer or line) and why."""

    level: str  # "error" (record not imported) | "warning" (imported, but look at it)
    code: str  # machine-readable: invalid_bbox, unknown_category, malformed_json, ...
    file: str
    pointer: str  # JSON pointer ("/annotations/17/bbox"), "line 3", or "" for the whole file
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.pointer}" if self.pointer else self.file
        return f"{where}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        return {**asdict(self), "text": str(self)}


@dataclass(frozen=True)
class Limits:
    """The coordinate rules (from ``params.import_annotations``)."""

    out_of_bounds_tolerance: float = 0.01  # fraction of the image side, at least MIN_OVERHANG_PX
    max_coordinate: float = 100_000.0

    def overhang(self, side: float) -> float:
        return max(MIN_OVERHANG_PX, self.out_of_bounds_tolerance * side)


MIN_OVERHANG_PX = 1.0  # rounding of normalised coordinates alone can reach a pixel
# Below this the overhang is float noise (0.133333 - 0.266667 / 2 < 0): clipped without a word.
SILENT_OVERHANG_PX = 0.01
DEFAULT_LIMITS = Limits()


@dataclass(slots=True)
class AnnotationRecord:
    """One annotation, in the column order of ``ANNOTATION_SCHEMA`` (slots: large exports)."""

    annotation_id: str
    image_ref: str
    category: str
    category_id: int
    source_format: str
    source_file: str
    source_pointer: str
    source_category_id: str | None = None
    bbox_x: float | None = None
    bbox_y: float | None = None
    bbox_w: float | None = None
    bbox_h: float | None = None
    segmentation: str | None = None
    iscrowd: bool = False
    image_width: int | None = None
    image_height: int | None = None
    annotator: str | None = None
    attributes: str | None = None
    subset: str | None = None
    image_sha256: str | None = None
    source_annotation_id: str | None = None
    item_id: str | None = None
    match_status: str = UNMATCHED
    match_method: str | None = None


@dataclass(slots=True)
class ImageRecord:
    """An image an export declares (with or without annotations): lets the report tell an image
    labelled as empty from one nobody labelled, and compare declared sizes with the manifest."""

    image_ref: str
    source_format: str
    source_file: str
    source_pointer: str
    subset: str | None = None
    width: int | None = None
    height: int | None = None
    image_sha256: str | None = None


def empty_annotations() -> pd.DataFrame:
    return ANNOTATION_SCHEMA.empty_table().to_pandas()


def empty_images() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in IMAGE_COLUMNS})


def annotations_to_arrow(df: pd.DataFrame) -> pa.Table:
    """The DataFrame as an Arrow table with exactly ``ANNOTATION_SCHEMA`` (for writing)."""
    return pa.Table.from_pandas(
        df[list(ANNOTATION_SCHEMA.names)], schema=ANNOTATION_SCHEMA, preserve_index=False
    )


class TableBuilder:
    """Collects records and turns them into Arrow batches every ``batch_size`` rows, so a
    million-annotation export is held as compact columns rather than Python objects."""

    def __init__(self, batch_size: int = 20_000) -> None:
        self._batch_size = batch_size
        self._pending: list[AnnotationRecord] = []
        self._batches: list[pa.RecordBatch] = []
        self.count = 0

    def add(self, record: AnnotationRecord) -> None:
        self._pending.append(record)
        self.count += 1
        if len(self._pending) >= self._batch_size:
            self._flush()

    def extend(self, records: Iterable[AnnotationRecord]) -> None:
        for r in records:
            self.add(r)

    def _flush(self) -> None:
        if not self._pending:
            return
        cols = {name: [getattr(r, name) for r in self._pending] for name in ANNOTATION_SCHEMA.names}
        self._batches.append(pa.RecordBatch.from_pydict(cols, schema=ANNOTATION_SCHEMA))
        self._pending = []

    def build(self) -> pd.DataFrame:
        self._flush()
        if not self._batches:
            return empty_annotations()
        return pa.Table.from_batches(self._batches, schema=ANNOTATION_SCHEMA).to_pandas()


class CategoryMap:
    """Category names -> canonical ids 0..K-1 in first-seen order, plus per-source maps.

    A source declares its categories with ``register(source_file, source_id, name)``; the same
    name from another source (or twice in one source) gets the same canonical id. Names are
    compared exactly after stripping surrounding white space.
    """

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self.source_maps: dict[str, dict[str, int]] = {}

    def register(self, source_file: str, source_id: Any, name: str) -> int:
        name = str(name).strip()
        cid = self._ids.setdefault(name, len(self._ids))
        self.source_maps.setdefault(source_file, {})[str(source_id)] = cid
        return cid

    def id_of(self, name: str) -> int:
        return self._ids[name.strip()]

    def names(self) -> list[str]:
        return list(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.strip() in self._ids

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> CategoryMap:
        """Rebuild the map from a ``categories.json`` document."""
        cmap = cls()
        for cat in sorted(doc.get("categories", []), key=lambda c: int(c["id"])):
            cmap._ids[str(cat["name"])] = int(cat["id"])
        cmap.source_maps = {
            s: {k: int(v) for k, v in m.items()} for s, m in doc.get("source_maps", {}).items()
        }
        return cmap

    def to_json(self) -> dict[str, Any]:
        """The ``categories.json`` document of the COLUMNS contract."""
        return {
            "categories": [{"id": i, "name": n} for n, i in self._ids.items()],
            "source_maps": {s: dict(m) for s, m in self.source_maps.items()},
        }


@dataclass
class ImportResult:
    """What one reader got out of one source: the table, its categories, the images it declares
    and every problem found (errors were not imported; warnings were)."""

    format: str
    source: str
    annotations: pd.DataFrame
    categories: CategoryMap
    images: pd.DataFrame = field(default_factory=empty_images)
    issues: list[ImportIssue] = field(default_factory=list)

    @property
    def errors(self) -> list[ImportIssue]:
        return [i for i in self.issues if i.level == "error"]

    @property
    def warnings(self) -> list[ImportIssue]:
        return [i for i in self.issues if i.level == "warning"]


def images_frame(images: Sequence[ImageRecord]) -> pd.DataFrame:
    if not images:
        return empty_images()
    df = pd.DataFrame([{c: getattr(im, c) for c in IMAGE_COLUMNS} for im in images])
    for c in ("width", "height"):
        df[c] = df[c].astype("Int64")
    return df


@dataclass
class CombinedImport:
    annotations: pd.DataFrame
    categories: CategoryMap
    images: pd.DataFrame
    issues: list[ImportIssue]


def combine_results(results: Sequence[ImportResult]) -> CombinedImport:
    """Merge several sources into one table with one canonical category map (first-seen order
    over the sources as listed)."""
    cmap = CategoryMap()
    tables, images, issues = [], [], []
    for res in results:
        local_names = res.categories.names()  # index = the result's own canonical id
        for source_file, smap in res.categories.source_maps.items():
            for sid, local_id in smap.items():
                cmap.register(source_file, sid, local_names[local_id])
        df = res.annotations
        if len(df):
            df = df.copy()
            df["category_id"] = df["category"].map(cmap.id_of).astype("int32")
            tables.append(df)
        if len(res.images):
            images.append(res.images)
        issues.extend(res.issues)
    annotations = pd.concat(tables, ignore_index=True) if tables else empty_annotations()
    return CombinedImport(
        annotations=annotations,
        categories=cmap,
        images=pd.concat(images, ignore_index=True) if images else empty_images(),
        issues=issues,
    )


# --------------------------------------------------------------------------------------------
# Coordinate checks


@dataclass(frozen=True)
class GeometryCheck:
    """The verdict on one geometry: ``box`` is None when rejected (``error`` says why); a
    ``warning`` means it was imported but changed (clipped) or is otherwise worth a look."""

    box: tuple[float, float, float, float] | None
    error: str | None = None
    warning: str | None = None


_REAL_TYPES = (int, float)


def _is_real(v: Any) -> bool:
    return type(v) in _REAL_TYPES  # exact types: bool and numpy scalars take the slow path


def _number_problem(name: str, v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return f"{name} is not a number ({v!r})"
    if math.isnan(v):
        return f"{name} is NaN"
    if math.isinf(v):
        return f"{name} is infinite ({v})"
    return None


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def _clip_to_image(
    x0: float,
    y0: float,
    x1: float,
    y1: float,
    width: int | None,
    height: int | None,
    limits: Limits,
    what: str,
) -> GeometryCheck:
    """Bounds rule shared by boxes and polygons (corners in absolute pixels)."""
    if width is None or height is None:
        return GeometryCheck((x0, y0, x1 - x0, y1 - y0))
    tx, ty = limits.overhang(width), limits.overhang(height)
    if x0 < -tx or y0 < -ty or x1 > width + tx or y1 > height + ty:
        return GeometryCheck(
            None,
            error=(
                f"{what} [{_fmt(x0)}, {_fmt(y0)}, {_fmt(x1)}, {_fmt(y1)}] (x0,y0,x1,y1) lies "
                f"outside the {width}x{height} image by more than the tolerance "
                f"({_fmt(tx)} x {_fmt(ty)} px)"
            ),
        )
    cx0, cy0 = min(max(x0, 0.0), float(width)), min(max(y0, 0.0), float(height))
    cx1, cy1 = min(max(x1, 0.0), float(width)), min(max(y1, 0.0), float(height))
    if cx1 - cx0 <= 0 or cy1 - cy0 <= 0:
        return GeometryCheck(None, error=f"{what} has no area inside the {width}x{height} image")
    box = (cx0, cy0, cx1 - cx0, cy1 - cy0)
    overhang = max(cx0 - x0, cy0 - y0, x1 - cx1, y1 - cy1)
    if overhang > SILENT_OVERHANG_PX:
        return GeometryCheck(
            box,
            warning=(
                f"{what} [{_fmt(x0)}, {_fmt(y0)}, {_fmt(x1)}, {_fmt(y1)}] overhangs the "
                f"{width}x{height} image within the tolerance: box clipped to it"
            ),
        )
    return GeometryCheck(box)


def check_box(
    x: Any,
    y: Any,
    w: Any,
    h: Any,
    image_width: int | None = None,
    image_height: int | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> GeometryCheck:
    """Validate an absolute-pixel xywh box (NaN, infinite, negative or zero size, absurd,
    outside the image) and clip a small overhang."""
    if not (_is_real(x) and _is_real(y) and _is_real(w) and _is_real(h)) or not math.isfinite(
        x + y + w + h
    ):
        for name, v in zip(("x", "y", "width", "height"), (x, y, w, h), strict=True):
            problem = _number_problem(f"bbox {name}", v)
            if problem:
                return GeometryCheck(None, error=problem)
    if w < 0 or h < 0:
        return GeometryCheck(None, error=f"bbox has a negative size ({_fmt(w)} x {_fmt(h)})")
    if w == 0 or h == 0:
        return GeometryCheck(None, error=f"bbox has zero area ({_fmt(w)} x {_fmt(h)})")
    worst = max(abs(x), abs(y), abs(x + w), abs(y + h))
    if worst > limits.max_coordinate:
        return GeometryCheck(
            None,
            error=f"bbox coordinate {_fmt(worst)} is absurd (above {_fmt(limits.max_coordinate)})",
        )
    return _clip_to_image(
        float(x), float(y), float(x + w), float(y + h), image_width, image_height, limits, "bbox"
    )


def check_polygons(
    polygons: Any,
    image_width: int | None = None,
    image_height: int | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> GeometryCheck:
    """Validate COCO-style polygons ``[[x1, y1, x2, y2, ...], ...]`` in absolute pixels and
    return their (clipped) bounding box."""
    if not isinstance(polygons, list) or not polygons:
        return GeometryCheck(None, error="segmentation is not a list of polygons")
    xs: list[float] = []
    ys: list[float] = []
    for k, poly in enumerate(polygons):
        if not isinstance(poly, list):
            return GeometryCheck(None, error=f"polygon {k} is not a list of numbers")
        if len(poly) % 2 or len(poly) < 6:
            return GeometryCheck(
                None,
                error=f"polygon {k} has {len(poly)} values; needs an even count of at least 6 "
                "(3 points)",
            )
        # Fast path: one C-level pass proves all values are finite numbers (the sum of finite
        # values is finite unless absurd, which the slow path then names).
        if not all(map(_is_real, poly)) or not math.isfinite(sum(poly)):
            for j, v in enumerate(poly):
                problem = _number_problem(f"polygon {k} value {j}", v)
                if problem:
                    return GeometryCheck(None, error=problem)
            return GeometryCheck(None, error=f"polygon {k} coordinates are absurd")
        xs.extend(poly[0::2])
        ys.extend(poly[1::2])
    worst = max(max(map(abs, xs)), max(map(abs, ys)))
    if worst > limits.max_coordinate:
        return GeometryCheck(
            None,
            error=f"polygon coordinate {_fmt(worst)} is absurd "
            f"(above {_fmt(limits.max_coordinate)})",
        )
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    if x1 - x0 <= 0 or y1 - y0 <= 0:
        return GeometryCheck(None, error="polygon has zero area (all points on a line)")
    return _clip_to_image(
        float(x0), float(y0), float(x1), float(y1), image_width, image_height, limits, "polygon"
    )


def check_image_size(width: Any, height: Any) -> tuple[int | None, int | None, str | None]:
    """An export's declared image size as ints, or (None, None, why) when it is unusable."""
    if width is None and height is None:
        return None, None, None
    for name, v in (("width", width), ("height", height)):
        problem = _number_problem(name, v)
        if problem:
            return None, None, f"image {problem}; size treated as unknown"
        if v <= 0 or v != int(v):
            return None, None, f"image {name} {v!r} is not a positive integer; size unknown"
    return int(width), int(height), None


def polygons_json(polygons: list[list[float]]) -> str:
    """``dumps(polygons)`` for validated polygons, without the encoder's overhead (the
    importer writes one per annotation)."""
    return "[" + ",".join("[" + ",".join(map(repr, p)) + "]" for p in polygons) + "]"


def dumps(obj: Any) -> str:
    """Compact, deterministic JSON for the ``segmentation`` and ``attributes`` columns."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, allow_nan=False)


def category_counts(df: pd.DataFrame) -> dict[str, int]:
    if not len(df):
        return {}
    return {str(k): int(v) for k, v in df["category"].value_counts().sort_index().items()}
