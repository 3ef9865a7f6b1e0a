"""visionloop.imaging: identify, guard, decode, EXIF and orientation on fixtures built in code."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps, TiffImagePlugin

from visionloop import imaging
from visionloop.imaging import ImageRejected
from visionloop.schema import Reason

R = TiffImagePlugin.IFDRational
LIMIT = 100_000_000


def rgb(w: int = 64, h: int = 48, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def encode(img: Image.Image | np.ndarray, fmt: str, **kw: object) -> bytes:
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def camera_exif(orientation: int | None = None) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "Acme\x00"
    exif[0x0110] = "  A100 "
    if orientation:
        exif[0x0112] = orientation
    sub = exif.get_ifd(0x8769)
    sub[0x9003] = "2024:05:03 14:22:01"
    sub[0x9011] = "+02:00"
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = (R(48, 1), R(51, 1), R(123456, 10000))
    gps[3] = "W"
    gps[4] = (R(2, 1), R(17, 1), R(335, 10))
    return exif.tobytes()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height but whose pixel data is a few bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def rejected(data: bytes, max_pixels: int = LIMIT) -> ImageRejected:
    with pytest.raises(ImageRejected) as info:
        imaging.probe_and_decode(data, max_pixels)
    return info.value


# --- metadata --------------------------------------------------------------------------------


def test_exif_values_are_parsed_exactly() -> None:
    info = imaging.probe_and_decode(encode(rgb(), "JPEG", exif=camera_exif()), LIMIT)
    assert info.format == "JPEG" and info.extension == ".jpg"
    assert (info.width, info.height, info.channels, info.mode) == (64, 48, 3, "RGB")
    assert info.exif.camera_make == "Acme"
    assert info.exif.camera_model == "A100"
    assert info.exif.capture_time == "2024-05-03T14:22:01+02:00"
    assert info.exif.orientation is None
    assert info.exif.has_gps
    assert info.exif.gps_lat == pytest.approx(48 + 51 / 60 + 12.3456 / 3600, abs=1e-6)
    assert info.exif.gps_lon == pytest.approx(-(2 + 17 / 60 + 33.5 / 3600), abs=1e-6)
    fields = info.manifest_fields()
    assert fields["gps_lat"] == pytest.approx(48.8534293, abs=1e-6)
    assert fields["gps_lon"] == pytest.approx(-2.2926389, abs=1e-6)


def test_missing_and_placeholder_exif_yield_nones() -> None:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = "0000:00:00 00:00:00"
    exif.get_ifd(0x8825)[1] = "N"  # a reference without coordinates is no fix
    info = imaging.probe_and_decode(encode(rgb(), "JPEG", exif=exif.tobytes()), LIMIT)
    assert info.exif.capture_time is None
    assert info.exif.camera_make is None and info.exif.camera_model is None
    assert not info.exif.has_gps and info.exif.gps_lat is None
    plain = imaging.probe_and_decode(encode(rgb(), "PNG"), LIMIT)
    assert plain.exif == imaging.ExifInfo()


def test_orientation_6_swaps_width_and_height() -> None:
    stored = rgb(40, 30)
    data = encode(stored, "JPEG", quality=95, exif=camera_exif(orientation=6))
    info = imaging.probe_and_decode(data, LIMIT)
    assert (info.stored_width, info.stored_height) == (40, 30)
    assert (info.width, info.height) == (30, 40)
    assert info.exif.orientation == 6
    pixels = imaging.load_oriented_rgb(data)
    assert pixels.shape == (40, 30, 3)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_oriented_pixels_match_pil_exif_transpose(orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(rgb(7, 5), "PNG", exif=exif.tobytes())  # lossless, so equality is exact
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    got = imaging.load_oriented_rgb(data)
    assert got.flags["C_CONTIGUOUS"] and got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)
    info = imaging.probe_and_decode(data, LIMIT)
    assert (info.width, info.height) == (got.shape[1], got.shape[0])


# --- modes that must be accepted and converted -----------------------------------------------


def test_cmyk_jpeg_is_accepted_and_converted() -> None:
    data = encode(Image.new("CMYK", (20, 10), (0, 255, 255, 0)), "JPEG", quality=95)
    info = imaging.probe_and_decode(data, LIMIT)
    assert (info.mode, info.channels) == ("CMYK", 4)
    pixels = imaging.load_oriented_rgb(data)
    assert pixels.shape == (10, 20, 3)
    r, g, b = pixels[5, 10].astype(int)
    assert r > 230 and g < 25 and b < 25  # C=0, M=Y=100%: red


def test_16_bit_gray_png_is_scaled_to_8_bit() -> None:
    values = np.array([[0, 257 * 100, 65535, 32896]], dtype=np.uint16)
    data = encode(Image.fromarray(values), "PNG")
    info = imaging.probe_and_decode(data, LIMIT)
    assert info.mode.startswith("I;16") and info.channels == 1
    pixels = imaging.load_oriented_rgb(data)
    assert pixels.shape == (1, 4, 3)
    np.testing.assert_array_equal(pixels[0, :, 0], [0, 100, 255, 128])
    np.testing.assert_array_equal(pixels[..., 0], pixels[..., 2])


def test_16_bit_rgb_png_is_accepted() -> None:
    wide = np.zeros((6, 8, 3), np.uint16)
    wide[..., 2] = 65535  # OpenCV is BGR: channel 2 is red
    ok, buf = cv2.imencode(".png", wide)
    assert ok
    data = buf.tobytes()
    info = imaging.probe_and_decode(data, LIMIT)
    assert info.format == "PNG"
    pixels = imaging.load_oriented_rgb(data)
    np.testing.assert_array_equal(pixels[0, 0], [255, 0, 0])


def test_grayscale_jpeg_is_accepted() -> None:
    gray = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (16, 1))
    data = encode(gray, "JPEG", quality=95)
    info = imaging.probe_and_decode(data, LIMIT)
    assert (info.mode, info.channels, info.width, info.height) == ("L", 1, 64, 16)
    pixels = imaging.load_oriented_rgb(data)
    assert pixels.shape == (16, 64, 3)
    np.testing.assert_array_equal(pixels[..., 0], pixels[..., 1])


def test_transparency_is_flattened_onto_white() -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:2, :, 3] = 255  # top half opaque red, bottom half fully transparent
    pixels = imaging.load_oriented_rgb(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    np.testing.assert_array_equal(pixels[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(pixels[3, 3], [255, 255, 255])
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    pal.info["transparency"] = 1
    pixels = imaging.load_oriented_rgb(encode(pal, "PNG", transparency=1))
    np.testing.assert_array_equal(pixels[0, 0], [255, 255, 255])
    opaque = Image.new("P", (4, 4), 1)
    opaque.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    np.testing.assert_array_equal(
        imaging.load_oriented_rgb(encode(opaque, "PNG"))[0, 0], [0, 0, 255]
    )


@pytest.mark.parametrize(
    ("fmt", "ext"), [("WEBP", ".webp"), ("BMP", ".bmp"), ("TIFF", ".tif"), ("PNG", ".png")]
)
def test_other_ingested_formats(fmt: str, ext: str) -> None:
    kw = {"lossless": True} if fmt == "WEBP" else {}
    info = imaging.probe_and_decode(encode(rgb(10, 8), fmt, **kw), LIMIT)
    assert (info.format, info.extension, info.width, info.height) == (fmt, ext, 10, 8)
    assert imaging.extension_matches(fmt, ext.upper())


def test_extension_matches() -> None:
    assert imaging.extension_matches("JPEG", ".jpeg")
    assert imaging.extension_matches("JPEG", ".JPG")
    assert imaging.extension_matches("TIFF", ".tiff")
    assert not imaging.extension_matches("PNG", ".jpg")
    assert not imaging.extension_matches("JPEG", ".heic")


# --- rejections ------------------------------------------------------------------------------


def test_empty_file() -> None:
    assert rejected(b"").reason == Reason.EMPTY_FILE


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file(fmt: str) -> None:
    data = encode(rgb(), fmt)
    err = rejected(data[: int(len(data) * 0.6)])
    assert err.reason == Reason.TRUNCATED


@pytest.mark.parametrize("subsampling", [0, 2])
@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_draft_decode_of_jpeg_finds_every_damage_a_full_decode_finds(
    subsampling: int, mode: str
) -> None:
    # collect decodes JPEGs in 1/8 DCT-scaled draft mode: every block is still entropy-decoded
    pixels = (np.random.default_rng(5).random((240, 320, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buf, "JPEG", quality=90, subsampling=subsampling)
    data = buf.getvalue()
    info = imaging.probe_and_decode(data, 10**8)
    assert (info.width, info.height, info.stored_width, info.mode) == (320, 240, 320, mode)
    assert info.channels == len(mode)
    for cut in (0.3, 0.6, 0.9, 0.995):
        short = data[: int(len(data) * cut)]
        with pytest.raises(ImageRejected) as full:
            imaging._load(Image.open(io.BytesIO(short)))
        assert rejected(short).reason == full.value.reason == Reason.TRUNCATED
    damaged = bytearray(data)
    damaged[len(data) // 2 : len(data) // 2 + 200] = b"\xff" * 200
    with pytest.raises(ImageRejected) as full:
        imaging._load(Image.open(io.BytesIO(bytes(damaged))))
    assert rejected(bytes(damaged)).reason == full.value.reason


def test_truncated_detected_even_if_someone_enabled_pil_padding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    data = encode(rgb(), "JPEG")
    assert rejected(data[: len(data) // 2]).reason == Reason.TRUNCATED
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_random_bytes_are_corrupt() -> None:
    data = b"\x00\x01" + np.random.default_rng(3).bytes(4000)
    err = rejected(data)
    assert err.reason == Reason.CORRUPT
    assert "no image format" in err.detail


def test_jpeg_magic_with_garbage_is_corrupt() -> None:
    data = b"\xff\xd8\xff\xe0" + np.random.default_rng(4).bytes(3000)
    assert rejected(data).reason == Reason.CORRUPT


def test_animated_gif_is_unsupported() -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    err = rejected(buf.getvalue())
    assert err.reason == Reason.UNSUPPORTED_FORMAT
    assert "GIF" in err.detail


def test_text_is_unsupported() -> None:
    err = rejected("just some notes, not a picture\nline two: ü\n".encode())
    assert err.reason == Reason.UNSUPPORTED_FORMAT
    assert err.detail == "content is text"


def test_pixel_count_is_checked_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    err = rejected(png_header_only(5000, 5000), max_pixels=1_000_000)
    assert err.reason == Reason.TOO_LARGE
    assert "5000x5000 = 25000000 pixels > max_pixels 1000000" in err.detail


def test_pil_bomb_error_and_warning_mean_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after
    err = rejected(png_header_only(30000, 30000), max_pixels=10**8)  # 9e8 > 2 x PIL's limit
    assert err.reason == Reason.TOO_LARGE and "PIL bomb guard" in err.detail
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        err = rejected(png_header_only(12000, 12500), max_pixels=10**8)  # 1.5e8: PIL warns
    assert err.reason == Reason.TOO_LARGE and "PIL bomb guard" in err.detail


def test_configured_limit_above_pil_default_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # a tiny PIL limit ...
    info = imaging.probe_and_decode(encode(np.zeros((50, 50), np.uint8), "PNG"), 5000)
    assert (info.width, info.height) == (50, 50)  # ... widened to the configured 5000
    assert Image.MAX_IMAGE_PIXELS == 5000
