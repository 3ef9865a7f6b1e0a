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
- The geometry convention beyond boxes (``shape``, ``obb``, ``keypoints``; see the section
  "Shapes, predictions and the geometry convention"), predictions kept apart by annotator
  (``prediction:<model_version>``), and ``ref_escape``: no image reference may leave the
  dataset root.
- ``ParquetSink``: a builder's batches streamed into a Parquet file (bounded memory).
"""

from __future__ import annotations

import json
import math
import os
import re
import uuid
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
    shape: str | None = None
    obb: str | None = None
    keypoints: str | None = None
    track_id: int | None = None
    frame: int | None = None
    score: float | None = None


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


def with_all_columns(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with every ``ANNOTATION_SCHEMA`` column, in schema order: a table written before
    a nullable column was added gets it as nulls, so old tables keep reading and writing."""
    missing = [n for n in ANNOTATION_SCHEMA.names if n not in df.columns]
    if not missing:
        return df[list(ANNOTATION_SCHEMA.names)]
    out = df.copy()
    for name in missing:
        out[name] = None
    return out[list(ANNOTATION_SCHEMA.names)]


def annotations_to_arrow(df: pd.DataFrame) -> pa.Table:
    """The DataFrame as an Arrow table with exactly ``ANNOTATION_SCHEMA`` (for writing)."""
    return pa.Table.from_pandas(
        with_all_columns(df), schema=ANNOTATION_SCHEMA, preserve_index=False
    )


class ParquetSink:
    """Receives the builder's Arrow batches and appends them to a Parquet file as row groups,
    so an import of any size holds a couple of batches at a time. Writing (compression,
    I/O; pyarrow releases the GIL) runs in a thread beside the conversion. The file appears
    (atomically: a temporary sibling renamed, or one S3 upload) when ``close`` is called."""

    def __init__(self, uri: str) -> None:
        import queue
        import threading

        import pyarrow.parquet as pq

        from visionloop import storage

        self.uri = uri
        self.rows = 0
        fs, path = storage.filesystem(uri)
        parent = storage.dirname(path)
        if parent:
            fs.makedirs(parent, exist_ok=True)
        self._path = path
        self._tmp = path if storage.is_remote(uri) else f"{path}.tmp-{uuid.uuid4().hex}"
        self._fh = fs.open(self._tmp, "wb")
        self._writer = pq.ParquetWriter(
            self._fh, ANNOTATION_SCHEMA, compression="zstd", compression_level=1
        )
        self._queue: queue.Queue[pa.RecordBatch | None] = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name="parquet-sink", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while (batch := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._writer.write_batch(batch)
                except BaseException as e:  # re-raised in the caller's thread
                    self._error = e

    def write(self, batch: pa.RecordBatch) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(batch)
        self.rows += batch.num_rows

    def _stop(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._writer.close()
        self._fh.close()

    def close(self) -> None:
        self._stop()
        if self._error is not None:
            self._discard()
            raise self._error
        if self._tmp != self._path:
            os.replace(self._tmp, self._path)

    def abort(self) -> None:
        self._stop()
        self._discard()

    def _discard(self) -> None:
        if self._tmp != self._path and os.path.exists(self._tmp):
            os.remove(self._tmp)


class TableBuilder:
    """Collects records and turns them into Arrow batches every ``batch_size`` rows, so a
    million-annotation export is held as compact columns rather than Python objects. With a
    ``sink``, each batch goes to it (e.g. a ``ParquetSink``) instead of being kept."""

    def __init__(self, batch_size: int = 20_000, sink: ParquetSink | None = None) -> None:
        self._batch_size = batch_size
        self._pending: list[AnnotationRecord] = []
        self._batches: list[pa.RecordBatch] = []
        self.sink = sink
        self.count = 0

    def add(self, record: AnnotationRecord) -> None:
        self._pending.append(record)
        self.count += 1
        if len(self._pending) >= self._batch_size:
            self._flush()

    def extend(self, records: Iterable[AnnotationRecord]) -> None:
        for r in records:
            self.add(r)

    def add_batch(self, batch: pa.RecordBatch) -> None:
        """Append rows already in ``ANNOTATION_SCHEMA`` (after any pending records)."""
        self._flush()
        self.count += batch.num_rows
        self._emit(batch)

    def _emit(self, batch: pa.RecordBatch) -> None:
        if self.sink is not None:
            self.sink.write(batch)
        else:
            self._batches.append(batch)

    def _flush(self) -> None:
        if not self._pending:
            return
        cols = {name: [getattr(r, name) for r in self._pending] for name in ANNOTATION_SCHEMA.names}
        self._emit(pa.RecordBatch.from_pydict(cols, schema=ANNOTATION_SCHEMA))
        self._pending = []

    def arrow(self) -> pa.Table:
        self._flush()
        return pa.Table.from_batches(self._batches, schema=ANNOTATION_SCHEMA)

    def build(self) -> pd.DataFrame:
        """The rows as a DataFrame (empty when they went to a sink)."""
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
        # Per-category facts a format needs to write the category back: COCO's keypoint
        # ``keypoints`` (names) and ``skeleton``, CVAT's ``attributes`` spec... by name.
        self.meta: dict[str, dict[str, Any]] = {}

    def set_meta(self, name: str, **values: Any) -> None:
        """Record category-level facts (only non-empty values; the first source wins)."""
        entry = self.meta.setdefault(str(name).strip(), {})
        for k, v in values.items():
            if v not in (None, [], {}, "") and k not in entry:
                entry[k] = v

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
            extra = {k: v for k, v in cat.items() if k not in ("id", "name")}
            if extra:
                cmap.meta[str(cat["name"])] = extra
        cmap.source_maps = {
            s: {k: int(v) for k, v in m.items()} for s, m in doc.get("source_maps", {}).items()
        }
        return cmap

    def to_json(self) -> dict[str, Any]:
        """The ``categories.json`` document of the COLUMNS contract."""
        return {
            "categories": [
                {"id": i, "name": n, **self.meta.get(n, {})} for n, i in self._ids.items()
            ],
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
    rows: int | None = None  # rows written to a sink (``annotations`` is then empty)

    @property
    def errors(self) -> list[ImportIssue]:
        return [i for i in self.issues if i.level == "error"]

    @property
    def warnings(self) -> list[ImportIssue]:
        return [i for i in self.issues if i.level == "warning"]


class ImageColumns:
    """Declared images kept as columns (a COCO file can declare half a million): ``append``
    takes an ``ImageRecord``, ``extend`` whole columns."""

    def __init__(self) -> None:
        self.cols: dict[str, list[Any]] = {c: [] for c in IMAGE_COLUMNS}

    def append(self, im: ImageRecord) -> None:
        for c in IMAGE_COLUMNS:
            self.cols[c].append(getattr(im, c))

    def extend(self, **columns: list[Any]) -> None:
        n = len(next(iter(columns.values())))
        for c in IMAGE_COLUMNS:
            self.cols[c].extend(columns[c] if c in columns else [None] * n)

    def __len__(self) -> int:
        return len(self.cols["image_ref"])

    def frame(self) -> pd.DataFrame:
        if not len(self):
            return empty_images()
        df = pd.DataFrame(self.cols)
        for c in ("width", "height"):
            df[c] = df[c].astype("Int64")
        return df


def images_frame(images: Sequence[ImageRecord] | ImageColumns) -> pd.DataFrame:
    if isinstance(images, ImageColumns):
        return images.frame()
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
        for name, meta in res.categories.meta.items():
            cmap.set_meta(name, **meta)
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


# --------------------------------------------------------------------------------------------
# Shapes, predictions and the geometry convention beyond boxes
#
# Every row's bbox_* is the axis-aligned extent, in absolute pixels, of what was drawn. What was
# drawn is ``shape``; each shape keeps its exact geometry in one column:
#   box        bbox_* only
#   polygon    segmentation = [[x1, y1, x2, y2, ...], ...] (several rings = one object)
#   mask       segmentation = {"size": [h, w], "counts": "<COCO compressed RLE>"}
#   obb        obb = [cx, cy, w, h, angle]; segmentation = its 4 corners (or as written)
#   ellipse    obb = [cx, cy, 2 rx, 2 ry, angle]; segmentation = a 32-point outline
#   polyline   keypoints = the vertices, in order, each [x, y, 2]
#   points     keypoints = an unordered point set, [x, y, v] (v 2 = visible)
#   keypoints  keypoints = pose points [x, y, v] in the category's keypoint order (names in
#              categories.json), usually with a bbox and sometimes a segmentation
#   tag        no geometry: an image-level label (bbox_* null)
# bbox_* is null for a tag and for a point set or line without area (one point, a straight
# horizontal line): the gate's box checks then skip the row instead of failing it.

BOX = "box"
POLYGON = "polygon"
MASK = "mask"
OBB = "obb"
ELLIPSE = "ellipse"
POLYLINE = "polyline"
POINTS = "points"
KEYPOINTS = "keypoints"
TAG = "tag"
SHAPES: tuple[str, ...] = (BOX, POLYGON, MASK, OBB, ELLIPSE, POLYLINE, POINTS, KEYPOINTS, TAG)
POINT_SHAPES = frozenset({POLYLINE, POINTS, KEYPOINTS})

# Predictions (model pre-annotations) are kept apart from human annotations by their
# annotator: "prediction:<model_version>". A reader never gives a human this prefix, so
# ``annotator`` alone tells who (or what) drew a row: compare annotators, drop predictions.
PREDICTION_PREFIX = "prediction:"


def prediction_annotator(model_version: Any) -> str:
    """The ``annotator`` of a prediction made by ``model_version`` (unknown -> "unknown")."""
    version = "" if model_version is None else str(model_version).strip()
    return PREDICTION_PREFIX + (version or "unknown")


def is_prediction(annotator: Any) -> bool:
    return isinstance(annotator, str) and annotator.startswith(PREDICTION_PREFIX)


def prediction_mask(df: pd.DataFrame) -> pd.Series:
    """Boolean mask of the rows that are model predictions (see ``PREDICTION_PREFIX``)."""
    if "annotator" not in df.columns or not len(df):
        return pd.Series(False, index=df.index)
    return df["annotator"].astype("string").str.startswith(PREDICTION_PREFIX).fillna(False)


def shape_of(shape: Any, segmentation: Any) -> str:
    """A row's shape; for tables written before the ``shape`` column, inferred from the
    segmentation (RLE object -> mask, polygons -> polygon, none -> box)."""
    if isinstance(shape, str) and shape:
        return shape
    if isinstance(segmentation, str) and segmentation:
        return MASK if segmentation.lstrip().startswith("{") else POLYGON
    return BOX


def _rotate(dx: float, dy: float, cos: float, sin: float) -> tuple[float, float]:
    # Clockwise on screen (y points down) is the usual counter-clockwise matrix.
    return dx * cos - dy * sin, dx * sin + dy * cos


def obb_corners(cx: float, cy: float, w: float, h: float, angle: float) -> list[float]:
    """The 4 corners [x1, y1, ..., x4, y4] of an oriented box: the unrotated box's top-left,
    top-right, bottom-right and bottom-left, turned ``angle`` degrees clockwise about the
    centre."""
    rad = math.radians(angle)
    cos, sin = math.cos(rad), math.sin(rad)
    out: list[float] = []
    for dx, dy in ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)):
        rx, ry = _rotate(dx, dy, cos, sin)
        out.extend((cx + rx, cy + ry))
    return out


def obb_from_corners(pts: Sequence[float]) -> tuple[float, float, float, float, float]:
    """(cx, cy, w, h, angle) of 4 corners in drawing order (the first edge is the width):
    the inverse of ``obb_corners`` for a rectangle."""
    x1, y1, x2, y2, x3, y3, x4, y4 = (float(v) for v in pts[:8])
    cx, cy = (x1 + x2 + x3 + x4) / 4, (y1 + y2 + y3 + y4) / 4
    w = math.hypot(x2 - x1, y2 - y1)
    h = math.hypot(x3 - x2, y3 - y2)
    angle = math.degrees(math.atan2(y2 - y1, x2 - x1)) % 360.0
    return cx, cy, w, h, angle


def obb_from_top_left(
    x: float, y: float, w: float, h: float, angle: float
) -> tuple[float, float, float, float, float]:
    """(cx, cy, w, h, angle) of a box given by its top-left corner and turned about that
    corner (Label Studio's convention)."""
    rad = math.radians(angle)
    rx, ry = _rotate(w / 2, h / 2, math.cos(rad), math.sin(rad))
    return x + rx, y + ry, w, h, angle % 360.0


def obb_top_left(cx: float, cy: float, w: float, h: float, angle: float) -> tuple[float, float]:
    """The top-left corner of an oriented box turned about its centre (inverse of the above)."""
    rad = math.radians(angle)
    rx, ry = _rotate(w / 2, h / 2, math.cos(rad), math.sin(rad))
    return cx - rx, cy - ry


def ellipse_outline(
    cx: float, cy: float, w: float, h: float, angle: float, n: int = 32
) -> list[float]:
    """``n`` points on an ellipse (w, h are the diameters), for polygon-only consumers."""
    rad = math.radians(angle)
    cos, sin = math.cos(rad), math.sin(rad)
    out: list[float] = []
    for k in range(n):
        t = 2 * math.pi * k / n
        rx, ry = _rotate(w / 2 * math.cos(t), h / 2 * math.sin(t), cos, sin)
        out.extend((round(cx + rx, 4), round(cy + ry, 4)))
    return out


def ellipse_extent(
    cx: float, cy: float, w: float, h: float, angle: float
) -> tuple[float, float, float, float]:
    """The exact axis-aligned xywh extent of a rotated ellipse."""
    rad = math.radians(angle)
    a, b = w / 2, h / 2
    hx = math.sqrt((a * math.cos(rad)) ** 2 + (b * math.sin(rad)) ** 2)
    hy = math.sqrt((a * math.sin(rad)) ** 2 + (b * math.cos(rad)) ** 2)
    return cx - hx, cy - hy, 2 * hx, 2 * hy


def check_obb(
    cx: Any,
    cy: Any,
    w: Any,
    h: Any,
    angle: Any,
    image_width: int | None = None,
    image_height: int | None = None,
    limits: Limits = DEFAULT_LIMITS,
    ellipse: bool = False,
) -> tuple[GeometryCheck, list[float]]:
    """Validate an oriented box (or ellipse) and return (check of its extent, its outline)."""
    for name, v in (("cx", cx), ("cy", cy), ("width", w), ("height", h), ("angle", angle)):
        problem = _number_problem(f"{'ellipse' if ellipse else 'oriented box'} {name}", v)
        if problem:
            return GeometryCheck(None, error=problem), []
    if w <= 0 or h <= 0:
        return GeometryCheck(None, error=f"oriented box has no area ({_fmt(w)} x {_fmt(h)})"), []
    if ellipse:
        outline = ellipse_outline(cx, cy, w, h, angle)
        ex, ey, ew, eh = ellipse_extent(cx, cy, w, h, angle)
        return check_box(ex, ey, ew, eh, image_width, image_height, limits), outline
    outline = obb_corners(cx, cy, w, h, angle)
    return check_polygons([outline], image_width, image_height, limits), outline


def obb_json(cx: float, cy: float, w: float, h: float, angle: float) -> str:
    return "[" + ",".join(repr(float(v)) for v in (cx, cy, w, h, angle % 360.0)) + "]"


def keypoints_json(points: Sequence[Sequence[float]]) -> str:
    """``[[x, y, v], ...]`` compactly (v written as an int)."""
    return "[" + ",".join(f"[{float(p[0])!r},{float(p[1])!r},{int(p[2])}]" for p in points) + "]"


def check_points(
    points: Any,
    image_width: int | None = None,
    image_height: int | None = None,
    limits: Limits = DEFAULT_LIMITS,
    min_points: int = 1,
) -> GeometryCheck:
    """Validate ``[[x, y, v], ...]`` (points with v = 0 are "not labelled": their coordinates
    are not checked). ``box`` is the extent of the labelled points, or None without an error
    when they have no area (one point): check ``error`` to tell rejection from that."""
    if not isinstance(points, list) or len(points) < min_points:
        return GeometryCheck(None, error=f"needs at least {min_points} point(s)")
    xs: list[float] = []
    ys: list[float] = []
    for k, p in enumerate(points):
        if not isinstance(p, (list, tuple)) or len(p) != 3:
            return GeometryCheck(None, error=f"point {k} is not [x, y, visibility]")
        if p[2] == 0:
            continue
        for name, v in (("x", p[0]), ("y", p[1])):
            problem = _number_problem(f"point {k} {name}", v)
            if problem:
                return GeometryCheck(None, error=problem)
        xs.append(float(p[0]))
        ys.append(float(p[1]))
    if not xs:
        return GeometryCheck(None)
    worst = max(max(map(abs, xs)), max(map(abs, ys)))
    if worst > limits.max_coordinate:
        return GeometryCheck(
            None,
            error=f"point coordinate {_fmt(worst)} is absurd (above {_fmt(limits.max_coordinate)})",
        )
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    if image_width is not None and image_height is not None:
        tx, ty = limits.overhang(image_width), limits.overhang(image_height)
        if x0 < -tx or y0 < -ty or x1 > image_width + tx or y1 > image_height + ty:
            return GeometryCheck(
                None,
                error=(
                    f"points [{_fmt(x0)}, {_fmt(y0)}, {_fmt(x1)}, {_fmt(y1)}] (x0,y0,x1,y1) lie "
                    f"outside the {image_width}x{image_height} image by more than the tolerance"
                ),
            )
    if x1 - x0 <= 0 or y1 - y0 <= 0:
        return GeometryCheck(None)  # valid, but no area: no bbox
    return _clip_to_image(x0, y0, x1, y1, image_width, image_height, limits, "points")


# --------------------------------------------------------------------------------------------
# Path safety

_DRIVE_RE = re.compile(r"^[A-Za-z]:[\\/]")
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(ref: str) -> bool:
    return bool(_SCHEME_RE.match(ref))


def is_absolute_ref(ref: str) -> bool:
    """A POSIX absolute path, a Windows UNC path or a drive path: it ignores the root."""
    r = ref.strip()
    return r.startswith(("/", "\\")) or bool(_DRIVE_RE.match(r))


def ref_escape(ref: Any) -> str | None:
    """Why an image reference from an export would escape the dataset root (absolute path,
    ``..`` above the root, NUL byte), or None when it is safe. URLs (``s3://``, ``https://``)
    are names, not paths below the root, and are accepted. A reader rejects an escaping
    reference (error ``path_escape``); an exporter never writes a file at such a place."""
    if not isinstance(ref, str) or not ref.strip():
        return "empty file name"
    if "\x00" in ref:
        return "file name contains a NUL byte"
    if is_url(ref):
        return None
    r = ref.strip().replace("\\", "/")
    if is_absolute_ref(ref):
        return f"absolute path {ref!r} escapes the dataset root"
    depth = 0
    for part in r.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return f"{ref!r} climbs above the dataset root ('..')"
        elif part not in ("", "."):
            depth += 1
    return None


def safe_join_rel(*parts: str) -> str:
    """Join relative path parts and normalise; raises ``AnnotationImportError`` when the
    result would leave the root (exporters build output file names with this)."""
    import posixpath

    joined = posixpath.normpath("/".join(p.replace("\\", "/") for p in parts if p))
    why = ref_escape(joined)
    if why:
        raise AnnotationImportError(why)
    return joined
