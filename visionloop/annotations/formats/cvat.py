"""CVAT for images 1.1 and CVAT for video 1.1 (XML) <-> the canonical table.

Reading (streamed with defusedxml's SAX parser: one ``<image>`` or ``<track>`` in memory at a
time, entity declarations refused):

- Images mode: ``<image name width height [subset] [task_id]>`` holding ``box`` (with
  ``rotation`` -> an oriented box), ``polygon``, ``polyline``, ``points``, ``ellipse``,
  ``mask`` (CVAT's RLE of the mask's own rectangle, row-major, starting with zeros -> a COCO
  RLE over the image), ``tag`` (image-level label), ``skeleton`` (named keypoints: the
  category's keypoint names come from the label's sublabels) and ``cuboid`` (not imported:
  reported).
- Video mode: ``<track id label>`` of shapes with ``frame``, ``outside``, ``keyframe``. A shape
  with ``outside="1"`` means the object is not in that frame: no row. Every other shape is a
  row with ``track_id`` and ``frame``; ``keyframe`` goes into attributes. Frames are CVAT's
  (absolute: ``start_frame + k * step``); a frame off that grid or outside
  [start_frame, stop_frame] is reported. The frame's image is ``frame_{frame:06d}`` with the
  extension found in the export or the known images (CVAT/Datumaro's naming).
- Attributes (``<attribute name>``) are typed by the label spec in ``<meta>``: ``number`` ->
  int or float, ``checkbox`` -> bool, anything else text. ``occluded`` (when 1), ``z_order``
  and ``group_id`` (when not 0) and ``source`` (when not "manual") are kept in attributes too,
  so an export writes them back.
- Subsets: the image's ``subset`` attribute (project exports: Train, Test and Validation may
  each hold an ``img0.jpg``; matching uses the subset to tell them apart), else the task's
  ``<subset>``, else the file's stem (Datumaro writes ``<subset>.xml``) unless it is
  ``annotations`` or ``default``.
- An empty ``label=""`` is an error (not imported): a shape without a category.

Writing: ``save_cvat`` writes CVAT for images 1.1, or CVAT for video 1.1 when rows carry
``track_id`` (see its docstring and the loss report for what does not fit).
"""

from __future__ import annotations

import json
import logging
import math
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from visionloop import storage
from visionloop.annotations.formats.common import (
    Issues,
    SizeLookup,
    display,
    is_dir,
    source_files,
)
from visionloop.annotations.table import (
    BOX,
    DEFAULT_LIMITS,
    ELLIPSE,
    KEYPOINTS,
    MASK,
    OBB,
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
    keypoints_json,
    obb_json,
    polygons_json,
    ref_escape,
)
from visionloop.annotations.xmlstream import Node, XmlError, iter_elements, root_tag

log = logging.getLogger(__name__)

FORMAT = "cvat"
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_SHAPES = {"box", "polygon", "polyline", "points", "ellipse", "mask", "skeleton", "cuboid", "tag"}
_STEP_RE = re.compile(r"step\s*=\s*(\d+)")


# --------------------------------------------------------------------------------------------
# Meta


@dataclass
class _Label:
    name: str
    attr_types: dict[str, str] = field(default_factory=dict)  # attribute -> input_type
    sublabels: list[str] = field(default_factory=list)  # skeleton keypoint names
    edges: list[list[int]] = field(default_factory=list)  # skeleton, 1-based like COCO


@dataclass
class _Task:
    id: str | None
    subset: str | None
    start: int
    stop: int | None
    step: int


@dataclass
class Meta:
    labels: dict[str, _Label] = field(default_factory=dict)
    tasks: dict[str, _Task] = field(default_factory=dict)
    task: _Task | None = None  # the only task (task exports)
    mode: str | None = None


def _int(text: Any, default: int | None = None) -> int | None:
    try:
        return int(str(text).strip())
    except (TypeError, ValueError):
        return default


def _subset_name(text: str | None) -> str | None:
    """A task's ``<subset>``: empty or CVAT's "default" mean no subset."""
    if text is None:
        return None
    return None if text.strip().lower() in ("", "default") else text.strip()


def _task(node: Node) -> _Task:
    step = 1
    m = _STEP_RE.search(node.findtext("frame_filter") or "")
    if m:
        step = max(1, int(m.group(1)))
    return _Task(
        id=node.findtext("id"),
        subset=_subset_name(node.findtext("subset")),
        start=_int(node.findtext("start_frame"), 0) or 0,
        stop=_int(node.findtext("stop_frame")),
        step=step,
    )


def _labels(node: Node | None, meta: Meta) -> None:
    if node is None:
        return
    for lab in node.findall("label"):
        name = lab.findtext("name")
        if name is None:
            continue
        label = meta.labels.setdefault(name, _Label(name))
        attrs = lab.find("attributes")
        for a in attrs.findall("attribute") if attrs is not None else []:
            an = a.findtext("name")
            if an:
                label.attr_types[an] = (a.findtext("input_type") or "text").lower()
        parent = lab.findtext("parent")
        if parent:
            meta.labels.setdefault(parent, _Label(parent)).sublabels.append(name)
        sub = lab.find("sublabels")
        for s in sub.findall("label") if sub is not None else []:
            sname = s.findtext("name")
            if sname and sname not in label.sublabels:
                label.sublabels.append(sname)
        svg = lab.findtext("svg") or ""
        for a, b in re.findall(r'data-node-from="(\d+)"[^>]*data-node-to="(\d+)"', svg):
            label.edges.append([int(a), int(b)])


def parse_meta(node: Node) -> Meta:
    meta = Meta()
    task = node.find("task")
    project = node.find("project")
    if task is not None:
        meta.task = _task(task)
        meta.mode = task.findtext("mode")
        _labels(task.find("labels"), meta)
        if meta.task.id:
            meta.tasks[meta.task.id] = meta.task
    if project is not None:
        _labels(project.find("labels"), meta)
        tasks = project.find("tasks")
        for t in tasks.findall("task") if tasks is not None else []:
            parsed = _task(t)
            if parsed.id:
                meta.tasks[parsed.id] = parsed
    return meta


# --------------------------------------------------------------------------------------------
# Conversion


def typed(value: str, input_type: str | None) -> Any:
    """A CVAT attribute's text as the type its spec declares."""
    v = value.strip() if isinstance(value, str) else value
    if input_type == "checkbox":
        return str(v).lower() == "true"
    if input_type == "number":
        try:
            f = float(v)
        except (TypeError, ValueError):
            return v
        return int(f) if f.is_integer() and "." not in str(v) and "e" not in str(v).lower() else f
    return v


def _pairs(text: str | None) -> list[float] | None:
    """CVAT's "x1,y1;x2,y2;..." -> [x1, y1, x2, y2, ...] (None when malformed)."""
    if not text:
        return None
    out: list[float] = []
    for pair in text.strip().split(";"):
        xy = pair.split(",")
        if len(xy) != 2:
            return None
        try:
            out.extend((float(xy[0]), float(xy[1])))
        except ValueError:
            return None
    return out


def _f(node: Node, key: str) -> Any:
    v = node.get(key)
    if v is None:
        return None
    try:
        return float(v)
    except ValueError:
        return v


def cvat_mask_to_rle(
    rle: str, left: int, top: int, width: int, height: int, img_w: int, img_h: int
) -> dict[str, Any]:
    """CVAT's mask (row-major runs over its own rectangle, zeros first) -> a COCO RLE over the
    whole image. Raises ValueError when the runs do not cover the rectangle exactly."""
    import numpy as np

    from visionloop.annotations.formats.coco import mask_to_rle

    counts = [int(v) for v in rle.replace(" ", "").split(",") if v != ""]
    if any(c < 0 for c in counts) or sum(counts) != width * height:
        raise ValueError(
            f"mask runs cover {sum(counts)} pixels but its rectangle has {width * height}"
        )
    if left < 0 or top < 0 or left + width > img_w or top + height > img_h:
        raise ValueError(
            f"mask rectangle {left},{top} {width}x{height} lies outside the {img_w}x{img_h} image"
        )
    values = np.arange(len(counts)) % 2 == 1
    region = np.repeat(values, counts).reshape(height, width)
    full = np.zeros((img_h, img_w), dtype=bool)
    full[top : top + height, left : left + width] = region
    return mask_to_rle(full)


@dataclass
class _Ctx:
    root: str
    source_file: str
    limits: Limits
    cmap: CategoryMap
    builder: TableBuilder
    issues: Issues
    sizes: SizeLookup
    frames: dict[str, str]  # "frame_000010" -> rel path of the image in the export
    stem_subset: str | None
    meta: Meta = field(default_factory=Meta)
    records: list[ImageRecord] = field(default_factory=list)

    def error(self, code: str, ptr: str, msg: str) -> None:
        self.issues.error(code, self.source_file, ptr, msg)

    def warn(self, code: str, ptr: str, msg: str) -> None:
        self.issues.warn(code, self.source_file, ptr, msg)


def _shape_attrs(ctx: _Ctx, el: Node, label: str) -> dict[str, Any]:
    spec = ctx.meta.labels.get(label)
    attrs: dict[str, Any] = {}
    for a in el.findall("attribute"):
        name = a.get("name")
        if name:
            attrs[name] = typed(a.text, spec.attr_types.get(name) if spec else None)
    if el.get("occluded") in ("1", "true", "True"):
        attrs["occluded"] = True
    for key in ("z_order", "group_id"):
        v = _int(el.get(key), 0)
        if v:
            attrs[key] = v
    source = el.get("source")
    if source and source != "manual":
        attrs["source"] = source
    return attrs


def _geometry(ctx: _Ctx, el: Node, w: int | None, h: int | None) -> dict[str, Any] | None:
    """Row fields for one shape element, or None (reported)."""
    limits = ctx.limits
    ptr = el.pointer
    check: GeometryCheck
    if el.tag == "box":
        x0, y0, x1, y1 = (_f(el, k) for k in ("xtl", "ytl", "xbr", "ybr"))
        rotation = _f(el, "rotation") or 0.0
        try:
            bw, bh = x1 - x0, y1 - y0
        except TypeError:
            ctx.error("invalid_geometry", ptr, "box corners are not numbers")
            return None
        if isinstance(rotation, float) and math.isfinite(rotation) and rotation % 360:
            cx, cy = x0 + bw / 2, y0 + bh / 2
            check, corners = check_obb(cx, cy, bw, bh, rotation, w, h, limits)
            if check.box is None:
                ctx.error("invalid_geometry", ptr, check.error or "invalid box")
                return None
            if check.warning:
                ctx.warn("clipped", ptr, check.warning)
            return {
                "shape": OBB,
                "box": check.box,
                "obb": obb_json(cx, cy, bw, bh, rotation),
                "segmentation": polygons_json([[round(c, 4) for c in corners]]),
            }
        check = check_box(x0, y0, bw, bh, w, h, limits)
        if check.box is None:
            ctx.error("invalid_geometry", ptr, check.error or "invalid box")
            return None
        if check.warning:
            ctx.warn("clipped", ptr, check.warning)
        return {"shape": BOX, "box": check.box}
    if el.tag in ("polygon", "polyline", "points"):
        flat = _pairs(el.get("points"))
        if flat is None:
            ctx.error("invalid_geometry", ptr, f"points {el.get('points')!r} are not 'x,y;x,y'")
            return None
        if el.tag == "polygon":
            check = check_polygons([flat], w, h, limits)
            if check.box is None:
                ctx.error("invalid_geometry", ptr, check.error or "invalid polygon")
                return None
            if check.warning:
                ctx.warn("clipped", ptr, check.warning)
            return {"shape": POLYGON, "box": check.box, "segmentation": polygons_json([flat])}
        pts = [[flat[i], flat[i + 1], 2] for i in range(0, len(flat), 2)]
        check = check_points(pts, w, h, limits, min_points=2 if el.tag == "polyline" else 1)
        if check.error:
            ctx.error("invalid_geometry", ptr, check.error)
            return None
        shape = POLYLINE if el.tag == "polyline" else POINTS
        return {"shape": shape, "box": check.box, "keypoints": keypoints_json(pts)}
    if el.tag == "ellipse":
        cx, cy, rx, ry = (_f(el, k) for k in ("cx", "cy", "rx", "ry"))
        rotation = _f(el, "rotation") or 0.0
        try:
            dims = (cx, cy, 2 * rx, 2 * ry, rotation)
        except TypeError:
            ctx.error("invalid_geometry", ptr, "ellipse values are not numbers")
            return None
        check, outline = check_obb(*dims, w, h, limits, ellipse=True)
        if check.box is None:
            ctx.error("invalid_geometry", ptr, check.error or "invalid ellipse")
            return None
        if check.warning:
            ctx.warn("clipped", ptr, check.warning)
        return {
            "shape": ELLIPSE,
            "box": check.box,
            "obb": obb_json(*dims),
            "segmentation": polygons_json([outline]),
        }
    if el.tag == "mask":
        if w is None or h is None:
            ctx.error("unknown_image_size", ptr, "a mask needs the image size")
            return None
        dims = [_int(el.get(k)) for k in ("left", "top", "width", "height")]
        if any(d is None for d in dims):
            ctx.error("invalid_geometry", ptr, "mask needs integer left, top, width, height")
            return None
        from visionloop.annotations.formats.coco import rle_bbox_area, rle_counts

        try:
            rle = cvat_mask_to_rle(el.get("rle", ""), *dims, w, h)  # type: ignore[arg-type]
        except ValueError as e:
            ctx.error("invalid_rle", ptr, str(e))
            return None
        box, area = rle_bbox_area(rle_counts(rle)[2], h)
        if area == 0:
            ctx.error("empty_mask", ptr, "mask is empty")
            return None
        return {"shape": MASK, "box": tuple(box), "segmentation": dumps(rle)}
    if el.tag == "skeleton":
        spec = ctx.meta.labels.get(el.get("label", ""))
        names = spec.sublabels if spec else []
        found: dict[str, list[float]] = {}
        for child in el.findall("points"):
            flat = _pairs(child.get("points")) or []
            if len(flat) != 2:
                ctx.error("invalid_geometry", child.pointer, "skeleton point is not one x,y")
                return None
            v = 0 if child.get("outside") == "1" else 1 if child.get("occluded") == "1" else 2
            found[child.get("label", "")] = [flat[0], flat[1], v]
        order = names or sorted(found)
        pts = [found.get(n, [0.0, 0.0, 0]) for n in order]
        check = check_points(pts, w, h, limits)
        if check.error:
            ctx.error("invalid_geometry", ptr, check.error)
            return None
        return {"shape": KEYPOINTS, "box": check.box, "keypoints": keypoints_json(pts)}
    if el.tag == "tag":
        return {"shape": TAG, "box": None}
    ctx.error(
        "unsupported_shape",
        ptr,
        f"<{el.tag}> is not imported (no canonical geometry for it)",
    )
    return None


def _emit(
    ctx: _Ctx,
    el: Node,
    ref: str,
    subset: str | None,
    w: int | None,
    h: int | None,
    track: Node | None = None,
) -> None:
    label = (track if track is not None else el).get("label", "")
    if not label or not label.strip():
        ctx.error("missing_label", el.pointer, f"<{el.tag}> has an empty label: not imported")
        return
    label = label.strip()
    geo = _geometry(ctx, el, w, h)
    if geo is None:
        return
    attrs = _shape_attrs(ctx, el, label)
    track_id = frame = None
    if track is not None:
        track_id = _int(track.get("id"))
        frame = _int(el.get("frame"))
        attrs["keyframe"] = el.get("keyframe", "1") in ("1", "true", "True")
        for key in ("group_id",):
            v = _int(track.get(key), 0)
            if v:
                attrs[key] = v
        if track.get("source") and track.get("source") != "manual":
            attrs["source"] = track.get("source")
    elif el.get("frame") is not None:  # a tag or shape of a video task, outside a track
        frame = _int(el.get("frame"))
    cid = ctx.cmap.register(ctx.source_file, label, label)
    spec = ctx.meta.labels.get(label)
    if geo["shape"] == KEYPOINTS and spec and spec.sublabels:
        ctx.cmap.set_meta(label, keypoints=list(spec.sublabels), skeleton=spec.edges or None)
    box = geo.get("box")
    ctx.builder.add(
        AnnotationRecord(
            annotation_id=f"{ctx.source_file}#{el.pointer}",
            image_ref=ref,
            category=label,
            category_id=cid,
            source_format=FORMAT,
            source_file=ctx.source_file,
            source_pointer=el.pointer,
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
            source_annotation_id=None if track is None else track.get("id"),
            shape=geo["shape"],
            obb=geo.get("obb"),
            keypoints=geo.get("keypoints"),
            track_id=track_id,
            frame=frame,
        )
    )


def _image(ctx: _Ctx, node: Node) -> None:
    name = node.get("name")
    why = ref_escape(name)
    if why:
        code = "path_escape" if name and "root" in why else "invalid_image"
        ctx.error(code, node.pointer, f"image name {why}: its shapes are not imported")
        return
    w, h, bad = check_image_size(_int(node.get("width")), _int(node.get("height")))
    if bad:
        ctx.warn("invalid_image_size", node.pointer, bad)
    task = ctx.meta.tasks.get(node.get("task_id", "")) if node.get("task_id") else None
    subset = node.get("subset") or (task.subset if task else None)
    if subset is None and ctx.meta.task is not None:
        subset = ctx.meta.task.subset
    subset = subset or ctx.stem_subset
    ctx.records.append(ImageRecord(name, FORMAT, ctx.source_file, node.pointer, subset, w, h))
    for el in node.children:
        if el.tag in _SHAPES:
            _emit(ctx, el, name, subset, w, h)
        elif el.tag != "attribute":
            ctx.warn("unknown_element", el.pointer, f"<{el.tag}> inside <image> is ignored")


def _frame_ref(ctx: _Ctx, frame: int) -> str:
    stem = f"frame_{frame:06d}"
    if stem in ctx.frames:
        return ctx.frames[stem]
    for ref in ctx.sizes.images:
        if posixpath.splitext(posixpath.basename(ref))[0] == stem:
            return ref
    return stem


def _track(ctx: _Ctx, node: Node, original: tuple[int | None, int | None]) -> None:
    task = ctx.meta.tasks.get(node.get("task_id", "")) if node.get("task_id") else ctx.meta.task
    subset = (task.subset if task else None) or ctx.stem_subset
    for el in node.children:
        if el.tag not in _SHAPES:
            continue
        frame = _int(el.get("frame"))
        if frame is None:
            ctx.error("invalid_frame", el.pointer, f"frame {el.get('frame')!r} is not an integer")
            continue
        if task is not None:
            off_grid = (frame - task.start) % task.step != 0
            outside = frame < task.start or (task.stop is not None and frame > task.stop)
            if off_grid or outside:
                ctx.issues.once(
                    "warning",
                    "frame_off_grid",
                    ctx.source_file,
                    el.pointer,
                    f"frame {frame} is not start_frame {task.start} + k x step {task.step} "
                    f"up to stop_frame {task.stop}: imported as written",
                )
        if el.get("outside") in ("1", "true", "True"):
            continue  # the object is not in this frame
        ref = _frame_ref(ctx, frame)
        size = ctx.sizes.find(ref)
        w, h = size if size else original
        _emit(ctx, el, ref, subset, w, h, track=node)


def _subset_from_stem(uri: str) -> str | None:
    stem = posixpath.splitext(posixpath.basename(uri))[0]
    return None if stem.lower() in ("annotations", "default") else stem


def _is_cvat_xml(uri: str) -> bool:
    if not uri.lower().endswith(".xml"):
        return False
    if root_tag(uri) != "annotations":
        return False
    from visionloop.annotations.formats.common import read_head

    head = read_head(uri, 4096)
    return b"<version>" in head or b"<meta>" in head or b"<image " in head or b"<track " in head


def load_cvat(
    path: str, *, images: KnownImages | None = None, limits: Limits = DEFAULT_LIMITS
) -> ImportResult:
    """Import a CVAT XML file (images or video 1.1), or every one below a folder."""
    root, files, folder = source_files(path, (".xml",), "CVAT")
    files = [f for f in files if _is_cvat_xml(f)]
    if not files:
        raise AnnotationImportError(f"no CVAT <annotations> XML found at {path}")
    frames: dict[str, str] = {}
    fs, p = storage.filesystem(root)
    if fs.isdir(p):
        for uri in storage.walk_files(root):
            if uri.lower().endswith(_IMAGE_EXTS):
                rel = storage.relative_to(root, uri)
                stem = posixpath.splitext(posixpath.basename(rel))[0]
                if stem.startswith("frame_"):
                    frames.setdefault(stem, rel)
    cmap, builder, issues = CategoryMap(), TableBuilder(), Issues()
    sizes = SizeLookup(images)
    records: list[ImageRecord] = []
    for uri in files:
        source_file = display(path, uri) if folder else path
        ctx = _Ctx(
            root,
            source_file,
            limits,
            cmap,
            builder,
            issues,
            sizes,
            frames,
            _subset_from_stem(uri),
            records=records,
        )
        original: tuple[int | None, int | None] = (None, None)
        try:
            for node in iter_elements(uri, {"meta", "image", "track", "tag"}):
                if node.tag == "meta":
                    ctx.meta = parse_meta(node)
                    task_el = node.find("task")
                    if task_el is not None and task_el.find("subset") is not None:
                        ctx.stem_subset = None  # the task says which subset (none: empty)
                    for name in ctx.meta.labels:  # declared order, used or not
                        if name.strip() and not _is_sublabel(ctx.meta, name):
                            cmap.register(source_file, name, name)
                    task = node.find("task")
                    size = task.find("original_size") if task is not None else None
                    if size is not None:
                        w, h, _ = check_image_size(
                            _int(size.findtext("width")), _int(size.findtext("height"))
                        )
                        original = (w, h)
                elif node.tag == "image":
                    _image(ctx, node)
                elif node.tag == "track":
                    _track(ctx, node, original)
                else:  # a frame-level tag of a video dump
                    frame = _int(node.get("frame"))
                    ref = _frame_ref(ctx, frame) if frame is not None else ""
                    _emit(ctx, node, ref, ctx.stem_subset, *original)
        except XmlError as e:
            issues.error(e.code, source_file, e.pointer, e.message)
        log.info("cvat: %s -> %d annotation(s) so far", source_file, builder.count)
    return ImportResult(FORMAT, path, builder.build(), cmap, images_frame(records), issues.done())


def _is_sublabel(meta: Meta, name: str) -> bool:
    return any(name in lab.sublabels for lab in meta.labels.values())


def sniff_cvat(path: str) -> str | None:
    fs, p = storage.filesystem(path)
    if not fs.exists(p):
        return None
    candidates: Iterable[str] = [path] if not is_dir(path) else storage.walk_files(path)
    for uri in candidates:
        if _is_cvat_xml(uri):
            where = "" if uri == path else f"{display(path, uri)}: "
            return f"{where}XML with an <annotations> root (CVAT 1.1)"
    return None


class CvatReader:
    """The ``AnnotationReader`` for CVAT for images / video 1.1."""

    name = FORMAT

    def sniff(self, path: str) -> str | None:
        return sniff_cvat(path)

    def load(
        self, path: str, *, images: KnownImages | None = None, limits: Limits = DEFAULT_LIMITS
    ) -> ImportResult:
        return load_cvat(path, images=images, limits=limits)


# --------------------------------------------------------------------------------------------
# Export

_RESERVED = {"occluded", "z_order", "group_id", "source", "keyframe"}


def _q(v: Any) -> str:
    from xml.sax.saxutils import quoteattr

    return quoteattr(str(v))


def _fmt(v: float) -> str:
    """Shortest text that reads back as the same float (CVAT accepts any precision)."""
    return repr(float(v))


def _attr_type(values: list[Any]) -> str:
    if all(isinstance(v, bool) for v in values):
        return "checkbox"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return "number"
    return "text"


def _attr_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    return str(v)


def _mask_element(seg: dict[str, Any]) -> tuple[str, int, int, int, int]:
    """A COCO RLE -> CVAT's (rle, left, top, width, height) over the mask's extent."""
    import numpy as np

    from visionloop.annotations.formats.coco import rle_to_mask

    mask = rle_to_mask(seg)
    ys, xs = np.nonzero(mask)
    top, left = int(ys.min()), int(xs.min())
    bottom, right = int(ys.max()), int(xs.max())
    region = mask[top : bottom + 1, left : right + 1].reshape(-1)
    change = np.flatnonzero(np.diff(region.astype(np.int8))) + 1
    bounds = np.concatenate(([0], change, [region.size]))
    runs = np.diff(bounds).tolist()
    if region[0]:
        runs = [0, *runs]
    return ", ".join(map(str, runs)), left, top, right - left + 1, bottom - top + 1


def save_cvat(df: Any, categories: CategoryMap, out: str) -> Any:
    """Write the table as CVAT XML at ``out``: CVAT for video 1.1 when any row has a
    ``track_id`` (tracks of shapes per frame, an ``outside`` keyframe after each run of frames),
    else CVAT for images 1.1 (one ``<image>`` per image reference and subset).

    Carried: boxes (oriented ones with ``rotation``), polygons (one element per ring), polylines,
    point sets, ellipses, masks, tags, skeletons (pose keypoints whose category names its
    keypoints), attributes (typed by a label spec written from their values: checkbox, number
    or text) and occluded / z_order / group_id / source / keyframe. Lost: annotator, score,
    iscrowd, points' visibility other than visible, and in video mode image references other
    than CVAT's ``frame_NNNNNN`` names; untracked rows in a video are written as one-frame tracks.
    """
    from functools import reduce
    from itertools import pairwise

    from visionloop.annotations.export import (
        LossReport,
        attributes_of,
        json_value,
        value,
    )
    from visionloop.annotations.table import shape_of

    report = LossReport("cvat", rows=len(df))
    rows = list(df.itertuples(index=False))
    video = any(value(r, "track_id") is not None for r in rows)
    # Label specs from the attribute values.
    seen: dict[str, dict[str, list[Any]]] = {n: {} for n in categories.names()}
    for r in rows:
        for k, v in attributes_of(r).items():
            if k not in _RESERVED:
                seen.setdefault(r.category, {}).setdefault(k, []).append(v)
    types = {lab: {k: _attr_type(vs) for k, vs in attrs.items()} for lab, attrs in seen.items()}
    lines = ['<?xml version="1.0" encoding="utf-8"?>', "<annotations>", "  <version>1.1</version>"]
    frames = sorted({int(value(r, "frame")) for r in rows if value(r, "frame") is not None})
    step = reduce(math.gcd, [b - a for a, b in pairwise(frames)], 0) or 1
    lines += ["  <meta>", "    <task>", "      <name>visionloop export</name>"]
    lines.append("      <subset></subset>")  # per-image subsets (images mode) say the rest
    lines.append(f"      <mode>{'interpolation' if video else 'annotation'}</mode>")
    if video:
        start, stop = (frames[0], frames[-1]) if frames else (0, 0)
        lines += [
            f"      <start_frame>{start}</start_frame>",
            f"      <stop_frame>{stop}</stop_frame>",
            f"      <frame_filter>{'' if step == 1 else f'step={step}'}</frame_filter>",
        ]
        sizes = {(value(r, "image_width"), value(r, "image_height")) for r in rows}
        sizes.discard((None, None))
        if sizes:
            w, h = sorted(sizes)[0]
            lines += [
                "      <original_size>",
                f"        <width>{int(w)}</width>",
                f"        <height>{int(h)}</height>",
                "      </original_size>",
            ]
            if len(sizes) > 1:
                report.notes.append(f"{len(sizes)} frame sizes: original_size says {w}x{h}")
    lines.append("      <labels>")
    for name in categories.names():
        meta = categories.meta.get(name, {})
        lines += ["        <label>", f"          <name>{_esc(name)}</name>"]
        if meta.get("keypoints"):
            lines.append("          <type>skeleton</type>")
            edges = "".join(
                f'<line data-type="edge" data-node-from="{a}" data-node-to="{b}"></line>'
                for a, b in (meta.get("skeleton") or [])
            )
            lines.append(f"          <svg>{_esc(edges)}</svg>")
        lines.append("          <attributes>")
        for attr, kind in types.get(name, {}).items():
            values = "false\ntrue" if kind == "checkbox" else ""
            lines += [
                "            <attribute>",
                f"              <name>{_esc(attr)}</name>",
                "              <mutable>False</mutable>",
                f"              <input_type>{kind}</input_type>",
                "              <default_value></default_value>",
                f"              <values>{values}</values>",
                "            </attribute>",
            ]
        lines += ["          </attributes>", "        </label>"]
        for kp in meta.get("keypoints") or []:
            lines += [
                "        <label>",
                f"          <name>{_esc(kp)}</name>",
                "          <type>points</type>",
                f"          <parent>{_esc(name)}</parent>",
                "          <attributes>",
                "          </attributes>",
                "        </label>",
            ]
    lines += ["      </labels>", "    </task>", "  </meta>"]

    def shape_xml(r: Any, extra: dict[str, Any], indent: str) -> list[str] | None:
        rid = r.annotation_id
        shape = shape_of(value(r, "shape"), value(r, "segmentation"))
        attrs = attributes_of(r)
        common = {"label": r.category, **extra}
        if attrs.pop("occluded", False):
            common["occluded"] = 1
        else:
            common["occluded"] = 0
        for key in ("z_order", "group_id"):
            if key in attrs:
                common[key] = attrs.pop(key)
        if "source" in attrs:
            common["source"] = attrs.pop("source")
        attrs.pop("keyframe", None)
        typed_attrs = types.get(r.category, {})
        children = [
            f"{indent}  <attribute name={_q(k)}>{_esc(_attr_text(v))}</attribute>"
            for k, v in attrs.items()
        ]
        for k, v in attrs.items():
            if typed_attrs.get(k) == "text" and not isinstance(v, str):
                report.lose(rid, "attribute_type", f"{k!r}: CVAT text attribute, type lost")
        for col in ("annotator", "score"):
            if value(r, col) is not None:
                report.lose(rid, col, f"CVAT XML has no place for {col}")
        if value(r, "iscrowd"):
            report.lose(rid, "iscrowd", "CVAT XML has no crowd flag")
        seg = json_value(r, "segmentation")
        box = [value(r, c) for c in ("bbox_x", "bbox_y", "bbox_w", "bbox_h")]
        tag: str
        geo: dict[str, Any]
        if shape == OBB:
            cx, cy, w, h, angle = json_value(r, "obb")
            tag = "box"
            geo = {"xtl": cx - w / 2, "ytl": cy - h / 2, "xbr": cx + w / 2, "ybr": cy + h / 2}
            geo["rotation"] = angle
        elif shape == ELLIPSE:
            cx, cy, w, h, angle = json_value(r, "obb")
            tag, geo = "ellipse", {"cx": cx, "cy": cy, "rx": w / 2, "ry": h / 2}
            if angle:
                geo["rotation"] = angle
        elif shape == POLYGON and isinstance(seg, list):
            if len(seg) > 1:
                report.skip(rid, "polygon_rings", "CVAT polygons have one ring (not written)")
                return None
            tag = "polygon"
            ring = seg[0]
            pairs = (f"{_fmt(ring[i])},{_fmt(ring[i + 1])}" for i in range(0, len(ring), 2))
            geo = {"points": ";".join(pairs)}
        elif shape in (POLYLINE, POINTS, KEYPOINTS):
            kps = json_value(r, "keypoints") or []
            names = categories.meta.get(r.category, {}).get("keypoints")
            if shape == KEYPOINTS and names and len(names) == len(kps):
                visible = [p for p in kps if p[2]]
                if None not in box and visible:
                    xs, ys = [p[0] for p in visible], [p[1] for p in visible]
                    extent = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
                    if max(abs(a - b) for a, b in zip(box, extent, strict=True)) > 1e-6:
                        report.lose(rid, "bbox", "a CVAT skeleton has no box: its points' extent")
                inner = []
                for n, (x, y, v) in zip(names, kps, strict=True):
                    inner.append(
                        f"{indent}  <points label={_q(n)} outside={_q(int(v == 0))} "
                        f"occluded={_q(int(v == 1))} points={_q(f'{_fmt(x)},{_fmt(y)}')}/>"
                    )
                head = " ".join(f"{k}={_q(v)}" for k, v in common.items())
                return [f"{indent}<skeleton {head}>", *inner, *children, f"{indent}</skeleton>"]
            if any(p[2] != 2 for p in kps):
                report.lose(rid, "visibility", "CVAT points have no per-point visibility")
            if shape == KEYPOINTS:
                report.lose(rid, "shape_keypoints", "no keypoint names: written as points")
            tag = "polyline" if shape == POLYLINE else "points"
            geo = {"points": ";".join(f"{_fmt(x)},{_fmt(y)}" for x, y, _ in kps)}
        elif shape == MASK and isinstance(seg, dict):
            rle, left, top, w, h = _mask_element(seg)
            tag = "mask"
            geo = {"rle": rle, "left": left, "top": top, "width": w, "height": h}
        elif shape == TAG:
            tag, geo = "tag", {}
            common.pop("occluded", None)
        else:
            if None in box:
                report.skip(rid, "no_geometry", "row has no box")
                return None
            x, y, w, h = (float(v) for v in box)
            tag = "box"
            geo = {"xtl": x, "ytl": y, "xbr": x + w, "ybr": y + h}
        attrs_xml = " ".join(
            f"{k}={_q(_fmt(v) if isinstance(v, float) else v)}"
            for k, v in {**common, **geo}.items()
        )
        if children:
            return [f"{indent}<{tag} {attrs_xml}>", *children, f"{indent}</{tag}>"]
        return [f"{indent}<{tag} {attrs_xml}/>"]

    if not video:
        images: dict[tuple[str, str], list[Any]] = {}
        for r in rows:
            images.setdefault((r.image_ref, value(r, "subset") or ""), []).append(r)
            for col in ("frame",):
                if value(r, col) is not None:
                    report.lose(r.annotation_id, col, "CVAT for images has no frame numbers")
        for i, ((ref, subset), group) in enumerate(images.items()):
            w, h = value(group[0], "image_width"), value(group[0], "image_height")
            head = f"  <image id={_q(i)} name={_q(ref)}"
            if w and h:
                head += f" width={_q(int(w))} height={_q(int(h))}"
            if subset:
                head += f" subset={_q(subset)}"
            lines.append(head + ">")
            for r in group:
                xml = shape_xml(r, {}, "    ")
                if xml is not None:
                    lines.extend(xml)
                    report.written += 1
            lines.append("  </image>")
    else:
        tracks: dict[int, list[Any]] = {}
        known_ids = [int(value(r, "track_id")) for r in rows if value(r, "track_id") is not None]
        next_id = max(known_ids, default=-1) + 1
        for r in rows:
            if value(r, "frame") is None:
                report.skip(r.annotation_id, "no_frame", "a video track shape needs a frame")
                continue
            tid = value(r, "track_id")
            if tid is None:
                tid = next_id
                next_id += 1
                report.lose(r.annotation_id, "track_id", "untracked row written as a 1-frame track")
            tracks.setdefault(int(tid), []).append(r)
        stop = frames[-1] if frames else 0
        for tid, group in sorted(tracks.items()):
            group.sort(key=lambda r: int(r.frame))
            label = group[0].category
            if value(group[0], "subset"):
                report.notes.append("CVAT video has no per-frame subsets: subsets not written")
            lines.append(f"  <track id={_q(tid)} label={_q(label)}>")
            for k, r in enumerate(group):
                if r.category != label:
                    report.skip(r.annotation_id, "track_label", "a CVAT track has one label")
                    continue
                frame = int(r.frame)
                stem = posixpath.splitext(posixpath.basename(r.image_ref))[0]
                if stem != f"frame_{frame:06d}":
                    report.lose(r.annotation_id, "image_ref", "CVAT video frames are frame_NNNNNN")
                if value(r, "subset"):
                    report.lose(r.annotation_id, "subset", "CVAT video has no subsets")
                keyframe = attributes_of(r).get("keyframe", True)
                extra = {"frame": frame, "outside": 0, "keyframe": int(bool(keyframe))}
                xml = shape_xml(r, extra, "    ")
                if xml is None:
                    continue
                lines.extend(xml)
                report.written += 1
                nxt = group[k + 1] if k + 1 < len(group) else None
                gap = nxt is None or int(nxt.frame) != frame + step
                if gap and frame + step <= stop:  # the object leaves: an outside keyframe
                    leave = {**extra, "frame": frame + step, "outside": 1, "keyframe": 1}
                    out_xml = shape_xml(r, leave, "    ")
                    if out_xml:
                        lines.extend(out_xml)
            lines.append("  </track>")
    lines.append("</annotations>")
    storage.write_text_atomic(out, "\n".join(lines) + "\n")
    report.files.append(out)
    return report


def _esc(text: str) -> str:
    from xml.sax.saxutils import escape

    return escape(str(text))
