"""Pascal VOC XML (VOC2007/2012 layout, or LabelImg's XML beside each image) -> the canonical
table. XML is read with defusedxml (entity declarations refused: no billion laughs, no XXE).

- Boxes: ``xmin ymin xmax ymax`` are read as pixel edges, ``x = xmin, w = xmax - xmin``, as
  CVAT, Datumaro, LabelImg and Roboflow write and read them (floats such as 5.5 are kept).
  The VOC devkit's own 1-based inclusive reading would shift every box by a pixel; no tool in
  use today writes that convention, so it is not guessed.
- ``<part>`` (person layout: head, hand, foot) -> a row of its own, category = the part name,
  ``attributes.part_of`` = the parent object's pointer; ``<actions>`` -> ``attributes.actions``
  ({"jumping": false, ...}); ``truncated`` / ``difficult`` / ``occluded`` -> booleans in
  attributes, ``pose`` as written; CVAT's ``<attributes>`` blocks too.
- Subsets from ``ImageSets/Main/<subset>.txt`` (blank lines and ``#`` comments skipped; then
  Segmentation, Layout, Action lists). Images listed there without an XML are reported, not
  declared "labelled empty": VOC test lists usually come without annotations.
- Per-class lists (``ImageSets/Main/<class>_<subset>.txt``, 1 / -1 / 0) restate the objects;
  they are not imported, but where they contradict the XML (class said present, no such object,
  or the reverse) a warning per list file says so with examples.
- ``SegmentationClass/`` and ``SegmentationObject/`` PNGs are not imported (one warning with
  their count): they are palette images tied to objects only by index.
- Size 0 (some tools write it) is read as unknown: the image's header or the known images
  give it, else bounds are not checked.
"""

from __future__ import annotations

import logging
import posixpath
import re
from dataclasses import dataclass, field
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
from visionloop.annotations.xmlstream import Node, XmlError, iter_elements

log = logging.getLogger(__name__)

FORMAT = "voc"
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_OBJECT_KEYS = {
    "name",
    "bndbox",
    "part",
    "actions",
    "truncated",
    "difficult",
    "occluded",
    "pose",
    "attributes",
}
_SUBSET_DIRS = ("Main", "Segmentation", "Layout", "Action")
_ROOT_RE = re.compile(rb"<annotation[\s>]")


@dataclass
class _Ctx:
    root: str
    limits: Limits
    cmap: CategoryMap
    builder: TableBuilder
    issues: Issues
    sizes: SizeLookup
    subsets: dict[str, str]
    images_by_stem: dict[str, str]  # image file stem -> path relative to the root
    records: list[ImageRecord] = field(default_factory=list)
    objects: dict[str, set[str]] = field(default_factory=dict)  # image id -> categories


def _flag(text: str | None) -> bool | None:
    if text is None or text == "":
        return None
    try:
        return float(text) != 0
    except ValueError:
        return text.strip().lower() in ("true", "yes")


def _num(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return text


def _attributes(obj: Node) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for key in ("truncated", "difficult", "occluded"):
        value = _flag(obj.findtext(key))
        if value is not None:
            attrs[key] = value
    pose = obj.findtext("pose")
    if pose:
        attrs["pose"] = pose
    actions = obj.find("actions")
    if actions is not None:
        attrs["actions"] = {a.tag: bool(_flag(a.text.strip())) for a in actions.children}
    block = obj.find("attributes")
    if block is not None:  # CVAT's VOC export: <attribute><name/><value/></attribute>
        for a in block.findall("attribute"):
            name = a.findtext("name")
            if name:
                attrs[name] = a.findtext("value", "")
    for child in obj.children:
        if child.tag not in _OBJECT_KEYS and not child.children and child.text.strip():
            attrs[child.tag] = child.text.strip()
    return attrs


def _box(node: Node) -> tuple[Any, Any, Any, Any] | None:
    bb = node.find("bndbox")
    if bb is None:
        return None
    x0, y0, x1, y1 = (_num(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
    try:
        return x0, y0, x1 - x0, y1 - y0
    except TypeError:
        return x0, y0, x1, y1  # check_box names the non-number


def _add(
    ctx: _Ctx,
    source_file: str,
    node: Node,
    name: str,
    ref: str,
    subset: str | None,
    width: int | None,
    height: int | None,
    attrs: dict[str, Any],
) -> bool:
    ptr = node.pointer
    box = _box(node)
    if box is None:
        ctx.issues.error("no_geometry", source_file, ptr, f"<{node.tag}> {name!r} has no bndbox")
        return False
    check = check_box(*box, width, height, ctx.limits)
    if check.box is None:
        ctx.issues.error("invalid_bbox", source_file, ptr, check.error or "invalid bndbox")
        return False
    if check.warning:
        ctx.issues.warn("clipped", source_file, ptr, check.warning)
    cid = ctx.cmap.register(source_file, name, name)
    x, y, w, h = check.box
    ctx.builder.add(
        AnnotationRecord(
            annotation_id=f"{source_file}#{ptr}",
            image_ref=ref,
            category=name,
            category_id=cid,
            source_format=FORMAT,
            source_file=source_file,
            source_pointer=ptr,
            source_category_id=name,
            bbox_x=x,
            bbox_y=y,
            bbox_w=w,
            bbox_h=h,
            image_width=width,
            image_height=height,
            attributes=dumps(attrs) if attrs else None,
            subset=subset,
            shape=BOX,
        )
    )
    return True


def _image_size(
    ctx: _Ctx, doc: Node, ref: str, local: str | None, source_file: str
) -> tuple[int | None, int | None]:
    w, h, why = check_image_size(
        _num(doc.findtext("size/width")), _num(doc.findtext("size/height"))
    )
    if w == 0 or h == 0 or why:
        w = h = None
    if w is None and why and doc.find("size") is not None:
        size_el = doc.find("size")
        assert size_el is not None
        if (size_el.findtext("width") or "0") not in ("0", "0.0"):
            ctx.issues.warn("invalid_image_size", source_file, size_el.pointer, why)
    if w is None:
        size = ctx.sizes.find(ref)
        if size is None and local is not None:
            from visionloop.annotations.formats.yolo import image_size

            try:
                size = image_size(storage.join(ctx.root, local))
            except Exception as e:  # an unreadable image only means "size unknown"
                log.debug("voc: cannot read %s: %s", local, e)
        if size is not None:
            w, h = size
    return w, h


def convert_document(ctx: _Ctx, doc: Node, source_file: str, xml_stem: str) -> None:
    """One ``<annotation>`` element -> rows."""
    filename = doc.findtext("filename")
    image_id = posixpath.splitext(filename)[0] if filename else xml_stem
    local = ctx.images_by_stem.get(image_id) or ctx.images_by_stem.get(xml_stem)
    if not filename:
        if local is None:
            ctx.issues.error(
                "missing_filename",
                source_file,
                doc.pointer,
                "no <filename> and no image named like the XML: its objects are not imported",
            )
            return
        ctx.issues.warn(
            "missing_filename", source_file, doc.pointer, f"no <filename>: image is {local}"
        )
        filename = posixpath.basename(local)
    why = ref_escape(filename)
    if why:
        ctx.issues.error("path_escape", source_file, doc.pointer, f"<filename> {why}")
        return
    if local is not None and posixpath.basename(local) != posixpath.basename(filename):
        local = None
    ref = local or filename
    subset = ctx.subsets.get(posixpath.splitext(posixpath.basename(filename))[0]) or (
        ctx.subsets.get(xml_stem)
    )
    width, height = _image_size(ctx, doc, ref, local, source_file)
    ctx.records.append(ImageRecord(ref, FORMAT, source_file, doc.pointer, subset, width, height))
    seen = ctx.objects.setdefault(xml_stem, set())
    for obj in doc.findall("object"):
        name = (obj.findtext("name") or "").strip()
        if not name:
            ctx.issues.error("missing_label", source_file, obj.pointer, "object has no <name>")
            continue
        attrs = _attributes(obj)
        if _add(ctx, source_file, obj, name, ref, subset, width, height, attrs):
            seen.add(name)
        for part in obj.findall("part"):
            pname = (part.findtext("name") or "").strip()
            if not pname:
                ctx.issues.error("missing_label", source_file, part.pointer, "part has no <name>")
                continue
            pattrs = {"part_of": {"category": name, "pointer": obj.pointer}}
            _add(ctx, source_file, part, pname, ref, subset, width, height, pattrs)


def _read_list(uri: str) -> list[list[str]]:
    rows = []
    for line in storage.read_text(uri).splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rows.append(line.split())
    return rows


ClassLists = dict[str, tuple[str, dict[str, int]]]  # list file -> (class, image id -> flag)


def _image_sets(root: str) -> tuple[dict[str, str], ClassLists]:
    """(image id -> subset, per-class lists) from ImageSets/."""
    subsets: dict[str, str] = {}
    class_lists: ClassLists = {}
    for folder in _SUBSET_DIRS:
        base = storage.join(root, "ImageSets", folder)
        if not storage.exists(base):
            continue
        for uri in sorted(storage.walk_files(base)):
            if not uri.endswith(".txt"):
                continue
            stem = posixpath.splitext(posixpath.basename(uri))[0]
            rows = _read_list(uri)
            if folder == "Main" and "_" in stem and any(len(r) >= 2 for r in rows):
                cls = stem.rpartition("_")[0]
                flags = {}
                for r in rows:
                    if len(r) >= 2:
                        try:
                            flags[r[0]] = int(r[1])
                        except ValueError:
                            continue
                class_lists[uri] = (cls, flags)
                continue
            for r in rows:
                subsets.setdefault(r[0], stem)
    return subsets, class_lists


def _check_class_lists(ctx: _Ctx, class_lists: ClassLists, shown: Any) -> None:
    for uri, (cls, flags) in class_lists.items():
        if cls not in ctx.cmap:
            continue  # a class with no object anywhere (or not a class: "ignored", ...)
        wrong = []
        for image_id, flag in flags.items():
            if image_id not in ctx.objects or flag == 0:
                continue
            present = cls in ctx.objects[image_id]
            if (flag > 0) != present:
                wrong.append(f"{image_id} ({'listed' if flag > 0 else 'excluded'})")
        if wrong:
            ctx.issues.warn(
                "class_list_mismatch",
                shown(uri),
                "",
                f"{len(wrong)} image(s) disagree with their XML about {cls!r} (e.g. "
                f"{', '.join(wrong[:3])}): class lists are not imported; the XML objects are",
            )


def _is_voc_xml(uri: str) -> bool:
    return bool(_ROOT_RE.search(read_head(uri, 2048)))


def voc_files(path: str) -> tuple[str, list[str], bool]:
    root, files, folder = source_files(path, (".xml",), "Pascal VOC")
    files = [f for f in files if _is_voc_xml(f)]
    if not files:
        raise AnnotationImportError(f"no Pascal VOC <annotation> XML found at {path}")
    return root, files, folder


def load_voc(
    path: str, *, images: KnownImages | None = None, limits: Limits = DEFAULT_LIMITS
) -> ImportResult:
    """Import a VOC dataset folder (Annotations/, ImageSets/, JPEGImages/), a folder of
    LabelImg XMLs, or one XML file."""
    root, files, folder = voc_files(path)
    subsets, class_lists = _image_sets(root) if folder else ({}, {})
    all_files = list(storage.walk_files(root)) if folder else []
    images_by_stem: dict[str, str] = {}
    masks = 0
    for uri in all_files:
        rel = storage.relative_to(root, uri)
        if rel.split("/")[0] in ("SegmentationClass", "SegmentationObject"):
            masks += 1
        elif uri.lower().endswith(_IMAGE_EXTS):
            images_by_stem.setdefault(posixpath.splitext(posixpath.basename(rel))[0], rel)
    cmap, builder, issues = CategoryMap(), TableBuilder(), Issues()
    ctx = _Ctx(root, limits, cmap, builder, issues, SizeLookup(images), subsets, images_by_stem)

    def shown(uri: str) -> str:
        return display(path, uri) if folder else path

    for uri in files:
        source_file = shown(uri)
        stem = posixpath.splitext(posixpath.basename(uri))[0]
        try:
            for doc in iter_elements(uri, {"annotation"}):
                convert_document(ctx, doc, source_file, stem)
        except XmlError as e:
            issues.error(e.code, source_file, e.pointer, e.message)
    if masks:
        issues.warn(
            "masks_not_imported",
            path,
            "",
            f"{masks} segmentation PNG(s) (SegmentationClass/, SegmentationObject/) are not "
            "imported: VOC ties them to objects only by palette index; boxes are imported",
        )
    unlabelled = sorted(i for i in subsets if i not in ctx.objects)
    if unlabelled:
        issues.warn(
            "listed_without_xml",
            path,
            "",
            f"{len(unlabelled)} image(s) listed in ImageSets have no annotation XML (e.g. "
            f"{', '.join(unlabelled[:3])}): not labelled, so not declared as empty",
        )
    _check_class_lists(ctx, class_lists, shown)
    log.info("voc: %s -> %d annotation(s)", path, builder.count)
    return ImportResult(
        FORMAT, path, builder.build(), cmap, images_frame(ctx.records), issues.done()
    )


def sniff_voc(path: str) -> str | None:
    fs, p = storage.filesystem(path)
    if not fs.exists(p):
        return None
    if not is_dir(path):
        ok = path.lower().endswith(".xml") and _is_voc_xml(path)
        return "XML with an <annotation> root" if ok else None
    ann = storage.join(path, "Annotations")
    if storage.exists(ann):
        for uri in storage.walk_files(ann):
            if uri.lower().endswith(".xml") and _is_voc_xml(uri):
                return "Annotations/ folder of <annotation> XMLs"
    for uri in storage.walk_files(path):
        if uri.lower().endswith(".xml") and _is_voc_xml(uri):
            return f"{display(path, uri)} has an <annotation> root"
    return None


class VocReader:
    """The ``AnnotationReader`` for Pascal VOC XML."""

    name = FORMAT

    def sniff(self, path: str) -> str | None:
        return sniff_voc(path)

    def load(
        self, path: str, *, images: KnownImages | None = None, limits: Limits = DEFAULT_LIMITS
    ) -> ImportResult:
        return load_voc(path, images=images, limits=limits)
