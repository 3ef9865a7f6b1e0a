"""The structure scan behind the fast COCO path: items found whatever the block boundaries,
strings with brackets and escaped quotes, truncation and junk detected."""

from __future__ import annotations

import json
from typing import Any

import pytest

from visionloop.annotations import jsonscan
from visionloop.annotations.jsonscan import (
    JSONBatchError,
    JSONStructureError,
    iter_batches,
    line_col,
    scan,
)


def items_of(doc: bytes, key: str = "annotations", batch: int = 2) -> list[Any]:
    found = scan(doc, (key,))
    return [x for arr in found.arrays if arr.key == key for _, b in iter_batches(doc, arr, batch)
            for x in b]  # fmt: skip


TRICKY = json.dumps(
    {
        "info": {"note": 'a "quoted" ] } [ { string \\ with backslash\\'},
        "images": [{"file_name": "dir\\\\x[1].jpg"}, {"file_name": 'y"}.jpg'}],
        "annotations": [{"id": i, "s": "]" * (i % 3), "b": [i, [i, i]]} for i in range(7)],
        "categories": [],
    },
    indent=1,
).encode()


@pytest.mark.parametrize("block", [1, 2, 3, 7, 64, 1 << 22])
def test_items_are_found_whatever_the_block_size(monkeypatch: Any, block: int) -> None:
    monkeypatch.setattr(jsonscan, "BLOCK", block)
    expected = json.loads(TRICKY)
    assert items_of(TRICKY) == expected["annotations"]
    assert items_of(TRICKY, "images", 1) == expected["images"]
    assert items_of(TRICKY, "categories") == []
    assert scan(TRICKY, ()).keys == ["info", "images", "annotations", "categories"]


@pytest.mark.parametrize(
    ("doc", "error", "offset"),
    [
        (b'{"annotations": [{"a": 1}, {"b"', JSONStructureError, 31),
        (b'{"a": "unterminated', JSONStructureError, 19),
        (b"[1, 2]", JSONStructureError, 0),
        (b'{"a": {}}}', JSONStructureError, 9),
        (b'{"a": {}} {"b": 1}', JSONStructureError, 10),
        (b'{"annotations": [1, 2]}', JSONStructureError, 21),
    ],
)
def test_bad_structure(doc: bytes, error: type, offset: int) -> None:
    with pytest.raises(error) as info:
        scan(doc, ("annotations",))
    assert info.value.offset == offset


def test_token_errors_surface_in_their_batch_with_the_offset() -> None:
    doc = b'{"annotations": [{"a": 1},\n{"b": 12.3.4}]}'
    found = scan(doc, ("annotations",))
    with pytest.raises(JSONBatchError) as info:
        list(iter_batches(doc, found.arrays[0], 1))
    assert line_col(doc, info.value.offset) == (2, 11)


def test_scalars_between_objects_cannot_be_split() -> None:
    doc = b'{"annotations": [{"a": 1}, 5, {"b": 2}]}'
    found = scan(doc, ("annotations",))
    with pytest.raises(JSONStructureError, match="mixes"):
        list(iter_batches(doc, found.arrays[0], 5))


def test_bom_and_nan_tokens() -> None:
    doc = b'\xef\xbb\xbf{"annotations": [{"bbox": [NaN, 1, Infinity, -Infinity]}]}'
    [[ann]] = [b for _, b in iter_batches(doc, scan(doc, ("annotations",)).arrays[0])]
    assert str(ann["bbox"]) == "[nan, 1, inf, -inf]"
