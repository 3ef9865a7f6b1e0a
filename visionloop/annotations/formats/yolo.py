"""YOLO labels (Ultralytics and Darknet layouts) -> the canonical table.

A YOLO label file holds one object per line, ``class cx cy w h`` (detect) or
``class x1 y1 x2 y2 ...`` (segment polygon; 4 points is also the YOLO-OBB layout), normalised
to the image size. Converting to absolute pixels therefore needs each image's size: taken from
the header of the image when the export ships it beside the labels, otherwise from the curate
manifest (``images``: relative path -> (width, height)), matched by relative path. A label file
whose image cannot be found either way is reported (file + reason) and not imported.

Layouts understood:
- Ultralytics: ``data.yaml`` with ``names`` as a list or a dict, ``path`` (relative to the YAML
  file; an absolute path that does not exist here falls back to the YAML's folder, with a
  warning), and ``train``/``val``/``test`` each a folder, a ``.txt`` list of images or a YAML
  list of either. Labels live at ``labels/<...>/<stem>.txt`` for ``images/<...>/<stem>.<ext>``.
- Darknet: ``obj.data`` (``names``, ``train``, ``valid``, ``test``; paths written with the
  conventional ``data/`` prefix are resolved against the dataset folder), ``obj.names``,
  ``train.txt``, labels beside the images.
- Labels only: ``data.yaml`` + ``labels/<rel>/<stem>.txt`` for images elsewhere (the pipeline's
  sample data: ``labels/cam_b/x.txt`` for the collected ``cam_b/x.jpg``).

A point up to the tolerance outside the image (the OBB sample has a corner at y = -0.0098) is
clipped in the bbox with a warning; the polygon itself is kept as written.
"""

from __future__ import annotations

import logging
import math
import os
import posixpath
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from visionloop import storage
from visionloop.annotations.table import (
    BOX,
    DEFAULT_LIMITS,
    KEYPOINTS,
    OBB,
    POLYGON,
    AnnotationImportError,
    AnnotationRecord,
    CategoryMap,
    ImageRecord,
    ImportIssue,
    ImportResult,
    KnownImages,
    Limits,
    TableBuilder,
    check_box,
    check_points,
    check_polygons,
    dumps,
    images_frame,
    keypoints_json,
    obb_from_corners,
    obb_json,
    polygons_json,
)

log = logging.getLogger(__name__)

FORMAT = "yolo"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
_SPLIT_KEYS = (("train", "train"), ("val", "val"), ("valid", "val"), ("test", "test"))
_NAMES_FILES = ("obj.names", "classes.names", "classes.txt")
_RECT_TOLERANCE = 0.02  # |cos| between adjacent sides of a 4-point polygon for it to be an OBB


# --------------------------------------------------------------------------------------------
# Pure conversion


def names_to_map(names: Any) -> dict[int, str]:
    """``names`` from data.yaml (a list, or a dict keyed by class index) -> {index: name}."""
    if isinstance(names, list):
        return {i: str(n) for i, n in enumerate(names)}
    if isinstance(names, Mapping):
        out: dict[int, str] = {}
        for k, v in names.items():
            try:
                out[int(k)] = str(v)
            except (TypeError, ValueError) as e:
                raise AnnotationImportError(f"names key {k!r} is not a class index") from e
        return dict(sorted(out.items()))
    raise AnnotationImportError(f"names must be a list or a dict, got {type(names).__name__}")


def _class_id(token: str) -> int | None:
    try:
        return int(token)
    except ValueError:
        try:
            v = float(token)
        except ValueError:
            return None
        return int(v) if v.is_integer() else None


def _is_rectangle(pts: list[float]) -> bool:
    """Whether 4 points (pixels) form a rectangle: YOLO-OBB writes its boxes as 4 corners."""
    xs, ys = pts[0::2], pts[1::2]
    sides = [(xs[(i + 1) % 4] - xs[i], ys[(i + 1) % 4] - ys[i]) for i in range(4)]
    for (ax, ay), (bx, by) in zip(sides, sides[1:] + sides[:1], strict=True):
        na, nb = math.hypot(ax, ay), math.hypot(bx, by)
        if na == 0 or nb == 0 or abs(ax * bx + ay * by) > _RECT_TOLERANCE * na * nb:
            return False
    return True


@dataclass
class _LabelContext:
    names: Mapping[int, str]
    cmap: CategoryMap
    names_file: str
    limits: Limits
    builder: TableBuilder
    issues: list[ImportIssue]
    kpt_shape: list[int] | None = None


def _convert_label_text(
    ctx: _LabelContext,
    text: str,
    source_file: str,
    image_ref: str,
    width: int,
    height: int,
    subset: str | None,
) -> None:
    def error(code: str, ptr: str, msg: str) -> None:
        ctx.issues.append(ImportIssue("error", code, source_file, ptr, msg))

    def warn(code: str, ptr: str, msg: str) -> None:
        ctx.issues.append(ImportIssue("warning", code, source_file, ptr, msg))

    for lineno, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        ptr = f"line {lineno}"
        cls = _class_id(tokens[0])
        if cls is None:
            error("invalid_class", ptr, f"class {tokens[0]!r} is not an integer")
            continue
        if cls not in ctx.names:
            error(
                "unknown_category",
                ptr,
                f"class {cls} is not in names ({len(ctx.names)} classes declared)",
            )
            continue
        try:
            vals = [float(t) for t in tokens[1:]]
        except ValueError:
            bad = next(t for t in tokens[1:] if not _is_float(t))
            error("invalid_value", ptr, f"{bad!r} is not a number")
            continue
        bad_value = next((v for v in vals if not math.isfinite(v)), None)
        if bad_value is not None:
            kind = "NaN" if math.isnan(bad_value) else "infinite"
            error("invalid_value", ptr, f"a coordinate is {kind}")
            continue
        attrs: dict[str, Any] = {}
        segmentation: str | None = None
        keypoints: str | None = None
        obb: str | None = None
        shape = BOX
        n = len(vals)
        if ctx.kpt_shape:
            k, dims = ctx.kpt_shape[0], ctx.kpt_shape[1] if len(ctx.kpt_shape) > 1 else 2
            if n != 4 + k * dims:
                error(
                    "invalid_line",
                    ptr,
                    f"expected 4 box values + {k}x{dims} keypoint values, got {n} values",
                )
                continue
            kp = vals[4:]
            pts = []
            for i in range(0, len(kp), dims):
                x, y = round(kp[i] * width, 4), round(kp[i + 1] * height, 4)
                # 2-d keypoints: (0, 0) is Ultralytics' "not labelled"
                v = int(kp[i + 2]) if dims > 2 else (0 if kp[i] == kp[i + 1] == 0 else 2)
                pts.append([x, y, v])
            kcheck = check_points(pts, width, height, ctx.limits)
            if kcheck.error:
                error("invalid_geometry", ptr, f"keypoints: {kcheck.error}")
                continue
            keypoints = keypoints_json(pts)
            shape = KEYPOINTS
            n = 4
        if n == 4:
            cx, cy, w, h = vals[:4]
            check = check_box(
                (cx - w / 2) * width,
                (cy - h / 2) * height,
                w * width,
                h * height,
                width,
                height,
                ctx.limits,
            )
        elif n >= 6 and n % 2 == 0:
            pts = [v * (width if i % 2 == 0 else height) for i, v in enumerate(vals)]
            check = check_polygons([pts], width, height, ctx.limits)
            if check.box is not None:
                pts = [round(v, 4) for v in pts]
                segmentation = polygons_json([pts])
                shape = POLYGON
                if n == 8 and _is_rectangle(pts):
                    shape = OBB
                    obb = obb_json(*obb_from_corners(pts))
        else:
            error(
                "invalid_line",
                ptr,
                f"expected 4 values (box) or an even number >= 6 (polygon) after the class, "
                f"got {n}",
            )
            continue
        if check.box is None:
            error("invalid_geometry", ptr, check.error or "invalid geometry")
            continue
        if check.warning:
            warn("clipped", ptr, check.warning)
        name = ctx.names[cls]
        x, y, bw, bh = check.box
        ctx.builder.add(
            AnnotationRecord(
                annotation_id=f"{source_file}#{ptr}",
                image_ref=image_ref,
                category=name,
                category_id=ctx.cmap.id_of(name),
                source_format=FORMAT,
                source_file=source_file,
                source_pointer=ptr,
                source_category_id=str(cls),
                bbox_x=x,
                bbox_y=y,
                bbox_w=bw,
                bbox_h=bh,
                segmentation=segmentation,
                image_width=width,
                image_height=height,
                attributes=dumps(attrs) if attrs else None,
                subset=subset,
                shape=shape,
                obb=obb,
                keypoints=keypoints,
            )
        )


def _is_float(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _category_map(names: Mapping[int, str], names_file: str) -> CategoryMap:
    cmap = CategoryMap()
    for idx in sorted(names):
        cmap.register(names_file, idx, names[idx])
    return cmap


def yolo_to_annotations(
    text: str,
    names: Any,
    image_ref: str,
    width: int,
    height: int,
    source_file: str = "<memory>",
    subset: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
    kpt_shape: list[int] | None = None,
) -> ImportResult:
    """Convert the text of one label file for an image of ``width`` x ``height``. Pure."""
    name_map = names_to_map(names)
    cmap = _category_map(name_map, source_file)
    builder, issues = TableBuilder(), []
    ctx = _LabelContext(name_map, cmap, source_file, limits, builder, issues, kpt_shape)
    _convert_label_text(ctx, text, source_file, image_ref, width, height, subset)
    image = ImageRecord(image_ref, FORMAT, source_file, "", subset, width, height)
    return ImportResult(FORMAT, source_file, builder.build(), cmap, images_frame([image]), issues)


# --------------------------------------------------------------------------------------------
# Layout


def _norm(uri: str) -> str:
    """One spelling per file, so that set membership replaces exists() calls."""
    if storage.is_remote(uri):
        import fsspec

        scheme = uri.split("://", 1)[0]
        path = fsspec.get_filesystem_class(scheme)._strip_protocol(uri)
        return f"{scheme}://{posixpath.normpath(path)}"
    return os.path.abspath(uri)


def _stem(path: str) -> str:
    base, ext = posixpath.splitext(path)
    return base if ext else path


def _is_image(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


@dataclass
class YoloLayout:
    """What a YOLO source declares: where it is, its class names and its splits."""

    root: str  # dataset folder (URI)
    display_root: str  # the same as written in params, for reports
    names: dict[int, str]
    names_file: str  # URI of the file that declares the names
    splits: dict[str, list[str]] = field(default_factory=dict)  # split -> entries as written
    split_bases: dict[str, str] = field(default_factory=dict)  # split -> folder entries use
    kpt_shape: list[int] | None = None
    issues: list[ImportIssue] = field(default_factory=list)


def _darknet_kv(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def _names_from_file(uri: str) -> dict[int, str]:
    lines = [ln.strip() for ln in storage.read_text(uri).splitlines()]
    return dict(enumerate(ln for ln in lines if ln))


def _find(fs: Any, root: str, candidates: Iterable[str]) -> str | None:
    for name in candidates:
        uri = storage.join(root, name)
        if fs.exists(storage.filesystem(uri)[1]):
            return uri
    return None


def read_layout(path: str) -> YoloLayout:
    """Find the dataset's YAML / obj.data / names file and read names and splits."""
    fs, p = storage.filesystem(path)
    if not fs.exists(p):
        raise AnnotationImportError(f"YOLO source {path} does not exist")
    if fs.isdir(p):
        root, display_root = path, path
        config = _find(fs, root, ("data.yaml", "dataset.yaml", "data.yml"))
        if config is None:
            yamls = sorted(
                u
                for u in (storage.join(root, posixpath.basename(f)) for f in fs.ls(p, detail=False))
                if u.lower().endswith((".yaml", ".yml"))
            )
            config = yamls[0] if len(yamls) == 1 else None
        if config is None:
            config = _find(fs, root, ("obj.data",))
        if config is None:
            names_file = _find(fs, root, _NAMES_FILES)
            if names_file is None:
                raise AnnotationImportError(
                    f"{path}: no data.yaml, obj.data or obj.names: cannot tell the class names"
                )
            return YoloLayout(root, display_root, _names_from_file(names_file), names_file)
    else:
        config, root = path, storage.dirname(path) or "."
        display_root = root
    if config.lower().endswith((".yaml", ".yml")):
        return _read_ultralytics(config, root, display_root)
    return _read_darknet(config, root, display_root)


def _read_ultralytics(config: str, root: str, display_root: str) -> YoloLayout:
    try:
        doc = yaml.safe_load(storage.read_text(config))
    except yaml.YAMLError as e:
        raise AnnotationImportError(f"{config}: malformed YAML: {e}") from e
    if not isinstance(doc, Mapping) or "names" not in doc:
        raise AnnotationImportError(f"{config}: a YOLO data.yaml needs a 'names' entry")
    names = names_to_map(doc["names"])
    issues = []
    if "nc" in doc and doc["nc"] != len(names):
        issues.append(
            ImportIssue(
                "warning",
                "names_count",
                config,
                "/nc",
                f"nc is {doc['nc']} but names has {len(names)} entries: names wins",
            )
        )
    base = root
    declared = doc.get("path")
    if isinstance(declared, str) and declared.strip() and declared.strip() != ".":
        candidate = (
            declared
            if (os.path.isabs(declared) or "://" in declared)
            else storage.join(root, declared)
        )
        fs, cp = storage.filesystem(candidate)
        if fs.exists(cp):
            base = candidate
        else:
            issues.append(
                ImportIssue(
                    "warning",
                    "missing_path",
                    config,
                    "/path",
                    f"path {declared!r} does not exist here: split entries are read relative "
                    "to the data.yaml folder",
                )
            )
    splits: dict[str, list[str]] = {}
    for key, split in _SPLIT_KEYS:
        value = doc.get(key)
        if value is None:
            continue
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            issues.append(
                ImportIssue(
                    "warning",
                    "invalid_split",
                    config,
                    f"/{key}",
                    f"{key} must be a path or a list of paths: ignored",
                )
            )
            continue
        splits.setdefault(split, []).extend(value)
    kpt = doc.get("kpt_shape")
    return YoloLayout(
        root=base,
        display_root=display_root if base == root else base,
        names=names,
        names_file=config,
        splits=splits,
        split_bases=dict.fromkeys(splits, base),
        kpt_shape=list(kpt) if isinstance(kpt, list) and kpt else None,
        issues=issues,
    )


def _read_darknet(config: str, root: str, display_root: str) -> YoloLayout:
    kv = _darknet_kv(storage.read_text(config))
    issues: list[ImportIssue] = []
    names_file = None
    if "names" in kv:
        names_file = _resolve(root, kv["names"], root, exists=_exists)
    if names_file is None:
        fs, _ = storage.filesystem(root)
        names_file = _find(fs, root, _NAMES_FILES)
    if names_file is None:
        raise AnnotationImportError(f"{config}: names file {kv.get('names')!r} not found")
    splits = {}
    for key, split in _SPLIT_KEYS:
        if key in kv:
            splits.setdefault(split, []).append(kv[key])
    return YoloLayout(
        root,
        display_root,
        _names_from_file(names_file),
        names_file,
        splits,
        dict.fromkeys(splits, root),
        None,
        issues,
    )


def _exists(uri: str) -> bool:
    return storage.exists(uri)


def _resolve(root: str, entry: str, base: str, exists: Any) -> str | None:
    """Resolve a path written in a YOLO config or list file.

    Tried in order: as written (absolute, or relative to ``base``); ``./x`` relative to
    ``base``; relative to the dataset root; and without the ``data/`` prefix that Darknet and
    CVAT write (their paths are relative to the Darknet checkout, whose ``data/`` is ours).
    """
    entry = entry.strip().replace("\\", "/")
    if not entry:
        return None
    if "://" in entry or os.path.isabs(entry):
        return entry if exists(entry) else None
    tries = [storage.join(base, entry)]
    if base != root:
        tries.append(storage.join(root, entry))
    if entry.startswith("data/"):
        tries.append(storage.join(root, entry[len("data/") :]))
    for t in tries:
        if exists(t):
            return t
    return None


# --------------------------------------------------------------------------------------------
# Loading


@dataclass
class _Found:
    uri: str | None  # the image file in the export, if it is there
    ref: str  # image_ref for the table
    subset: str | None
    size: tuple[int | None, int | None] | None = None  # from the manifest


def image_size(uri: str) -> tuple[int, int]:
    """Width and height as displayed (EXIF orientation applied), from the header only."""
    from PIL import Image

    fs, p = storage.filesystem(uri)
    with fs.open(p, "rb") as fh, Image.open(fh) as im:
        w, h = im.size
        orientation = im.getexif().get(0x0112, 1)
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


class _KnownIndex:
    """The manifest's images by stem path, for labels whose image is not in the export."""

    def __init__(self, images: KnownImages | None) -> None:
        self.images = dict(images or {})
        self.by_stem: dict[str, list[str]] = defaultdict(list)
        self.by_name: dict[str, list[str]] = defaultdict(list)
        for rel in self.images:
            norm = rel.replace("\\", "/")
            norm = norm[2:] if norm.startswith("./") else norm
            self.by_stem[_stem(norm)].append(rel)
            self.by_name[posixpath.basename(_stem(norm))].append(rel)

    def find(self, stem_path: str) -> tuple[str | None, list[str]]:
        """(rel_path, candidates) for a label's stem path ("cam_b/x" -> "cam_b/x.jpg")."""
        exact = self.by_stem.get(stem_path, [])
        if len(exact) == 1:
            return exact[0], exact
        if len(exact) > 1:
            return None, exact
        parts = stem_path.split("/")
        cands = []
        for rel in self.by_name.get(parts[-1], []):
            rparts = _stem(rel).split("/")
            n = min(len(rparts), len(parts))
            if rparts[-n:] == parts[-n:]:
                cands.append(rel)
        return (cands[0], cands) if len(cands) == 1 else (None, cands)


def load_yolo(
    path: str,
    *,
    images: KnownImages | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> ImportResult:
    """Import a YOLO dataset folder (or its data.yaml / obj.data file)."""
    layout = read_layout(path)
    fs, root_path = storage.filesystem(layout.root)
    root_norm = _norm(layout.root)
    all_files = (
        {_norm(u) for u in storage.walk_files(layout.root)} if fs.isdir(root_path) else set()
    )
    all_dirs = {root_norm}
    for f in all_files:
        d = posixpath.dirname(f)
        while d not in all_dirs and len(d) > len(root_norm):
            all_dirs.add(d)
            d = posixpath.dirname(d)

    def inside(n: str) -> bool:
        return n == root_norm or n.startswith(root_norm + "/")

    def exists(uri: str) -> bool:
        n = _norm(uri)
        return n in all_files or n in all_dirs or (not inside(n) and storage.exists(uri))

    def is_dir(uri: str) -> bool:
        n = _norm(uri)
        if inside(n):
            return n in all_dirs
        efs, ep = storage.filesystem(uri)
        return bool(efs.isdir(ep))

    def display(uri: str) -> str:
        rel = storage.relative_to(layout.root, uri)
        if rel.startswith(".."):
            return uri
        return f"{layout.display_root.rstrip('/')}/{rel}"

    names_file = display(layout.names_file)
    cmap = _category_map(layout.names, names_file)
    builder = TableBuilder()
    issues = [
        ImportIssue(i.level, i.code, display(i.file), i.pointer, i.message) for i in layout.issues
    ]
    ctx = _LabelContext(layout.names, cmap, names_file, limits, builder, issues, layout.kpt_shape)

    def rel_to_root(uri: str) -> str:
        return storage.relative_to(layout.root, uri)

    # 1. Images the splits list (folder, list file, or image), in split order.
    listed: dict[str, str] = {}  # norm image uri -> split
    list_files: set[str] = set()
    for split, entries in layout.splits.items():
        missing: list[str] = []
        for entry in entries:
            target = _resolve(layout.root, entry, layout.split_bases[split], exists)
            if target is None:
                missing.append(entry)
                continue
            tn = _norm(target)
            if not is_dir(target) and _is_image(tn):
                listed.setdefault(tn, split)
            elif not is_dir(target):  # a .txt list of images
                list_files.add(tn)
                for line in storage.read_text(target).splitlines():
                    line = line.strip()
                    if not line or line.startswith("#"):
                        continue
                    img = _resolve(layout.root, line, storage.dirname(target), exists)
                    if img is None:
                        missing.append(line)
                    else:
                        listed.setdefault(_norm(img), split)
            else:  # a folder
                prefix = tn.rstrip("/") + "/"
                if inside(tn):
                    found = [f for f in all_files if f.startswith(prefix) and _is_image(f)]
                else:
                    found = [_norm(u) for u in storage.walk_files(target) if _is_image(u)]
                for f in sorted(found):
                    listed.setdefault(f, split)
        if missing:
            issues.append(
                ImportIssue(
                    "warning",
                    "missing_split_entry",
                    display(layout.names_file),
                    f"/{split}",
                    f"{len(missing)} {split} entr{'y' if len(missing) == 1 else 'ies'} not "
                    f"found in the export (e.g. {missing[0]!r}); their labels are looked up in "
                    "the manifest",
                )
            )

    escaped = sorted(n for n in listed if not inside(n))
    if escaped:  # never read (nor name in the table) a file outside the dataset root
        for n in escaped:
            del listed[n]
        issues.append(
            ImportIssue(
                "warning",
                "path_escape",
                display(layout.names_file),
                "",
                f"{len(escaped)} listed image(s) lie outside the dataset root {layout.root} "
                f"(e.g. {escaped[0]}): not read; their labels are looked up in the export and "
                "the manifest instead",
            )
        )

    # 2. Label files.
    labels_dir = _norm(storage.join(layout.root, "labels"))
    names_norm = _norm(layout.names_file)
    if any(f.startswith(labels_dir + "/") for f in all_files):
        label_files = sorted(
            f for f in all_files if f.startswith(labels_dir + "/") and f.endswith(".txt")
        )
        label_base = labels_dir
    else:
        label_files = sorted(
            f
            for f in all_files
            if f.endswith(".txt")
            and f not in list_files
            and f != names_norm
            and "/" in rel_to_root(f)
        )
        label_base = root_norm

    # 3. Pair labels with images: listed images first (Ultralytics images/ -> labels/ rule, or
    #    the Darknet sibling), then images elsewhere in the export, then the manifest.
    label_set = set(label_files)
    pairs: dict[str, _Found] = {}
    background: list[_Found] = []
    for img, split in listed.items():
        stem = _stem(img)
        i = stem.rfind("/images/")
        cands = [stem[:i] + "/labels/" + stem[i + len("/images/") :] + ".txt"] if i >= 0 else []
        cands.append(stem + ".txt")
        label = next((c for c in cands if c in label_set and c not in pairs), None)
        found = _Found(img, rel_to_root(img), split)
        if label is None:
            background.append(found)
        else:
            pairs[label] = found

    dataset_images: dict[str, list[str]] = defaultdict(list)  # file stem -> image uris
    for f in all_files:
        if _is_image(f):
            dataset_images[posixpath.basename(_stem(f))].append(f)
    known = _KnownIndex(images)

    for label in label_files:
        if label in pairs:
            continue
        stem_path = _stem(storage.relative_to(label_base, label))
        parts = stem_path.split("/")
        subset = _label_subset(layout, stem_path)
        local = [
            f
            for f in dataset_images.get(parts[-1], [])
            if _stem(rel_to_root(f)) == stem_path or _stem(rel_to_root(f)).endswith("/" + stem_path)
        ]
        if len(local) == 1:
            pairs[label] = _Found(local[0], rel_to_root(local[0]), listed.get(local[0], subset))
            continue
        if len(local) > 1:
            issues.append(
                ImportIssue(
                    "error",
                    "ambiguous_image",
                    display(label),
                    "",
                    f"{len(local)} images in the export fit this label file: "
                    f"{sorted(rel_to_root(f) for f in local)[:3]}",
                )
            )
            continue
        rel, cands = known.find(stem_path)
        if rel is not None:
            pairs[label] = _Found(None, rel, subset, known.images[rel])
        else:
            why = (
                f"{len(cands)} manifest images fit ({sorted(cands)[:3]})"
                if cands
                else "no image with this path in the export or in the manifest"
            )
            issues.append(
                ImportIssue(
                    "error",
                    "unknown_image",
                    display(label),
                    "",
                    f"cannot place label file: its image {stem_path}.* is unknown ({why})",
                )
            )

    # 4. Convert, image by image.
    image_records: list[ImageRecord] = []
    for found in background:  # listed without a label file: a background image
        image_records.append(
            ImageRecord(found.ref, FORMAT, display(layout.names_file), "", found.subset)
        )
    for label in sorted(pairs):
        found = pairs[label]
        src = display(label)
        w, h = _size_of(found, issues, src)
        image_records.append(ImageRecord(found.ref, FORMAT, src, "", found.subset, w, h))
        if w is None or h is None:
            continue
        try:
            text = storage.read_text(label)
        except UnicodeDecodeError as e:
            issues.append(ImportIssue("error", "unreadable", src, "", f"not UTF-8 text: {e}"))
            continue
        _convert_label_text(ctx, text, src, found.ref, w, h, found.subset)
    log.info("yolo: %s -> %d annotation(s), %d issue(s)", path, builder.count, len(issues))
    return ImportResult(FORMAT, path, builder.build(), cmap, images_frame(image_records), issues)


SPLIT_NAMES = frozenset({"train", "training", "val", "valid", "validation", "test", "testing"})


def _label_subset(layout: YoloLayout, stem_path: str) -> str | None:
    """The split of a label file whose image is not in the export: the split whose entry
    ``images/<dir>`` corresponds to ``labels/<dir>`` (Ultralytics' rule), else its first folder
    when that is a split name ("train", "val", ...); a folder like ``cam_b`` is no subset."""
    for split, entries in layout.splits.items():
        for entry in entries:
            e = entry.strip().replace("\\", "/")
            while e.startswith("./"):
                e = e[2:]
            if e.startswith("images/") and not _is_image(e) and not e.endswith(".txt"):
                prefix = e[len("images/") :].rstrip("/")
                if prefix and stem_path.startswith(prefix + "/"):
                    return split
    first = stem_path.split("/")[0] if "/" in stem_path else None
    return first if first is not None and first.casefold() in SPLIT_NAMES else None


def _size_of(found: _Found, issues: list[ImportIssue], src: str) -> tuple[int | None, int | None]:
    if found.size is not None:
        w, h = found.size
        if w is None or h is None or _isnan(w) or _isnan(h):
            issues.append(
                ImportIssue(
                    "error",
                    "unknown_image_size",
                    src,
                    "",
                    f"the manifest has no size for {found.ref} (unreadable image?): labels "
                    "cannot be de-normalised",
                )
            )
            return None, None
        return int(w), int(h)
    assert found.uri is not None
    try:
        return image_size(found.uri)
    except Exception as e:  # any decoder failure means "size unknown", and is reported
        issues.append(
            ImportIssue(
                "error",
                "unknown_image_size",
                src,
                "",
                f"cannot read the size of {found.ref}: {type(e).__name__}: {e}",
            )
        )
        return None, None


def _isnan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def sniff_yolo(path: str) -> str | None:
    """Why ``path`` looks like a YOLO dataset, or None."""
    fs, p = storage.filesystem(path)
    if not fs.exists(p):
        return None
    if not fs.isdir(p):
        low = path.lower()
        if low.endswith((".yaml", ".yml")):
            try:
                doc = yaml.safe_load(storage.read_text(path))
            except yaml.YAMLError:
                return None
            return "YAML file with 'names'" if isinstance(doc, Mapping) and "names" in doc else None
        if low.endswith(".data") and "names" in _darknet_kv(storage.read_text(path)):
            return "Darknet .data file with 'names'"
        return None
    for name in ("data.yaml", "dataset.yaml", "data.yml"):
        if fs.exists(storage.filesystem(storage.join(path, name))[1]):
            reason = sniff_yolo(storage.join(path, name))
            if reason:
                return f"{name}: {reason}"
    if fs.exists(storage.filesystem(storage.join(path, "obj.data"))[1]):
        return "obj.data (Darknet)"
    if _find(fs, path, _NAMES_FILES) is not None:
        return "class names file (obj.names) and label folders"
    return None


class YoloReader:
    """The ``AnnotationReader`` for YOLO (see ``formats/__init__.py``)."""

    name = FORMAT

    def sniff(self, path: str) -> str | None:
        return sniff_yolo(path)

    def load(
        self, path: str, *, images: KnownImages | None = None, limits: Limits = DEFAULT_LIMITS
    ) -> ImportResult:
        return load_yolo(path, images=images, limits=limits)


# --------------------------------------------------------------------------------------------
# Export


def _largest_ring(rings: list[list[float]]) -> list[float]:
    from visionloop.annotations.export import polygon_area

    return max(rings, key=lambda r: polygon_area(r) if len(r) >= 6 else -1.0)


def _mask_outline(rle: Mapping[str, Any]) -> list[float] | None:
    """The outer contour of a mask's largest component, as a polygon (cv2)."""
    import cv2
    import numpy as np

    from visionloop.annotations.formats.coco import rle_to_mask

    mask = rle_to_mask(rle).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    c = max(contours, key=cv2.contourArea).reshape(-1, 2).astype(float)
    if len(c) < 3 or cv2.contourArea(c.astype(np.float32)) == 0:
        # a line or a dot of pixels: the outline of its pixels' extent (pixel edges)
        x0, y0 = (float(v) for v in c.min(axis=0))
        x1, y1 = (float(v) + 1 for v in c.max(axis=0))
        return [x0, y0, x1, y0, x1, y1, x0, y1]
    return [float(v) for v in c.reshape(-1)]


def save_yolo(df: Any, categories: CategoryMap, out: str) -> Any:
    """Write the table as an Ultralytics YOLO label set in the folder ``out``: ``data.yaml``
    (names by canonical id, ``kpt_shape`` for pose) and ``labels/[<subset>/]<image>.txt``
    (the image reference's path without ``images/`` and extension). Images are not copied;
    reading the set back needs their sizes (the images, or the manifest).

    One line per row: ``class cx cy w h`` (box), ``class x1 y1 ...`` (polygon: its largest
    ring; a mask's outline; an ellipse's outline), 4 corners (oriented box), or box + keypoints
    when any row is a pose. Rows without an image size cannot be normalised and are not written;
    point sets, polylines and tags have no YOLO line. Subsets other than split names
    (train, val, test...), attributes, annotator, score, track id, frame and iscrowd are lost.
    """
    from visionloop.annotations.export import (
        LossReport,
        json_value,
        label_path,
        note_columns,
        value,
    )
    from visionloop.annotations.table import (
        ELLIPSE,
        MASK,
        POINTS,
        POLYLINE,
        TAG,
        obb_corners,
        shape_of,
    )

    report = LossReport("yolo", rows=len(df))
    kpt_rows = [
        json_value(r, "keypoints")
        for r in df.itertuples(index=False)
        if value(r, "shape") == KEYPOINTS
    ]
    k = max((len(p) for p in kpt_rows if p), default=0)
    files: dict[str, list[str]] = {}
    owner: dict[str, tuple[str, int, int]] = {}  # label file -> (image_ref, w, h)
    for row in df.itertuples(index=False):
        rid = row.annotation_id
        shape = shape_of(value(row, "shape"), value(row, "segmentation"))
        if shape in (POINTS, POLYLINE, TAG):
            report.skip(rid, f"shape_{shape}", f"YOLO has no line for a {shape}")
            continue
        if k and shape != KEYPOINTS:
            why = f"a pose set (kpt_shape [{k}, 3]) has no line for a {shape}"
            report.skip(rid, "not_a_pose", why)
            continue
        w, h = value(row, "image_width"), value(row, "image_height")
        if not w or not h:
            report.skip(rid, "unknown_image_size", "YOLO coordinates are normalised by the size")
            continue
        try:
            rel = label_path(row.image_ref)
        except AnnotationImportError as e:
            report.skip(rid, "path_escape", str(e))
            continue
        parts = rel.split("/")
        if parts[0] == "images" and len(parts) > 1:
            parts = parts[1:]
        subset = value(row, "subset")
        if subset and subset.casefold() in SPLIT_NAMES:
            if parts[0] != subset:
                parts = [subset, *parts]
        elif subset:
            report.lose(rid, "subset", f"YOLO reads only split names as subsets, not {subset!r}")
        elif len(parts) > 1 and parts[0].casefold() in SPLIT_NAMES:
            report.lose(rid, "subset", f"no subset, but YOLO reads the folder {parts[0]!r} as one")
        label = "labels/" + "/".join(parts) + ".txt"
        first = owner.setdefault(label, (row.image_ref, int(w), int(h)))
        if first[0] != row.image_ref:
            report.skip(
                rid,
                "label_file_collision",
                f"{row.image_ref} and {first[0]} would share {label}",
            )
            continue
        if first[1:] != (int(w), int(h)):
            report.skip(
                rid,
                "image_size_conflict",
                f"{row.image_ref} has rows for {first[1]}x{first[2]} and {int(w)}x{int(h)} "
                "images: one label file cannot be normalised by both",
            )
            continue

        def norm(vals: list[float], w: float = float(w), h: float = float(h)) -> str:
            return " ".join(repr(float(v) / (w if i % 2 == 0 else h)) for i, v in enumerate(vals))

        box = [value(row, c) for c in ("bbox_x", "bbox_y", "bbox_w", "bbox_h")]
        seg = json_value(row, "segmentation")
        cls = int(row.category_id)
        if shape == KEYPOINTS:
            kps = json_value(row, "keypoints") or []
            if None in box or len(kps) != k:
                why = f"a YOLO pose line needs a box and {k} keypoints"
                report.skip(rid, "invalid_pose", why)
                continue
            x, y, bw, bh = (float(v) for v in box)
            kp = " ".join(
                f"{float(p[0]) / w!r} {float(p[1]) / h!r} {int(p[2])}" if p[2] else "0.0 0.0 0"
                for p in kps
            )
            line = f"{cls} {norm([x + bw / 2, y + bh / 2, bw, bh])} {kp}"
        elif shape == OBB:
            as_written = isinstance(seg, list) and len(seg) == 1 and len(seg[0]) == 8
            corners = seg[0] if as_written else obb_corners(*json_value(row, "obb"))
            line = f"{cls} {norm(corners)}"
        elif shape in (POLYGON, ELLIPSE) and isinstance(seg, list):
            ring = seg[0] if len(seg) == 1 else _largest_ring(seg)
            if len(seg) > 1:
                report.lose(rid, "polygon_rings", "YOLO-seg has one ring per line: largest kept")
            if shape == ELLIPSE:
                report.lose(rid, "shape_ellipse", "written as its 32-point polygon outline")
            line = f"{cls} {norm(ring)}"
        elif shape == MASK and isinstance(seg, dict):
            ring = _mask_outline(seg)
            if ring is None:
                report.skip(rid, "empty_mask", "mask has no outline")
                continue
            report.lose(rid, "shape_mask", "YOLO-seg has no masks: written as the outline")
            line = f"{cls} {norm(ring)}"
        else:
            if None in box:
                report.skip(rid, "no_geometry", "row has no box")
                continue
            x, y, bw, bh = (float(v) for v in box)
            line = f"{cls} {norm([x + bw / 2, y + bh / 2, bw, bh])}"
        note_columns(report, row, ("attributes", "annotator", "score", "track_id", "frame"), "YOLO")
        if value(row, "iscrowd"):
            report.lose(rid, "iscrowd", "YOLO has no crowd flag")
        files.setdefault(label, []).append(line)
        report.written += 1
    names = {categories.id_of(n): n for n in categories.names()}
    doc: dict[str, Any] = {"path": ".", "nc": len(names), "names": names}
    if k:
        doc["kpt_shape"] = [k, 3]
    yaml_uri = storage.join(out, "data.yaml")
    storage.write_text_atomic(yaml_uri, yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    report.files.append(yaml_uri)
    for label, lines in sorted(files.items()):
        uri = storage.join(out, *label.split("/"))
        storage.write_text_atomic(uri, "\n".join(lines) + "\n")
    report.notes.append(f"{len(files)} label file(s) under {storage.join(out, 'labels')}")
    return report
