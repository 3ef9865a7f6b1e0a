from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms, PngImagePlugin

from visionloop.anonymize.publish import encode_clean, output_format, source_icc, verify_stripped

XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/></x:xmpmeta>'
)


def pixels(h: int = 48, w: int = 64) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def gps_exif() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "Canon"  # Make
    exif[0x0110] = "EOS 5D"  # Model
    exif[0x0112] = 6  # Orientation
    exif[0xA431] = "123456789"  # BodySerialNumber (in IFD0 here; still EXIF)
    exif[0x8825] = {1: "N", 2: (52.0, 30.0, 0.0), 3: "E", 4: (13.0, 24.0, 0.0)}  # GPS IFD
    return exif.tobytes()


def with_segment(jpeg: bytes, marker: int, payload: bytes) -> bytes:
    """Insert an APPn/COM segment right after SOI."""
    return jpeg[:2] + struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload + jpeg[2:]


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def dirty_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels()).save(
        buf, "JPEG", exif=gps_exif(), icc_profile=srgb_icc(), comment=b"shot by jane", xmp=XMP
    )
    iptc = b"Photoshop 3.0\x008BIM\x04\x04\x00\x00\x00\x00\x00\x07\x1c\x02\x50\x00\x03Bob"
    return with_segment(buf.getvalue(), 0xED, iptc)


def dirty_png() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "jane")
    info.add_text("Comment", "x" * 2000, zip=True)
    info.add_itxt("XML:com.adobe.xmp", XMP.decode())
    buf = io.BytesIO()
    Image.fromarray(pixels()).save(
        buf, "PNG", pnginfo=info, exif=gps_exif(), icc_profile=srgb_icc()
    )
    data = buf.getvalue()
    iend = data.rindex(b"IEND") - 4
    return data[:iend] + png_chunk(b"tIME", b"\x07\xe8\x01\x01\x00\x00\x00") + data[iend:]


def test_verify_stripped_lists_every_kind_of_jpeg_metadata() -> None:
    assert verify_stripped(dirty_jpeg()) == [
        "APP13 (IPTC)",
        "EXIF (APP1)",
        "EXIF tags [271, 272, 274, 34853, 42033]",
        "ICC profile",
        "JPEG comment (COM)",
        "Pillow info 'comment'",
        "Pillow info 'exif'",
        "Pillow info 'icc_profile'",
        "Pillow info 'photoshop'",
        "Pillow info 'xmp'",
        "XMP (APP1)",
    ]


def test_verify_stripped_lists_every_kind_of_png_metadata() -> None:
    found = verify_stripped(dirty_png())
    for expected in (
        "PNG chunk tEXt",
        "PNG chunk zTXt",
        "PNG chunk iTXt",
        "PNG chunk eXIf",
        "PNG chunk iCCP",
        "PNG chunk tIME",
        "Pillow info 'Author'",
    ):
        assert expected in found


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_encode_clean_carries_nothing_but_pixels(fmt: str) -> None:
    yy, xx = np.mgrid[0:48, 0:64]
    px = np.stack([xx * 4, yy * 5, (xx + yy) * 2], axis=2).astype(np.uint8)  # smooth
    data = encode_clean(px, fmt, jpeg_quality=90)
    assert verify_stripped(data) == []
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == fmt.upper()
        assert len(im.getexif()) == 0 and "icc_profile" not in im.info and "xmp" not in im.info
        assert getattr(im, "text", {}) == {}
        decoded = np.asarray(im)
    if fmt == "png":
        assert (decoded == px).all()  # lossless
    else:
        assert np.abs(decoded.astype(int) - px).mean() < 2  # lossy, same picture
    assert b"Canon" not in data and b"Exif" not in data


def test_icc_only_when_asked() -> None:
    icc = srgb_icc()
    data = encode_clean(pixels(), "jpeg", icc_profile=icc)
    assert verify_stripped(data) == ["ICC profile", "Pillow info 'icc_profile'"]
    assert verify_stripped(data, allow_icc=True) == []
    png = encode_clean(pixels(), "png", icc_profile=icc)
    assert verify_stripped(png, allow_icc=True) == []
    assert "PNG chunk iCCP" in verify_stripped(png)


def test_source_icc_keeps_only_a_profile_that_matches_the_pixels() -> None:
    dirty = dirty_jpeg()
    assert source_icc(dirty, pixels()) == srgb_icc()
    assert source_icc(dirty, pixels()[:, :, 0]) is None  # RGB profile, gray pixels
    assert source_icc(encode_clean(pixels(), "png"), pixels()) is None


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (encode_clean(pixels(), "jpeg") + b"secret", ["6 trailing byte(s) after end of image"]),
        (encode_clean(pixels(), "png") + b"secret", ["6 trailing byte(s) after IEND"]),
        (b"GIF89a....", ["not a JPEG or PNG file"]),
    ],
)
def test_trailing_data_and_other_formats_are_reported(data: bytes, expected: list[str]) -> None:
    assert verify_stripped(data)[: len(expected)] == expected


def test_jfif_thumbnail_is_reported() -> None:
    data = encode_clean(pixels(), "jpeg")
    i = data.index(b"JFIF\x00")
    patched = bytearray(data)
    patched[i + 12], patched[i + 13] = 1, 1  # a 1x1 thumbnail declared in APP0
    assert "JFIF thumbnail" in verify_stripped(bytes(patched))


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("JPEG", "jpeg"),
        ("MPO", "jpeg"),
        ("PNG", "png"),
        ("WEBP", "png"),
        ("TIFF", "png"),
        ("BMP", "png"),
        (None, "png"),
    ],
)
def test_output_format(source: str | None, expected: str) -> None:
    assert output_format(source) == expected


def test_encode_rejects_bad_pixels() -> None:
    with pytest.raises(TypeError, match="uint8"):
        encode_clean(pixels().astype(np.float32), "png")
    with pytest.raises(ValueError, match="unknown output format"):
        encode_clean(pixels(), "gif")  # type: ignore[arg-type]
