from __future__ import annotations

from contextlib import AbstractContextManager
from contextlib import nullcontext as does_not_raise

import numpy as np
import pytest

from visionloop.anonymize.redact import (
    block_size,
    blur,
    dilate_boxes,
    fill,
    pixelate,
    redact,
    shape_mask,
)


def noise(h: int = 120, w: int = 160, channels: int | None = 3, seed: int = 0) -> np.ndarray:
    shape = (h, w) if channels is None else (h, w, channels)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize(
    ("box", "dilation", "expected"),
    [
        ([10, 20, 30, 60], 0.0, [10, 20, 30, 60]),
        ([10, 20, 30, 60], 0.5, [5, 10, 35, 70]),  # +5 px each side in x, +10 in y
        ([10.4, 20.6, 29.2, 59.9], 0.0, [10, 20, 30, 60]),  # rounded outwards
        ([2, 3, 98, 99], 0.5, [0, 0, 100, 100]),  # clipped to the 100x100 image
    ],
)
def test_dilate_boxes(box: list[float], dilation: float, expected: list[int]) -> None:
    out = dilate_boxes(np.array([box]), dilation, width=100, height=100)
    assert out.tolist() == [expected]


def test_pixelate_replaces_each_block_by_its_mean() -> None:
    patch = noise(23, 37)
    assert block_size(23, 37, 4) == 10  # ceil(37 / 4)
    out = pixelate(patch, blocks=4)
    for y in range(0, 23, 10):
        for x in range(0, 37, 10):
            block = out[y : y + 10, x : x + 10]
            expected = np.rint(patch[y : y + 10, x : x + 10].reshape(-1, 3).mean(axis=0))
            assert (block == expected.astype(np.uint8)).all()  # ragged edge blocks too


@pytest.mark.parametrize(
    ("method", "shape", "expectation"),
    [
        ("pixelate", "box", does_not_raise()),
        ("pixelate", "ellipse", does_not_raise()),
        ("blur", "box", does_not_raise()),
        ("fill", "ellipse", does_not_raise()),
        ("smudge", "box", pytest.raises(ValueError, match="unknown redaction method")),
        ("fill", "star", pytest.raises(ValueError, match="unknown redaction shape")),
    ],
)
def test_redact_changes_only_the_dilated_region(
    method: str, shape: str, expectation: AbstractContextManager
) -> None:
    img = noise()
    original = img.copy()
    with expectation:
        out, applied = redact(
            img,
            np.array([[40.0, 30.0, 80.0, 70.0]]),
            method=method,
            shape=shape,
            dilation=0.5,
            blocks=8,
        )
        assert (img == original).all()  # input untouched
        assert applied.tolist() == [[30, 20, 90, 80]]
        inside = np.zeros(img.shape[:2], bool)
        inside[20:80, 30:90] = shape_mask(60, 60, shape)
        assert (out[~inside] == img[~inside]).all()  # nothing outside the region changes
        changed = (out != img).any(axis=2)
        assert changed[inside].mean() > 0.97  # (a few pixels may equal their block mean)


def test_redaction_changes_every_pixel_block_in_the_region() -> None:
    img = noise()
    out, applied = redact(img, np.array([[40.0, 30.0, 80.0, 70.0]]), dilation=0.2, blocks=8)
    x0, y0, x1, y1 = applied[0]
    bs = block_size(y1 - y0, x1 - x0, 8)
    for y in range(y0, y1, bs):
        for x in range(x0, x1, bs):
            before = img[y : min(y + bs, y1), x : min(x + bs, x1)]
            after = out[y : min(y + bs, y1), x : min(x + bs, x1)]
            assert (after == after[0, 0]).all()  # one colour per block: detail gone
            assert (after != before).any()  # and every block changed


def test_ellipse_leaves_box_corners_untouched() -> None:
    img = noise()
    out, _ = redact(img, np.array([[40.0, 20.0, 100.0, 80.0]]), shape="ellipse", dilation=0.0)
    assert (out[20:25, 40:45] == img[20:25, 40:45]).all()
    assert (out[75:80, 95:100] == img[75:80, 95:100]).all()
    assert (out[45:55, 65:75] != img[45:55, 65:75]).any()


def test_blur_removes_detail_and_fill_removes_everything() -> None:
    patch = noise(64, 64)
    blurred = blur(patch, sigma=8)
    assert blurred.shape == patch.shape and blurred.std() < patch.std() / 5
    assert (fill(patch) == 0).all()


def test_gray_images_boxes_at_edges_and_no_boxes() -> None:
    img = noise(channels=None)
    out, applied = redact(img, np.array([[150.0, 110.0, 170.0, 130.0]]), dilation=0.0)
    assert applied.tolist() == [[150, 110, 160, 120]]
    assert (out[:110] == img[:110]).all() and (out[:, :150] == img[:, :150]).all()
    region = out[110:120, 150:160].astype(int)  # 10 px / 8 blocks -> 2 px blocks, 5 x 5
    assert (region == np.repeat(np.repeat(region[::2, ::2], 2, axis=0), 2, axis=1)).all()
    assert (region != img[110:120, 150:160]).mean() > 0.9
    same, applied = redact(img, np.zeros((0, 4)))
    assert (same == img).all() and applied.shape == (0, 4)


def test_overlapping_regions_read_original_pixels() -> None:
    img = noise()
    a, _ = redact(img, np.array([[10.0, 10, 60, 60], [40, 40, 90, 90]]), method="fill", dilation=0)
    assert (a[10:90, 40:60] == 0).all() and (a[60:90, 10:40] == img[60:90, 10:40]).all()
