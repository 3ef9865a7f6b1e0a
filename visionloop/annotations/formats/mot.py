"""MOT challenge sequences (MOT15/16/17/20 layout) -> the canonical table.

A sequence is a folder with ``gt/gt.txt`` (ground truth) or ``det/det.txt`` (detections), an
optional ``seqinfo.ini`` and ``img1/``. The source may be one sequence, a folder of sequences
(``train/MOT17-02/...``), or a gt.txt / det.txt file.

``gt.txt`` rows: ``frame, id, x, y, w, h, conf, class, visibility`` (absolute pixels, 1-based
frames). ``id`` -> ``track_id`` (``-1``: no track -> null); ``frame`` as written; ``conf`` is
MOT's "consider" flag in ground truth (0 -> ``attributes.ignored``) and the detector's score in
``det.txt`` (-> ``score``; detection rows are predictions: annotator ``prediction:mot-det``);
``visibility`` -> attributes. ``class`` is 1-based into ``gt/labels.txt`` (one name per line)
when present, else MOT17's standard classes (1 pedestrian ... 12 reflection); -1 or a missing
column gives the category "object" (reported once).

Images: ``<seq>/<imDir>/<frame:06d><imExt>`` from seqinfo.ini (defaults ``img1`` and the
extension found in that folder, else ``.jpg``); sizes from seqinfo.ini, else the first frame's
header, else the known images, else unknown (boxes are then not bounds-checked).
"""

from __future__ import annotations

import configparser
import logging
import math
import posixpath
from dataclasses import dataclass

from visionloop import storage
from visionloop.annotations.formats.common import Issues, SizeLookup, display, is_dir
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
    prediction_annotator,
)

log = logging.getLogger(__name__)

FORMAT = "mot"
MOT17_CLASSES = (
    "pedestrian",
    "person on vehicle",
    "car",
    "bicycle",
    "motorbike",
    "non motorized vehicle",
    "static person",
    "distractor",
    "occluder",
    "occluder on the ground",
    "occluder full",
    "reflection",
)
NO_CLASS = "object"
_SPLITS = {"train", "test", "val", "valid", "validation"}
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass
class Sequence:
    """One sequence's files and facts."""

    root: str  # the sequence folder (URI)
    rel: str  # its path below the source ("" when the source is the sequence)
    annotations: str  # gt.txt or det.txt
    is_gt: bool
    im_dir: str = "img1"
    im_ext: str = ".jpg"
    width: int | None = None
    height: int | None = None
    length: int | None = None
    labels: list[str] | None = None


def _seqinfo(seq: Sequence, issues: Issues, shown: str) -> None:
    uri = storage.join(seq.root, "seqinfo.ini")
    if not storage.exists(uri):
        return
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(storage.read_text(uri))
        info = parser["Sequence"]
    except (configparser.Error, KeyError) as e:
        issues.warn("invalid_seqinfo", shown, "", f"seqinfo.ini unreadable ({e}): defaults used")
        return
    seq.im_dir = info.get("imDir", seq.im_dir).strip() or seq.im_dir
    seq.im_ext = info.get("imExt", seq.im_ext).strip() or seq.im_ext
    w, h, why = check_image_size(_int(info.get("imWidth")), _int(info.get("imHeight")))
    if why:
        issues.warn("invalid_image_size", shown, "", f"seqinfo.ini: {why}")
    seq.width, seq.height = w, h
    seq.length = _int(info.get("seqLength"))


def _int(v: str | None) -> int | None:
    try:
        return int(str(v).strip())
    except (TypeError, ValueError):
        return None


def find_sequences(path: str) -> list[Sequence]:
    """Every sequence at ``path`` (see the module docstring)."""
    fs, p = storage.filesystem(path)
    if not fs.exists(p):
        raise AnnotationImportError(f"MOT source {path} does not exist")
    if not fs.isdir(p):
        name = posixpath.basename(path)
        if name not in ("gt.txt", "det.txt"):
            raise AnnotationImportError(f"{path}: a MOT file is gt.txt or det.txt")
        root = storage.dirname(storage.dirname(path))
        return [Sequence(root, "", path, name == "gt.txt")]
    seqs = []
    for uri in sorted(storage.walk_files(path)):
        name = posixpath.basename(uri)
        parent = posixpath.basename(storage.dirname(uri))
        if (name, parent) in (("gt.txt", "gt"), ("det.txt", "det")):
            root = storage.dirname(storage.dirname(uri))
            rel = storage.relative_to(path, root)
            seqs.append(Sequence(root, "" if rel == "." else rel, uri, name == "gt.txt"))
    # a sequence with both gt and det: ground truth only (det is the detector's input)
    by_root: dict[str, Sequence] = {}
    for s in seqs:
        if s.root not in by_root or s.is_gt:
            by_root[s.root] = s
    if not by_root:
        raise AnnotationImportError(f"no MOT gt/gt.txt or det/det.txt below {path}")
    return list(by_root.values())


def _image_ext(seq: Sequence) -> None:
    folder = storage.join(seq.root, seq.im_dir)
    if storage.exists(folder) and not storage.exists(storage.join(seq.root, "seqinfo.ini")):
        for uri in storage.walk_files(folder):
            ext = posixpath.splitext(uri)[1]
            if ext.lower() in _IMAGE_EXTS:
                seq.im_ext = ext
                return


def load_mot(
    path: str, *, images: KnownImages | None = None, limits: Limits = DEFAULT_LIMITS
) -> ImportResult:
    """Import MOT sequences (one, or every sequence below a folder)."""
    cmap, builder, issues = CategoryMap(), TableBuilder(), Issues()
    records: list[ImageRecord] = []
    sizes = SizeLookup(images)
    for seq in find_sequences(path):
        source_file = display(path, seq.annotations) if is_dir(path) else path
        _seqinfo(seq, issues, display(path, storage.join(seq.root, "seqinfo.ini")))
        _image_ext(seq)
        labels_uri = storage.join(storage.dirname(seq.annotations), "labels.txt")
        if storage.exists(labels_uri):
            seq.labels = [ln.strip() for ln in storage.read_text(labels_uri).splitlines()]
            seq.labels = [n for n in seq.labels if n]
        names = seq.labels or list(MOT17_CLASSES)
        names_file = display(path, labels_uri) if seq.labels else "MOT17 classes"
        for i, n in enumerate(names):
            cmap.register(names_file, i + 1, n)
        parent = posixpath.basename(posixpath.dirname(seq.rel)) if seq.rel else ""
        subset = parent if parent.lower() in _SPLITS else None
        prefix = f"{seq.rel}/" if seq.rel else ""
        width, height = seq.width, seq.height
        if width is None:
            first = storage.join(seq.root, seq.im_dir, f"{1:06d}{seq.im_ext}")
            if storage.exists(first):
                from visionloop.annotations.formats.yolo import image_size

                try:
                    width, height = image_size(first)
                except Exception as e:  # unreadable frame: size unknown
                    log.debug("mot: %s: %s", first, e)
        frames: set[int] = set()
        for lineno, line in enumerate(storage.read_text(seq.annotations).splitlines(), 1):
            if not line.strip():
                continue
            ptr = f"line {lineno}"
            cells = [c.strip() for c in line.replace(" ", "").split(",")]
            if len(cells) < 6:
                issues.error("invalid_line", source_file, ptr, f"expected >= 6 columns: {line!r}")
                continue
            try:
                vals = [float(c) for c in cells]
            except ValueError:
                bad = next(c for c in cells if not _isfloat(c))
                issues.error("invalid_value", source_file, ptr, f"{bad!r} is not a number")
                continue
            frame, tid = vals[0], vals[1]
            if not frame.is_integer() or frame < 0 or not tid.is_integer():
                issues.error("invalid_line", source_file, ptr, "frame and id must be integers")
                continue
            frame_i = int(frame)
            if seq.length is not None and frame_i > seq.length:
                issues.once(
                    "warning",
                    "frame_beyond_sequence",
                    source_file,
                    ptr,
                    f"frame {frame_i} is past seqLength {seq.length}: imported as written",
                )
            ref = f"{prefix}{seq.im_dir}/{frame_i:06d}{seq.im_ext}"
            w, h = width, height
            if w is None:
                found = sizes.find(ref)
                w, h = found if found else (None, None)
            check = check_box(vals[2], vals[3], vals[4], vals[5], w, h, limits)
            if check.box is None:
                issues.error("invalid_bbox", source_file, ptr, check.error or "invalid box")
                continue
            if check.warning:
                issues.warn("clipped", source_file, ptr, check.warning)
            cls = int(vals[7]) if len(vals) > 7 and vals[7].is_integer() else -1
            if cls > 0 and cls <= len(names):
                name = names[cls - 1]
            elif cls > len(names):
                issues.error(
                    "unknown_category",
                    source_file,
                    ptr,
                    f"class {cls} is beyond the {len(names)} classes of {names_file}",
                )
                continue
            else:
                name = NO_CLASS
                cmap.register(source_file, -1, NO_CLASS)
                issues.once(
                    "warning",
                    "no_class",
                    source_file,
                    ptr,
                    f"rows without a class (column 8 missing or -1): category {NO_CLASS!r}",
                )
            attrs: dict[str, object] = {}
            score = None
            conf = vals[6] if len(vals) > 6 else None
            if seq.is_gt:
                if conf == 0:
                    attrs["ignored"] = True
            elif conf is not None and math.isfinite(conf):
                score = conf
            if len(vals) > 8:
                attrs["visibility"] = vals[8]
            if frame_i not in frames:
                frames.add(frame_i)
                records.append(ImageRecord(ref, FORMAT, source_file, ptr, subset, w, h))
            x, y, bw, bh = check.box
            builder.add(
                AnnotationRecord(
                    annotation_id=f"{source_file}#{ptr}",
                    image_ref=ref,
                    category=name,
                    category_id=cmap.id_of(name),
                    source_format=FORMAT,
                    source_file=source_file,
                    source_pointer=ptr,
                    source_category_id=str(cls),
                    bbox_x=x,
                    bbox_y=y,
                    bbox_w=bw,
                    bbox_h=bh,
                    image_width=w,
                    image_height=h,
                    annotator=None if seq.is_gt else prediction_annotator("mot-det"),
                    attributes=dumps(attrs) if attrs else None,
                    subset=subset,
                    source_annotation_id=str(int(tid)),
                    shape=BOX,
                    track_id=int(tid) if tid > 0 else None,
                    frame=frame_i,
                    score=score,
                )
            )
    log.info("mot: %s -> %d annotation(s)", path, builder.count)
    return ImportResult(FORMAT, path, builder.build(), cmap, images_frame(records), issues.done())


def _isfloat(c: str) -> bool:
    try:
        float(c)
    except ValueError:
        return False
    return True


def sniff_mot(path: str) -> str | None:
    fs, p = storage.filesystem(path)
    if not fs.exists(p):
        return None
    if not fs.isdir(p):
        name = posixpath.basename(path)
        return f"MOT {name}" if name in ("gt.txt", "det.txt") else None
    for uri in storage.walk_files(path):
        name, parent = posixpath.basename(uri), posixpath.basename(storage.dirname(uri))
        if (name, parent) in (("gt.txt", "gt"), ("det.txt", "det")):
            return f"{display(path, uri)} (MOT sequence)"
    return None


class MotReader:
    """The ``AnnotationReader`` for MOT sequences."""

    name = FORMAT

    def sniff(self, path: str) -> str | None:
        return sniff_mot(path)

    def load(
        self, path: str, *, images: KnownImages | None = None, limits: Limits = DEFAULT_LIMITS
    ) -> ImportResult:
        return load_mot(path, images=images, limits=limits)
