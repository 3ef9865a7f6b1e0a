"""LabelMe JSON (one file per image) -> the canonical table.

- ``shape_type``: ``polygon`` (the default when absent), ``rectangle`` (two corners, in any
  order), ``circle`` (centre + a point on the circle -> an ``ellipse`` with equal diameters),
  ``line`` / ``linestrip`` -> ``polyline``, ``point`` / ``points`` -> ``points``, ``mask``
  (two corners + a base64 PNG of that rectangle -> a COCO RLE over the image). Anything else
  is reported and not imported.
- ``group_id``, ``flags`` (when not empty), ``description`` (when not empty) -> attributes.
  Image-level ``flags`` that are true become ``tag`` rows (category = the flag).
- ``imagePath`` is relative to the JSON file; the image reference is that path relative to the
  source root. A path that leaves the root (``../``, absolute) is rejected (``path_escape``).
  ``imageData`` (the embedded image) is not read.
- Python writes NaN / Infinity as bare tokens; LabelMe files are parsed with ``json`` (which
  accepts them) so such a coordinate is reported with its JSON pointer, not a parse error.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import posixpath
from typing import Any

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
    POINTS,
    POLYGON,
    POLYLINE,
    TAG,
    AnnotationImportError,
    AnnotationRecord,
    CategoryMap,
    GeometryCheck,
    ImageRecord,
    ImportResult,
    KnownImages,
    Limits,
    TableBuilder,
    check_box,
    check_image_size,
    check_obb,
    check_points,
    check_polygons,
    dumps,
    images_frame,
    is_absolute_ref,
    is_url,
    keypoints_json,
    obb_json,
    polygons_json,
    ref_escape,
)

log = logging.getLogger(__name__)

FORMAT = "labelme"


def _xy(points: Any) -> list[tuple[Any, Any]] | None:
    if not isinstance(points, list) or not all(
        isinstance(p, (list, tuple)) and len(p) == 2 for p in points
    ):
        return None
    return [(p[0], p[1]) for p in points]


def _geometry(
    shape_type: str, pts: list[tuple[Any, Any]], shape: dict[str, Any], w: Any, h: Any, lim: Limits
) -> tuple[dict[str, Any] | None, str | None, str | None]:
    """(row fields, error, warning) for one LabelMe shape."""
    check: GeometryCheck
    flat = [v for p in pts for v in p]
    if shape_type == "polygon":
        check = check_polygons([flat], w, h, lim)
        geo = {"shape": POLYGON, "segmentation": polygons_json([flat])}
    elif shape_type == "rectangle":
        if len(pts) != 2:
            return None, f"a rectangle has 2 points, got {len(pts)}", None
        (x0, y0), (x1, y1) = pts
        try:
            x0, x1, y0, y1 = min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1)
        except TypeError:
            return None, "rectangle corners are not numbers", None
        check = check_box(x0, y0, x1 - x0, y1 - y0, w, h, lim)
        geo = {"shape": BOX}
    elif shape_type == "circle":
        if len(pts) != 2:
            return None, f"a circle has 2 points (centre, edge), got {len(pts)}", None
        (cx, cy), (ex, ey) = pts
        try:
            r = ((ex - cx) ** 2 + (ey - cy) ** 2) ** 0.5
        except TypeError:
            return None, "circle points are not numbers", None
        check, outline = check_obb(cx, cy, 2 * r, 2 * r, 0.0, w, h, lim, ellipse=True)
        geo = {
            "shape": ELLIPSE,
            "obb": obb_json(cx, cy, 2 * r, 2 * r, 0.0) if check.box else None,
            "segmentation": polygons_json([outline]) if outline else None,
        }
    elif shape_type in ("line", "linestrip", "point", "points"):
        kps = [[x, y, 2] for x, y in pts]
        check = check_points(kps, w, h, lim, min_points=2 if "line" in shape_type else 1)
        if check.error:
            return None, check.error, None
        kind = POLYLINE if "line" in shape_type else POINTS
        return {"shape": kind, "box": check.box, "keypoints": keypoints_json(kps)}, None, None
    elif shape_type == "mask":
        return _mask(pts, shape.get("mask"), w, h)
    else:
        return None, f"shape_type {shape_type!r} is not supported", None
    if check.box is None:
        return None, check.error or "invalid geometry", None
    return {**geo, "box": check.box}, None, check.warning


def _mask(
    pts: list[tuple[Any, Any]], data: Any, w: int | None, h: int | None
) -> tuple[dict[str, Any] | None, str | None, str | None]:
    import numpy as np
    from PIL import Image

    from visionloop.annotations.formats.coco import mask_to_rle, rle_bbox_area, rle_counts

    if w is None or h is None:
        return None, "a mask needs imageWidth and imageHeight", None
    if len(pts) != 2 or not isinstance(data, str):
        return None, "a mask shape needs 2 corner points and a base64 PNG", None
    try:
        region = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))
    except Exception as e:  # any decoding failure is this shape's error
        return None, f"mask PNG cannot be decoded: {type(e).__name__}: {e}", None
    region = region[..., 0] if region.ndim == 3 else region
    x0, y0 = round(min(p[0] for p in pts)), round(min(p[1] for p in pts))
    rh, rw = region.shape
    if x0 < 0 or y0 < 0 or x0 + rw > w or y0 + rh > h:
        return None, f"mask {rw}x{rh} at ({x0}, {y0}) lies outside the {w}x{h} image", None
    full = np.zeros((h, w), dtype=bool)
    full[y0 : y0 + rh, x0 : x0 + rw] = region > 0
    rle = mask_to_rle(full)
    box, area = rle_bbox_area(rle_counts(rle)[2], h)
    if area == 0:
        return None, "mask is empty", None
    return {"shape": MASK, "box": tuple(box), "segmentation": dumps(rle)}, None, None


def labelme_to_annotations(
    doc: Any,
    source_file: str = "<memory>",
    image_ref: str | None = None,
    *,
    images: KnownImages | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> ImportResult:
    """Convert one parsed LabelMe document (pure). ``image_ref`` overrides ``imagePath``."""
    cmap, builder, issues, records = CategoryMap(), TableBuilder(), Issues(), []
    _convert(
        doc, source_file, image_ref, cmap, builder, issues, records, SizeLookup(images), limits
    )
    return ImportResult(
        FORMAT, source_file, builder.build(), cmap, images_frame(records), issues.done()
    )


def _convert(
    doc: Any,
    source_file: str,
    image_ref: str | None,
    cmap: CategoryMap,
    builder: TableBuilder,
    issues: Issues,
    records: list[ImageRecord],
    sizes: SizeLookup,
    limits: Limits,
    subset: str | None = None,
) -> None:
    if not isinstance(doc, dict) or not isinstance(doc.get("shapes", []), list):
        issues.error("invalid_document", source_file, "", "a LabelMe file is an object with shapes")
        return
    ref = image_ref or doc.get("imagePath")
    why = ref_escape(ref)
    if why:
        code = "path_escape" if isinstance(ref, str) and "root" in why else "invalid_image"
        issues.error(code, source_file, "/imagePath", f"imagePath {why}: shapes not imported")
        return
    w, h, bad = check_image_size(doc.get("imageWidth"), doc.get("imageHeight"))
    if bad:
        issues.warn("invalid_image_size", source_file, "/imageWidth", bad)
    if w is None:
        found = sizes.find(ref)
        w, h = found if found else (None, None)
    records.append(ImageRecord(ref, FORMAT, source_file, "", subset, w, h))

    def add(ptr: str, label: str, geo: dict[str, Any], attrs: dict[str, Any]) -> None:
        cid = cmap.register(source_file, label, label)
        box = geo.get("box")
        builder.add(
            AnnotationRecord(
                annotation_id=f"{source_file}#{ptr}",
                image_ref=ref,
                category=label,
                category_id=cid,
                source_format=FORMAT,
                source_file=source_file,
                source_pointer=ptr,
                source_category_id=label,
                bbox_x=None if box is None else box[0],
                bbox_y=None if box is None else box[1],
                bbox_w=None if box is None else box[2],
                bbox_h=None if box is None else box[3],
                segmentation=geo.get("segmentation"),
                image_width=w,
                image_height=h,
                attributes=dumps(attrs) if attrs else None,
                subset=subset,
                shape=geo["shape"],
                obb=geo.get("obb"),
                keypoints=geo.get("keypoints"),
            )
        )

    for k, shape in enumerate(doc.get("shapes", [])):
        ptr = f"/shapes/{k}"
        if not isinstance(shape, dict):
            issues.error("invalid_shape", source_file, ptr, "shape is not an object")
            continue
        label = shape.get("label")
        if not isinstance(label, str) or not label.strip():
            issues.error("missing_label", source_file, f"{ptr}/label", "shape has no label")
            continue
        pts = _xy(shape.get("points"))
        if pts is None:
            issues.error("invalid_geometry", source_file, f"{ptr}/points", "points not [[x, y]]")
            continue
        shape_type = str(shape.get("shape_type") or "polygon")
        geo, error, warning = _geometry(shape_type, pts, shape, w, h, limits)
        if geo is None:
            code = "unsupported_shape" if "not supported" in (error or "") else "invalid_geometry"
            issues.error(code, source_file, ptr, error or "invalid shape")
            continue
        if warning:
            issues.warn("clipped", source_file, ptr, warning)
        attrs: dict[str, Any] = {}
        if shape.get("group_id") is not None:
            attrs["group_id"] = shape["group_id"]
        for key in ("flags", "description"):
            if shape.get(key):
                attrs[key] = shape[key]
        add(ptr, label.strip(), geo, attrs)
    flags = doc.get("flags")
    if isinstance(flags, dict):
        for name, on in flags.items():
            if on is True and str(name).strip():
                add(f"/flags/{name}", str(name).strip(), {"shape": TAG}, {})


def _is_labelme(uri: str) -> bool:
    if not uri.lower().endswith(".json"):
        return False
    head = read_head(uri).lstrip()
    return (
        head.startswith(b"{")
        and b'"shapes"' in head
        and (b'"imagePath"' in head or b'"imageHeight"' in head or b'"version"' in head)
    )


def load_labelme(
    path: str, *, images: KnownImages | None = None, limits: Limits = DEFAULT_LIMITS
) -> ImportResult:
    """Import one LabelMe JSON file or every one below a folder."""
    root, files, folder = source_files(path, (".json",), "LabelMe")
    files = [f for f in files if _is_labelme(f)]
    if not files:
        raise AnnotationImportError(f"no LabelMe JSON found at {path}")
    cmap, builder, issues = CategoryMap(), TableBuilder(), Issues()
    records: list[ImageRecord] = []
    sizes = SizeLookup(images)
    for uri in files:
        source_file = display(path, uri) if folder else path
        try:
            doc = json.loads(storage.read_text(uri))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            where = f"line {e.lineno}, column {e.colno}" if hasattr(e, "lineno") else ""
            issues.error("malformed_json", source_file, where, f"malformed JSON: {e}")
            continue
        image_path = doc.get("imagePath") if isinstance(doc, dict) else None
        ref = None
        if isinstance(image_path, str) and image_path.strip() and not is_url(image_path):
            rel_dir = storage.relative_to(root, storage.dirname(uri))
            rel_dir = "" if rel_dir == "." else rel_dir
            joined = posixpath.normpath(
                posixpath.join(rel_dir, image_path.strip().replace("\\", "/"))
            )
            if is_absolute_ref(image_path) or ref_escape(joined):
                issues.error(
                    "path_escape",
                    source_file,
                    "/imagePath",
                    f"imagePath {image_path!r} leaves the source root {path}: shapes not imported",
                )
                continue
            ref = joined
        _convert(doc, source_file, ref, cmap, builder, issues, records, sizes, limits)
    log.info("labelme: %s -> %d annotation(s)", path, builder.count)
    return ImportResult(FORMAT, path, builder.build(), cmap, images_frame(records), issues.done())


def sniff_labelme(path: str) -> str | None:
    fs, p = storage.filesystem(path)
    if not fs.exists(p):
        return None
    if not is_dir(path):
        return "JSON object with shapes and imagePath (LabelMe)" if _is_labelme(path) else None
    for uri in storage.walk_files(path):
        if _is_labelme(uri):
            return f"{display(path, uri)}: JSON object with shapes and imagePath (LabelMe)"
    return None


class LabelmeReader:
    """The ``AnnotationReader`` for LabelMe JSON."""

    name = FORMAT

    def sniff(self, path: str) -> str | None:
        return sniff_labelme(path)

    def load(
        self, path: str, *, images: KnownImages | None = None, limits: Limits = DEFAULT_LIMITS
    ) -> ImportResult:
        return load_labelme(path, images=images, limits=limits)
