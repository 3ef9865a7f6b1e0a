"""The contracts between stages: manifest columns, statuses and quarantine reasons.

The manifest is one Parquet table with one row per *input file*. ``item_id`` is the sha256 of
the file's original bytes, so two byte-identical files share an item id: the first one seen
(by sorted source URI) is accepted, the others are quarantined as ``duplicate_exact``.
Each stage returns the whole table with its own columns appended; a stage may move a row from
``accepted`` to ``quarantined`` but never the other way, and never rewrites earlier columns.
"""

from __future__ import annotations

from enum import StrEnum

import pyarrow as pa


class Status(StrEnum):
    ACCEPTED = "accepted"
    QUARANTINED = "quarantined"


class Reason(StrEnum):
    """Machine-readable quarantine reasons. The stage that sets one is in ``quarantined_by``."""

    # collect
    UNREADABLE = "unreadable"  # the storage layer could not read the bytes
    EMPTY_FILE = "empty_file"
    UNSUPPORTED_FORMAT = "unsupported_format"  # not an image format we ingest
    EXTENSION_MISMATCH = "extension_mismatch"  # content is format X, name says Y
    CORRUPT = "corrupt"  # header or data cannot be decoded
    TRUNCATED = "truncated"  # decodes only partially: data ends early
    TOO_LARGE = "too_large"  # pixel count above collect.max_pixels (decompression bomb)
    PATH_ESCAPE = "path_escape"  # symlink or name resolving outside the source root
    BAD_FILE_NAME = "bad_file_name"  # name is not valid UTF-8: kept percent-encoded, not read
    DUPLICATE_EXACT = "duplicate_exact"  # byte-identical to an accepted item
    # anonymize
    ANONYMIZE_FAILED = "anonymize_failed"  # detection or redaction raised: fail closed
    RESIDUAL_DETECTION = "residual_detection"  # verification still finds a face after redaction
    # curate (which flags quarantine is params.curate.quarantine; see visionloop/curate)
    BLURRY = "blurry"
    TOO_DARK = "too_dark"
    OVEREXPOSED = "overexposed"
    LOW_INFORMATION = "low_information"
    NEAR_DUPLICATE = "near_duplicate"  # pHash within curate.phash_radius of a kept copy
    ODD_SIZE = "odd_size"  # too small (or an outlier of this dataset's sizes)
    ODD_ASPECT = "odd_aspect"  # elongated beyond curate.odd_aspect_max (or this dataset's norm)
    CLIPPED = "clipped"  # large share of pixels at 0 or 255 (a flag only by default)
    GRAYSCALE = "grayscale"  # no colour content (a flag only by default)
    COLOR_CAST = "color_cast"  # whole image tinted towards one hue (a flag only by default)
    DUPLICATE_PIXELS = "duplicate_pixels"  # same decoded pixels as a kept copy (other bytes)
    SPLIT_LEAKAGE = "split_leakage"  # a copy of an image kept in another train/val/test split


STAGES: tuple[str, ...] = (
    "collect",
    "anonymize",
    "curate",
    "import_annotations",
    "validate",
    "refresh",
)

# Columns every manifest carries from the collect stage on. Later stages append their own,
# prefixed by the stage name (``anonymize_*``, ``curate_*``) except for the shared status trio.
MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),  # sha256 of the original bytes
        pa.field("source_uri", pa.string(), nullable=False),  # where the file was read from
        pa.field("rel_path", pa.string(), nullable=False),  # path relative to the source root
        pa.field("size_bytes", pa.int64()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("reason", pa.string()),  # a Reason value when quarantined
        pa.field("reason_detail", pa.string()),  # human-readable explanation
        pa.field("quarantined_by", pa.string()),  # stage name
        pa.field("duplicate_of", pa.string()),  # source_uri of the kept copy
        pa.field("format", pa.string()),  # detected from content: JPEG, PNG, ...
        pa.field("width", pa.int32()),  # after EXIF orientation
        pa.field("height", pa.int32()),
        pa.field("channels", pa.int8()),
        pa.field("mode", pa.string()),  # PIL mode of the decoded file
        pa.field("exif_orientation", pa.int8()),
        pa.field("capture_time", pa.string()),  # ISO 8601 from EXIF DateTimeOriginal
        pa.field("camera_make", pa.string()),
        pa.field("camera_model", pa.string()),
        pa.field("has_gps", pa.bool_()),
        pa.field("gps_lat", pa.float64()),
        pa.field("gps_lon", pa.float64()),
        pa.field("object_uri", pa.string()),  # content-addressed copy, relative to the data root
    ]
)

# The canonical annotation table: one row per annotation, geometry as absolute pixel xywh
# (the axis-aligned extent of whatever was drawn; null for a tag or a degenerate point set).
ANNOTATION_SCHEMA = pa.schema(
    [
        pa.field("annotation_id", pa.string(), nullable=False),  # stable: source file + pointer
        pa.field("item_id", pa.string()),  # null when the annotation matched no image
        pa.field("image_ref", pa.string(), nullable=False),  # file name as written in the export
        pa.field("category", pa.string(), nullable=False),
        pa.field("category_id", pa.int32(), nullable=False),  # canonical id (see category map)
        pa.field("source_category_id", pa.string()),  # id as written in the export
        pa.field("bbox_x", pa.float64()),
        pa.field("bbox_y", pa.float64()),
        pa.field("bbox_w", pa.float64()),
        pa.field("bbox_h", pa.float64()),
        pa.field("segmentation", pa.string()),  # JSON: polygons [[x,y,...],...] or RLE dict
        pa.field("iscrowd", pa.bool_()),
        pa.field("image_width", pa.int32()),
        pa.field("image_height", pa.int32()),
        pa.field("annotator", pa.string()),
        pa.field("attributes", pa.string()),  # JSON object
        pa.field("source_format", pa.string(), nullable=False),  # coco, yolo, ...
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("source_pointer", pa.string(), nullable=False),  # JSON pointer or "line N"
        # matched (item accepted after curate) | quarantined_item | unmatched (no such image)
        pa.field("match_status", pa.string(), nullable=False),
        # Added by import_annotations: how the image was found and what the export said about it.
        # rel_path | file_name | file_stem | path_suffix | subset_folder | sha256 (match.py)
        pa.field("match_method", pa.string()),
        pa.field("subset", pa.string()),  # train/val/... as named by the export, when it has one
        pa.field("image_sha256", pa.string()),  # content hash given by the export, if any
        pa.field("source_annotation_id", pa.string()),  # the export's own annotation id
        # Added by issue 5 (nullable, appended so older tables still read; see
        # visionloop/annotations/table.py for the geometry convention):
        # what was drawn: box | polygon | mask | obb | ellipse | polyline | points | keypoints |
        # tag (image-level label, no geometry). Null in older tables: box, or polygon / mask as
        # the segmentation says.
        pa.field("shape", pa.string()),
        # JSON [cx, cy, w, h, angle]: oriented box (or ellipse: w, h are the diameters) in
        # absolute pixels, angle in degrees clockwise (y down) about the centre, in [0, 360).
        pa.field("obb", pa.string()),
        # JSON [[x, y, v], ...] absolute pixels; v as COCO: 0 not labelled, 1 labelled but not
        # visible, 2 visible. Pose keypoints, point sets and polyline vertices (see ``shape``).
        pa.field("keypoints", pa.string()),
        pa.field("track_id", pa.int64()),  # object identity across frames (CVAT track, MOT id)
        pa.field("frame", pa.int64()),  # frame number in its video / sequence, as written
        pa.field("score", pa.float64()),  # model confidence of a prediction; null for humans
    ]
)
