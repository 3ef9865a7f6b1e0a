"""COCO instances (boxes, polygons, RLE) and COCO panoptic boxes -> the canonical table.

Two layers, as in supervision: pure converters over dicts (``coco_to_annotations``, the RLE
helpers) that tests drive without a disk, and ``load_coco`` that streams files of any size.

Streaming: a COCO file is scanned with ijson's C backend, first for ``categories`` and
``images`` (small; one C-speed scan each, which also proves the file parses), then for
``annotations``, converted one at a time into an Arrow-batched table, so memory follows the
output, not the JSON document (500k annotations, 164 MB: 0.51 GB peak RSS against 0.72 GB for
``json.load`` alone and 1.04 GB for ``json.load`` + convert).

Files written by Python's ``json`` module may contain the non-standard tokens NaN / Infinity,
which strict JSON parsers reject:
``SpecialFloatStream`` rewrites them on the fly as same-length string sentinels so that the
bad value is reported with its JSON pointer ("/annotations/17/bbox") instead of failing the file.

Quirks handled deliberately (see tests/annotations/test_conformance.py):
- non-contiguous category ids (1, 2, 4) -> canonical ids in first-seen order, source map kept;
- annotation id 0 (Roboflow) is an id like any other (never tested for truthiness);
- ``segmentation: []`` means "box only";
- RLE with uncompressed list counts or a compressed string: validated (counts must cover the
  mask exactly), stored canonically as ``{"size": [h, w], "counts": "<compressed>"}`` and its
  bbox computed from the mask. The mask wins over a declared bbox that disagrees (Datumaro's
  exporter wrote [0, 0, 1, 9] for a mask whose extent is [0, 0, 2, 10]): warning, and the
  declared value is kept in ``attributes.declared_bbox``;
- panoptic exports: segments are imported as boxes; the PNG masks are referenced in
  ``attributes`` (one warning per file says so).

RLE is computed with numpy, not pycocotools: pycocotools 2.0.11 trusts the counts it is given
(an empty or short ``counts`` decodes to uninitialised memory, an overlong one yields a bbox
wider than the image), so counts must be decoded and checked in Python first, after which bbox
and area are a cumulative sum away. The tests use pycocotools as the reference when installed.
"""

from __future__ import annotations

import codecs
import json
import logging
import math
import posixpath
import re
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from visionloop import storage
from visionloop.annotations.table import (
    DEFAULT_LIMITS,
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
    check_image_size,
    check_polygons,
    dumps,
    images_frame,
    polygons_json,
)

log = logging.getLogger(__name__)

FORMAT = "coco"

# --------------------------------------------------------------------------------------------
# JSON streaming

# Same byte length as the token they replace, so error offsets (line/column) stay exact.
_SPECIAL_TOKENS: dict[bytes, bytes] = {
    b"NaN": b'"N"',
    b"Infinity": b'"Infini"',
    b"-Infinity": b'"-Infini"',
}
_SPECIAL_VALUES: dict[str, float] = {"N": math.nan, "Infini": math.inf, "-Infini": -math.inf}
_TOKEN_RE = re.compile(rb"-?Infinity|NaN")
_QUOTE_RE = re.compile(rb'\\*"')
_ESCAPED_QUOTE_RE = re.compile(rb'\\+"')
_CARRY = 16  # longer than any token, so a token is never cut between two reads
_BOM = codecs.BOM_UTF8
STDLIB_LOCATE_LIMIT = 256 << 20  # malformed files up to this size are located with json.loads


class SpecialFloatStream:
    """A read-only binary stream over ``raw`` that rewrites the bare tokens NaN, Infinity and
    -Infinity (outside strings) as the string sentinels "N", "Infini" and "-Infini" of the
    same length, and blanks a leading UTF-8 BOM. Everything else passes through unchanged.

    String state is tracked by counting unescaped quotes (C-speed ``bytes.count``); the
    per-quote scan runs only on chunks that contain a candidate token.
    """

    def __init__(self, raw: BinaryIO, chunk_size: int = 1 << 16) -> None:
        self._raw = raw
        self._chunk_size = chunk_size
        self._carry = b""
        self._in_string = False
        self._eof = False
        self._first = True
        self.replaced = 0  # tokens rewritten so far

    def read(self, size: int = -1) -> bytes:
        if size == 0:  # ijson probes the type of the stream with read(0)
            return b""
        while True:
            if self._eof and not self._carry:
                return b""
            data = self._carry
            if not self._eof:
                more = self._raw.read(max(size, self._chunk_size))
                if not more:
                    self._eof = True
                data += more
            if self._first:
                self._first = False
                if data.startswith(_BOM):
                    data = b"   " + data[3:]
            cut = len(data) if self._eof else max(0, len(data) - _CARRY)
            while cut > 0 and data[cut - 1 : cut] == b"\\" and not self._eof:
                cut -= 1
            tokens = []
            if b"NaN" in data or b"Infinity" in data:
                tokens = [m for m in _TOKEN_RE.finditer(data) if m.start() < cut]
                if tokens:
                    cut = max(cut, tokens[-1].end())
            region, self._carry = data[:cut], data[cut:]
            if not region:
                continue
            if tokens:
                region = self._replace(region, tokens)
            self._advance_state(region)
            return region

    def _replace(self, region: bytes, tokens: list[re.Match[bytes]]) -> bytes:
        quotes = [
            m.end() - 1 for m in _QUOTE_RE.finditer(region) if (m.end() - m.start() - 1) % 2 == 0
        ]
        out = bytearray(region)
        for m in tokens:
            inside = self._in_string ^ (bisect_left(quotes, m.start()) % 2 == 1)
            if not inside:
                out[m.start() : m.end()] = _SPECIAL_TOKENS[m.group()]
                self.replaced += 1
        return bytes(out)

    def _advance_state(self, region: bytes) -> None:
        toggles = region.count(b'"')
        if b"\\" in region:
            toggles -= sum(
                1 for m in _ESCAPED_QUOTE_RE.finditer(region) if (m.end() - m.start() - 1) % 2
            )
        if toggles % 2:
            self._in_string = not self._in_string


def _number(v: Any) -> Any:
    """A JSON value as a number where it is one (sentinels become NaN/inf); else unchanged."""
    if isinstance(v, str) and v in _SPECIAL_VALUES:
        return _SPECIAL_VALUES[v]
    return v


def _json_safe(obj: Any) -> Any:
    """Make a value JSON-serialisable for the ``attributes`` column (non-finite -> strings)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
    if isinstance(obj, str) and obj in _SPECIAL_VALUES:
        return {"N": "NaN", "Infini": "Infinity", "-Infini": "-Infinity"}[obj]
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _open(uri: str) -> BinaryIO:
    fs, path = storage.filesystem(uri)
    return fs.open(path, "rb")


def _stream_items(
    uri: str, prefix: str, streams: list[SpecialFloatStream] | None = None
) -> Iterator[Any]:
    """Yield the items of the top-level array at ``prefix`` ("images.item"), streaming;
    ``streams`` receives the filter so the caller can ask whether it rewrote any token."""
    import ijson

    with _open(uri) as raw:
        stream = SpecialFloatStream(raw)
        if streams is not None:
            streams.append(stream)
        yield from ijson.items(stream, prefix, use_float=True)


def _line_col(text_chunks: Iterable[str], offset: int) -> tuple[int, int]:
    line, col, seen = 1, 1, 0
    for chunk in text_chunks:
        take = chunk[: max(0, offset - seen)]
        nl = take.count("\n")
        if nl:
            line += nl
            col = len(take) - take.rfind("\n")
        else:
            col += len(take)
        seen += len(chunk)
        if seen >= offset:
            break
    return line, col


def locate_json_error(uri: str) -> tuple[int | None, int | None, str]:
    """Line, column and message of the first syntax error in a JSON file.

    Files up to ``STDLIB_LOCATE_LIMIT`` are parsed with the standard library (exact position
    for every kind of error); larger ones with ijson's pure-Python backend, streaming, which
    knows the offset of an unexpected symbol and of a truncated end.
    """
    fs, path = storage.filesystem(uri)
    size = fs.size(path)
    if size <= STDLIB_LOCATE_LIMIT:
        data = storage.read_bytes(uri)
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            line = data[: e.start].count(b"\n") + 1
            col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
            return line, col, f"invalid UTF-8 ({e.reason})"
        try:
            json.loads(text)
        except json.JSONDecodeError as e:
            return e.lineno, e.colno, e.msg
        return None, None, "rejected by the streaming parser"
    import ijson

    backend = ijson.get_backend("python")
    message = "rejected by the streaming parser"
    offset: int | None = None
    try:
        with _open(uri) as raw:
            for _ in backend.parse(SpecialFloatStream(raw)):
                pass
    except Exception as e:  # any parser error is what we are locating
        message = str(e)
        m = re.search(r" at (\d+)$", message)
        if m:
            offset = int(m.group(1))
        elif "Incomplete" in message:
            offset = 1 << 62  # the end of the file
    if offset is None:
        return None, None, message

    def chunks() -> Iterator[str]:
        decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        with _open(uri) as raw:
            while block := raw.read(1 << 20):
                yield decoder.decode(block)
            yield decoder.decode(b"", final=True)

    line, col = _line_col(chunks(), offset)
    return line, col, message


# --------------------------------------------------------------------------------------------
# RLE (COCO run-length encoding: column-major runs, alternating 0s and 1s, starting with 0s)


class RleError(ValueError):
    """An RLE that does not describe exactly ``h * w`` pixels."""


def rle_decode_counts(s: str) -> np.ndarray:
    """COCO's compressed counts string -> run lengths (vectorised LEB128-like decoding with the
    delta coding of runs i > 2 against run i - 2)."""
    raw = np.frombuffer(s.encode("ascii", errors="replace"), dtype=np.uint8).astype(np.int64)
    if raw.size == 0:
        return np.zeros(0, dtype=np.int64)
    c = raw - 48
    if c.min() < 0 or c.max() > 63:
        raise RleError("counts string has characters outside the RLE alphabet")
    more = (c & 0x20) != 0
    if more[-1]:
        raise RleError("counts string ends inside a number")
    ends = np.flatnonzero(~more)
    starts = np.concatenate(([0], ends[:-1] + 1))
    group = np.repeat(np.arange(len(starts)), ends - starts + 1)
    k = np.arange(c.size) - starts[group]
    if k.max() > 11:
        raise RleError("counts string has a number too long to be a run length")
    x = np.add.reduceat((c & 0x1F) << (5 * k), starts)
    sign = (c[ends] & 0x10) != 0
    x = np.where(sign, x - (np.int64(1) << (5 * (k[ends] + 1))), x)
    counts = x.copy()
    if counts.size > 3:
        counts[1::2] = np.cumsum(x[1::2])
        counts[2::2] = np.cumsum(x[2::2])
    return counts


def rle_encode_counts(counts: Iterable[int]) -> str:
    """Run lengths -> COCO's compressed counts string (inverse of ``rle_decode_counts``)."""
    cnts = [int(v) for v in counts]
    out: list[str] = []
    for i, v in enumerate(cnts):
        x = v - cnts[i - 2] if i > 2 else v
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5
            more = x != -1 if ch & 0x10 else x != 0
            if more:
                ch |= 0x20
            out.append(chr(ch + 48))
    return "".join(out)


def rle_counts(rle: Any) -> tuple[int, int, np.ndarray]:
    """Validate an RLE dict (compressed or uncompressed) -> (height, width, run lengths)."""
    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        raise RleError("RLE must be an object with 'size' and 'counts'")
    size = rle["size"]
    if (
        not isinstance(size, list)
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        raise RleError(f"RLE size must be [height, width] of positive integers, got {size!r}")
    h, w = size
    raw = rle["counts"]
    if isinstance(raw, str):
        counts = rle_decode_counts(raw)
    elif isinstance(raw, list):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in raw):
            raise RleError("uncompressed RLE counts must be integers")
        counts = np.asarray(raw, dtype=np.int64)
    else:
        raise RleError(f"RLE counts must be a string or a list, got {type(raw).__name__}")
    if counts.size and counts.min() < 0:
        raise RleError("RLE has a negative run length")
    total = int(counts.sum())
    if total != h * w:
        raise RleError(f"RLE runs cover {total} pixels but size {h}x{w} has {h * w}")
    return h, w, counts


def rle_bbox_area(counts: np.ndarray, height: int) -> tuple[list[float], int]:
    """The xywh bbox (pixel extent, as pycocotools' toBbox) and pixel area of a mask's runs."""
    ones = counts[1::2]
    starts = (np.cumsum(counts) - counts)[1::2]
    keep = ones > 0
    ones, starts = ones[keep], starts[keep]
    if ones.size == 0:
        return [0.0, 0.0, 0.0, 0.0], 0
    ends = starts + ones - 1
    x0, x1 = starts // height, ends // height
    spans = bool((x1 > x0).any())  # a run crossing a column covers rows 0 and h-1
    y0 = 0 if spans else int((starts % height).min())
    y1 = height - 1 if spans else int((ends % height).max())
    xmin, xmax = int(x0.min()), int(x1.max())
    return [float(xmin), float(y0), float(xmax - xmin + 1), float(y1 - y0 + 1)], int(ones.sum())


def rle_to_mask(rle: Mapping[str, Any]) -> np.ndarray:
    """Decode an RLE into an (h, w) bool mask (for tests and exporters; the importer does not
    need the pixels)."""
    h, w, counts = rle_counts(rle)
    values = np.arange(counts.size) % 2 == 1
    return np.repeat(values, counts).reshape((w, h)).T


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """Encode an (h, w) mask as a compressed COCO RLE dict."""
    flat = np.asarray(mask, dtype=bool).T.reshape(-1)
    change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs = [0, *runs]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": rle_encode_counts(runs)}


# --------------------------------------------------------------------------------------------
# Conversion


_ANNOTATION_KEYS = frozenset(
    {"id", "image_id", "category_id", "segmentation", "area", "bbox", "iscrowd", "attributes"}
)
_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
_SUBSET_RE = re.compile(
    r"^(?:instances|panoptic|person_keypoints|captions|image_info|annotations)_(.+)$"
)


@dataclass
class _Image:
    ref: str
    width: int | None
    height: int | None
    sha256: str | None


@dataclass
class _Context:
    """What converting one COCO file needs: its categories and images, and where to put rows."""

    source_file: str
    subset: str | None
    limits: Limits
    cmap: CategoryMap
    builder: TableBuilder
    issues: list[ImportIssue]
    image_records: list[ImageRecord]
    categories: dict[Any, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    images: dict[Any, _Image] = field(default_factory=dict)
    panoptic_noted: bool = False
    sentinels: bool = True  # the input may hold NaN/Infinity sentinels (see SpecialFloatStream)

    def error(self, code: str, pointer: str, message: str) -> None:
        self.issues.append(ImportIssue("error", code, self.source_file, pointer, message))

    def warn(self, code: str, pointer: str, message: str) -> None:
        self.issues.append(ImportIssue("warning", code, self.source_file, pointer, message))


def _is_id(v: Any) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, str) and v != "")


def _read_categories(ctx: _Context, items: Iterable[Any]) -> None:
    found: dict[Any, tuple[str, dict[str, Any]]] = {}
    by_name: dict[str, Any] = {}
    for i, cat in enumerate(items):
        ptr = f"/categories/{i}"
        if not isinstance(cat, Mapping):
            ctx.error("invalid_category", ptr, "category is not an object")
            continue
        cid, name = cat.get("id"), cat.get("name")
        if not _is_id(cid):
            ctx.error("invalid_category", f"{ptr}/id", f"category id {cid!r} is not an id")
            continue
        if not isinstance(name, str) or not name.strip():
            ctx.error("invalid_category", f"{ptr}/name", f"category name {name!r} is empty")
            continue
        if cid in found:
            ctx.error("duplicate_category", f"{ptr}/id", f"category id {cid!r} declared twice")
            continue
        if name.strip() in by_name:
            ctx.warn(
                "duplicate_category_name",
                f"{ptr}/name",
                f"category name {name!r} is declared by ids {by_name[name.strip()]!r} and "
                f"{cid!r}: both map to one canonical category",
            )
        by_name.setdefault(name.strip(), cid)
        found[cid] = (name.strip(), dict(cat))
    # Register in ascending source-id order: the canonical order is first-seen, and "seen"
    # within one file means by id, so the same export always yields the same ids.
    for cid in sorted(found, key=lambda v: (isinstance(v, str), v)):
        ctx.cmap.register(ctx.source_file, cid, found[cid][0])
        ctx.categories[cid] = found[cid]


def _read_images(ctx: _Context, items: Iterable[Any]) -> None:
    for i, img in enumerate(items):
        ptr = f"/images/{i}"
        if not isinstance(img, Mapping):
            ctx.error("invalid_image", ptr, "image is not an object")
            continue
        iid, ref = img.get("id"), img.get("file_name")
        if not _is_id(iid):
            ctx.error("invalid_image", f"{ptr}/id", f"image id {iid!r} is not an id")
            continue
        if not isinstance(ref, str) or not ref.strip():
            ctx.error("invalid_image", f"{ptr}/file_name", f"file_name {ref!r} is empty")
            continue
        if iid in ctx.images:
            ctx.error("duplicate_image", f"{ptr}/id", f"image id {iid!r} declared twice")
            continue
        width, height, why = check_image_size(_number(img.get("width")), _number(img.get("height")))
        if why:
            ctx.warn("invalid_image_size", ptr, why)
        sha = next(
            (
                str(img[k]).lower()
                for k in ("sha256", "checksum", "hash")
                if isinstance(img.get(k), str) and _SHA256_RE.match(img[k])
            ),
            None,
        )
        ctx.images[iid] = _Image(ref, width, height, sha)
        ctx.image_records.append(
            ImageRecord(
                image_ref=ref,
                source_format=FORMAT,
                source_file=ctx.source_file,
                source_pointer=ptr,
                subset=ctx.subset,
                width=width,
                height=height,
                image_sha256=sha,
            )
        )


def _declared_bbox(ctx: _Context, ptr: str, bbox: Any) -> tuple[bool, list[Any] | None]:
    """(ok, values): a missing or empty bbox is ok/None; a malformed one is reported."""
    if bbox is None or bbox == []:
        return True, None
    if not isinstance(bbox, list) or len(bbox) != 4:
        ctx.error(
            "invalid_bbox", f"{ptr}/bbox", f"bbox must be [x, y, width, height], got {bbox!r}"
        )
        return False, None
    return True, ([_number(v) for v in bbox] if ctx.sentinels else bbox)


def _attributes(ctx: _Context, ptr: str, ann: Mapping[str, Any]) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    given = ann.get("attributes")
    if isinstance(given, Mapping):
        attrs.update(given)
    elif given is not None:
        ctx.warn("invalid_attributes", f"{ptr}/attributes", "attributes is not an object: kept")
        attrs["_attributes"] = given
    extra = {k: v for k, v in ann.items() if k not in _ANNOTATION_KEYS}
    if extra:
        attrs["_extra"] = extra
    return attrs


def _record(
    ctx: _Context,
    ptr: str,
    image: _Image,
    category_source_id: Any,
    box: tuple[float, float, float, float],
    segmentation: str | None,
    iscrowd: bool,
    attrs: dict[str, Any],
    source_annotation_id: Any,
) -> AnnotationRecord:
    name = ctx.categories[category_source_id][0]
    return AnnotationRecord(
        annotation_id=f"{ctx.source_file}#{ptr}",
        image_ref=image.ref,
        category=name,
        category_id=ctx.cmap.id_of(name),
        source_format=FORMAT,
        source_file=ctx.source_file,
        source_pointer=ptr,
        source_category_id=str(category_source_id),
        bbox_x=box[0],
        bbox_y=box[1],
        bbox_w=box[2],
        bbox_h=box[3],
        segmentation=segmentation,
        iscrowd=iscrowd,
        image_width=image.width,
        image_height=image.height,
        attributes=dumps(_json_safe(attrs)) if attrs else None,
        subset=ctx.subset,
        image_sha256=image.sha256,
        source_annotation_id=None if source_annotation_id is None else str(source_annotation_id),
    )


def _iscrowd(ctx: _Context, ptr: str, value: Any) -> bool:
    if value in (None, 0, False):
        return False
    if value in (1, True):
        return True
    ctx.warn("invalid_iscrowd", f"{ptr}/iscrowd", f"iscrowd {value!r} is not 0 or 1: read as 1")
    return True


def _same_box(a: list[Any], b: list[float], tol: float = 1e-3) -> bool:
    try:
        return all(abs(float(x) - y) <= tol for x, y in zip(a, b, strict=True))
    except (TypeError, ValueError):
        return False


def _convert_rle(
    ctx: _Context,
    ptr: str,
    image: _Image,
    seg: Mapping[str, Any],
    declared: list[Any] | None,
    attrs: dict[str, Any],
) -> tuple[tuple[float, float, float, float], str] | None:
    try:
        h, w, counts = rle_counts(seg)
    except RleError as e:
        ctx.error("invalid_rle", f"{ptr}/segmentation", str(e))
        return None
    if image.width is not None and (h, w) != (image.height, image.width):
        ctx.error(
            "rle_size_mismatch",
            f"{ptr}/segmentation/size",
            f"RLE size [{h}, {w}] (height, width) does not match the image "
            f"{image.width}x{image.height}",
        )
        return None
    mask_box, area = rle_bbox_area(counts, h)
    if area == 0:
        ctx.error("empty_mask", f"{ptr}/segmentation", "RLE mask is empty (area 0)")
        return None
    if declared is not None and not _same_box(declared, mask_box):
        ctx.warn(
            "bbox_mismatch",
            f"{ptr}/bbox",
            f"declared bbox {_json_safe(declared)} differs from the mask's extent {mask_box}: "
            "the mask's is used (declared value kept in attributes.declared_bbox)",
        )
        attrs["declared_bbox"] = declared
    check = check_box(*mask_box, image.width or w, image.height or h, limits=ctx.limits)
    if check.box is None:  # cannot happen for a valid mask; kept as a guard
        ctx.error("invalid_bbox", f"{ptr}/segmentation", check.error or "invalid mask")
        return None
    given = seg["counts"]
    compressed = given if isinstance(given, str) else rle_encode_counts(counts.tolist())
    return check.box, dumps({"size": [h, w], "counts": compressed})


def _convert_annotation(ctx: _Context, i: int, ann: Any) -> None:
    ptr = f"/annotations/{i}"
    if not isinstance(ann, Mapping):
        ctx.error("invalid_annotation", ptr, "annotation is not an object")
        return
    image = ctx.images.get(ann.get("image_id"))
    if image is None:
        ctx.error(
            "unknown_image",
            f"{ptr}/image_id",
            f"image_id {ann.get('image_id')!r} is not declared in /images",
        )
        return
    if "segments_info" in ann:
        _convert_panoptic(ctx, ptr, image, ann)
        return
    cat = ann.get("category_id")
    if cat not in ctx.categories:
        ctx.error(
            "unknown_category",
            f"{ptr}/category_id",
            f"category_id {cat!r} is not declared in /categories",
        )
        return
    ok, declared = _declared_bbox(ctx, ptr, ann.get("bbox"))
    if not ok:
        return
    iscrowd = _iscrowd(ctx, ptr, ann.get("iscrowd"))
    attrs = _attributes(ctx, ptr, ann)
    seg = ann.get("segmentation")
    segmentation: str | None = None
    if isinstance(seg, Mapping):
        converted = _convert_rle(ctx, ptr, image, seg, declared, attrs)
        if converted is None:
            return
        box, segmentation = converted
    elif isinstance(seg, list) and seg:
        polygons = (
            [[_number(v) for v in p] if isinstance(p, list) else p for p in seg]
            if ctx.sentinels
            else seg
        )
        if all(not isinstance(p, list) for p in polygons):
            ctx.warn(
                "flat_polygon",
                f"{ptr}/segmentation",
                "segmentation is a flat list of numbers: read as one polygon",
            )
            polygons = [polygons]
        poly = check_polygons(polygons, image.width, image.height, ctx.limits)
        if poly.box is None:
            ctx.error("invalid_polygon", f"{ptr}/segmentation", poly.error or "invalid polygon")
            return
        if poly.warning:
            ctx.warn("clipped", f"{ptr}/segmentation", poly.warning)
        segmentation = polygons_json(polygons)
        if declared is None:
            box = poly.box
        else:
            check = check_box(*declared, image.width, image.height, ctx.limits)
            if check.box is None:
                ctx.error("invalid_bbox", f"{ptr}/bbox", check.error or "invalid bbox")
                return
            if check.warning:
                ctx.warn("clipped", f"{ptr}/bbox", check.warning)
            box = check.box
    elif seg is None or seg == []:
        if declared is None:
            ctx.error("no_geometry", ptr, "annotation has neither a bbox nor a segmentation")
            return
        check = check_box(*declared, image.width, image.height, ctx.limits)
        if check.box is None:
            ctx.error("invalid_bbox", f"{ptr}/bbox", check.error or "invalid bbox")
            return
        if check.warning:
            ctx.warn("clipped", f"{ptr}/bbox", check.warning)
        box = check.box
    else:
        ctx.error(
            "invalid_segmentation",
            f"{ptr}/segmentation",
            f"segmentation must be polygons, an RLE object or [], got {type(seg).__name__}",
        )
        return
    ctx.builder.add(_record(ctx, ptr, image, cat, box, segmentation, iscrowd, attrs, ann.get("id")))


def _convert_panoptic(ctx: _Context, ptr: str, image: _Image, ann: Mapping[str, Any]) -> None:
    segments = ann.get("segments_info")
    png = ann.get("file_name")
    if not ctx.panoptic_noted:
        ctx.panoptic_noted = True
        ctx.warn(
            "panoptic_boxes_only",
            "",
            "COCO panoptic export: segments are imported as boxes; their masks stay in the "
            "PNG files named in attributes.panoptic_png",
        )
    if not isinstance(segments, list):
        ctx.error("invalid_annotation", f"{ptr}/segments_info", "segments_info is not a list")
        return
    for k, segment in enumerate(segments):
        sptr = f"{ptr}/segments_info/{k}"
        if not isinstance(segment, Mapping):
            ctx.error("invalid_annotation", sptr, "segment is not an object")
            continue
        cat = segment.get("category_id")
        if cat not in ctx.categories:
            ctx.error(
                "unknown_category",
                f"{sptr}/category_id",
                f"category_id {cat!r} is not declared in /categories",
            )
            continue
        ok, declared = _declared_bbox(ctx, sptr, segment.get("bbox"))
        if not ok:
            continue
        if declared is None:
            ctx.error("no_geometry", sptr, "panoptic segment has no bbox")
            continue
        check = check_box(*declared, image.width, image.height, ctx.limits)
        if check.box is None:
            ctx.error("invalid_bbox", f"{sptr}/bbox", check.error or "invalid bbox")
            continue
        if check.warning:
            ctx.warn("clipped", f"{sptr}/bbox", check.warning)
        attrs = _attributes(ctx, sptr, segment)
        attrs.pop("_extra", None)
        attrs.update(
            {
                "panoptic_png": png,
                "segment_id": segment.get("id"),
                "isthing": ctx.categories[cat][1].get("isthing"),
            }
        )
        ctx.builder.add(
            _record(
                ctx,
                sptr,
                image,
                cat,
                check.box,
                None,
                _iscrowd(ctx, sptr, segment.get("iscrowd")),
                attrs,
                segment.get("id"),
            )
        )


def _result(
    source: str,
    cmap: CategoryMap,
    builder: TableBuilder,
    image_records: list[ImageRecord],
    issues: list[ImportIssue],
) -> ImportResult:
    return ImportResult(
        format=FORMAT,
        source=source,
        annotations=builder.build(),
        categories=cmap,
        images=images_frame(image_records),
        issues=issues,
    )


def coco_to_annotations(
    data: Mapping[str, Any],
    source_file: str = "<memory>",
    subset: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> ImportResult:
    """Convert a parsed COCO document (a dict) into the canonical table. Pure: no I/O."""
    cmap, builder = CategoryMap(), TableBuilder()
    issues: list[ImportIssue] = []
    image_records: list[ImageRecord] = []
    ctx = _Context(source_file, subset, limits, cmap, builder, issues, image_records)
    ctx.sentinels = False  # a parsed dict holds real NaN floats, not stream sentinels
    if not isinstance(data, Mapping):
        ctx.error("invalid_document", "", "a COCO document is a JSON object")
        return _result(source_file, cmap, builder, image_records, issues)
    for key in ("categories", "images", "annotations"):
        if key in data and not isinstance(data[key], list):
            ctx.error("invalid_document", f"/{key}", f"/{key} is not a list")

    def as_list(key: str) -> list[Any]:
        return data[key] if isinstance(data.get(key), list) else []

    _read_categories(ctx, as_list("categories"))
    _read_images(ctx, as_list("images"))
    for i, ann in enumerate(as_list("annotations")):
        _convert_annotation(ctx, i, ann)
    return _result(source_file, cmap, builder, image_records, issues)


# --------------------------------------------------------------------------------------------
# Files


def subset_from_path(uri: str) -> str | None:
    """The subset a COCO file belongs to: ``instances_train.json`` -> "train",
    ``train/_annotations.coco.json`` (Roboflow) -> "train"; None when the name says nothing."""
    name = posixpath.basename(uri.replace("\\", "/"))
    stem = name[: -len(".json")] if name.lower().endswith(".json") else name
    m = _SUBSET_RE.match(stem)
    if m:
        return m.group(1)
    if stem.startswith("_annotations"):
        parent = posixpath.basename(posixpath.dirname(uri.replace("\\", "/")))
        return parent or None
    return None


_HEAD_BYTES = 1 << 16
_COCO_KEY_RE = re.compile(rb'"(images|annotations|categories)"\s*:')


def sniff_coco_file(uri: str) -> str | None:
    """Why ``uri`` looks like a COCO file (from its first 64 KiB), or None."""
    if not uri.lower().endswith(".json"):
        return None
    with _open(uri) as fh:
        head = fh.read(_HEAD_BYTES)
    head = head[3:] if head.startswith(_BOM) else head
    if not head.lstrip().startswith(b"{"):
        return None
    keys = {k.decode() for k in _COCO_KEY_RE.findall(head)}
    if "images" in keys and ("annotations" in keys or "categories" in keys):
        return f"JSON object with {', '.join(sorted(keys))} keys"
    return None


def _display(root: str, uri: str) -> str:
    """A file's name for reports: the source path as configured plus the path below it."""
    rel = storage.relative_to(root, uri)
    return root if rel == "." else f"{root.rstrip('/')}/{rel}"


def coco_files(path: str) -> tuple[list[str], list[ImportIssue]]:
    """The COCO files of a source: the file itself, or every COCO JSON below a folder."""
    fs, p = storage.filesystem(path)
    if not fs.exists(p):
        raise AnnotationImportError(f"COCO source {path} does not exist")
    if not fs.isdir(p):
        return [path], []
    files, skipped = [], []
    for uri in storage.walk_files(path):
        if not uri.lower().endswith(".json"):
            continue
        if sniff_coco_file(uri):
            files.append(uri)
        else:
            skipped.append(
                ImportIssue(
                    "warning",
                    "skipped_file",
                    _display(path, uri),
                    "",
                    "not a COCO file (no images/annotations/categories keys in its first 64 KiB)",
                )
            )
    if not files:
        raise AnnotationImportError(f"no COCO JSON file found below {path}")
    return files, skipped


def _starts_with_object(uri: str) -> bool:
    with _open(uri) as fh:
        head = fh.read(4096)
    head = head[3:] if head.startswith(_BOM) else head
    return head.lstrip().startswith(b"{")


def _load_file(uri: str, ctx: _Context) -> None:
    import ijson

    try:
        # Pass 1 (categories, then images: each a C-speed scan) also proves the file parses,
        # so a syntax error is reported before any annotation of the file is imported.
        streams: list[SpecialFloatStream] = []
        _read_categories(ctx, _stream_items(uri, "categories.item", streams))
        _read_images(ctx, _stream_items(uri, "images.item"))
        ctx.sentinels = streams[0].replaced > 0  # else skip the per-value sentinel mapping
    except ijson.JSONError as e:
        line, col, message = locate_json_error(uri)
        where = f"line {line}, column {col}" if line is not None else ""
        ctx.error(
            "malformed_json",
            where,
            f"malformed JSON{'' if where else ' (position unknown)'}: {message or e}",
        )
        return
    if not _starts_with_object(uri):
        ctx.error("invalid_document", "", "a COCO document is a JSON object; this is not one")
        return
    if not ctx.images and not ctx.categories:
        ctx.warn("empty_document", "", "no categories and no images: nothing to import")
    try:
        for i, ann in enumerate(_stream_items(uri, "annotations.item")):
            _convert_annotation(ctx, i, ann)
    except ijson.JSONError as e:  # the file changed between the passes
        ctx.error("malformed_json", "", f"malformed JSON while reading annotations: {e}")


def load_coco(
    path: str,
    *,
    images: KnownImages | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> ImportResult:
    """Import a COCO file, or every COCO file below a folder (one category map for all).

    ``images`` is accepted for interface symmetry: COCO declares its own image sizes.
    """
    del images
    files, issues = coco_files(path)
    cmap, builder = CategoryMap(), TableBuilder()
    image_records: list[ImageRecord] = []
    for uri in files:
        source_file = _display(path, uri)
        ctx = _Context(
            source_file, subset_from_path(uri), limits, cmap, builder, issues, image_records
        )
        before = builder.count
        _load_file(uri, ctx)
        log.info("coco: %s -> %d annotation(s)", source_file, builder.count - before)
    return _result(path, cmap, builder, image_records, issues)


class CocoReader:
    """The ``AnnotationReader`` for COCO (see ``formats/__init__.py``)."""

    name = FORMAT

    def sniff(self, path: str) -> str | None:
        fs, p = storage.filesystem(path)
        if not fs.exists(p):
            return None
        if not fs.isdir(p):
            return sniff_coco_file(path)
        for uri in storage.walk_files(path):
            reason = sniff_coco_file(uri)
            if reason:
                return f"{_display(path, uri)} is a {reason}"
        return None

    def load(
        self, path: str, *, images: KnownImages | None = None, limits: Limits = DEFAULT_LIMITS
    ) -> ImportResult:
        return load_coco(path, images=images, limits=limits)
