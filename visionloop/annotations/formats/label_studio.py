"""Label Studio JSON exports (the "JSON" export: a list of tasks) -> the canonical table, and
the canonical table -> Label Studio tasks with annotations and pre-annotations (predictions).

One row per labelled region **per annotation**: a task labelled by two annotators gives two
rows per object, each with its ``annotator``, so annotators can be compared (issue 6's QA).

- ``annotator``: ``completed_by`` of the annotation, as a string: the user id ("2"), or the
  e-mail when the export gives the user as an object. Model predictions (``predictions``)
  are kept apart as ``prediction:<model_version>`` (see ``table.PREDICTION_PREFIX``), with
  their confidence in ``score`` (the result's score, else the prediction's). Cancelled
  (skipped) annotations and drafts are not imported, and are reported with counts.
- Coordinates: Label Studio stores percentages of the image (``original_width`` /
  ``original_height`` beside each result). When a result lacks them, the size is looked up in
  the known images (the curate manifest); failing that the region is an error (not imported),
  never guessed.
- Rectangles with ``rotation`` turn about their top-left corner (Label Studio's convention):
  they become oriented boxes (``shape`` obb, ``obb`` about the centre, corners in
  ``segmentation``). ``rotation`` 0 is a plain box. Ellipses keep their rotation too.
- Polygons, keypoints (one labelled point each: ``shape`` points), ellipses and brush masks
  (Label Studio's own bit-packed RLE of an RGBA image, decoded here and stored as a COCO RLE)
  are imported; choices not attached to a region become image-level ``tag`` rows.
- Results sharing an ``id`` describe one region (e.g. a rectangle + its per-region choices or
  textarea): the geometry gives the row, the others go into ``attributes`` under their
  ``from_name`` (e.g. ``{"transcription": {"text": ["abc"]}}``), so an export writes them back.
- A label config (the project's XML, ``<View>...</View>``) next to the JSON is used when it
  pairs with it (``data_obb.json`` <-> ``label_config_obb.xml``; ``data.json`` <->
  ``label_config.xml``; else the only config in the folder): its labels come first in the
  category order, and a label written with another case ("Butterfly" for the config's
  "butterfly") is mapped to the config's spelling with a warning. Without a config, labels
  that differ only by case are kept apart, with a warning.
- Image references: ``/data/local-files/?d=dir/x.jpg`` -> ``dir/x.jpg``;
  ``/data/upload/12/3f2a9b1c-x.jpg`` -> ``x.jpg`` (Label Studio prefixes uploads with 8 hex
  digits); other host-relative paths lose their leading ``/``; URLs are kept. A reference
  climbing above the root (``..``) is rejected (``path_escape``).

The file is streamed (ijson), task by task; a malformed file is reported with its line and
column and none of its rows are kept.
"""

from __future__ import annotations

import json
import logging
import math
import posixpath
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import numpy as np
import pandas as pd

from visionloop import storage
from visionloop.annotations.formats.common import (
    Issues,
    SizeLookup,
    display,
    is_dir,
    read_head,
    source_files,
)
from visionloop.annotations.table import (
    BOX,
    DEFAULT_LIMITS,
    ELLIPSE,
    MASK,
    OBB,
    POINTS,
    POLYGON,
    TAG,
    AnnotationImportError,
    AnnotationRecord,
    CategoryMap,
    ImageRecord,
    ImportResult,
    KnownImages,
    Limits,
    TableBuilder,
    check_box,
    check_obb,
    check_points,
    check_polygons,
    dumps,
    empty_annotations,
    images_frame,
    is_url,
    keypoints_json,
    obb_from_top_left,
    obb_json,
    polygons_json,
    prediction_annotator,
    ref_escape,
)

log = logging.getLogger(__name__)

FORMAT = "label_studio"
DEFAULT_FROM_NAME = "label"
DEFAULT_TO_NAME = "image"
DEFAULT_CHOICE_NAME = "choice"

# Result type -> what it draws. "*labels" types carry their labels in value[type].
_GEOMETRY = {
    "rectanglelabels": "rectangle",
    "rectangle": "rectangle",
    "polygonlabels": "polygon",
    "polygon": "polygon",
    "keypointlabels": "keypoint",
    "keypoint": "keypoint",
    "ellipselabels": "ellipse",
    "ellipse": "ellipse",
    "brushlabels": "brush",
    "brush": "brush",
}
# Per-region (or image-level) results whose value is kept whole in attributes.
_LINKED = {"choices", "textarea", "number", "rating", "taxonomy", "datetime", "labels"}
_GEOMETRY_KEYS = {
    "x",
    "y",
    "width",
    "height",
    "rotation",
    "points",
    "radiusX",
    "radiusY",
    "rle",
    "format",
    "closed",
}
_UPLOAD_PREFIX_RE = re.compile(r"^[0-9a-f]{8}-")


# --------------------------------------------------------------------------------------------
# Label config


@dataclass
class LabelConfig:
    """What the importer needs from a project's label config."""

    source: str
    images: dict[str, str] = field(default_factory=dict)  # Image name -> data key
    controls: dict[str, tuple[str, str, list[str]]] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)  # every Label / Choice value, in order

    def labels_of(self, from_name: str) -> list[str]:
        control = self.controls.get(from_name)
        return control[2] if control else self.labels


def parse_label_config(text: str, source: str = "<memory>") -> LabelConfig:
    """Parse a label config with entity expansion and external entities refused (defusedxml)."""
    from xml.etree.ElementTree import ParseError

    import defusedxml.ElementTree as DET
    from defusedxml import DefusedXmlException

    try:
        root = DET.fromstring(text)
    except DefusedXmlException as e:
        raise AnnotationImportError(f"{source}: XML entities are refused: {e}") from e
    except ParseError as e:
        raise AnnotationImportError(f"{source}: malformed XML: {e}") from e
    cfg = LabelConfig(source)
    for el in root.iter():
        tag = el.tag.lower() if isinstance(el.tag, str) else ""
        name = el.get("name")
        if tag == "image" and name:
            value = el.get("value", "")
            cfg.images[name] = value[1:] if value.startswith("$") else value
        elif name and el.get("toName") is not None:
            values = [c.get("value") for c in el if isinstance(c.tag, str)]
            values = [v for v in values if v]
            cfg.controls[name] = (tag, el.get("toName", ""), values)
            cfg.labels.extend(v for v in values if v not in cfg.labels)
    return cfg


def _config_for(json_uri: str, configs: Sequence[str]) -> str | None:
    """The label config paired with a tasks file (see the module docstring)."""
    if not configs:
        return None
    stem = posixpath.splitext(posixpath.basename(json_uri))[0]
    suffix = stem.split("_", 1)[1] if "_" in stem else ""
    wanted = {f"{stem}.xml", f"label_config_{suffix}.xml" if suffix else "label_config.xml"}
    for c in configs:
        if posixpath.basename(c) in wanted:
            return c
    return configs[0] if len(configs) == 1 else None


def _is_label_config(uri: str) -> bool:
    head = read_head(uri, 4096).lstrip()
    return head.startswith(b"<View") or b"<View" in head[:512]


# --------------------------------------------------------------------------------------------
# Brush masks: Label Studio's RLE (thi.ng rle-pack of the flattened RGBA image)


class BrushRleError(ValueError):
    """A brush RLE that is truncated or does not describe ``height * width`` RGBA pixels."""


class _BitReader:
    def __init__(self, data: Sequence[int]) -> None:
        arr = np.asarray(data, dtype=np.int64)
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise BrushRleError("brush RLE values must be bytes (0..255)")
        self.bits = "".join(f"{b:08b}" for b in arr.astype(np.uint8).tobytes())
        self.i = 0

    def read(self, n: int) -> int:
        if self.i + n > len(self.bits):
            raise BrushRleError("brush RLE ends early (truncated)")
        v = int(self.bits[self.i : self.i + n], 2)
        self.i += n
        return v


def rle_pack_decode(data: Sequence[int], expected: int | None = None) -> np.ndarray:
    """Decode thi.ng rle-pack bytes (the scheme of Label Studio's brush RLE) into its words;
    ``expected`` is checked against the declared count before anything is allocated."""
    r = _BitReader(data)
    num = r.read(32)
    if expected is not None and num != expected:
        raise BrushRleError(f"brush RLE holds {num} values, expected {expected}")
    word = r.read(5) + 1
    sizes = [r.read(4) + 1 for _ in range(4)]
    if num > (len(r.bits) - r.i) * (1 << 16):  # each chunk costs >= 1 bit: a lie, not a mask
        raise BrushRleError(f"brush RLE claims {num} values but is too short to hold them")
    out = np.zeros(num, dtype=np.uint8 if word <= 8 else np.int64)
    i = 0
    while i < num:
        is_run = r.read(1)
        j = i + 1 + r.read(sizes[r.read(2)])
        if j > num:
            raise BrushRleError("brush RLE writes past the end of the image")
        if is_run:
            out[i:j] = r.read(word)
        else:
            for k in range(i, j):
                out[k] = r.read(word)
        i = j
    return out


def brush_rle_decode(rle: Sequence[int], height: int, width: int) -> np.ndarray:
    """Label Studio brush RLE -> (height, width) bool mask (the alpha channel of its RGBA)."""
    try:
        out = rle_pack_decode(rle, expected=height * width * 4)
    except BrushRleError as e:
        raise BrushRleError(f"{e} (a {width}x{height} RGBA image)") from e
    return out.reshape(height, width, 4)[:, :, 3] > 0


_RLE_SIZES = (3, 4, 8, 16)


def brush_rle_encode(mask: np.ndarray) -> list[int]:
    """(height, width) bool mask -> Label Studio brush RLE (RGBA 255 where set; runs only)."""
    flat = np.repeat(np.asarray(mask, dtype=bool).reshape(-1), 4).astype(np.uint8) * 255
    bits = [f"{flat.size:032b}", f"{7:05b}", *(f"{s - 1:04b}" for s in _RLE_SIZES)]
    if flat.size:
        change = np.flatnonzero(np.diff(flat.astype(np.int16))) + 1
        starts = np.concatenate(([0], change))
        ends = np.concatenate((change, [flat.size]))
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            value = f"{int(flat[s]):08b}"
            left = e - s
            while left:
                n = min(left, 1 << _RLE_SIZES[-1])
                t = next(k for k, size in enumerate(_RLE_SIZES) if n - 1 < (1 << size))
                bits.append(f"1{t:02b}{n - 1:0{_RLE_SIZES[t]}b}{value}")
                left -= n
    s = "".join(bits)
    s += "0" * (-len(s) % 8)
    return list(int(s, 2).to_bytes(len(s) // 8, "big")) if s else []


# --------------------------------------------------------------------------------------------
# Conversion


def image_ref_from(value: Any) -> tuple[str | None, str | None]:
    """(image_ref, error) for a task's data value (see the module docstring)."""
    if not isinstance(value, str) or not value.strip():
        return None, f"image reference {value!r} is not a non-empty string"
    v = value.strip()
    if "/data/local-files/" in v and "?d=" in v:
        ref = unquote(v.split("?d=", 1)[1])
    elif v.startswith("/data/upload/"):
        ref = _UPLOAD_PREFIX_RE.sub("", unquote(posixpath.basename(v)))
    elif is_url(v):
        return v, None
    else:
        ref = unquote(v).lstrip("/")
    why = ref_escape(ref)
    return (None, why) if why else (ref, None)


@dataclass
class _Ctx:
    source_file: str
    limits: Limits
    cmap: CategoryMap
    builder: TableBuilder
    issues: Issues
    sizes: SizeLookup
    config: LabelConfig | None
    image_records: list[ImageRecord]
    spellings: dict[str, dict[str, str]] = field(default_factory=dict)  # casefold -> spellings

    def error(self, code: str, ptr: str, msg: str) -> None:
        self.issues.error(code, self.source_file, ptr, msg)

    def warn(self, code: str, ptr: str, msg: str) -> None:
        self.issues.warn(code, self.source_file, ptr, msg)

    def once(self, level: str, code: str, ptr: str, msg: str, key: str = "") -> None:
        self.issues.once(level, code, self.source_file, ptr, msg, key)


def _register_config(ctx: _Ctx) -> None:
    if ctx.config is not None:
        for name in ctx.config.labels:
            ctx.cmap.register(ctx.source_file, name, name)


def _category(ctx: _Ctx, label: Any, from_name: str, ptr: str) -> str | None:
    """The canonical spelling of a written label (registered), or None when unusable."""
    if not isinstance(label, str) or not label.strip():
        ctx.error("missing_label", ptr, f"label {label!r} is empty: region not imported")
        return None
    written = label.strip()
    name = written
    if ctx.config is not None:
        declared = ctx.config.labels_of(from_name)
        if written not in declared:
            folded = [d for d in declared if d.casefold() == written.casefold()]
            if len(folded) == 1:
                name = folded[0]
                ctx.once(
                    "warning",
                    "label_case_mismatch",
                    ptr,
                    f"label {written!r} is not in the label config ({ctx.config.source}); "
                    f"it differs only in case from {name!r} and is imported as {name!r}",
                    key=written,
                )
            else:
                ctx.once(
                    "warning",
                    "unknown_label",
                    ptr,
                    f"label {written!r} is not declared in the label config "
                    f"({ctx.config.source}): imported as written",
                    key=written,
                )
    else:
        ctx.spellings.setdefault(written.casefold(), {}).setdefault(written, ptr)
    ctx.cmap.register(ctx.source_file, written, name)
    return name


def _number(v: Any) -> Any:
    if isinstance(v, str) and v in ("N", "Infini", "-Infini"):  # coco.SpecialFloatStream
        return {"N": math.nan, "Infini": math.inf, "-Infini": -math.inf}[v]
    return v


def _pct(v: Any, side: int) -> Any:
    v = _number(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return v  # check_* names the problem
    return v * side / 100.0


@dataclass
class _Region:
    """One region of one annotation: its geometry result, labels and linked results."""

    ptr: str
    result: Mapping[str, Any]
    kind: str
    labels: list[tuple[str, str]] = field(default_factory=list)  # (label, pointer)
    attrs: dict[str, Any] = field(default_factory=dict)


def _size(ctx: _Ctx, result: Mapping[str, Any], ref: str, ptr: str) -> tuple[int, int] | None:
    w, h = _number(result.get("original_width")), _number(result.get("original_height"))
    if w is not None or h is not None:
        ok = all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 and v == int(v)
            for v in (w, h)
        )
        if ok:
            return int(w), int(h)
        ctx.once(
            "warning",
            "invalid_image_size",
            ptr,
            f"original_width/height ({w!r}, {h!r}) are not positive integers: size looked up",
            key="size",
        )
    size = ctx.sizes.find(ref)
    if size is None:
        ctx.error(
            "unknown_image_size",
            ptr,
            f"no original_width/height and the size of {ref!r} is unknown (not in the known "
            "images): percent coordinates cannot be converted; region not imported",
        )
        return None
    ctx.once(
        "warning",
        "size_from_manifest",
        ptr,
        "results without original_width/height: image sizes taken from the known images",
        key="size_from_manifest",
    )
    return size


def _geometry(ctx: _Ctx, region: _Region, width: int, height: int) -> dict[str, Any] | None:
    """Row fields for a region's geometry, or None (reported) when it is unusable."""
    v = region.result.get("value")
    ptr = region.ptr
    if not isinstance(v, Mapping):
        ctx.error("invalid_result", f"{ptr}/value", "result value is not an object")
        return None
    limits = ctx.limits
    if region.kind == "rectangle":
        x, y = _pct(v.get("x"), width), _pct(v.get("y"), height)
        w, h = _pct(v.get("width"), width), _pct(v.get("height"), height)
        rotation = _number(v.get("rotation", 0)) or 0
        if isinstance(rotation, (int, float)) and not isinstance(rotation, bool):
            if math.isfinite(rotation) and rotation % 360 != 0:
                try:
                    cx, cy, ow, oh, angle = obb_from_top_left(x, y, w, h, rotation)
                except TypeError:
                    cx = cy = ow = oh = angle = math.nan
                check, corners = check_obb(cx, cy, ow, oh, angle, width, height, limits)
                if check.box is None:
                    ctx.error("invalid_geometry", f"{ptr}/value", check.error or "invalid box")
                    return None
                if check.warning:
                    ctx.warn("clipped", f"{ptr}/value", check.warning)
                return {
                    "shape": OBB,
                    "box": check.box,
                    "obb": obb_json(cx, cy, ow, oh, angle),
                    "segmentation": polygons_json([[round(c, 4) for c in corners]]),
                }
        check = check_box(x, y, w, h, width, height, limits)
        if check.box is None:
            ctx.error("invalid_geometry", f"{ptr}/value", check.error or "invalid box")
            return None
        if not isinstance(rotation, (int, float)) or not math.isfinite(rotation):
            ctx.error("invalid_geometry", f"{ptr}/value/rotation", f"rotation {rotation!r}")
            return None
        if check.warning:
            ctx.warn("clipped", f"{ptr}/value", check.warning)
        return {"shape": BOX, "box": check.box}
    if region.kind == "polygon":
        pts = v.get("points")
        if not isinstance(pts, list) or not all(isinstance(p, list) and len(p) == 2 for p in pts):
            ctx.error("invalid_geometry", f"{ptr}/value/points", "points must be [[x, y], ...]")
            return None
        flat = [c for p in pts for c in (_pct(p[0], width), _pct(p[1], height))]
        check = check_polygons([flat], width, height, limits)
        if check.box is None:
            ctx.error("invalid_geometry", f"{ptr}/value/points", check.error or "invalid")
            return None
        if check.warning:
            ctx.warn("clipped", f"{ptr}/value/points", check.warning)
        return {"shape": POLYGON, "box": check.box, "segmentation": polygons_json([flat])}
    if region.kind == "keypoint":
        point = [_pct(v.get("x"), width), _pct(v.get("y"), height), 2]
        check = check_points([point], width, height, limits)
        if check.error:
            ctx.error("invalid_geometry", f"{ptr}/value", check.error)
            return None
        if "width" in v:
            region.attrs["ls_point_width"] = v.get("width")
        return {"shape": POINTS, "box": None, "keypoints": keypoints_json([point])}
    if region.kind == "ellipse":
        cx, cy = _pct(v.get("x"), width), _pct(v.get("y"), height)
        rx, ry = _pct(v.get("radiusX"), width), _pct(v.get("radiusY"), height)
        rotation = _number(v.get("rotation", 0)) or 0
        try:
            dims = (cx, cy, 2 * rx, 2 * ry, rotation)
        except TypeError:
            dims = (math.nan,) * 5
        check, outline = check_obb(*dims, width, height, limits, ellipse=True)
        if check.box is None:
            ctx.error("invalid_geometry", f"{ptr}/value", check.error or "invalid ellipse")
            return None
        if check.warning:
            ctx.warn("clipped", f"{ptr}/value", check.warning)
        return {
            "shape": ELLIPSE,
            "box": check.box,
            "obb": obb_json(*dims),
            "segmentation": polygons_json([outline]),
        }
    # brush
    fmt = v.get("format", "rle")
    if fmt != "rle" or not isinstance(v.get("rle"), list):
        ctx.error(
            "unsupported_brush",
            f"{ptr}/value",
            f"brush format {fmt!r} without an 'rle' list is not supported",
        )
        return None
    from visionloop.annotations.formats.coco import mask_to_rle, rle_bbox_area, rle_counts

    try:
        mask = brush_rle_decode(v["rle"], height, width)
    except BrushRleError as e:
        ctx.error("invalid_rle", f"{ptr}/value/rle", str(e))
        return None
    rle = mask_to_rle(mask)
    _, _, counts = rle_counts(rle)
    box, area = rle_bbox_area(counts, height)
    if area == 0:
        ctx.error("empty_mask", f"{ptr}/value/rle", "brush mask is empty")
        return None
    return {"shape": MASK, "box": tuple(box), "segmentation": dumps(rle)}


def _regions(
    ctx: _Ctx, results: Any, base: str
) -> tuple[list[_Region], list[tuple[str, Mapping[str, Any]]]]:
    """Group an annotation's results into regions; returns (regions, image-level results)."""
    if not isinstance(results, list):
        ctx.error("invalid_annotation", f"{base}/result", "result is not a list")
        return [], []
    by_id: dict[str, _Region] = {}
    regions: list[_Region] = []
    loose: list[tuple[str, Mapping[str, Any]]] = []
    pending: list[tuple[str, Mapping[str, Any]]] = []
    for k, res in enumerate(results):
        ptr = f"{base}/result/{k}"
        if not isinstance(res, Mapping):
            ctx.error("invalid_result", ptr, "result is not an object")
            continue
        rtype = str(res.get("type", "")).lower()
        if rtype in _GEOMETRY:
            region = _Region(ptr, res, _GEOMETRY[rtype])
            value = res.get("value") if isinstance(res.get("value"), Mapping) else {}
            if rtype.endswith("labels"):
                labels = value.get(rtype)
                if isinstance(labels, list):
                    region.labels = [
                        (lab, ptr if m == 0 else f"{ptr}/value/{rtype}/{m}")
                        for m, lab in enumerate(labels)
                    ]
                elif labels is not None:
                    region.labels = [(labels, ptr)]
            rid = res.get("id")
            if isinstance(rid, str) and rid in by_id:
                ctx.warn("duplicate_region", ptr, f"two geometries share region id {rid!r}")
            if isinstance(rid, (str, int)):
                by_id.setdefault(str(rid), region)
            regions.append(region)
        elif rtype in _LINKED:
            pending.append((ptr, res))
        else:
            ctx.once(
                "warning",
                "unsupported_result",
                ptr,
                f"result type {rtype or '(none)'!r} is not an image region: not imported",
                key=rtype,
            )
    for ptr, res in pending:
        rid = res.get("id")
        region = by_id.get(str(rid)) if isinstance(rid, (str, int)) else None
        if region is None:
            loose.append((ptr, res))
            continue
        value = res.get("value") if isinstance(res.get("value"), Mapping) else {}
        rtype = str(res.get("type")).lower()
        if rtype == "labels" and not region.labels:
            labels = value.get("labels")
            labels = labels if isinstance(labels, list) else [labels]
            region.labels = [
                (lab, ptr if m == 0 else f"{ptr}/value/labels/{m}") for m, lab in enumerate(labels)
            ]
            continue
        kept = {k: v for k, v in value.items() if k not in _GEOMETRY_KEYS}
        region.attrs[str(res.get("from_name", rtype))] = kept
    return regions, loose


def _convert_annotation(
    ctx: _Ctx,
    ann: Mapping[str, Any],
    base: str,
    ref: str,
    subset: str | None,
    annotator: str | None,
    score: Any,
    extra: dict[str, Any],
) -> None:
    regions, loose = _regions(ctx, ann.get("result"), base)
    for region in regions:
        res = region.result
        if not region.labels:
            ctx.error("missing_label", region.ptr, "region has no label: not imported")
            continue
        size = _size(ctx, res, ref, region.ptr)
        if size is None:
            continue
        geo = _geometry(ctx, region, *size)
        if geo is None:
            continue
        attrs = {**extra, **region.attrs}
        origin = res.get("origin")
        if isinstance(origin, str) and origin not in ("manual", ""):
            attrs["origin"] = origin
        if isinstance(res.get("meta"), Mapping) and res["meta"]:
            attrs["meta"] = dict(res["meta"])
        from_name = str(res.get("from_name", DEFAULT_FROM_NAME))
        if from_name != DEFAULT_FROM_NAME:
            attrs["ls_from_name"] = from_name
        if str(res.get("to_name", DEFAULT_TO_NAME)) != DEFAULT_TO_NAME:
            attrs["ls_to_name"] = str(res.get("to_name"))
        if res.get("image_rotation") not in (None, 0):
            ctx.once(
                "warning",
                "image_rotation",
                region.ptr,
                f"image_rotation {res.get('image_rotation')!r}: coordinates are taken as "
                "relative to the unrotated image (as Label Studio stores them)",
                key="image_rotation",
            )
        rscore = res.get("score", score)
        for label, lptr in region.labels:
            name = _category(ctx, label, from_name, lptr)
            if name is None:
                continue
            _add(ctx, lptr, ref, subset, name, label, geo, size, annotator, rscore, attrs, res)
    for ptr, res in loose:
        rtype = str(res.get("type")).lower()
        value = res.get("value") if isinstance(res.get("value"), Mapping) else {}
        if rtype != "choices":
            ctx.once(
                "warning",
                "image_level_result",
                ptr,
                f"image-level {rtype!r} result (no region) is not an annotation: not imported",
                key=rtype,
            )
            continue
        choices = value.get("choices")
        choices = choices if isinstance(choices, list) else [choices]
        from_name = str(res.get("from_name", DEFAULT_CHOICE_NAME))
        attrs = dict(extra)
        if from_name != DEFAULT_CHOICE_NAME:
            attrs["ls_from_name"] = from_name
        if str(res.get("to_name", DEFAULT_TO_NAME)) != DEFAULT_TO_NAME:
            attrs["ls_to_name"] = str(res.get("to_name"))
        w, h = _number(res.get("original_width")), _number(res.get("original_height"))
        size = (int(w), int(h)) if isinstance(w, int) and isinstance(h, int) else None
        for m, choice in enumerate(choices):
            cptr = ptr if m == 0 else f"{ptr}/value/choices/{m}"
            name = _category(ctx, choice, from_name, cptr)
            if name is None:
                continue
            geo = {"shape": TAG, "box": None}
            rscore = res.get("score", score)
            _add(ctx, cptr, ref, subset, name, choice, geo, size, annotator, rscore, attrs, res)


def _add(
    ctx: _Ctx,
    ptr: str,
    ref: str,
    subset: str | None,
    name: str,
    written: Any,
    geo: dict[str, Any],
    size: tuple[int, int] | None,
    annotator: str | None,
    score: Any,
    attrs: dict[str, Any],
    res: Mapping[str, Any],
) -> None:
    box = geo.get("box")
    score = _number(score)
    ok_score = isinstance(score, (int, float)) and not isinstance(score, bool)
    if ok_score and not math.isfinite(score):
        ctx.warn("invalid_score", f"{ptr}/score", f"score {score!r} is not finite: dropped")
        ok_score = False
    rid = res.get("id")
    ctx.builder.add(
        AnnotationRecord(
            annotation_id=f"{ctx.source_file}#{ptr}",
            image_ref=ref,
            category=name,
            category_id=ctx.cmap.id_of(name),
            source_format=FORMAT,
            source_file=ctx.source_file,
            source_pointer=ptr,
            source_category_id=str(written).strip(),
            bbox_x=None if box is None else box[0],
            bbox_y=None if box is None else box[1],
            bbox_w=None if box is None else box[2],
            bbox_h=None if box is None else box[3],
            segmentation=geo.get("segmentation"),
            image_width=None if size is None else size[0],
            image_height=None if size is None else size[1],
            annotator=annotator,
            attributes=dumps(attrs) if attrs else None,
            subset=subset,
            source_annotation_id=None if rid is None else str(rid),
            shape=geo["shape"],
            obb=geo.get("obb"),
            keypoints=geo.get("keypoints"),
            score=float(score) if ok_score else None,
        )
    )


def annotator_of(completed_by: Any) -> str | None:
    """``completed_by`` as the annotator string: the user id, or the e-mail of a user object."""
    if completed_by is None or isinstance(completed_by, bool):
        return None
    if isinstance(completed_by, Mapping):
        email = completed_by.get("email")
        if isinstance(email, str) and email.strip():
            return email.strip()
        uid = completed_by.get("id")
        return None if uid is None else str(uid)
    return str(completed_by)


def _data_key(ctx: _Ctx, data: Mapping[str, Any], to_name: str | None) -> str | None:
    if ctx.config is not None and to_name in ctx.config.images:
        key = ctx.config.images[to_name]
        if key in data:
            return key
    if to_name and to_name in data:
        return to_name
    if len(data) == 1:
        return next(iter(data))
    for key in ("image", "img", "image_url", "url"):
        if key in data:
            return key
    return None


def _first_to_name(task: Mapping[str, Any]) -> str | None:
    for group in ("annotations", "predictions"):
        for ann in task.get(group) or []:
            if isinstance(ann, Mapping):
                for res in ann.get("result") or []:
                    if isinstance(res, Mapping) and res.get("to_name"):
                        return str(res["to_name"])
    return None


def _first_size(task: Mapping[str, Any]) -> tuple[int | None, int | None]:
    for group in ("annotations", "predictions"):
        for ann in task.get(group) or []:
            if isinstance(ann, Mapping):
                for res in ann.get("result") or []:
                    if isinstance(res, Mapping):
                        w, h = res.get("original_width"), res.get("original_height")
                        if isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0:
                            return w, h
    return None, None


def convert_task(ctx: _Ctx, i: int, task: Any, subset: str | None = None) -> None:
    """One task -> rows for each of its annotations and predictions."""
    ptr = f"/{i}"
    if not isinstance(task, Mapping):
        ctx.error("invalid_task", ptr, "task is not an object")
        return
    data = task.get("data")
    if not isinstance(data, Mapping):
        ctx.error("invalid_task", f"{ptr}/data", "task has no 'data' object")
        return
    key = _data_key(ctx, data, _first_to_name(task))
    if key is None:
        ctx.error(
            "unknown_image",
            f"{ptr}/data",
            f"cannot tell which data key names the image (keys: {sorted(data)})",
        )
        return
    if subset is None and isinstance(data.get("subset"), str) and data["subset"].strip():
        subset = data["subset"].strip()  # written by save_label_studio
    ref, why = image_ref_from(data[key])
    if ref is None:
        code = "path_escape" if why and "root" in why else "invalid_image"
        ctx.error(code, f"{ptr}/data/{key}", f"{why}: the task's regions are not imported")
        return
    w, h = _first_size(task)
    ctx.image_records.append(ImageRecord(ref, FORMAT, ctx.source_file, ptr, subset, w, h))
    annotations = task.get("annotations") or []
    predictions = task.get("predictions") or []
    if not isinstance(annotations, list) or not isinstance(predictions, list):
        ctx.error("invalid_task", ptr, "annotations and predictions must be lists")
        return
    for j, ann in enumerate(annotations):
        base = f"{ptr}/annotations/{j}"
        if not isinstance(ann, Mapping):
            ctx.error("invalid_annotation", base, "annotation is not an object")
            continue
        if ann.get("was_cancelled"):
            n = len(ann.get("result") or [])
            ctx.once(
                "warning",
                "cancelled_annotation",
                base,
                "cancelled (skipped) annotations are not imported",
                key="cancelled",
            )
            if n:
                log.debug("%s%s: cancelled annotation with %d result(s)", ctx.source_file, base, n)
            continue
        extra: dict[str, Any] = {}
        if ann.get("ground_truth"):
            extra["ground_truth"] = True
        annotator = annotator_of(ann.get("completed_by"))
        _convert_annotation(ctx, ann, base, ref, subset, annotator, None, extra)
    for j, pred in enumerate(predictions):
        base = f"{ptr}/predictions/{j}"
        if not isinstance(pred, Mapping):
            ctx.error("invalid_annotation", base, "prediction is not an object")
            continue
        annotator = prediction_annotator(pred.get("model_version"))
        _convert_annotation(ctx, pred, base, ref, subset, annotator, pred.get("score"), {})
    drafts = task.get("drafts") or []
    if isinstance(drafts, list) and drafts:
        ctx.once(
            "warning",
            "drafts_not_imported",
            f"{ptr}/drafts",
            "drafts (unsubmitted work) are not imported",
            key="drafts",
        )


def _finish_file(ctx: _Ctx) -> None:
    for spellings in ctx.spellings.values():
        if len(spellings) > 1:
            names = sorted(spellings)
            ctx.warn(
                "label_case_variants",
                spellings[names[0]],
                f"labels {names} differ only in case: kept as separate categories (give the "
                "label config to map them to one spelling)",
            )


def label_studio_to_annotations(
    tasks: Any,
    source_file: str = "<memory>",
    *,
    images: KnownImages | None = None,
    limits: Limits = DEFAULT_LIMITS,
    label_config: str | LabelConfig | None = None,
    subset: str | None = None,
) -> ImportResult:
    """Convert parsed tasks (a list, or one task object) into the canonical table. Pure."""
    config = parse_label_config(label_config) if isinstance(label_config, str) else label_config
    cmap, builder, issues, records = CategoryMap(), TableBuilder(), Issues(), []
    ctx = _Ctx(source_file, limits, cmap, builder, issues, SizeLookup(images), config, records)
    _register_config(ctx)
    if isinstance(tasks, Mapping):
        tasks = [tasks]
    if not isinstance(tasks, list):
        ctx.error("invalid_document", "", "a Label Studio export is a list of tasks")
    else:
        for i, task in enumerate(tasks):
            convert_task(ctx, i, task, subset)
    _finish_file(ctx)
    return ImportResult(
        FORMAT, source_file, builder.build(), cmap, images_frame(records), issues.done()
    )


# --------------------------------------------------------------------------------------------
# Files


def _iter_tasks(uri: str) -> Iterator[tuple[int, Any]]:
    """Stream the tasks of a file (a top-level list, or a single task object)."""
    from visionloop.annotations.formats.coco import _stream_items

    head = read_head(uri, 4096).lstrip()
    prefix = "item" if head.startswith(b"[") else ""
    yield from enumerate(_stream_items(uri, prefix))


def sniff_label_studio_file(uri: str) -> str | None:
    """Why ``uri`` looks like a Label Studio JSON export, or None."""
    if not uri.lower().endswith(".json"):
        return None
    head = read_head(uri).lstrip()
    if not head.startswith((b"[", b"{")):
        return None
    keys = (b"data", b"annotations", b"predictions")
    has = {k: re.search(rb'"' + k + rb'"\s*:', head) is not None for k in keys}
    if has[b"data"] and (has[b"annotations"] or has[b"predictions"]):
        return "JSON tasks with data and annotations/predictions"
    return None


def _is_json_min(uri: str) -> bool:
    head = read_head(uri).lstrip()
    return head.startswith(b"[") and b'"annotation_id"' in head and b'"annotations"' not in head


def load_label_studio(
    path: str,
    *,
    images: KnownImages | None = None,
    limits: Limits = DEFAULT_LIMITS,
    label_config: str | None = None,
) -> ImportResult:
    """Import a Label Studio JSON export file, or every export below a folder (one category
    map for all). ``label_config`` is a config file's path; else configs beside the JSON are
    paired by name (see the module docstring)."""
    import ijson

    root, files, folder = source_files(path, (".json", ".xml"), "Label Studio")
    configs = [f for f in files if f.lower().endswith(".xml") and _is_label_config(f)]
    if not folder:
        configs = sorted(
            u
            for u in storage.walk_files(root)
            if u.lower().endswith(".xml") and storage.dirname(u) == root and _is_label_config(u)
        )
    jsons = [f for f in files if f.lower().endswith(".json")]
    cmap, issues = CategoryMap(), Issues()
    records: list[ImageRecord] = []
    tables: list[pd.DataFrame] = []
    sizes = SizeLookup(images)
    tasks_files = 0
    for uri in jsons:
        source_file = display(path, uri) if folder else path
        if not sniff_label_studio_file(uri):
            why = (
                "a Label Studio JSON-MIN export (flat; export as 'JSON' instead)"
                if _is_json_min(uri)
                else "not a Label Studio JSON export (no task with data and annotations)"
            )
            if not folder or _is_json_min(uri):
                issues.error("unsupported_file", source_file, "", why)
            else:
                issues.warn("skipped_file", source_file, "", why)
            continue
        tasks_files += 1
        config_uri = label_config or _config_for(uri, configs)
        config = None
        if config_uri:
            config = parse_label_config(
                storage.read_text(config_uri), display(path, config_uri) if folder else config_uri
            )
        builder = TableBuilder()
        file_issues = Issues()
        file_records: list[ImageRecord] = []
        ctx = _Ctx(source_file, limits, cmap, builder, file_issues, sizes, config, file_records)
        _register_config(ctx)
        try:
            for i, task in _iter_tasks(uri):
                convert_task(ctx, i, task)
        except ijson.JSONError as e:
            from visionloop.annotations.formats.coco import locate_json_error

            line, col, message = locate_json_error(uri)
            where = f"line {line}, column {col}" if line is not None else ""
            issues.error(
                "malformed_json",
                source_file,
                where,
                f"malformed JSON: {message or e}; no annotation of this file is imported",
            )
            continue
        _finish_file(ctx)
        issues.issues.extend(file_issues.done())
        records.extend(file_records)
        tables.append(builder.build())
        log.info("label_studio: %s -> %d annotation(s)", source_file, builder.count)
    if not tasks_files and folder:
        raise AnnotationImportError(f"no Label Studio JSON export found below {path}")
    annotations = (
        pd.concat([t for t in tables if len(t)] or [empty_annotations()], ignore_index=True)
        if tables
        else empty_annotations()
    )
    return ImportResult(FORMAT, path, annotations, cmap, images_frame(records), issues.issues)


class LabelStudioReader:
    """The ``AnnotationReader`` for Label Studio JSON exports."""

    name = FORMAT

    def sniff(self, path: str) -> str | None:
        fs, p = storage.filesystem(path)
        if not fs.exists(p):
            return None
        if not is_dir(path):
            return sniff_label_studio_file(path)
        for uri in storage.walk_files(path):
            reason = sniff_label_studio_file(uri)
            if reason:
                return f"{display(path, uri)}: {reason}"
        return None

    def load(
        self, path: str, *, images: KnownImages | None = None, limits: Limits = DEFAULT_LIMITS
    ) -> ImportResult:
        return load_label_studio(path, images=images, limits=limits)


# --------------------------------------------------------------------------------------------
# Export

_LINK_TYPES = {
    "text": "textarea",
    "choices": "choices",
    "number": "number",
    "rating": "rating",
    "taxonomy": "taxonomy",
    "datetime": "datetime",
}
_RESULT_ATTRS = ("ls_from_name", "ls_to_name", "origin", "meta", "ls_point_width")


def _rect(x: float, y: float, w: float, h: float, iw: float, ih: float, r: float) -> dict:
    return {
        "x": x / iw * 100,
        "y": y / ih * 100,
        "width": w / iw * 100,
        "height": h / ih * 100,
        "rotation": r,
    }


def _result(
    rtype: str, fname: str, val: dict[str, Any], common: dict[str, Any], extras: dict[str, Any]
) -> dict[str, Any]:
    return {**common, "type": rtype, "from_name": fname, "value": val, **extras}


def _completed_by(annotator: str) -> Any:
    return int(annotator) if annotator.isdigit() else {"email": annotator}


def save_label_studio(
    df: Any,
    categories: Any,
    out: str,
    *,
    as_predictions: bool = False,
    model_version: str = "visionloop",
) -> Any:
    """Write the table as Label Studio tasks (a JSON list) at ``out``, one task per image.

    Human rows become ``annotations`` (one per annotator, ``completed_by`` = the user id, or
    ``{"email": ...}``), ``prediction:<v>`` rows become ``predictions`` of model version ``v``
    with their scores. ``as_predictions`` writes every row as a pre-annotation of
    ``model_version`` (to pre-label a new project; the human annotators are then lost).
    Coordinates are percentages of ``image_width`` / ``image_height`` (rows without a size
    are not written). Boxes, oriented boxes (rotation about the top-left corner), polygons,
    ellipses, masks (brush RLE), single points and tags (choices) are carried, with the
    per-region results that were imported into attributes; several polygon rings, point sets,
    polylines, pose keypoints, other attributes, track id, frame and iscrowd are not. The task
    ``data`` holds ``image`` and, when set, ``subset``.
    """
    from visionloop.annotations.export import (
        LossReport,
        attributes_of,
        json_value,
        note_columns,
        value,
    )
    from visionloop.annotations.formats.coco import rle_to_mask
    from visionloop.annotations.table import (
        KEYPOINTS,
        POLYLINE,
        PREDICTION_PREFIX,
        is_prediction,
        obb_corners,
        obb_top_left,
        shape_of,
    )

    report = LossReport("label_studio", rows=len(df))
    tasks: dict[tuple[str, str], dict[str, Any]] = {}
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}  # multi-label regions, choices
    written_ids: dict[str, list[str]] = {}
    counter = 0
    for row in df.itertuples(index=False):
        rid_row = row.annotation_id
        shape = shape_of(value(row, "shape"), value(row, "segmentation"))
        if shape in (KEYPOINTS, POLYLINE):
            report.skip(rid_row, f"shape_{shape}", f"Label Studio images have no {shape} region")
            continue
        w, h = value(row, "image_width"), value(row, "image_height")
        if not w or not h:
            report.skip(rid_row, "unknown_image_size", "Label Studio stores percentages")
            continue
        w, h = float(w), float(h)
        subset = value(row, "subset") or ""
        task = tasks.setdefault(
            (row.image_ref, subset),
            {"data": {"image": row.image_ref, **({"subset": subset} if subset else {})}},
        )
        annotator = value(row, "annotator")
        if as_predictions:
            version = annotator[len(PREDICTION_PREFIX) :] if is_prediction(annotator) else None
            group = ("predictions", version or model_version)
            if annotator and not is_prediction(annotator):
                report.lose(rid_row, "annotator", f"written as a prediction of {model_version}")
        elif is_prediction(annotator):
            group = ("predictions", annotator[len(PREDICTION_PREFIX) :])
        else:
            group = ("annotations", annotator)
        container = task.setdefault(group[0], {}).setdefault(group[1], {"result": []})
        attrs = attributes_of(row)
        if attrs.pop("ground_truth", False) and group[0] == "annotations":
            container["ground_truth"] = True
        from_name = attrs.pop("ls_from_name", None)
        to_name = attrs.pop("ls_to_name", DEFAULT_TO_NAME)
        origin = attrs.pop("origin", None)
        meta = attrs.pop("meta", None)
        point_width = attrs.pop("ls_point_width", None)
        region_id = value(row, "source_annotation_id")
        if region_id is None:
            counter += 1
            region_id = f"vl{counter}"

        common: dict[str, Any] = {
            "id": region_id,
            "to_name": to_name,
            "original_width": int(w),
            "original_height": int(h),
            "image_rotation": 0,
        }
        extras: dict[str, Any] = {}
        if value(row, "score") is not None:
            extras["score"] = float(row.score)
        if origin:
            extras["origin"] = origin
        if meta:
            extras["meta"] = meta

        box = [value(row, c) for c in ("bbox_x", "bbox_y", "bbox_w", "bbox_h")]
        seg = json_value(row, "segmentation")
        results: list[dict[str, Any]] = []
        label_key: str | None = None
        if shape == TAG:
            fname = from_name or DEFAULT_CHOICE_NAME
            key = (id(container), "choices", fname)
            if key in merged:
                merged[key]["value"]["choices"].append(row.category)
                report.written += 1
                written_ids.setdefault(row.category, []).append(rid_row)
                continue
            res = _result("choices", fname, {"choices": [row.category]}, common, extras)
            merged[key] = res
            results.append(res)
        else:
            fname = from_name or DEFAULT_FROM_NAME
            geometry: dict[str, Any]
            if shape == OBB:
                cx, cy, ow, oh, angle = json_value(row, "obb")
                tx, ty = obb_top_left(cx, cy, ow, oh, angle)
                geometry = _rect(tx, ty, ow, oh, w, h, angle)
                label_key = "rectanglelabels"
                if isinstance(seg, list) and seg and len(seg[0]) == 8:
                    computed = obb_corners(cx, cy, ow, oh, angle)
                    if max(abs(a - b) for a, b in zip(seg[0], computed, strict=True)) > 1e-3:
                        report.lose(rid_row, "obb_corners", "corners recomputed from the box")
            elif shape == ELLIPSE:
                cx, cy, ew, eh, angle = json_value(row, "obb")
                geometry = {
                    "x": cx / w * 100,
                    "y": cy / h * 100,
                    "radiusX": ew / 2 / w * 100,
                    "radiusY": eh / 2 / h * 100,
                    "rotation": angle,
                }
                label_key = "ellipselabels"
            elif shape == POLYGON and isinstance(seg, list):
                if len(seg) > 1:
                    report.lose(rid_row, "polygon_rings", "one Label Studio polygon per ring")
                ring = seg[0]
                pts = [[ring[i] / w * 100, ring[i + 1] / h * 100] for i in range(0, len(ring), 2)]
                geometry = {"points": pts}
                label_key = "polygonlabels"
            elif shape == MASK and isinstance(seg, dict):
                geometry = {"format": "rle", "rle": brush_rle_encode(rle_to_mask(seg))}
                label_key = "brushlabels"
            elif shape == POINTS:
                kps = json_value(row, "keypoints") or []
                if len(kps) != 1 or kps[0][2] != 2:
                    report.lose(rid_row, "point_set", "Label Studio keypoints are single points")
                if not kps:
                    report.skip(rid_row, "no_geometry", "point set without points")
                    continue
                geometry = {"x": kps[0][0] / w * 100, "y": kps[0][1] / h * 100}
                if point_width is not None:
                    geometry["width"] = point_width
                label_key = "keypointlabels"
            else:
                if None in box:
                    report.skip(rid_row, "no_geometry", "row has no box")
                    continue
                x, y, bw, bh = (float(v) for v in box)
                geometry = _rect(x, y, bw, bh, w, h, 0)
                label_key = "rectanglelabels"
            key = (id(container), region_id, json.dumps(geometry, sort_keys=True))
            if key in merged:  # the same region with another label
                merged[key]["value"][label_key].append(row.category)
                report.written += 1
                written_ids.setdefault(row.category, []).append(rid_row)
                continue
            res = _result(label_key, fname, {**geometry, label_key: [row.category]}, common, extras)
            merged[key] = res
            results.append(res)
            for name, v in list(attrs.items()):
                if isinstance(v, dict) and len(v) == 1 and next(iter(v)) in _LINK_TYPES:
                    linked = _result(_LINK_TYPES[next(iter(v))], name, dict(v), common, {})
                    results.append(linked)
                    del attrs[name]
        if attrs:
            report.lose(rid_row, "attributes", "Label Studio has no free-form region attributes")
        note_columns(report, row, ("track_id", "frame"), "Label Studio")
        if value(row, "iscrowd"):
            report.lose(rid_row, "iscrowd", "Label Studio has no crowd flag")
        container["result"].extend(results)
        report.written += 1
        written_ids.setdefault(row.category, []).append(rid_row)
    out_tasks: list[dict[str, Any]] = []
    for i, task in enumerate(tasks.values(), start=1):
        doc: dict[str, Any] = {"id": i, "data": task["data"], "annotations": [], "predictions": []}
        for annotator, ann in task.get("annotations", {}).items():
            entry: dict[str, Any] = {"result": ann["result"]}
            if annotator is not None:
                entry["completed_by"] = _completed_by(annotator)
            if ann.get("ground_truth"):
                entry["ground_truth"] = True
            doc["annotations"].append(entry)
        for version, pred in task.get("predictions", {}).items():
            doc["predictions"].append({"model_version": version, "result": pred["result"]})
        out_tasks.append(doc)
    storage.write_text_atomic(out, json.dumps(out_tasks, indent=1, allow_nan=False) + "\n")
    report.files.append(out)
    _note_category_order(report, out_tasks, categories, written_ids)
    return report


def _note_category_order(
    report: Any, tasks: list[dict[str, Any]], categories: Any, written: dict[str, list[str]]
) -> None:
    """Label Studio stores label names, not ids: a re-import numbers categories by first use.
    Where that order differs from the canonical ids, the rows concerned are reported."""
    first_use: list[str] = []
    for task in tasks:
        for group in ("annotations", "predictions"):
            for ann in task[group]:
                for res in ann["result"]:
                    key = res["type"] if res["type"] in res["value"] else None
                    for name in res["value"].get(key, []) if key else []:
                        if name not in first_use:
                            first_use.append(name)
    for new_id, name in enumerate(first_use):
        if categories.id_of(name) != new_id:
            for rid in written.get(name, []):
                report.lose(
                    rid,
                    "category_id",
                    "Label Studio stores label names: a re-import numbers categories by first "
                    "use (give it the project's label config to keep the order)",
                )
