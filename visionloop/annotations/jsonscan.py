"""Fast, bounded-memory reading of the top-level arrays of a large JSON object (a COCO file).

One vectorised pass (numpy, over a memory map, a few MB at a time) finds the structure: which
bytes are inside strings (quotes not escaped by an odd run of backslashes), the nesting depth
of every bracket, the top-level keys, and the byte offset of every item of the top-level
arrays. Each array is then parsed a batch of items at a time with the standard library's C
parser (``json.loads`` of ``[item, item, ...]``), so Python holds one batch, not the document.

``json.loads`` accepts the non-standard NaN / Infinity tokens Python writes, so a NaN box is
parsed (and reported by the importer with its JSON pointer) rather than failing the file.

The scan proves the brackets balance and every string ends; token-level errors (``12.3.4``)
surface when their batch is parsed (``JSONBatchError`` with the byte offset). Local files
only (a memory map); the caller falls back to a streaming parser for other storage.
"""

from __future__ import annotations

import json
import mmap
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

BLOCK = 1 << 22  # bytes scanned at a time (bounded temporaries: ~10 bytes per byte scanned)
_QUOTE, _BACKSLASH = 34, 92
_COMMA, _COLON = 44, 58
_STRUCT = np.zeros(256, dtype=bool)
_STRUCT[[123, 125, 91, 93, 44, 58]] = True
_BRACKET = np.zeros(256, dtype=bool)
_BRACKET[[123, 125, 91, 93]] = True
_DELTA = np.zeros(256, dtype=np.int32)
_DELTA[[123, 91]] = 1
_DELTA[[125, 93]] = -1


class JSONStructureError(ValueError):
    """The document is not a well-bracketed JSON object (truncated, unbalanced, ...)."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


class JSONBatchError(ValueError):
    """A batch of items does not parse; ``offset`` is the byte offset of the error."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


@dataclass
class TopLevelArray:
    key: str
    start: int  # offset of "["
    end: int  # offset of "]"
    item_ends: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def count(self) -> int:
        return len(self.item_ends)


@dataclass
class Document:
    """The top-level layout of a JSON object document."""

    arrays: list[TopLevelArray]
    keys: list[str]  # every top-level key, in order


def _quote_mask(arr: np.ndarray, carry_bs: int) -> np.ndarray:
    """Bytes that are quotes not escaped (preceded by an even run of backslashes)."""
    qm = arr == _QUOTE
    bs = arr == _BACKSLASH
    if carry_bs == 0 and not bs.any():
        return qm
    q = np.flatnonzero(qm)
    if q.size == 0:
        return qm
    idx = np.arange(arr.size, dtype=np.int64)
    last_other = np.maximum.accumulate(np.where(bs, -1, idx))
    prev = q - 1
    lo = last_other[np.maximum(prev, 0)]
    run = np.where(prev >= 0, prev - lo, 0)
    run = run + np.where((prev < 0) | (lo == -1), carry_bs, 0)  # run from the last block
    qm[q[run % 2 == 1]] = False
    return qm


def _trailing_backslashes(arr: np.ndarray, carry: int) -> int:
    nz = np.flatnonzero(arr[-64:] != _BACKSLASH)
    if nz.size:
        return min(64, arr.size) - 1 - int(nz[-1])
    nz = np.flatnonzero(arr != _BACKSLASH)
    return arr.size - 1 - int(nz[-1]) if nz.size else carry + arr.size


def _key_before(buf: np.ndarray, colon: int) -> str:
    """The string key just before a top-level colon (read backwards; keys are short)."""
    end = colon - 1
    while end >= 0 and buf[end] in (32, 9, 10, 13):
        end -= 1
    if end < 0 or buf[end] != _QUOTE:
        raise JSONStructureError("a key is not a string", colon)
    k = end - 1
    while k >= 0:
        if buf[k] == _QUOTE:
            run, j = 0, k - 1
            while j >= 0 and buf[j] == _BACKSLASH:
                run, j = run + 1, j - 1
            if run % 2 == 0:
                return bytes(buf[k + 1 : end]).decode("utf-8", errors="replace")
        k -= 1
    raise JSONStructureError("a key is not a string", colon)


def scan(data: Any, arrays: tuple[str, ...]) -> Document:
    """Find the top-level keys holding containers in the object in ``data`` (bytes-like) and
    the item boundaries of the top-level arrays named in ``arrays``.

    Only brackets outside strings are tracked (commas and colons are far more numerous): an
    item of an array is a container opening at depth 2 and closing back to it. An array
    whose items are not containers is reported as unsplittable (``JSONStructureError``)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    n = buf.size
    pos = 3 if n >= 3 and bytes(buf[:3]) == b"\xef\xbb\xbf" else 0
    in_string = 0
    depth = 0
    carry_bs = 0
    keys: list[str] = []
    found: list[TopLevelArray] = []
    current: TopLevelArray | None = None
    ends: list[np.ndarray] = []
    seen_root = False
    while pos < n:
        stop = min(n, pos + BLOCK)
        arr = buf[pos:stop]
        qm = _quote_mask(arr, carry_bs if in_string else 0)
        carry_bs = _trailing_backslashes(arr, carry_bs)  # they escape the next block's byte
        inside = np.bitwise_xor.accumulate(qm.view(np.uint8))
        if in_string:
            inside ^= 1
        struct = np.flatnonzero(_BRACKET[arr] & (inside == 0))
        in_string = int(inside[-1]) if inside.size else in_string
        if struct.size:
            chars = arr[struct]
            delta = _DELTA[chars]
            depth_after = depth + np.cumsum(delta)
            depth_before = depth_after - delta
            if not seen_root:
                if chars[0] != 123:
                    raise JSONStructureError("the document is not a JSON object", pos)
                seen_root = True
            elif depth == 0:
                raise JSONStructureError("content after the top-level object", pos + int(struct[0]))
            negative = np.flatnonzero(depth_after < 0)
            if negative.size:
                raise JSONStructureError("unbalanced brackets", pos + int(struct[negative[0]]))
            closed = np.flatnonzero(depth_after == 0)
            if closed.size and closed[0] < struct.size - 1:
                k = int(closed[0]) + 1
                raise JSONStructureError("content after the top-level object", pos + int(struct[k]))
            # Top-level events in order: a container opening at depth 1 (a key's value) and
            # an array closing back to depth 1. Items: containers closing back to depth 2.
            is_open = (delta == 1) & (depth_before == 1)
            is_close = (chars == 93) & (depth_before == 2)
            is_item_end = (depth_after == 2) & (delta == -1)
            span_from = 0
            for k in np.flatnonzero(is_open | is_close).tolist():
                at = pos + int(struct[k])
                if is_open[k]:
                    key = _key_before(buf, _colon_before(buf, at))
                    keys.append(key)
                    if chars[k] == 91 and key in arrays:
                        current = TopLevelArray(key, at, -1)
                        ends = []
                        span_from = k + 1
                elif current is not None:  # the current array closes
                    item_ends = struct[span_from:k][is_item_end[span_from:k]]
                    if item_ends.size:
                        ends.append(item_ends.astype(np.int64) + pos)
                    current.end = at
                    items = np.concatenate(ends) if ends else np.zeros(0, dtype=np.int64)
                    body_end = int(items[-1]) + 1 if items.size else current.start + 1
                    if bytes(buf[body_end:at]).strip(b" \t\r\n"):
                        raise JSONStructureError(
                            f"array {key!r} has items that are not objects or arrays", at
                        )
                    current.item_ends = items + 1  # exclusive ends
                    found.append(current)
                    current = None
            if current is not None:  # still open at the end of the block
                item_ends = struct[span_from:][is_item_end[span_from:]]
                if item_ends.size:
                    ends.append(item_ends.astype(np.int64) + pos)
            depth = int(depth_after[-1])
        release(data, pos, stop)
        pos = stop
    if in_string:
        raise JSONStructureError("the file ends inside a string (truncated?)", n)
    if depth != 0 or not seen_root:
        raise JSONStructureError("the file ends before its brackets close (truncated?)", n)
    return Document(found, keys)


def _colon_before(buf: np.ndarray, at: int) -> int:
    k = at - 1
    while k >= 0 and buf[k] in (32, 9, 10, 13):
        k -= 1
    if k < 0 or buf[k] != _COLON:
        raise JSONStructureError("a top-level value is not preceded by 'key:'", at)
    return k


def iter_batches(
    data: Any, array: TopLevelArray, batch: int = 20_000
) -> Iterator[tuple[int, list[Any]]]:
    """Yield (index of the first item, items) for ``array``, ``batch`` items at a time."""
    for k in range(0, array.count, batch):
        a = array.start + 1 if k == 0 else int(array.item_ends[k - 1])
        b = int(array.item_ends[min(k + batch, array.count) - 1])
        text = bytes(data[a:b]).lstrip(b" \t\r\n,")
        offset = b - len(text)
        try:
            items = json.loads(b"[" + text + b"]")
        except json.JSONDecodeError as e:
            raise JSONBatchError(e.msg, offset + max(0, e.pos - 1)) from e
        except UnicodeDecodeError as e:
            raise JSONBatchError(f"invalid UTF-8 ({e.reason})", offset + max(0, e.start - 1)) from e
        if len(items) != min(batch, array.count - k):  # scalars between container items
            raise JSONStructureError(f"array {array.key!r} mixes containers and scalars", a)
        del text
        release(data, a, b)
        yield k, items


def release(data: Any, start: int, stop: int) -> None:
    """Tell the kernel the mapped pages of [start, stop) are done with, so a 1 GB file does
    not stay resident (mapped pages count in RSS); they are re-read if touched again."""
    if isinstance(data, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        page = mmap.PAGESIZE
        a = (start // page) * page
        b = (stop // page) * page
        if b > a:
            data.madvise(mmap.MADV_DONTNEED, a, b - a)


def open_map(path: str) -> mmap.mmap | bytes:
    """A read-only memory map of a local file (bytes for an empty one)."""
    with open(path, "rb") as fh:
        try:
            return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # empty file
            return b""


def line_col(data: Any, offset: int) -> tuple[int, int]:
    """1-based line and column of a byte offset."""
    buf = np.frombuffer(data, dtype=np.uint8)[: max(0, offset)]
    lines = 1
    last_nl = -1
    for s in range(0, buf.size, BLOCK):
        part = buf[s : s + BLOCK]
        nl = np.flatnonzero(part == 10)
        lines += nl.size
        if nl.size:
            last_nl = s + int(nl[-1])
    return lines, offset - last_nl
