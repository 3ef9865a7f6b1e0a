"""Encode a published image with no metadata, and prove it by re-reading the bytes.

A published image must not carry what the redaction removed by other means: EXIF (GPS, camera
serials, maker notes, an EXIF thumbnail of the *unredacted* picture), XMP, IPTC, comments, PNG
text chunks, or an ICC profile (it can name a device) unless asked for. We never copy metadata
forward: the pixels (orientation already applied) are encoded from scratch. ``verify_stripped``
then walks the encoded file's segments/chunks against an allow-list, so anything unexpected,
including a future encoder default, is reported and the image is not published (fail closed).
"""

from __future__ import annotations

import io
import struct
from typing import Literal

import numpy as np

OutputFormat = Literal["jpeg", "png"]
EXTENSIONS: dict[str, str] = {"jpeg": ".jpg", "png": ".png"}

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks that describe pixels only. Everything else (tEXt, zTXt, iTXt, eXIf, tIME, ...) is flagged.
_PNG_ALLOWED = {
    b"IHDR",
    b"PLTE",
    b"IDAT",
    b"IEND",
    b"tRNS",
    b"gAMA",
    b"cHRM",
    b"sRGB",
    b"sBIT",
    b"bKGD",
    b"pHYs",
}
# Keys PIL puts in ``Image.info`` from the allowed segments/chunks above.
_INFO_ALLOWED = {
    "jfif",
    "jfif_version",
    "jfif_unit",
    "jfif_density",
    "dpi",
    "progressive",
    "progression",
    "transparency",
    "gamma",
    "chromaticity",
    "srgb",
    "interlace",
}
_APP_NAMES = {
    0xE1: "APP1 (EXIF/XMP)",
    0xE2: "APP2 (ICC/MPF/FlashPix)",
    0xED: "APP13 (IPTC)",
    0xEE: "APP14 (Adobe)",
}


def output_format(source_format: str | None) -> OutputFormat:
    """JPEG sources stay JPEG (no lossless gain from PNG); everything else becomes PNG."""
    return "jpeg" if (source_format or "").upper() in ("JPEG", "JPG", "MPO") else "png"


def source_icc(data: bytes, pixels: np.ndarray) -> bytes | None:
    """The source's ICC profile if it describes ``pixels``' colour space (RGB or gray), else None.

    A CMYK file's profile does not describe the RGB pixels we publish, so it is dropped.
    """
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        icc = im.info.get("icc_profile")
    if not icc or len(icc) < 20:
        return None
    space = icc[16:20]
    wanted = b"GRAY" if pixels.ndim == 2 else b"RGB "
    return icc if space == wanted else None


def encode_clean(
    pixels: np.ndarray,
    fmt: OutputFormat,
    *,
    jpeg_quality: int = 95,
    icc_profile: bytes | None = None,
    png_compress_level: int = 6,
) -> bytes:
    """Encode (H, W) gray or (H, W, 3) RGB uint8 pixels with nothing but the pixels (+ ICC).

    ``png_compress_level`` is zlib's 0-9 (Pillow's default 6); lossless at every level."""
    from PIL import Image

    if pixels.dtype != np.uint8:
        raise TypeError(f"expected uint8 pixels, got {pixels.dtype}")
    if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] == 3)):
        raise ValueError(f"expected (H, W) or (H, W, 3) pixels, got {pixels.shape}")
    image = Image.fromarray(np.ascontiguousarray(pixels))
    extra = {"icc_profile": icc_profile} if icc_profile else {}
    buf = io.BytesIO()
    if fmt == "jpeg":
        image.save(buf, format="JPEG", quality=int(jpeg_quality), **extra)
    elif fmt == "png":
        image.save(buf, format="PNG", compress_level=int(png_compress_level), **extra)
    else:
        raise ValueError(f"unknown output format {fmt!r}")
    return buf.getvalue()


def _jpeg_findings(data: bytes, allow_icc: bool) -> list[str]:
    found: list[str] = []
    i, n = 2, len(data)
    while i < n:
        if data[i] != 0xFF:
            return [*found, f"unexpected byte at offset {i} (not a JPEG marker)"]
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            break
        marker = data[i]
        i += 1
        if marker == 0xD9:  # EOI
            if i < n:
                found.append(f"{n - i} trailing byte(s) after end of image")
            return found
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            continue
        if i + 2 > n:
            break
        (length,) = struct.unpack(">H", data[i : i + 2])
        segment = data[i + 2 : i + length]
        if marker == 0xE0:
            if segment[:5] != b"JFIF\x00":
                found.append("APP0 segment other than JFIF (JFXX thumbnail?)")
            elif len(segment) >= 14 and (segment[12] or segment[13]):
                found.append("JFIF thumbnail")
        elif marker == 0xE2 and segment.startswith(b"ICC_PROFILE\x00"):
            if not allow_icc:
                found.append("ICC profile")
        elif marker == 0xE1 and segment.startswith(b"Exif\x00\x00"):
            found.append("EXIF (APP1)")
        elif marker == 0xE1 and b"ns.adobe.com/xap" in segment[:64]:
            found.append("XMP (APP1)")
        elif 0xE1 <= marker <= 0xEF:
            found.append(_APP_NAMES.get(marker, f"APP{marker - 0xE0} segment"))
        elif marker == 0xFE:
            found.append("JPEG comment (COM)")
        i += length
        if marker == 0xDA:  # start of scan: skip entropy-coded data to the next real marker
            while i + 1 < n and not (
                data[i] == 0xFF and data[i + 1] != 0x00 and not 0xD0 <= data[i + 1] <= 0xD7
            ):
                i += 1
    return [*found, "JPEG ends without an end-of-image marker"]


def _png_findings(data: bytes, allow_icc: bool) -> list[str]:
    found: list[str] = []
    i, n = len(_PNG_SIGNATURE), len(data)
    while i + 8 <= n:
        (length,) = struct.unpack(">I", data[i : i + 4])
        kind = data[i + 4 : i + 8]
        i += 12 + length
        if kind == b"IEND":
            if i < n:
                found.append(f"{n - i} trailing byte(s) after IEND")
            return found
        if kind == b"iCCP" and allow_icc:
            continue
        if kind not in _PNG_ALLOWED:
            found.append(f"PNG chunk {kind.decode('latin-1')}")
    return [*found, "PNG ends without IEND"]


def verify_stripped(data: bytes, *, allow_icc: bool = False) -> list[str]:
    """Metadata still present in an encoded image; ``[]`` means clean.

    Two independent views: a walk of the raw JPEG segments / PNG chunks against an allow-list,
    and what Pillow reports (``info`` keys, EXIF tags) after re-opening the bytes.
    """
    from PIL import Image

    if data[:3] == b"\xff\xd8\xff":
        found = _jpeg_findings(data, allow_icc)
    elif data[:8] == _PNG_SIGNATURE:
        found = _png_findings(data, allow_icc)
    else:
        return ["not a JPEG or PNG file"]
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # PNG text after IDAT is only read on load
            allowed = _INFO_ALLOWED | ({"icc_profile"} if allow_icc else set())
            found += [f"Pillow info {key!r}" for key in im.info if key not in allowed]
            exif = im.getexif()
            if len(exif):
                found.append(f"EXIF tags {sorted(exif)[:10]}")
            if getattr(im, "text", None):
                found.append(f"text {sorted(im.text)[:10]}")
    except Exception as exc:  # an undecodable output is not publishable either
        found.append(f"cannot re-open: {exc}")
    return sorted(set(found))
