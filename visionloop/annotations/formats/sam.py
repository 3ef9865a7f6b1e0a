"""SA-1B (Segment Anything) JSON -> the canonical table: one file per image,
``{"image": {...}, "annotations": [{"segmentation": <compressed RLE>, ...}]}``.

SA-1B masks have no classes: every row's category is "object". Masks are validated like COCO
RLEs (``coco.rle_counts``: the runs must cover the declared size exactly), their bbox is
computed from the mask, and a mask whose size disagrees with the image, or that is empty
(area 0), is an error naming both problems when both apply. ``predicted_iou``,
``stability_score``, ``point_coords`` and ``crop_box`` go into attributes; the declared bbox
too when the mask's extent differs from it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from visionloop import storage
from visionloop.annotations.formats.common import (
    Issues,
    display,
    is_dir,
    read_head,
    source_files,
)
from visionloop.annotations.table import (
    DEFAULT_LIMITS,
    MASK,
    AnnotationImportError,
    AnnotationRecord,
    CategoryMap,
    ImageRecord,
    ImportResult,
    KnownImages,
    Limits,
    TableBuilder,
    check_box,
    check_image_size,
    dumps,
    images_frame,
    ref_escape,
)

log = logging.getLogger(__name__)

FORMAT = "sam"
CATEGORY = "object"
_KEPT = ("predicted_iou", "stability_score", "point_coords", "crop_box")


def _convert(
    doc: Any,
    source_file: str,
    cmap: CategoryMap,
    builder: TableBuilder,
    issues: Issues,
    records: list[ImageRecord],
    limits: Limits,
) -> None:
    from visionloop.annotations.formats.coco import RleError, rle_bbox_area, rle_counts

    image = doc.get("image") if isinstance(doc, dict) else None
    if not isinstance(image, dict) or not isinstance(doc.get("annotations"), list):
        issues.error("invalid_document", source_file, "", "SA-1B needs 'image' and 'annotations'")
        return
    ref = image.get("file_name")
    why = ref_escape(ref)
    if why:
        code = "path_escape" if isinstance(ref, str) and "root" in why else "invalid_image"
        issues.error(code, source_file, "/image/file_name", f"file_name {why}")
        return
    w, h, bad = check_image_size(image.get("width"), image.get("height"))
    if bad:
        issues.warn("invalid_image_size", source_file, "/image", bad)
    records.append(ImageRecord(ref, FORMAT, source_file, "/image", None, w, h))
    cid = cmap.register(source_file, CATEGORY, CATEGORY)
    for k, ann in enumerate(doc["annotations"]):
        ptr = f"/annotations/{k}"
        if not isinstance(ann, dict):
            issues.error("invalid_annotation", source_file, ptr, "annotation is not an object")
            continue
        try:
            rh, rw, counts = rle_counts(ann.get("segmentation"))
        except RleError as e:
            issues.error("invalid_rle", source_file, f"{ptr}/segmentation", str(e))
            continue
        problems = []
        box, area = rle_bbox_area(counts, rh)
        if area == 0:
            problems.append("the mask is empty (area 0)")
        if w is not None and (rh, rw) != (h, w):
            problems.append(
                f"its size [{rh}, {rw}] (height, width) disagrees with the {w}x{h} image"
            )
        if problems:
            code = "empty_mask" if area == 0 else "rle_size_mismatch"
            issues.error(code, source_file, f"{ptr}/segmentation", "; ".join(problems))
            continue
        check = check_box(*box, w or rw, h or rh, limits)
        if check.box is None:
            issues.error("invalid_bbox", source_file, ptr, check.error or "invalid mask")
            continue
        attrs = {key: ann[key] for key in _KEPT if key in ann}
        declared = ann.get("bbox")
        if isinstance(declared, list) and [float(v) for v in declared] != list(box):
            attrs["declared_bbox"] = declared
        seg = ann["segmentation"]
        if not isinstance(seg["counts"], str):
            from visionloop.annotations.formats.coco import rle_encode_counts

            seg = {"size": [rh, rw], "counts": rle_encode_counts(counts.tolist())}
        x, y, bw, bh = check.box
        builder.add(
            AnnotationRecord(
                annotation_id=f"{source_file}#{ptr}",
                image_ref=ref,
                category=CATEGORY,
                category_id=cid,
                source_format=FORMAT,
                source_file=source_file,
                source_pointer=ptr,
                source_category_id=CATEGORY,
                bbox_x=x,
                bbox_y=y,
                bbox_w=bw,
                bbox_h=bh,
                segmentation=dumps({"size": [rh, rw], "counts": seg["counts"]}),
                image_width=w,
                image_height=h,
                attributes=dumps(attrs) if attrs else None,
                source_annotation_id=None if ann.get("id") is None else str(ann["id"]),
                shape=MASK,
            )
        )


def sam_to_annotations(
    doc: Any, source_file: str = "<memory>", *, limits: Limits = DEFAULT_LIMITS
) -> ImportResult:
    """Convert one parsed SA-1B document (pure)."""
    cmap, builder, issues, records = CategoryMap(), TableBuilder(), Issues(), []
    _convert(doc, source_file, cmap, builder, issues, records, limits)
    return ImportResult(
        FORMAT, source_file, builder.build(), cmap, images_frame(records), issues.done()
    )


def _is_sam(uri: str) -> bool:
    if not uri.lower().endswith(".json"):
        return False
    head = read_head(uri).lstrip()
    return (
        head.startswith(b"{")
        and b'"image"' in head
        and b'"annotations"' in head
        and b'"images"' not in head
        and b'"categories"' not in head
        and b'"data"' not in head
    )


def load_sam(
    path: str, *, images: KnownImages | None = None, limits: Limits = DEFAULT_LIMITS
) -> ImportResult:
    """Import one SA-1B JSON or every one below a folder."""
    del images  # SA-1B declares its own image sizes
    _, files, folder = source_files(path, (".json",), "SA-1B")
    files = [f for f in files if _is_sam(f)]
    if not files:
        raise AnnotationImportError(f"no SA-1B JSON found at {path}")
    cmap, builder, issues = CategoryMap(), TableBuilder(), Issues()
    records: list[ImageRecord] = []
    for uri in files:
        source_file = display(path, uri) if folder else path
        try:
            doc = json.loads(storage.read_text(uri))
        except json.JSONDecodeError as e:
            issues.error(
                "malformed_json", source_file, f"line {e.lineno}, column {e.colno}", str(e)
            )
            continue
        _convert(doc, source_file, cmap, builder, issues, records, limits)
    log.info("sam: %s -> %d annotation(s)", path, builder.count)
    return ImportResult(FORMAT, path, builder.build(), cmap, images_frame(records), issues.done())


def sniff_sam(path: str) -> str | None:
    fs, p = storage.filesystem(path)
    if not fs.exists(p):
        return None
    if not is_dir(path):
        return "JSON with one image and its annotations (SA-1B)" if _is_sam(path) else None
    for uri in storage.walk_files(path):
        if _is_sam(uri):
            return f"{display(path, uri)}: JSON with one image and its annotations (SA-1B)"
    return None


class SamReader:
    """The ``AnnotationReader`` for SA-1B JSON."""

    name = FORMAT

    def sniff(self, path: str) -> str | None:
        return sniff_sam(path)

    def load(
        self, path: str, *, images: KnownImages | None = None, limits: Limits = DEFAULT_LIMITS
    ) -> ImportResult:
        return load_sam(path, images=images, limits=limits)
