"""Decode-once image helpers shared by the stages: identify, guard, decode, read EXIF, orient.

Why one module: every stage that touches pixels must agree on what a file *is* (its real format,
read from content, never from the name), on how big it may be (the pixel count is checked from
the header before any pixel is decoded, so a decompression bomb never allocates), and on which
way is up (EXIF orientation). ``collect`` calls :func:`probe_and_decode` once per file and
records the answer in the manifest; later stages call :func:`load_oriented_rgb` to get the same
oriented 8-bit RGB pixels from any accepted file (CMYK JPEG, 16-bit PNG, grayscale, palette,
alpha).

Failures raise :class:`ImageRejected`, which carries the quarantine :class:`Reason` and a detail,
so callers turn them into manifest rows without guessing from exception text.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from visionloop.schema import Reason

log = logging.getLogger(__name__)

# Formats we ingest, as PIL names them, and the extension their content-addressed copy gets.
FORMAT_EXTENSIONS: dict[str, str] = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "WEBP": ".webp",
    "BMP": ".bmp",
    "TIFF": ".tif",
}
# PIL's JPEG opener reports some JPEGs (camera files with a multi-picture index) as MPO.
_FORMAT_ALIASES: dict[str, str] = {"MPO": "JPEG"}
_PIL_FORMATS: tuple[str, ...] = tuple(FORMAT_EXTENSIONS)  # the openers we let parse content

# File name extensions and the content format each one promises.
EXTENSION_FORMATS: dict[str, str] = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".jpe": "JPEG",
    ".jfif": "JPEG",
    ".png": "PNG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".dib": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}

# Leading bytes of the ingested formats: content that starts like one of them but that PIL
# cannot parse is a damaged image (CORRUPT), not some other kind of file.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),
    (b"MM\x00+", "TIFF"),
)

_TAG_MAKE = 0x010F
_TAG_MODEL = 0x0110
_TAG_ORIENTATION = 0x0112
_IFD_EXIF = 0x8769
_IFD_GPS = 0x8825
_TAG_DATETIME_ORIGINAL = 0x9003
_TAG_OFFSET_TIME_ORIGINAL = 0x9011


class ImageRejected(Exception):
    """A file cannot enter the dataset: ``reason`` is the quarantine Reason, ``detail`` says why."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ExifInfo:
    """The capture metadata the manifest keeps. Missing or malformed values are None."""

    orientation: int | None = None  # 1..8, None when absent or invalid
    capture_time: str | None = None  # ISO 8601 from DateTimeOriginal (+ offset when recorded)
    camera_make: str | None = None
    camera_model: str | None = None
    gps_lat: float | None = None  # decimal degrees, south negative
    gps_lon: float | None = None  # decimal degrees, west negative

    @property
    def has_gps(self) -> bool:
        return self.gps_lat is not None and self.gps_lon is not None


@dataclass(frozen=True)
class DecodedImage:
    """What a successful full decode tells about a file (sizes are after EXIF orientation)."""

    format: str  # JPEG, PNG, WEBP, BMP or TIFF, from content
    extension: str  # canonical extension for that format (.jpg, .png, ...)
    width: int  # as displayed, i.e. after EXIF orientation
    height: int
    stored_width: int  # as stored in the file
    stored_height: int
    channels: int  # bands of the decoded mode (CMYK = 4, I;16 = 1)
    mode: str  # PIL mode of the decoded file
    exif: ExifInfo

    def manifest_fields(self) -> dict[str, Any]:
        """The MANIFEST_SCHEMA columns this decode fills."""
        return {
            "format": self.format,
            "width": self.width,
            "height": self.height,
            "channels": self.channels,
            "mode": self.mode,
            "exif_orientation": self.exif.orientation,
            "capture_time": self.exif.capture_time,
            "camera_make": self.exif.camera_make,
            "camera_model": self.exif.camera_model,
            "has_gps": self.exif.has_gps,
            "gps_lat": self.exif.gps_lat,
            "gps_lon": self.exif.gps_lon,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def extension_matches(fmt: str, extension: str) -> bool:
    """True when a file named ``*<extension>`` may hold ``fmt`` content (case-insensitive)."""
    return EXTENSION_FORMATS.get(extension.lower()) == fmt


def oriented_size(width: int, height: int, orientation: int | None) -> tuple[int, int]:
    """Displayed (width, height): orientations 5-8 turn the picture by 90 degrees."""
    if orientation in (5, 6, 7, 8):
        return height, width
    return width, height


# --------------------------------------------------------------------------------------------
# Identify, guard and decode
# --------------------------------------------------------------------------------------------


def _magic_format(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for magic, fmt in _MAGIC:
        if data.startswith(magic):
            return fmt
    return None


def _looks_like_text(data: bytes) -> bool:
    head = data[:4096]
    if b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 4:  # a multi-byte character cut at the end is fine
            return False
        text = head[: err.start].decode("utf-8")
    printable = sum(ch.isprintable() or ch in "\t\r\n\f" for ch in text)
    return bool(text) and printable / len(text) > 0.95


def _name_other_format(data: bytes) -> str | None:
    """Name a format we do not ingest (GIF, ICO, PSD, HEIF ...) from its header only."""
    if data[4:8] == b"ftyp":
        return f"ISO media ({data[8:12].decode('ascii', 'replace').strip()})"
    if data.startswith(b"%PDF"):
        return "PDF"
    try:
        with Image.open(io.BytesIO(data)) as im:  # header parse only, never .load()
            return str(im.format)
    except Image.DecompressionBombError:
        return "an image whose header declares too many pixels to name it"
    except Exception:  # any parser error just means "not a format PIL knows"
        return None


def image_format_of(head: bytes) -> str | None:
    """The image format the first bytes of a file declare (ours or another PIL knows), or None.

    For files named as something else (a JPEG renamed ``.mp4``): header only, nothing decoded.
    """
    magic = _magic_format(head)
    if magic is not None:
        return _FORMAT_ALIASES.get(magic, magic)
    if head[4:8] == b"ftyp" or head.startswith(b"%PDF"):
        return None
    return _name_other_format(head)


def _guard_pil_globals(max_pixels: int) -> None:
    """Keep PIL's process-wide switches compatible with our own checks.

    PIL's bomb guard (``MAX_IMAGE_PIXELS``) is widened to ``max_pixels`` when it is lower, so the
    configured limit is the one that decides; it is never removed. ``LOAD_TRUNCATED_IMAGES``
    must be False or truncated files would decode silently into grey padding.
    """
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        log.warning("PIL.ImageFile.LOAD_TRUNCATED_IMAGES was True; resetting it to False")
        ImageFile.LOAD_TRUNCATED_IMAGES = False


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Open (header only) and check the pixel count before anything is decoded."""
    if not data:
        raise ImageRejected(Reason.EMPTY_FILE, "file has zero bytes")
    _guard_pil_globals(max_pixels)
    magic = _magic_format(data)
    try:
        im = Image.open(io.BytesIO(data), formats=_PIL_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageRejected(Reason.TOO_LARGE, f"PIL bomb guard: {err}") from err
    except UnidentifiedImageError as err:
        if magic is not None:
            raise ImageRejected(
                Reason.CORRUPT, f"starts like {magic} but the header cannot be parsed"
            ) from err
        other = _name_other_format(data)
        if other is not None:
            raise ImageRejected(Reason.UNSUPPORTED_FORMAT, f"content is {other}") from err
        if _looks_like_text(data):
            raise ImageRejected(Reason.UNSUPPORTED_FORMAT, "content is text") from err
        raise ImageRejected(Reason.CORRUPT, "content matches no image format") from err
    except Exception as err:  # a plugin choked on the header: damaged data, not our bug
        raise ImageRejected(Reason.CORRUPT, f"header: {type(err).__name__}: {err}") from err
    width, height = im.size
    if width <= 0 or height <= 0:
        raise ImageRejected(Reason.CORRUPT, f"header declares {width}x{height} pixels")
    if width * height > max_pixels:
        im.close()
        raise ImageRejected(
            Reason.TOO_LARGE,
            f"{width}x{height} = {width * height} pixels > max_pixels {max_pixels}",
        )
    return im


def _load(im: Image.Image) -> None:
    """Decode every pixel; map decoder failures onto TRUNCATED or CORRUPT."""
    try:
        im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageRejected(Reason.TOO_LARGE, f"PIL bomb guard: {err}") from err
    except EOFError as err:
        raise ImageRejected(Reason.TRUNCATED, f"data ends early: {err}") from err
    except OSError as err:
        if "truncated" in str(err).lower():
            raise ImageRejected(Reason.TRUNCATED, str(err)) from err
        raise ImageRejected(Reason.CORRUPT, f"decode: {err}") from err
    except Exception as err:  # decoders raise many types on damaged data; all mean CORRUPT
        raise ImageRejected(Reason.CORRUPT, f"decode: {type(err).__name__}: {err}") from err


def decode_image(data: bytes, max_pixels: int) -> tuple[DecodedImage, Image.Image]:
    """Fully decode ``data`` once; return its description and the loaded PIL image.

    Raises ImageRejected (EMPTY_FILE, UNSUPPORTED_FORMAT, CORRUPT, TRUNCATED, TOO_LARGE).
    """
    im = _open(data, max_pixels)
    try:
        _load(im)
    except ImageRejected:
        im.close()
        raise
    return _describe(im, im.size), im


def _describe(im: Image.Image, stored: tuple[int, int]) -> DecodedImage:
    """What the manifest records of a decoded image whose file declares ``stored`` pixels."""
    fmt = _FORMAT_ALIASES.get(str(im.format), str(im.format))
    exif = read_exif(im)
    width, height = oriented_size(stored[0], stored[1], exif.orientation)
    return DecodedImage(
        format=fmt,
        extension=FORMAT_EXTENSIONS[fmt],
        width=width,
        height=height,
        stored_width=stored[0],
        stored_height=stored[1],
        channels=len(im.getbands()),
        mode=im.mode,
        exif=exif,
    )


def probe_and_decode(data: bytes, max_pixels: int) -> DecodedImage:
    """Identify, size-check, fully decode and describe one file (the collect stage's check).

    Nobody looks at these pixels: collect only needs to know that every byte decodes. So a
    JPEG is decoded in libjpeg's 1/8 DCT-scaled draft mode, which still entropy-decodes every
    block (truncated or corrupt data fails exactly as in a full decode, tested) but skips most
    of the inverse DCT and colour conversion: 1.6x faster on a noisy 1080p JPEG, more on
    photos. Size, mode and EXIF come from the header, as before.
    """
    im = _open(data, max_pixels)
    stored = im.size
    if im.format == "JPEG":
        im.draft(im.mode, ((stored[0] + 7) // 8, (stored[1] + 7) // 8))
    try:
        _load(im)
        info = _describe(im, stored)
    finally:
        im.close()
    return info


# --------------------------------------------------------------------------------------------
# EXIF
# --------------------------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value).replace("\x00", " ").strip()
    return text or None


def _capture_time(stamp: Any, offset: Any) -> str | None:
    text = _text(stamp)
    if text is None:
        return None
    for pattern in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y:%m:%d %H:%M"):
        try:
            moment = datetime.strptime(text[:19], pattern)
            break
        except ValueError:
            continue
    else:
        return None  # "0000:00:00 00:00:00" and other placeholders
    iso = moment.isoformat()
    off = _text(offset)
    if off and len(off) == 6 and off[0] in "+-" and off[3] == ":":
        iso += off
    return iso


def _dms_to_degrees(values: Any, ref: Any, limit: float) -> float | None:
    """Degrees/minutes/seconds rationals + N/S/E/W reference -> signed decimal degrees."""
    if values is None:
        return None
    try:
        parts = [float(v) for v in values]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not parts or len(parts) > 3 or not all(math.isfinite(p) and p >= 0 for p in parts):
        return None
    parts += [0.0] * (3 - len(parts))
    degrees = parts[0] + parts[1] / 60.0 + parts[2] / 3600.0
    if degrees > limit:
        return None
    hemisphere = (_text(ref) or "").upper()[:1]
    return -degrees if hemisphere in ("S", "W") else degrees


def read_exif(im: Image.Image) -> ExifInfo:
    """Read orientation, capture time, camera and GPS; a malformed block yields Nones."""
    try:
        exif = im.getexif()
        exif_ifd = exif.get_ifd(_IFD_EXIF)
        gps_ifd = exif.get_ifd(_IFD_GPS)
    except Exception as err:  # broken EXIF must not reject a good image: metadata is optional
        log.debug("unreadable EXIF: %s", err)
        return ExifInfo()
    try:
        orientation: int | None = int(exif.get(_TAG_ORIENTATION))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        orientation = None
    if orientation not in range(1, 9):
        orientation = None
    lat = _dms_to_degrees(gps_ifd.get(2), gps_ifd.get(1), 90.0)
    lon = _dms_to_degrees(gps_ifd.get(4), gps_ifd.get(3), 180.0)
    if lat is None or lon is None:
        lat = lon = None
    return ExifInfo(
        orientation=orientation,
        capture_time=_capture_time(
            exif_ifd.get(_TAG_DATETIME_ORIGINAL), exif_ifd.get(_TAG_OFFSET_TIME_ORIGINAL)
        ),
        camera_make=_text(exif.get(_TAG_MAKE)),
        camera_model=_text(exif.get(_TAG_MODEL)),
        gps_lat=lat,
        gps_lon=lon,
    )


# --------------------------------------------------------------------------------------------
# Oriented 8-bit RGB pixels
# --------------------------------------------------------------------------------------------

_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


def _to_rgb8(im: Image.Image) -> np.ndarray:
    """Any decoded mode -> HxWx3 uint8 RGB. Transparent pixels are flattened onto white."""
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im)
    if mode.startswith("I;16") or mode == "I":
        wide = np.asarray(im).astype(np.int64)
        if mode == "I" and wide.max(initial=0) <= 255 and wide.min(initial=0) >= 0:
            gray = wide.astype(np.uint8)  # already 8-bit values in a 32-bit container
        else:
            gray = ((np.clip(wide, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        flt = np.asarray(im, dtype=np.float64)
        if np.nanmax(flt, initial=0.0) <= 1.0:
            flt = flt * 255.0
        gray = np.clip(np.nan_to_num(flt), 0, 255).round().astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode in ("L", "1"):
        gray = np.asarray(im.convert("L"))
        return np.repeat(gray[..., None], 3, axis=2)
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(im.convert("RGB"))  # CMYK, P, YCbCr, LAB, HSV, ...


def orient_array(pixels: np.ndarray, orientation: int | None) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to an HxW(xC) array, as ImageOps.exif_transpose does."""
    if orientation == 2:
        out = pixels[:, ::-1]
    elif orientation == 3:
        out = pixels[::-1, ::-1]
    elif orientation == 4:
        out = pixels[::-1]
    elif orientation == 5:
        out = np.swapaxes(pixels, 0, 1)
    elif orientation == 6:
        out = np.rot90(pixels, k=-1)
    elif orientation == 7:
        out = np.swapaxes(pixels[::-1, ::-1], 0, 1)
    elif orientation == 8:
        out = np.rot90(pixels, k=1)
    else:
        out = pixels
    return np.ascontiguousarray(out)


def oriented_rgb(im: Image.Image, orientation: int | None) -> np.ndarray:
    """Loaded PIL image -> displayed (EXIF-oriented) HxWx3 uint8 RGB array."""
    return orient_array(_to_rgb8(im), orientation)


def load_oriented_rgb(data: bytes, max_pixels: int | None = None) -> np.ndarray:
    """Decode any accepted file into displayed-orientation pixels: HxWx3 uint8, **RGB** order.

    OpenCV code wants BGR: use ``arr[..., ::-1]``. Raises ImageRejected like probe_and_decode;
    ``max_pixels`` defaults to PIL's own bomb limit (collect already enforced the real one).
    """
    limit = max_pixels if max_pixels is not None else (Image.MAX_IMAGE_PIXELS or 2**62)
    info, im = decode_image(data, limit)
    try:
        return oriented_rgb(im, info.exif.orientation)
    finally:
        im.close()


__all__ = [
    "EXTENSION_FORMATS",
    "FORMAT_EXTENSIONS",
    "DecodedImage",
    "ExifInfo",
    "ImageRejected",
    "decode_image",
    "extension_matches",
    "load_oriented_rgb",
    "orient_array",
    "oriented_rgb",
    "oriented_size",
    "probe_and_decode",
    "read_exif",
]
