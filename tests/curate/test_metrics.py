"""Metrics on planted truth: blur, exposure, entropy, pHash and day/night."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from tests.curate import synthetic as S
from visionloop.config import CurateParams
from visionloop.curate import flag_quality, flag_shape, metrics
from visionloop.curate.metrics import (
    calc_blur,
    calc_brightness,
    calc_day_night,
    calc_entropy,
    calc_phash,
    compute_metrics,
    decode_factor,
    decode_for_metrics,
    luminance_histogram,
    working_gray,
)

SHIPPED = CurateParams()


def _hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


@pytest.fixture(scope="module")
def blur_set() -> tuple[np.ndarray, np.ndarray]:
    """40 published-like JPEGs: 20 sharp textures, 20 Gaussian-blurred (sigma 3..6 px)."""
    rng = np.random.default_rng(42)
    scores, truth = [], []
    for i in range(40):
        img = S.texture(rng)
        is_blurry = i % 2 == 1
        if is_blurry:
            img = S.blurred(img, float(rng.uniform(3.0, 6.0)))
        scores.append(compute_metrics(S.roundtrip(img))["blur"])
        truth.append(is_blurry)
    return np.array(scores), np.array(truth)


def test_blur_recall_and_precision_at_the_shipped_threshold(blur_set) -> None:
    scores, truth = blur_set
    flagged = scores < SHIPPED.blur_threshold
    tp = int((flagged & truth).sum())
    assert tp / truth.sum() == 1.0  # recall
    assert tp / flagged.sum() == 1.0  # precision
    # and with margin on both sides, so the result is not a knife edge
    assert scores[truth].max() < SHIPPED.blur_threshold - 0.03
    assert scores[~truth].min() > SHIPPED.blur_threshold + 0.3


def test_blur_score_falls_monotonically_with_blur() -> None:
    img = S.texture(np.random.default_rng(1))
    scores = [
        compute_metrics(S.roundtrip(S.blurred(img, s) if s else img))["blur"] for s in (0, 1, 2, 4)
    ]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_blur_score_ignores_contrast_and_brightness() -> None:
    """The confound of Laplacian variance: gain and offset must not move the score much."""
    rng = np.random.default_rng(2)
    sharp = S.roundtrip(S.texture(rng))
    soft = S.roundtrip(S.blurred(S.texture(rng), 4.0))

    def gain(img: np.ndarray, k: float, offset: float = 0.0) -> np.ndarray:
        return np.clip((img.astype(np.float32) - 128) * k + 128 + offset, 0, 255).astype(np.uint8)

    def lap_var(img: np.ndarray) -> float:
        return float(cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())

    for img in (sharp, soft):
        base = compute_metrics(img)["blur"]
        for k, offset in ((0.5, -40.0), (0.5, 40.0), (1.5, 0.0)):
            changed = gain(img, k, offset)
            assert abs(compute_metrics(changed)["blur"] - base) < 0.03
            if img is sharp:  # ...where the Laplacian variance moves by the square of the gain
                assert abs(lap_var(changed) / lap_var(img) - k * k) < 0.3 * k * k
    assert compute_metrics(gain(soft, 1.5))["blur"] < SHIPPED.blur_threshold
    assert compute_metrics(gain(sharp, 0.5))["blur"] > SHIPPED.blur_threshold
    # a low-contrast sharp photo still out-scores a contrasty soft one
    assert compute_metrics(gain(sharp, 0.3))["blur"] > compute_metrics(gain(soft, 1.5))["blur"]


def test_blur_of_a_flat_image_is_zero() -> None:
    assert calc_blur(np.full((50, 60), 128, np.float32)) == 0.0
    assert calc_blur(np.zeros((1, 60), np.float32)) == 0.0


@pytest.mark.parametrize(
    ("make", "dark", "overexposed"),
    [
        (lambda img: img, False, False),
        (lambda img: S.darkened(img, 0.1), True, False),
        (lambda img: S.washed_out(img, 0.06), False, True),
    ],
    ids=["normal", "gain-0.1", "white-gap-0.06"],
)
def test_exposure_flags(make, dark, overexposed) -> None:
    img = S.roundtrip(make(S.texture(np.random.default_rng(3))))
    m = compute_metrics(img)
    flags = flag_quality(pd.DataFrame([m]), SHIPPED)
    assert bool(flags.at[0, "is_dark"]) is dark
    assert bool(flags.at[0, "is_overexposed"]) is overexposed
    assert not bool(flags.at[0, "is_blurry"])


def test_night_scene_with_lights_is_not_too_dark() -> None:
    """p99 decides darkness: a dark frame with 3 % bright lamps is a night photo, not a failure."""
    img = np.full((200, 200), 12, np.uint8)
    img[:20, :30] = 240  # 600 of 40000 px = 1.5 %
    img[100:110, 100:160] = 230  # 600 px more
    b = calc_brightness(luminance_histogram(img.astype(np.float32)))
    assert b["brightness"] < 0.1
    assert b["brightness_high"] > SHIPPED.dark_threshold


def test_brightness_exact_values() -> None:
    img = np.zeros((10, 10), np.float32)
    img[:, 5:] = 255  # half black, half white
    b = calc_brightness(luminance_histogram(img))
    assert b == {"brightness": 0.5, "brightness_low": 0.0, "brightness_high": 1.0}


@pytest.mark.parametrize(
    ("image", "bits"),
    [
        (np.full((16, 16), 77, np.float32), 0.0),
        (np.repeat(np.array([[0.0, 255.0]], np.float32), 8, axis=0), 1.0),
        (np.arange(256, dtype=np.float32).reshape(16, 16), 8.0),
    ],
    ids=["constant", "two-levels", "uniform"],
)
def test_entropy_exact(image, bits) -> None:
    assert calc_entropy(luminance_histogram(image)) == pytest.approx(bits, abs=1e-12)


def test_flat_image_is_low_information_and_texture_is_not() -> None:
    rng = np.random.default_rng(4)
    flat = compute_metrics(S.roundtrip(S.flat(rng)))
    tex = compute_metrics(S.roundtrip(S.texture(rng)))
    assert flat["entropy"] < SHIPPED.low_information_threshold
    assert tex["entropy"] > 5.0


def test_phash_near_copies_match_and_distinct_images_do_not() -> None:
    rng = np.random.default_rng(5)
    originals = [S.roundtrip(S.texture(rng, 400, 300)) for _ in range(12)]
    hashes = [compute_metrics(img)["phash"] for img in originals]
    copies = [compute_metrics(S.near_copy(img))["phash"] for img in originals]
    assert all(len(h) == 16 and int(h, 16) >= 0 for h in hashes)
    near = [_hamming(a, b) for a, b in zip(hashes, copies, strict=True)]
    assert max(near) <= SHIPPED.phash_radius
    distinct = [_hamming(a, b) for i, a in enumerate(hashes) for b in hashes[i + 1 :]]
    assert min(distinct) > SHIPPED.phash_radius
    # the hash survives a darker exposure of the same scene
    assert _hamming(hashes[0], compute_metrics(S.darkened(originals[0], 0.5))["phash"]) <= 4


def test_phash_bit_order() -> None:
    """Bit 63 is DCT (0, 0): a bright flat-ish image has the DC coefficient above the median."""
    img = np.full((32, 32), 200, np.float32)
    img[:, :16] += 10  # one horizontal frequency, so the median is not the DC value
    h = calc_phash(img)
    assert int(h, 16) >> 63 == 1


def test_compute_metrics_accepts_gray_rgb_and_16_bit() -> None:
    bgr = S.roundtrip(S.texture(np.random.default_rng(6)))
    a = compute_metrics(bgr, color="bgr")
    b = compute_metrics(bgr[:, :, ::-1].copy(), color="rgb")
    assert a == b
    gray = working_gray(bgr).round().astype(np.uint8)
    g = compute_metrics(gray, color="gray")
    assert abs(g["blur"] - a["blur"]) < 0.01
    wide = (bgr.astype(np.uint16) << 8) | bgr
    assert compute_metrics(wide) == a
    assert set(a) == set(metrics.METRIC_KEYS)


def test_working_copy_is_bounded_and_never_upscaled() -> None:
    big = np.zeros((1000, 2000, 3), np.uint8)
    assert working_gray(big, 512).shape == (256, 512)
    small = np.zeros((30, 40, 3), np.uint8)
    assert working_gray(small, 512).shape == (30, 40)
    assert working_gray(big).dtype == np.float32


@pytest.mark.parametrize(
    ("w", "h", "factor"),
    [(640, 480, 1), (1024, 768, 2), (4032, 3024, 4), (8000, 6000, 8), (None, None, 1)],
)
def test_decode_factor(w, h, factor) -> None:
    assert decode_factor(w, h, 512) == factor


def test_reduced_decode_covers_the_working_size() -> None:
    img = S.texture(np.random.default_rng(7), 1100, 800)
    decoded, factor = decode_for_metrics(S.jpeg(img), 1100, 800, work_max_side=512)
    assert factor == 2
    assert decoded.shape[:2] == (400, 550)
    png_decoded, png_factor = decode_for_metrics(S.png(img), 1100, 800, work_max_side=512)
    assert png_decoded.shape[:2] in ((400, 550), (800, 1100))  # PNG may ignore the reduction
    assert png_factor in (1, 2)


def test_garbage_bytes_raise() -> None:
    with pytest.raises(ValueError, match="could not decode"):
        decode_for_metrics(b"not an image", 10, 10, work_max_side=512)


@pytest.mark.parametrize(
    ("capture", "brightness", "expected"),
    [
        ("2024-05-01T13:00:00", 0.05, ("day", "exif")),
        ("2024-05-01 05:59:59", 0.9, ("night", "exif")),
        ("2024-05-01T20:00:00", 0.9, ("night", "exif")),
        (None, 0.05, ("night", "brightness")),
        (None, 0.5, ("day", "brightness")),
        ("garbage", 0.5, ("day", "brightness")),
    ],
)
def test_day_night(capture, brightness, expected) -> None:
    got = calc_day_night(
        capture,
        brightness,
        day_start_hour=SHIPPED.day_start_hour,
        night_start_hour=SHIPPED.night_start_hour,
        night_brightness=SHIPPED.night_brightness,
    )
    assert got == expected


def test_fingerprint_tracks_work_size_not_thresholds() -> None:
    assert metrics.metrics_fingerprint(512) == metrics.metrics_fingerprint(512)
    assert metrics.metrics_fingerprint(512) != metrics.metrics_fingerprint(256)


# --- clipping, grayscale, colour cast, pixel hash ----------------------------------------------


def _flags(img: np.ndarray, params: CurateParams = SHIPPED, color: str = "bgr") -> pd.Series:
    return flag_quality(pd.DataFrame([compute_metrics(img, color=color)]), params).iloc[0]


def test_clipping_exact_shares() -> None:
    img = np.full((100, 100), 128, np.uint8)
    img[:30] = 255  # 30 % blown highlights
    img[30:35] = 0  # 5 % crushed shadows
    got = metrics.calc_clipping(luminance_histogram(img))
    assert got == {"clip_low": 0.05, "clip_high": 0.3}


@pytest.mark.parametrize(
    ("blown_rows", "clipped"),
    [(0, False), (40, False), (60, False), (100, True), (200, True)],
    ids=["none", "17pct", "25pct-edge", "42pct", "83pct"],
)
def test_clipped_flag(blown_rows: int, clipped: bool) -> None:
    """A texture whose top rows are burnt out to pure white (a blown sky)."""
    img = S.texture(np.random.default_rng(20))  # 240 x 320
    img[:blown_rows] = 255
    m = compute_metrics(S.roundtrip(img, 95))
    assert m["clip_high"] == pytest.approx(blown_rows / 240, abs=0.03)  # JPEG ringing at edges
    assert bool(_flags(S.roundtrip(img, 95))["is_clipped"]) is clipped


def test_gray_content_in_an_rgb_jpeg_is_grayscale() -> None:
    """The published image of a gray source is a colour JPEG with equal channels."""
    rng = np.random.default_rng(21)
    gray = cv2.cvtColor(S.texture(rng), cv2.COLOR_BGR2GRAY)
    as_rgb = S.roundtrip(cv2.merge([gray, gray, gray]), 95)  # 3-channel JPEG
    assert as_rgb.ndim == 3 and as_rgb.shape[2] == 3
    m = compute_metrics(as_rgb)
    assert m["spread"] <= 1.0
    assert bool(_flags(as_rgb)["is_grayscale"])
    # a gray (1-channel) file decodes to three equal channels as well
    one = cv2.imdecode(np.frombuffer(S.jpeg(gray), np.uint8), cv2.IMREAD_COLOR)
    assert bool(_flags(one)["is_grayscale"])
    # luminance-only input has no colour at all
    assert compute_metrics(gray, color="gray")["spread"] == 0.0


@pytest.mark.parametrize(
    "make",
    [
        lambda img: img,
        lambda img: S.washed_out(img, 0.06),  # nearly white, but still coloured
        lambda img: S.darkened(img, 0.1),
        lambda img: (img.astype(np.float32) * 0.6 + 0.4 * 128).astype(np.uint8),  # low saturation
    ],
    ids=["colour", "washed-out", "dark", "desaturated"],
)
def test_colour_content_is_not_grayscale(make) -> None:
    img = S.roundtrip(make(S.texture(np.random.default_rng(22))), 90)
    m = compute_metrics(img)
    assert m["spread"] > SHIPPED.grayscale_threshold + 2
    assert not bool(_flags(img)["is_grayscale"])


def _tinted(img: np.ndarray, bgr: tuple[int, int, int], alpha: float) -> np.ndarray:
    tint = np.array(bgr, np.float32)
    return np.clip(img.astype(np.float32) * (1 - alpha) + tint * alpha, 0, 255).astype(np.uint8)


def test_colour_cast_positive_and_negative() -> None:
    rng = np.random.default_rng(23)
    scene = S.texture(rng)
    neutral = S.roundtrip(scene)
    orange = S.roundtrip(_tinted(scene, (40, 140, 255), 0.55))  # tungsten-like
    m0, m1 = compute_metrics(neutral), compute_metrics(orange)
    assert m0["cast"] < SHIPPED.color_cast_threshold < m1["cast"]
    assert m1["cast_shift"] > SHIPPED.color_cast_min_shift
    assert m1["cast_a"] > 0 and m1["cast_b"] > 0  # towards red and yellow
    assert not bool(_flags(neutral)["is_color_cast"])
    assert bool(_flags(orange)["is_color_cast"])
    # a flat gray frame has neither shift nor spread: no cast
    flat_gray = np.full((120, 160, 3), 128, np.uint8)
    assert compute_metrics(flat_gray)["cast"] == 0.0
    # a faint uniform tint (shift below color_cast_min_shift) is not flagged
    faint = S.roundtrip(_tinted(np.full((120, 160, 3), 128, np.uint8), (120, 128, 138), 1.0))
    mf = compute_metrics(faint)
    assert mf["cast_shift"] < SHIPPED.color_cast_min_shift
    assert not bool(_flags(faint)["is_color_cast"])


def test_colour_metrics_do_not_depend_on_channel_order() -> None:
    img = S.roundtrip(_tinted(S.texture(np.random.default_rng(24)), (40, 140, 255), 0.5))
    bgr = compute_metrics(img, color="bgr")
    rgb = compute_metrics(img[:, :, ::-1].copy(), color="rgb")
    for key in ("spread", "cast", "cast_shift", "cast_a", "cast_b", "pixel_hash"):
        assert bgr[key] == rgb[key], key


def test_pixel_hash_same_pixels_other_bytes_and_different_pixels() -> None:
    img = S.roundtrip(S.texture(np.random.default_rng(25)))
    png = cv2.imdecode(np.frombuffer(S.png(img), np.uint8), cv2.IMREAD_COLOR)
    ok, bmp_bytes = cv2.imencode(".bmp", img)
    assert ok and S.png(img) != bmp_bytes.tobytes()  # different files...
    bmp = cv2.imdecode(bmp_bytes, cv2.IMREAD_COLOR)
    h = compute_metrics(img)["pixel_hash"]
    assert compute_metrics(png)["pixel_hash"] == compute_metrics(bmp)["pixel_hash"] == h
    assert len(h) == 24 and h[:16] == compute_metrics(img)["phash"]
    changed = img.copy()
    changed[100:110, 100:110] = 255 - changed[100:110, 100:110]  # a 10x10 px edit
    assert compute_metrics(changed)["pixel_hash"] != h
    recoded = S.roundtrip(img, 70)  # lossy re-encode: near copy, not the same pixels
    assert compute_metrics(recoded)["pixel_hash"] != h


# --- odd size and odd aspect ratio ---------------------------------------------------------------


def _shape(sizes: list[tuple[int, int]], **overrides: object) -> pd.DataFrame:
    params = CurateParams(**overrides)
    w = pd.Series([s[0] for s in sizes], dtype=float)
    h = pd.Series([s[1] for s in sizes], dtype=float)
    return flag_shape(w, h, params)


def test_odd_size_absolute() -> None:
    out = _shape([(40, 30), (64, 48), (63, 500), (640, 480)], odd_size_mode="absolute")
    assert out["is_odd_size"].tolist() == [True, True, True, False]
    assert out["size_z"].isna().all()  # 4 images < relative_min_items: no relative check


def test_odd_size_relative_flags_both_tails() -> None:
    sizes = [(640, 480)] * 18 + [(656, 492), (160, 120), (2560, 1920)]
    out = _shape(sizes, odd_size_mode="relative")
    # 160x120 and 2560x1920 are 2 octaves (z = -8 / +8 at the 0.25 scale floor) from the rest
    assert out["is_odd_size"].tolist() == [False] * 19 + [True, True]
    assert out["size_z"].iloc[19] == pytest.approx(-8.0)
    assert out["size_z"].iloc[20] == pytest.approx(8.0)
    # absolute mode keeps both (their shorter sides are >= 64 px)
    assert not _shape(sizes, odd_size_mode="absolute")["is_odd_size"].any()
    assert _shape(sizes, odd_size_mode="both")["is_odd_size"].tolist() == [False] * 19 + [
        True,
        True,
    ]


def test_relative_size_uses_the_datasets_spread() -> None:
    """Mixed cameras (VGA and 12 MP): the MAD is wide, so a VGA frame is not odd there."""
    sizes = [(640, 480)] * 12 + [(4032, 3024)] * 12 + [(160, 120)]
    out = _shape(sizes, odd_size_mode="relative")
    assert not out["is_odd_size"].iloc[:24].any()
    # median = VGA, MAD = 2 octaves (the 160x120 frame's own distance): z = -2 / (1.4826 x 2)
    assert out["size_z"].iloc[24] == pytest.approx(-2 / (1.4826 * 2))
    assert not bool(out["is_odd_size"].iloc[24])
    assert bool(_shape(sizes, odd_size_mode="relative", relative_z=0.6)["is_odd_size"].iloc[24])
    # ...while the absolute rule still catches a thumbnail in any dataset
    assert bool(_shape([*sizes, (40, 30)], odd_size_mode="both")["is_odd_size"].iloc[25])


def test_odd_aspect_absolute_and_relative() -> None:
    sizes = [(640, 480)] * 10 + [(480, 640)] * 9 + [(1280, 720), (1800, 180), (1000, 300)]
    out = _shape(sizes, odd_aspect_mode="absolute")
    # portrait and landscape are the same shape; 16:9 is fine; 10:1 is odd; 3.33:1 is not > 4
    assert out["is_odd_aspect"].tolist() == [False] * 20 + [True, False]
    assert out["aspect_ratio"].iloc[21] == pytest.approx(1000 / 300)
    rel = _shape(sizes, odd_aspect_mode="relative")
    # relative to a 4:3 dataset: 10:1 and 3.33:1 are > 5 robust sigma out, 16:9 is not
    assert rel["is_odd_aspect"].tolist() == [False] * 20 + [True, True]
    assert not _shape(sizes, odd_aspect_mode="both", odd_aspect_max=20.0, relative_z=50.0)[
        "is_odd_aspect"
    ].any()


def test_unknown_sizes_never_flag() -> None:
    out = _shape([(0, 0), (float("nan"), 480), (640, 480)])
    assert not out["is_odd_size"].any() and not out["is_odd_aspect"].any()
    assert np.isnan(out["aspect_ratio"].iloc[0])
