"""COCO instances (boxes, polygons, RLE) and COCO panoptic boxes -> the canonical table.

Two layers, as in supervision: pure converters over dicts (``coco_to_annotations``, the RLE
helpers) that tests drive without a disk, and ``load_coco`` that streams files of any size.

Reading, in bounded memory (``bench/bench_annotations.py``):

- Local files (the fast path): one vectorised structure scan of the memory-mapped file
  (``annotations/jsonscan.py``) finds the categories, images and annotations arrays and every
  item's byte range; each array is then parsed a batch of items at a time by ``json.loads``,
  and ``_convert_batch`` validates a batch of plain annotations (box, polygons, known image
  and category) with numpy and appends it to the table as one Arrow batch. Any annotation the
  vectorised checks would reject or warn about, and any unusual one (RLE, keypoints, score,
  extra keys...), goes through ``_convert_annotation``, the reference converter, so the
  messages and values are the same either way (tested on mixed files). With a
  ``ParquetSink`` (``export.import_to_table``, ``visionloop labels import``) the rows go to a
  Parquet file as they are made: memory follows one batch, not the file (5.2M annotations,
  1 GB: about 0.6 GB peak RSS against 6.6 GB for ``pycocotools.coco.COCO``).
- Other storage (S3, memory://) and files the scan cannot split: ijson's C backend, first
  for ``categories`` and ``images``, then for ``annotations``, one at a time.

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
    BOX,
    DEFAULT_LIMITS,
    KEYPOINTS,
    MASK,
    MIN_OVERHANG_PX,
    POLYGON,
    SILENT_OVERHANG_PX,
    AnnotationImportError,
    AnnotationRecord,
    CategoryMap,
    ImageColumns,
    ImageRecord,
    ImportIssue,
    ImportResult,
    KnownImages,
    Limits,
    ParquetSink,
    TableBuilder,
    check_box,
    check_image_size,
    check_points,
    check_polygons,
    dumps,
    images_frame,
    keypoints_json,
    polygons_json,
    ref_escape,
)
from visionloop.schema import ANNOTATION_SCHEMA

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
    {
        "id",
        "image_id",
        "category_id",
        "segmentation",
        "area",
        "bbox",
        "iscrowd",
        "attributes",
        "keypoints",
        "num_keypoints",
        "score",
    }
)
_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
_SUBSET_RE = re.compile(
    r"^(?:instances|panoptic|person_keypoints|captions|image_info|annotations)_(.+)$"
)


@dataclass(slots=True)
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
    image_records: Any  # list[ImageRecord] or ImageColumns
    categories: dict[Any, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    images: dict[Any, _Image] = field(default_factory=dict)
    panoptic_noted: bool = False
    rejected: dict[Any, str] = field(default_factory=dict)  # image id -> why (path escape)
    fast_images: Any = None  # _ImageIndex, built on the first fast batch
    fast_categories: Any = None  # _category_index(...), likewise
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
        name, cat = found[cid]
        ctx.cmap.register(ctx.source_file, cid, name)
        ctx.categories[cid] = found[cid]
        kp, sk = cat.get("keypoints"), cat.get("skeleton")
        ctx.cmap.set_meta(
            name,
            keypoints=[str(k) for k in kp] if isinstance(kp, list) else None,
            skeleton=sk if isinstance(sk, list) else None,
            supercategory=cat.get("supercategory")
            if isinstance(cat.get("supercategory"), str)
            else None,
        )


_PLAIN_IMAGE_KEYS = frozenset(
    {"id", "file_name", "width", "height", "license", "date_captured", "coco_url", "flickr_url"}
)
_MAYBE_UNSAFE = re.compile(r"^\s|^[/\\]|^[A-Za-z]:|\.\.|\x00|\\|\s$")


def _read_images_fast(ctx: _Context, start: int, batch: list[Any]) -> None:
    """Plain image entries (int id, a file name with nothing suspicious, positive int size) in
    one pass; the others, and any duplicate id, through ``_read_images`` (the reference)."""
    plain = []
    for k, img in enumerate(batch):
        if (
            type(img) is dict
            and img.keys() <= _PLAIN_IMAGE_KEYS
            and type(img.get("id")) is int
            and type(img.get("file_name")) is str
            and img["file_name"]
            and not _MAYBE_UNSAFE.search(img["file_name"])
            and type(img.get("width")) is int
            and type(img.get("height")) is int
            and img["width"] > 0
            and img["height"] > 0
            and img["id"] not in ctx.images
        ):
            plain.append(k)
    n_plain = len(plain)
    if n_plain < len(batch):
        done = set(plain)
        # keep order: plain ones before a slow one are added first
        chunk: list[int] = []
        for k, img in enumerate(batch):
            if k in done:
                chunk.append(k)
                continue
            _add_plain_images(ctx, start, batch, chunk)
            chunk = []
            _read_images(ctx, [img], first=start + k)
        _add_plain_images(ctx, start, batch, chunk)
        return
    _add_plain_images(ctx, start, batch, plain)


def _add_plain_images(ctx: _Context, start: int, batch: list[Any], rows: list[int]) -> None:
    if not rows:
        return
    images = ctx.images
    refs, widths, heights, ptrs = [], [], [], []
    for k in rows:
        img = batch[k]
        if img["id"] in images:  # a duplicate within the batch: the reference reports it
            _read_images(ctx, [img], first=start + k)
            continue
        ref, w, h = img["file_name"], img["width"], img["height"]
        images[img["id"]] = _Image(ref, w, h, None)
        refs.append(ref)
        widths.append(w)
        heights.append(h)
        ptrs.append(f"/images/{start + k}")
    if isinstance(ctx.image_records, ImageColumns):
        n = len(refs)
        ctx.image_records.extend(
            image_ref=refs,
            subset=[ctx.subset] * n,
            width=widths,
            height=heights,
            image_sha256=[None] * n,
            source_format=[FORMAT] * n,
            source_file=[ctx.source_file] * n,
            source_pointer=ptrs,
        )
    else:
        for ref, w, h, p in zip(refs, widths, heights, ptrs, strict=True):
            ctx.image_records.append(
                ImageRecord(ref, FORMAT, ctx.source_file, p, ctx.subset, w, h, None)
            )


def _read_images(ctx: _Context, items: Iterable[Any], first: int = 0) -> None:
    for i, img in enumerate(items, start=first):
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
        escape = ref_escape(ref)
        if escape:
            ctx.error("path_escape", f"{ptr}/file_name", f"file_name {escape}: not imported")
            ctx.rejected[iid] = escape
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
    box: tuple[float, float, float, float] | None,
    segmentation: str | None,
    iscrowd: bool,
    attrs: dict[str, Any],
    source_annotation_id: Any,
    shape: str = BOX,
    keypoints: str | None = None,
    score: float | None = None,
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
        bbox_x=None if box is None else box[0],
        bbox_y=None if box is None else box[1],
        bbox_w=None if box is None else box[2],
        bbox_h=None if box is None else box[3],
        segmentation=segmentation,
        iscrowd=iscrowd,
        image_width=image.width,
        image_height=image.height,
        attributes=dumps(_json_safe(attrs)) if attrs else None,
        subset=ctx.subset,
        image_sha256=image.sha256,
        source_annotation_id=None if source_annotation_id is None else str(source_annotation_id),
        shape=shape,
        keypoints=keypoints,
        score=score,
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
    if image is None and ann.get("image_id") in ctx.rejected:
        ctx.error(
            "path_escape",
            f"{ptr}/image_id",
            f"image {ann.get('image_id')!r} was rejected ({ctx.rejected[ann.get('image_id')]})",
        )
        return
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
    elif (seg is None or seg == []) and declared is None and ann.get("keypoints"):
        box = None  # keypoints only (pose without a person box)
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
    shape = BOX if segmentation is None else (MASK if isinstance(seg, Mapping) else POLYGON)
    keypoints = None
    if ann.get("keypoints") is not None and ann.get("keypoints") != []:
        keypoints = _keypoints(ctx, ptr, image, ann.get("keypoints"))
        if keypoints is None:
            return
        shape = KEYPOINTS
    score = _score(ctx, ptr, ann.get("score"))
    ctx.builder.add(
        _record(
            ctx,
            ptr,
            image,
            cat,
            box,
            segmentation,
            iscrowd,
            attrs,
            ann.get("id"),
            shape,
            keypoints,
            score,
        )
    )


# Fast path: a batch of plain annotations (box, polygons or box-only, known image and
# category, numbers only) is validated with numpy and appended as one Arrow batch. Every other
# annotation, and every one the vectorised checks would reject or warn about, goes through
# ``_convert_annotation`` (the reference), so messages and values are the same either way.

_FAST_KEYS = frozenset(
    {"id", "image_id", "category_id", "segmentation", "area", "bbox", "iscrowd", "attributes"}
)
_REAL = {int, float}


@dataclass
class _ImageIndex:
    pos: dict[Any, int]
    refs: Any  # pa.Array of str
    sha: Any  # pa.Array of str
    width: np.ndarray  # float64, NaN when unknown
    height: np.ndarray
    w32: Any  # pa.Array int32 with nulls
    h32: Any


def _image_index(ctx: _Context) -> _ImageIndex:
    import pyarrow as pa

    ims = list(ctx.images.values())
    pos = {iid: k for k, iid in enumerate(ctx.images)}
    w = np.array([np.nan if im.width is None else im.width for im in ims], dtype=np.float64)
    h = np.array([np.nan if im.height is None else im.height for im in ims], dtype=np.float64)
    return _ImageIndex(
        pos,
        pa.array([im.ref for im in ims], pa.string()),
        pa.array([im.sha256 for im in ims], pa.string()),
        w,
        h,
        pa.array([im.width for im in ims], pa.int32()),
        pa.array([im.height for im in ims], pa.int32()),
    )


def _polygon_rows(segs: list[Any], rows: np.ndarray) -> tuple[Any, ...] | None:
    """For rows whose segmentation is a non-empty list of polygons: (ok, x0, y0, x1, y1, flat)
    per row (extent over all rings; ok False when a ring is malformed; ``flat`` the parsed
    values for ``_polygon_texts``, None then); None when the batch has something else than
    lists of numbers (the caller then takes the slow path for it)."""
    from itertools import chain

    polys = [segs[r] for r in rows]
    rings = list(chain.from_iterable(polys))
    if not set(map(type, rings)) <= {list}:
        return None
    values = list(chain.from_iterable(rings))
    if not set(map(type, values)) <= _REAL:
        return None
    lens = np.fromiter(map(len, rings), dtype=np.int64, count=len(rings))
    per_row = np.fromiter(map(len, polys), dtype=np.int64, count=len(polys))
    v = np.array(values, dtype=np.float64)
    ring_ok = (lens % 2 == 0) & (lens >= 6)
    n = len(rows)
    if not ring_ok.all() or v.size == 0:
        bad_ring = ~ring_ok
        row_of_ring = np.repeat(np.arange(n), per_row)
        ok = np.ones(n, dtype=bool)
        ok[row_of_ring[bad_ring]] = False
        return ok, *(np.zeros(n),) * 4, None  # rows with a bad ring go the slow way
    xs, ys = v[0::2], v[1::2]
    starts = np.concatenate(([0], np.cumsum(lens // 2)[:-1]))
    rx0, rx1 = np.minimum.reduceat(xs, starts), np.maximum.reduceat(xs, starts)
    ry0, ry1 = np.minimum.reduceat(ys, starts), np.maximum.reduceat(ys, starts)
    finite_ring = np.add.reduceat(~np.isfinite(xs) | ~np.isfinite(ys), starts) == 0
    row_starts = np.concatenate(([0], np.cumsum(per_row)[:-1]))
    x0, x1 = np.minimum.reduceat(rx0, row_starts), np.maximum.reduceat(rx1, row_starts)
    y0, y1 = np.minimum.reduceat(ry0, row_starts), np.maximum.reduceat(ry1, row_starts)
    ok = np.add.reduceat(~finite_ring, row_starts) == 0
    return ok, x0, y0, x1, y1, (v, values, lens, per_row)


def _polygon_texts(polys: list[Any], flat: tuple[Any, ...] | None = None) -> Any:
    """``polygons_json`` of each row, as an Arrow string array. Numbers are formatted by
    Arrow in C++ when every value is in the range where its shortest form is also Python's
    repr (fixed notation: 1e-4 <= |v| < 1e9, or 0; integral floats get their ".0", ints
    stay ints); otherwise row by row with ``polygons_json``. ``flat`` = (values as float64,
    values, ring lengths, rings per row) when the caller has them."""
    from itertools import chain

    import pyarrow as pa
    import pyarrow.compute as pc

    if not polys:
        return pa.array([], pa.string())
    if flat is None:
        rings = list(chain.from_iterable(polys))
        values = list(chain.from_iterable(rings))
        v = np.array(values, dtype=np.float64)
        ring_lens = np.fromiter(map(len, rings), np.int64, count=len(rings))
        per_row = np.fromiter(map(len, polys), np.int64, count=len(polys))
    else:
        v, values, ring_lens, per_row = flat
    a = np.abs(v)
    if not (((a >= 1e-4) & (a < 1e9)) | (v == 0)).all():
        return pa.array([polygons_json(p) for p in polys], pa.string())
    text = pc.cast(pa.array(v), pa.string())
    integral = v == np.floor(v)
    if integral.any():
        if int in set(map(type, values)):
            integral &= np.fromiter((type(x) is float for x in values), bool, count=len(values))
        text = pc.if_else(pa.array(integral), pc.binary_join_element_wise(text, ".0", ""), text)
    ring_off = np.zeros(len(ring_lens) + 1, dtype=np.int32)
    np.cumsum(ring_lens, out=ring_off[1:])
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array(ring_off), text), ",")
    joined = pc.binary_join_element_wise("[", joined, "]", "")
    row_off = np.zeros(len(per_row) + 1, dtype=np.int32)
    np.cumsum(per_row, out=row_off[1:])
    rows = pc.binary_join(pa.ListArray.from_arrays(pa.array(row_off), joined), ",")
    return pc.binary_join_element_wise("[", rows, "]", "")


def _clip_ok(
    x0: np.ndarray,
    y0: np.ndarray,
    x1: np.ndarray,
    y1: np.ndarray,
    w: np.ndarray,
    h: np.ndarray,
    limits: Limits,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``table._clip_to_image`` vectorised: (ok, cx0, cy0, cx1, cy1); ok False where the
    reference would reject or warn (then the row takes the slow path)."""
    known = ~np.isnan(w) & ~np.isnan(h)
    ww, hh = np.where(known, w, np.inf), np.where(known, h, np.inf)
    tx = np.maximum(MIN_OVERHANG_PX, limits.out_of_bounds_tolerance * np.where(known, w, 0))
    ty = np.maximum(MIN_OVERHANG_PX, limits.out_of_bounds_tolerance * np.where(known, h, 0))
    inside = ~known | ~((x0 < -tx) | (y0 < -ty) | (x1 > ww + tx) | (y1 > hh + ty))
    cx0 = np.where(known, np.minimum(np.maximum(x0, 0.0), ww), x0)
    cy0 = np.where(known, np.minimum(np.maximum(y0, 0.0), hh), y0)
    cx1 = np.where(known, np.minimum(np.maximum(x1, 0.0), ww), x1)
    cy1 = np.where(known, np.minimum(np.maximum(y1, 0.0), hh), y1)
    area = (cx1 - cx0 > 0) & (cy1 - cy0 > 0)
    over = np.maximum.reduce([cx0 - x0, cy0 - y0, x1 - cx1, y1 - cy1])
    return inside & area & (over <= SILENT_OVERHANG_PX), cx0, cy0, cx1, cy1


def _fields(ctx: _Context, anns: list[Any]) -> dict[str, Any]:
    """Per-annotation fields and eligibility masks for ``_convert_batch``. A regular batch
    (dicts with the usual keys and types, the common case) is read with C-level ``map`` and
    batch-wide type checks; an irregular one row by row."""
    from itertools import chain, repeat

    n = len(anns)
    index = ctx.fast_images
    cat_pos = ctx.fast_categories[0]
    regular = set(map(type, anns)) == {dict} and sum(map(len, anns)) == sum(
        sum(map(dict.__contains__, anns, repeat(k))) for k in _FAST_KEYS
    )  # every key is a known one (cheaper than a union of the key sets)
    if regular:
        get = dict.get
        img_ids = list(map(get, anns, repeat("image_id")))
        cats = list(map(get, anns, repeat("category_id")))
        crowd_raw = list(map(get, anns, repeat("iscrowd")))
        attrs_raw = list(map(get, anns, repeat("attributes")))
        bboxes = list(map(get, anns, repeat("bbox")))
        segs = list(map(get, anns, repeat("segmentation")))
        ids = list(map(get, anns, repeat("id")))
        btypes = set(map(type, bboxes))
        stypes = set(map(type, segs))
        regular = (
            set(crowd_raw) <= {None, 0, 1}
            and set(map(type, attrs_raw)) <= {type(None), dict}
            and btypes <= {list}
            and set(map(len, bboxes)) == {4}
            and set(map(type, chain.from_iterable(bboxes))) <= _REAL
            and stypes <= {list, type(None)}
        )
    if regular:
        plain = np.ones(n, dtype=bool)
        has_box = np.ones(n, dtype=bool)
        no_box = np.zeros(n, dtype=bool)
        seg_poly = np.fromiter(map(bool, segs), dtype=bool, count=n)
        seg_none = ~seg_poly
        crowd_ok = attrs_ok = plain
    else:
        plain = np.fromiter(
            (type(a) is dict and a.keys() <= _FAST_KEYS for a in anns), dtype=bool, count=n
        )
        get = dict.get
        anns_d = [a if p else {} for a, p in zip(anns, plain, strict=True)]
        img_ids = [get(a, "image_id") for a in anns_d]
        cats = [get(a, "category_id") for a in anns_d]
        crowd_raw = [get(a, "iscrowd") for a in anns_d]
        crowd_ok = np.fromiter((c in (None, 0, 1) for c in crowd_raw), dtype=bool, count=n)
        attrs_raw = [get(a, "attributes") for a in anns_d]
        attrs_ok = np.fromiter((v is None or type(v) is dict for v in attrs_raw), bool, count=n)
        bboxes = [get(a, "bbox") for a in anns_d]
        segs = [get(a, "segmentation") for a in anns_d]
        ids = [get(a, "id") for a in anns_d]
        has_box = np.fromiter(
            (
                type(b) is list
                and len(b) == 4
                and type(b[0]) in _REAL
                and type(b[1]) in _REAL
                and type(b[2]) in _REAL
                and type(b[3]) in _REAL
                for b in bboxes
            ),
            dtype=bool,
            count=n,
        )
        no_box = np.fromiter((b is None or b == [] for b in bboxes), dtype=bool, count=n)
        seg_poly = np.fromiter((type(s) is list and len(s) > 0 for s in segs), bool, count=n)
        seg_none = np.fromiter((s is None or s == [] for s in segs), dtype=bool, count=n)
    img_pos = np.fromiter(map(index.pos.get, img_ids, repeat(-1)), dtype=np.int64, count=n)
    cpos = np.fromiter(map(cat_pos.get, cats, repeat(-1)), dtype=np.int64, count=n)
    return {
        "plain": plain,
        "img_pos": img_pos,
        "cat_pos": cpos,
        "crowd_ok": crowd_ok,
        "crowd_raw": crowd_raw,
        "attrs_ok": attrs_ok,
        "attrs_raw": attrs_raw,
        "bboxes": bboxes,
        "segs": segs,
        "ids": ids,
        "has_box": has_box,
        "no_box": no_box,
        "seg_poly": seg_poly,
        "seg_none": seg_none,
        "regular_boxes": regular,
    }


def _category_index(ctx: _Context) -> tuple[dict[Any, int], Any, Any, Any]:
    """(source id -> position, names, canonical ids, source ids as text) as Arrow arrays."""
    import pyarrow as pa

    keys = list(ctx.categories)
    names = [ctx.categories[k][0] for k in keys]
    return (
        {k: i for i, k in enumerate(keys)},
        pa.array(names, pa.string()),
        pa.array([ctx.cmap.id_of(nm) for nm in names], pa.int32()),
        pa.array([str(k) for k in keys], pa.string()),
    )


def _build_fast_indexes(ctx: _Context) -> None:
    if ctx.fast_images is None:
        ctx.fast_images = _image_index(ctx)
        ctx.fast_categories = _category_index(ctx)


def _convert_batch(ctx: _Context, start: int, anns: list[Any]) -> None:
    """Convert ``anns`` (annotations ``start``, ``start + 1``, ...) in order."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(anns)
    if n == 0:
        return
    if ctx.sentinels or not ctx.images or not ctx.categories:
        for k, ann in enumerate(anns):
            _convert_annotation(ctx, start + k, ann)
        return
    _build_fast_indexes(ctx)
    index = ctx.fast_images
    f = _fields(ctx, anns)
    img_pos, plain, has_box, no_box = f["img_pos"], f["plain"], f["has_box"], f["no_box"]
    seg_poly, seg_none, segs, bboxes = f["seg_poly"], f["seg_none"], f["segs"], f["bboxes"]
    crowd_raw, attrs_raw = f["crowd_raw"], f["attrs_raw"]
    ok = plain & (img_pos >= 0) & (f["cat_pos"] >= 0) & f["crowd_ok"] & f["attrs_ok"]
    ok &= (has_box & (seg_poly | seg_none)) | (no_box & seg_poly)
    w = np.where(img_pos >= 0, index.width[np.maximum(img_pos, 0)], np.nan)
    h = np.where(img_pos >= 0, index.height[np.maximum(img_pos, 0)], np.nan)
    limits = ctx.limits
    # declared boxes: check_box
    if f["regular_boxes"]:
        box = np.array(bboxes, dtype=np.float64).reshape(n, 4)
    else:
        box = np.full((n, 4), np.nan)
        rows_box = np.flatnonzero(ok & has_box)
        if rows_box.size:
            box[rows_box] = np.array([bboxes[r] for r in rows_box], dtype=np.float64)
    bx, by, bw, bh = box[:, 0], box[:, 1], box[:, 2], box[:, 3]
    with np.errstate(invalid="ignore"):
        box_ok = np.isfinite(box).all(axis=1) & (bw > 0) & (bh > 0)
        worst = np.maximum.reduce([np.abs(bx), np.abs(by), np.abs(bx + bw), np.abs(by + bh)])
        box_ok &= worst <= limits.max_coordinate
        bok, bcx0, bcy0, bcx1, bcy1 = _clip_ok(bx, by, bx + bw, by + bh, w, h, limits)
    box_ok &= bok
    ok &= ~has_box | box_ok
    # polygons: check_polygons
    rows_poly = np.flatnonzero(ok & seg_poly)
    px0 = py0 = px1 = py1 = np.zeros(n)
    poly_flat = None
    if rows_poly.size:
        found = _polygon_rows(segs, rows_poly)
        if found is None:
            ok[rows_poly] = False
        else:
            pok, x0, y0, x1, y1, poly_flat = found
            px0, py0, px1, py1 = (np.zeros(n) for _ in range(4))
            px0[rows_poly], py0[rows_poly], px1[rows_poly], py1[rows_poly] = x0, y0, x1, y1
            with np.errstate(invalid="ignore"):
                worst = np.maximum(
                    np.maximum(np.abs(x0), np.abs(x1)), np.maximum(np.abs(y0), np.abs(y1))
                )
                pok &= (worst <= limits.max_coordinate) & (x1 - x0 > 0) & (y1 - y0 > 0)
                cok = _clip_ok(x0, y0, x1, y1, w[rows_poly], h[rows_poly], limits)[0]
            ok[rows_poly] &= pok & cok
    # box of each fast row: the (clipped) declared box, else the polygon extent
    with np.errstate(invalid="ignore"):
        pcx = _clip_ok(px0, py0, px1, py1, w, h, limits)
    use_decl = has_box
    x0 = np.where(use_decl, bcx0, pcx[1])
    y0 = np.where(use_decl, bcy0, pcx[2])
    x1 = np.where(use_decl, bcx1, pcx[3])
    y1 = np.where(use_decl, bcy1, pcx[4])
    fast = np.flatnonzero(ok)
    slow = np.flatnonzero(~ok)
    if fast.size == 0:
        for k in range(n):
            _convert_annotation(ctx, start + k, anns[k])
        return
    # Slow rows first into their own builder (their issues stay in annotation order).
    slow_builder = TableBuilder()
    main_builder, ctx.builder = ctx.builder, slow_builder
    try:
        for k in slow.tolist():
            _convert_annotation(ctx, start + k, anns[k])
    finally:
        ctx.builder = main_builder
    fpos = img_pos[fast]
    fl = fast.tolist()
    take = pa.array(fpos)
    ctake = pa.array(f["cat_pos"][fast])
    _, cat_names, cat_ids, cat_src = ctx.fast_categories
    # polygon texts for every row checked as a polygon, then the fast rows' ones
    if poly_flat is not None:
        seg_arr = _polygon_texts([segs[k] for k in rows_poly.tolist()], poly_flat)
        at = np.full(n, -1, dtype=np.int64)
        at[rows_poly] = np.arange(rows_poly.size)
    else:
        poly_rows = [k for k in fl if seg_poly[k]]
        seg_arr = _polygon_texts([segs[k] for k in poly_rows])
        at = np.full(n, -1, dtype=np.int64)
        at[poly_rows] = np.arange(len(poly_rows))
    where = at[fast]
    if (where >= 0).all() and where.size == len(seg_arr) and (np.diff(where) == 1).all():
        seg_col = seg_arr
    else:
        seg_col = seg_arr.take(pa.array(where, mask=where < 0))
    every = fast.size == n  # the common case: no row took the reference path
    if any(attrs_raw):
        attrs_col = pa.array(
            [dumps(_json_safe(attrs_raw[k])) if attrs_raw[k] else None for k in fl], pa.string()
        )
    else:
        attrs_col = pa.nulls(len(fl), pa.string())
    ids = f["ids"]
    fast_ids = ids if every else [ids[k] for k in fl]
    if set(map(type, fast_ids)) <= {int, type(None)}:
        sid_col = pc.cast(pa.array(fast_ids, pa.int64()), pa.string())
    else:
        sid_col = pa.array([None if i is None else str(i) for i in fast_ids], pa.string())
    sf = ctx.source_file
    m = fast.size
    ptrs = pc.binary_join_element_wise(
        "/annotations/", pc.cast(pa.array(fast + start), pa.string()), ""
    )
    columns = {
        "annotation_id": pc.binary_join_element_wise(sf + "#", ptrs, ""),
        "item_id": pa.nulls(m, pa.string()),
        "image_ref": index.refs.take(take),
        "category": cat_names.take(ctake),
        "category_id": cat_ids.take(ctake),
        "source_category_id": cat_src.take(ctake),
        "bbox_x": pa.array(x0[fast]),
        "bbox_y": pa.array(y0[fast]),
        "bbox_w": pa.array(x1[fast] - x0[fast]),
        "bbox_h": pa.array(y1[fast] - y0[fast]),
        "segmentation": seg_col,
        "iscrowd": pa.array(np.fromiter(map(bool, crowd_raw), bool, count=n)[fast]),
        "image_width": index.w32.take(take),
        "image_height": index.h32.take(take),
        "annotator": pa.nulls(m, pa.string()),
        "attributes": attrs_col,
        "source_format": pa.array([FORMAT] * m, pa.string()),
        "source_file": pa.array([sf] * m, pa.string()),
        "source_pointer": ptrs,
        "match_status": pa.array(["unmatched"] * m, pa.string()),
        "match_method": pa.nulls(m, pa.string()),
        "subset": pa.array([ctx.subset] * m, pa.string()),
        "image_sha256": index.sha.take(take),
        "source_annotation_id": sid_col,
        "shape": pc.if_else(pa.array(seg_poly[fast]), POLYGON, BOX),
        "obb": pa.nulls(m, pa.string()),
        "keypoints": pa.nulls(m, pa.string()),
        "track_id": pa.nulls(m, pa.int64()),
        "frame": pa.nulls(m, pa.int64()),
        "score": pa.nulls(m, pa.float64()),
    }
    batch = pa.RecordBatch.from_pydict(columns, schema=ANNOTATION_SCHEMA)
    if slow_builder.count:
        slow_table = slow_builder.arrow()
        # interleave by position in the batch (a slow row's pointer names its annotation)
        slow_ptrs = slow_table.column("source_pointer").to_pylist()
        slow_pos = [int(p.split("/")[2]) - start for p in slow_ptrs]
        combined = pa.concat_tables([pa.Table.from_batches([batch]), slow_table])
        keys = np.concatenate((fast, np.array(slow_pos, dtype=np.int64)))
        combined = combined.take(pa.array(np.argsort(keys, kind="stable")))
        for b in combined.to_batches():
            ctx.builder.add_batch(b)
    else:
        ctx.builder.add_batch(batch)


def _keypoints(ctx: _Context, ptr: str, image: _Image, raw: Any) -> str | None:
    """COCO's flat [x1, y1, v1, ...] -> the keypoints column (None: reported)."""
    if not isinstance(raw, list) or len(raw) % 3:
        ctx.error(
            "invalid_keypoints", f"{ptr}/keypoints", "keypoints must be [x, y, v, ...] triplets"
        )
        return None
    vals = [_number(v) for v in raw] if ctx.sentinels else raw
    pts = [vals[i : i + 3] for i in range(0, len(vals), 3)]
    for k, p in enumerate(pts):
        if p[2] not in (0, 1, 2):
            ctx.error(
                "invalid_keypoints",
                f"{ptr}/keypoints/{3 * k + 2}",
                f"keypoint visibility {p[2]!r} is not 0, 1 or 2",
            )
            return None
    check = check_points(pts, image.width, image.height, ctx.limits)
    if check.error:
        ctx.error("invalid_keypoints", f"{ptr}/keypoints", check.error)
        return None
    return keypoints_json(pts)


def _score(ctx: _Context, ptr: str, value: Any) -> float | None:
    value = _number(value) if ctx.sentinels else value
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        ctx.warn(
            "invalid_score", f"{ptr}/score", f"score {value!r} is not a finite number: dropped"
        )
        return None
    return float(value)


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
    image_records: Any,
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


FAST_BATCH = 20_000  # annotations parsed and converted at a time on the fast path


class _UseReference(Exception):
    """The fast path cannot read this file; the streaming reference path will (and will
    locate any syntax error exactly)."""


def _load_file_fast(uri: str, ctx: _Context) -> None:
    """Local files: one vectorised structure scan, then batches parsed by ``json.loads`` and
    converted by ``_convert_batch`` (see ``annotations/jsonscan.py``)."""
    from visionloop.annotations.jsonscan import (
        JSONStructureError,
        iter_batches,
        open_map,
        scan,
    )

    _, path = storage.filesystem(uri)
    data = open_map(path)
    try:
        doc = scan(data, ("categories", "images", "annotations"))
    except JSONStructureError as e:
        raise _UseReference(str(e)) from e

    def items(key: str) -> Iterator[Any]:
        for arr in (a for a in doc.arrays if a.key == key):
            for _, batch in iter_batches(data, arr, FAST_BATCH):
                yield from batch

    ctx.sentinels = False  # json.loads gives real NaN / inf floats
    try:
        _read_fast(ctx, data, doc, items)
    except JSONStructureError as e:  # an array the scan cannot split into items
        raise _UseReference(str(e)) from e


def _read_fast(ctx: _Context, data: Any, doc: Any, items: Any) -> None:
    from visionloop.annotations.jsonscan import (
        JSONBatchError,
        JSONStructureError,
        iter_batches,
        line_col,
    )

    try:
        _read_categories(ctx, items("categories"))
        offset = 0
        for arr in (a for a in doc.arrays if a.key == "images"):
            for k, batch in iter_batches(data, arr, FAST_BATCH):
                _read_images_fast(ctx, offset + k, batch)
            offset += arr.count
    except JSONBatchError as e:
        line, col = line_col(data, e.offset)
        ctx.error("malformed_json", f"line {line}, column {col}", f"malformed JSON: {e}")
        return
    if not ctx.images and not ctx.categories:
        ctx.warn("empty_document", "", "no categories and no images: nothing to import")
    main = ctx.builder
    if main.sink is None:  # keep the file's rows apart until it has parsed to the end
        ctx.builder = TableBuilder()
    offset = 0
    try:
        for arr in (a for a in doc.arrays if a.key == "annotations"):
            for k, batch in iter_batches(data, arr, FAST_BATCH):
                _convert_batch(ctx, offset + k, batch)
            offset += arr.count
    except JSONStructureError:
        ctx.builder = main  # the caller falls back (or reports, if rows went to a sink)
        raise
    except JSONBatchError as e:
        line, col = line_col(data, e.offset)
        kept = "" if main.sink is None else f"; the {ctx.builder.count} rows before it are kept"
        ctx.error(
            "malformed_json",
            f"line {line}, column {col}",
            f"malformed JSON: {e}{kept or '; no annotation of this file is imported'}",
        )
        if main.sink is None:
            ctx.builder = main
        return
    if ctx.builder is not main:
        file_rows, ctx.builder = ctx.builder, main
        for b in file_rows.arrow().to_batches():
            main.add_batch(b)


def _load_file(uri: str, ctx: _Context) -> None:
    if not storage.is_remote(uri) and not uri.startswith("memory://"):
        issues, records, rows = len(ctx.issues), len(ctx.image_records), ctx.builder.count
        try:
            _load_file_fast(uri, ctx)
            return
        except _UseReference as e:
            if ctx.builder.count != rows:  # rows already streamed to a sink: cannot redo
                ctx.error("unsupported_layout", "", f"{e}: the rest of the file is not imported")
                return
            log.debug("coco: %s: streaming reference path (%s)", uri, e)
            del ctx.issues[issues:]
            if isinstance(ctx.image_records, ImageColumns):
                for col in ctx.image_records.cols.values():
                    del col[records:]
            else:
                del ctx.image_records[records:]
            ctx.images.clear()
            ctx.categories.clear()
            ctx.rejected.clear()
            ctx.fast_images = ctx.fast_categories = None
            ctx.sentinels = True
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
    sink: ParquetSink | None = None,
) -> ImportResult:
    """Import a COCO file, or every COCO file below a folder (one category map for all).

    ``images`` is accepted for interface symmetry: COCO declares its own image sizes. With a
    ``sink`` the rows are streamed into it (bounded memory) and ``annotations`` is empty.
    """
    del images
    files, issues = coco_files(path)
    cmap, builder = CategoryMap(), TableBuilder(sink=sink)
    image_records = ImageColumns()
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


# --------------------------------------------------------------------------------------------
# Export


def _coco_subset_file(subset: str | None) -> str:
    if not subset:
        return "instances.json"
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", subset)
    return f"instances_{safe}.json"


def save_coco(df: Any, categories: CategoryMap, out: str) -> Any:
    """Write the table as COCO instances: one file at ``out`` (``*.json``), or one
    ``instances_<subset>.json`` per subset in the folder ``out``.

    Carried: boxes, polygons (several rings = one object), RLE masks, iscrowd, pose keypoints
    (with the categories' keypoint names and skeleton), score, attributes (COCO's
    non-standard ``attributes`` object, as CVAT and Datumaro write it), image sizes and sha256.
    Oriented boxes and ellipses are written as their polygon outline (their parameters are
    lost); point sets, polylines and tags are not written; annotator, track id and frame have
    no place. The loss report lists each.
    """
    from visionloop.annotations.export import (
        LossReport,
        attributes_of,
        json_value,
        note_columns,
        polygon_area,
        value,
    )
    from visionloop.annotations.table import (
        ELLIPSE,
        OBB,
        POINTS,
        POLYLINE,
        TAG,
        shape_of,
    )

    report = LossReport("coco", rows=len(df))
    one_file = out.lower().endswith(".json")
    subsets = sorted({value(r, "subset") or "" for r in df.itertuples(index=False)})
    docs: dict[str, dict[str, Any]] = {}
    cats = []
    for name in categories.names():
        cat: dict[str, Any] = {"id": categories.id_of(name) + 1, "name": name}
        meta = categories.meta.get(name, {})
        for key in ("supercategory", "keypoints", "skeleton"):
            if key in meta:
                cat[key] = meta[key]
        cats.append(cat)
    image_ids: dict[tuple[str, str, str], int] = {}
    for row in df.itertuples(index=False):
        rid = row.annotation_id
        subset = value(row, "subset") or ""
        key_file = "" if one_file else subset
        doc = docs.setdefault(key_file, {"images": [], "annotations": [], "categories": cats})
        if one_file and len(subsets) > 1:
            report.lose(
                rid,
                "subset",
                "one COCO file has no subsets: write to a folder for one file per subset",
            )
        shape = shape_of(value(row, "shape"), value(row, "segmentation"))
        if shape in (POINTS, POLYLINE, TAG):
            report.skip(rid, f"shape_{shape}", f"COCO has no {shape} annotation")
            continue
        ikey = (key_file, subset, row.image_ref)
        if ikey not in image_ids:
            image_ids[ikey] = len(doc["images"]) + 1
            image: dict[str, Any] = {"id": image_ids[ikey], "file_name": row.image_ref}
            w, h = value(row, "image_width"), value(row, "image_height")
            if w is not None and h is not None:
                image["width"], image["height"] = int(w), int(h)
            if value(row, "image_sha256"):
                image["sha256"] = row.image_sha256
            doc["images"].append(image)
        ann: dict[str, Any] = {
            "id": len(doc["annotations"]) + 1,
            "image_id": image_ids[ikey],
            "category_id": int(row.category_id) + 1,
            "iscrowd": 1 if value(row, "iscrowd") else 0,
        }
        box = [value(row, c) for c in ("bbox_x", "bbox_y", "bbox_w", "bbox_h")]
        if None not in box:
            ann["bbox"] = [float(v) for v in box]
        seg = json_value(row, "segmentation")
        if isinstance(seg, dict):
            ann["segmentation"] = seg
            _, _, counts = rle_counts(seg)
            ann["area"] = float(counts[1::2].sum())
        elif isinstance(seg, list):
            ann["segmentation"] = seg
            ann["area"] = float(sum(polygon_area(p) for p in seg))
        else:
            ann["segmentation"] = []
            ann["area"] = float(box[2] * box[3]) if None not in box else 0.0
        if shape in (OBB, ELLIPSE):
            report.lose(
                rid,
                f"shape_{shape}",
                f"COCO has no {shape}: written as its polygon outline (parameters in obb lost)",
            )
        kps = json_value(row, "keypoints")
        if kps:
            ann["keypoints"] = [c for x, y, v in kps for c in (float(x), float(y), int(v))]
            ann["num_keypoints"] = sum(1 for p in kps if p[2] > 0)
        if value(row, "score") is not None:
            ann["score"] = float(row.score)
        attrs = attributes_of(row)
        extra = attrs.pop("_extra", None)
        if attrs:
            ann["attributes"] = attrs
        if isinstance(extra, dict):
            for k, v in extra.items():
                ann.setdefault(k, v)
        note_columns(report, row, ("annotator", "track_id", "frame"), "COCO")
        doc["annotations"].append(ann)
        report.written += 1
    if not docs:
        docs[""] = {"images": [], "annotations": [], "categories": cats}
    for key, doc in docs.items():
        uri = out if one_file else storage.join(out, _coco_subset_file(key or None))
        text = json.dumps(
            {"images": doc["images"], "annotations": doc["annotations"], "categories": cats},
            separators=(",", ":"),
            allow_nan=False,
        )
        storage.write_text_atomic(uri, text)
        report.files.append(uri)
    return report
