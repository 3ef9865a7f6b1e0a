from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
import skimage.data

from visionloop.anonymize.detectors import Regions
from visionloop.anonymize.ensemble import EnsembleDetector
from visionloop.anonymize.multiscale import (
    MultiScaleDetector,
    change_windows,
    even_tiles,
    merge,
    plan_passes,
    tile_grid,
)
from visionloop.anonymize.plates import PlateDetector, paste_rotated, render_plate
from visionloop.anonymize.yunet import YuNetDetector


@pytest.fixture(scope="module")
def yunet() -> YuNetDetector:
    return YuNetDetector(score_threshold=0.6)


def lfw_face(k: int, size: int) -> np.ndarray:
    face = (skimage.data.lfw_subset()[k] * 255).round().astype(np.uint8)
    interp = cv2.INTER_AREA if size < 25 else cv2.INTER_CUBIC
    return cv2.resize(face, (size, size), interpolation=interp)[:, :, None]


class Boxes:
    """A detector returning fixed regions (and counting the image sizes it saw)."""

    version = "1"
    model_sha256 = "0" * 64
    licence = "MIT"

    def __init__(self, name: str, boxes: list, scores: list, kind: str = "face") -> None:
        self.name = name
        self.regions = Regions(boxes, scores, [kind] * len(scores))
        self.seen: list[tuple[int, int]] = []

    def detect(self, image_rgb: np.ndarray) -> Regions:
        self.seen.append(image_rgb.shape[:2])
        return self.regions


# ---- merge, tiles, passes ----


def test_merge_grows_the_best_box_over_what_it_suppresses() -> None:
    r = Regions(
        [[0, 0, 10, 10], [2, 1, 12, 11], [3, 3, 6, 6], [50, 50, 60, 60], [0, 0, 10, 10]],
        [0.9, 0.5, 0.4, 0.8, 0.7],
        ["face", "face", "face", "face", "plate"],
    )
    m = merge(r)
    assert m.scores.tolist() == pytest.approx([0.9, 0.8, 0.7])
    assert m.boxes.tolist() == [[0, 0, 12, 11], [50, 50, 60, 60], [0, 0, 10, 10]]
    assert m.kind.tolist() == ["face", "face", "plate"]  # kinds never merge


def test_tile_grid_covers_with_overlap_and_equal_tiles() -> None:
    tiles = tile_grid(1000, 500, 400, 0.25)
    assert {(x1 - x0, y1 - y0) for x0, y0, x1, y1 in tiles} == {(400, 400)}
    xs = sorted({t[0] for t in tiles})
    assert xs == [0, 300, 600] and sorted({t[1] for t in tiles}) == [0, 100]
    assert all(b - a <= 400 * 0.75 for a, b in itertools.pairwise(xs))
    cover = np.zeros((500, 1000), bool)
    for x0, y0, x1, y1 in tiles:
        cover[y0:y1, x0:x1] = True
    assert cover.all()
    assert tile_grid(300, 200, 400, 0.25) == [(0, 0, 300, 200)]
    with pytest.raises(ValueError, match="overlap"):
        tile_grid(10, 10, 5, 1.0)


@pytest.mark.parametrize(
    ("size", "expected"),
    [((640, 480), [3.0]), ((1280, 720), [3.0]), ((1920, 1080), []), ((4000, 3000), [1.0])],
)
def test_plan_passes(size: tuple[int, int], expected: list[float]) -> None:
    assert plan_passes(*size, max_side=1920, upscale=3.0, upscale_max_side=1280) == expected


def test_upscaled_pass_maps_boxes_back_and_keeps_only_small_faces() -> None:
    base = Boxes("fake", [[30, 30, 60, 60], [0, 0, 300, 300]], [0.9, 0.8])
    ms = MultiScaleDetector(base, max_side=1920, upscale=3.0, upscale_max_face=64)
    r = ms.detect(np.zeros((100, 200, 3), np.uint8))
    assert base.seen == [(100, 200), (300, 600)]  # whole image, then one 3x tile
    # whole pass: both boxes (clipped); 3x pass: (10, 10, 20, 20) kept, its 100 px box dropped
    assert r.boxes.tolist() == [[30, 30, 60, 60], [10, 10, 20, 20], [0, 0, 200, 100]]


class OnlyWhenLarge(Boxes):
    def detect(self, image_rgb: np.ndarray) -> Regions:
        return self.regions if image_rgb.shape[0] >= 300 else Regions.empty()


@pytest.mark.parametrize(("max_face", "expected"), [(64, []), (80, [[0, 0, 80, 80]])])
def test_upscaled_pass_reports_only_faces_up_to_max_face(max_face: int, expected: list) -> None:
    base = OnlyWhenLarge("fake", [[0, 0, 240, 240]], [0.9])  # 80 px in the original image
    ms = MultiScaleDetector(base, max_side=1920, upscale=3.0, upscale_max_face=max_face)
    assert ms.detect(np.zeros((100, 200, 3), np.uint8)).boxes.tolist() == expected
    assert ms.name == "fake" and ms.model_sha256 == "0" * 64


# ---- real detectors ----


def test_tiling_finds_a_small_face_that_single_scale_misses(yunet: YuNetDetector) -> None:
    img = np.full((480, 640, 3), 128, np.uint8)
    img[200:216, 300:316] = lfw_face(0, 16)
    assert len(yunet.detect(img)) == 0
    r = MultiScaleDetector(yunet, max_side=1920, upscale=3.0).detect(img)
    assert len(r) == 1
    x0, y0, x1, y1 = r.boxes[0]
    assert 296 <= x0 < 308 < x1 <= 320 and 196 <= y0 < 208 < y1 <= 220


def test_full_resolution_tiles_find_what_the_downscaled_pass_loses() -> None:
    small = YuNetDetector(score_threshold=0.6, max_side=320)
    img = np.full((960, 1280, 3), 128, np.uint8)
    img[500:560, 700:760] = lfw_face(1, 60)  # 15 px after the 0.25 downscale
    assert len(small.detect(img)) == 0
    r = MultiScaleDetector(small, max_side=320, upscale=1.0).detect(img)
    assert len(r) == 1 and r.scores[0] >= 0.6
    x0, y0, x1, y1 = r.boxes[0]
    assert 690 <= x0 < 730 < x1 <= 770 and 490 <= y0 < 530 < y1 <= 570


def test_yunet_finds_the_astronaut_and_nothing_on_plain_images(yunet: YuNetDetector) -> None:
    img = skimage.data.astronaut()
    r = yunet.detect(img)
    assert len(r) == 1 and r.kind.tolist() == ["face"] and r.scores[0] > 0.9
    x0, y0, x1, y1 = r.boxes[0]
    assert 150 <= x0 < x1 <= 320 and 30 <= y0 < y1 <= 200
    assert yunet.detect_size(512, 512) == (512, 512)
    rng = np.random.default_rng(0)
    for plain in (np.full((480, 640, 3), 90, np.uint8), rng.integers(0, 256, (480, 640, 3))):
        assert len(yunet.detect(plain.astype(np.uint8))) == 0
    assert len(yunet.detect(img.mean(axis=2).astype(np.uint8))) == 1  # gray input


# ---- ensemble ----


def test_ensemble_is_the_union_with_per_member_thresholds() -> None:
    a = Boxes("a", [[0, 0, 10, 10], [40, 40, 50, 50]], [0.9, 0.3])
    b = Boxes("b", [[1, 1, 11, 11], [80, 0, 90, 10]], [0.7, 0.55])
    ens = EnsembleDetector([a, b], thresholds={"a": 0.5, "b": 0.5}, tiled=(), review_band=0.1)
    kept, near = ens.detect_all(np.zeros((100, 100, 3), np.uint8))
    assert kept.boxes.tolist() == [[0, 0, 11, 11], [80, 0, 90, 10]]  # a's 0.3 is below 0.5
    assert [(n["detector"], n["score"], n["redacted"]) for n in near] == [("b", 0.55, True)]
    assert ens.version == "a=1;b=1" and ens.model_sha256 == f"a={'0' * 64};b={'0' * 64}"
    assert [r["score_threshold"] for r in ens.records()] == [0.5, 0.5]
    with pytest.raises(ValueError, match="distinct"):
        EnsembleDetector([a, a], tiled=())
    with pytest.raises(ValueError, match="at least one"):
        EnsembleDetector([], tiled=())


def test_real_ensemble_finds_faces_either_member_finds() -> None:
    ens = EnsembleDetector(
        ["centerface", "yunet"], thresholds={"centerface": 0.25, "yunet": 0.6}, tiled=()
    )
    img = np.full((480, 640, 3), 128, np.uint8)
    img[100:190, 100:190] = lfw_face(2, 90)
    img[300:360, 400:460] = lfw_face(3, 60)
    kept = ens.detect(img)
    centres = (kept.boxes[:, :2] + kept.boxes[:, 2:]) / 2
    assert len(kept) == 2
    assert np.abs(np.sort(centres[:, 0]) - [145, 430]).max() < 15


# ---- plates ----


def test_plate_detector_finds_rendered_plates_and_not_plain_scenes() -> None:
    rng = np.random.default_rng(3)
    det = PlateDetector(score_threshold=0.5)
    scene = np.full((480, 640, 3), 110, np.uint8)
    truth = [
        paste_rotated(scene, render_plate("AB 123 CD", 160, rng, aspect=4.5), (200, 150), 0),
        paste_rotated(scene, render_plate("XY 98", 120, rng, aspect=2.5), (450, 330), 8),
    ]
    r = det.detect(scene)
    assert r.kind.tolist() == ["plate", "plate"]
    for t in truth:
        cx, cy = (t[0] + t[2]) / 2, (t[1] + t[3]) / 2
        assert ((r.boxes[:, 0] <= cx) & (cx <= r.boxes[:, 2]) & (r.boxes[:, 1] <= cy)).any()
    plain = np.random.default_rng(0).integers(0, 256, (480, 640, 3)).astype(np.uint8)
    assert len(det.detect(plain)) == 0 and len(det.detect(np.full_like(plain, 200))) == 0


# ---- small-face passes: even tiles, large images, verification windows ----


def test_even_tiles_are_fewer_and_overlap_by_the_largest_small_face() -> None:
    assert even_tiles(2560, 1920, 1920, 256) == [(0, 0, 1408, 1920), (1152, 0, 2560, 1920)]
    assert even_tiles(1920, 1440, 1920, 192) == [(0, 0, 1920, 1440)]
    tiles = even_tiles(3840, 2880, 1920, 256)
    assert len(tiles) == 6 and {(x1 - x0, y1 - y0) for x0, y0, x1, y1 in tiles} == {(1472, 1568)}
    cover = np.zeros((2880, 3840), bool)
    for x0, y0, x1, y1 in tiles:
        cover[y0:y1, x0:x1] = True
    assert cover.all()
    xs = sorted({t[0] for t in tiles})
    assert all(a + 1472 - b >= 256 for a, b in itertools.pairwise(xs))
    with pytest.raises(ValueError, match="overlap"):
        even_tiles(100, 100, 64, 64)


@pytest.mark.parametrize(
    ("size", "expected"),
    [((640, 480), [4.0]), ((1280, 720), [4.0]), ((1920, 1080), [2.0]), ((2400, 1800), [1.0])],
)
def test_plan_passes_with_a_cheaper_factor_for_larger_images(
    size: tuple[int, int], expected: list[float]
) -> None:
    assert (
        plan_passes(
            *size,
            max_side=1920,
            upscale=4.0,
            upscale_max_side=1280,
            upscale_large=2.0,
            upscale_large_max_side=1920,
        )
        == expected
    )


def test_change_windows_grow_clip_and_join() -> None:
    changed = np.array([[100, 100, 120, 120], [150, 100, 170, 120], [600, 400, 640, 480]])
    assert change_windows(changed, 640, 480, 32) == [(68, 68, 202, 152), (568, 368, 640, 480)]
    assert change_windows(np.zeros((0, 4)), 640, 480, 32) == []


class TwoFaces(Boxes):
    """Finds the same two 48 px boxes in every image (crop, tile) it is given."""

    def detect(self, image_rgb: np.ndarray) -> Regions:
        self.seen.append(image_rgb.shape[:2])
        return Regions([[40, 40, 88, 88], [120, 120, 168, 168]], [0.9, 0.8], ["face"] * 2)


def test_detect_changed_runs_the_upscale_only_around_changes() -> None:
    base = TwoFaces("fake", [], [])
    ms = MultiScaleDetector(base, max_side=1920, upscale=4.0, upscale_max_face=32)
    img = np.zeros((480, 640, 3), np.uint8)
    assert len(ms.detect(img)) == 6  # 2 whole-image boxes + 2 small ones per 4x tile
    assert base.seen == [(480, 640), (1920, 1344), (1920, 1344)]
    base.seen.clear()
    r = ms.detect_changed(img, np.array([[80, 80, 100, 100]]))
    # whole image again, then the 4x pass on one window: (48, 48, 132, 132) at 4x
    assert base.seen == [(480, 640), (336, 336)]
    # the window's boxes are 12 px at (58, 58) and (78, 78): only the one touching the change
    # counts; the other lies in unchanged pixels the first pass searched
    assert sorted(r.boxes.tolist()) == [[40, 40, 88, 88], [78, 78, 90, 90], [120, 120, 168, 168]]
    base.seen.clear()
    r = ms.detect_changed(img, np.array([[0, 0, 600, 400]]))  # windows > 70 %: one whole pass
    assert base.seen == [(480, 640), (1920, 1344), (1920, 1344)] and len(r) == 6


def test_ensemble_detect_changed_and_small_face_thresholds() -> None:
    a = Boxes("a", [[0, 0, 12, 12], [40, 40, 80, 80], [90, 0, 100, 30]], [0.45, 0.45, 0.7])
    ens = EnsembleDetector(
        [a], thresholds={"a": 0.6}, small_face_thresholds={"a": 0.4}, small_face_max=16, tiled=()
    )
    # the 12 px box passes at 0.45 >= 0.4; the 40 px one needs 0.6; 30 px tall: not small
    assert ens.detect(np.zeros((100, 100, 3), np.uint8)).boxes.tolist() == [
        [90, 0, 100, 30],
        [0, 0, 12, 12],
    ]
    assert ens.records()[0]["small_face_threshold"] == 0.4
    assert ens.records()[0]["small_face_max"] == 16
    # not multi-scale (tiled=()): verification searches everything with the plain detector
    changed = ens.detect_changed(np.zeros((100, 100, 3), np.uint8), np.zeros((0, 4)))
    assert len(changed) == 2 and len(a.seen) == 2
