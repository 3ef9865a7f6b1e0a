"""The one typed loader of ``params.yaml``: every knob of every stage, with its default.

Nothing else in the project reads YAML for parameters. Defaults here are the shipped values;
``params.yaml`` restates them so that DVC can track each key a stage depends on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunParams(_Section):
    """Where stage outputs live and how the work is spread."""

    data_dir: str = "data"  # local path or s3:// prefix holding every stage's outputs
    shard_size: int = Field(100, ge=1)  # images per task run
    runner: Literal["threads", "processes", "dask"] = "threads"
    max_workers: int = Field(2, ge=1)  # bound for the thread/process pool
    dask_address: str | None = None  # an existing scheduler; None starts a LocalCluster
    retries: int = Field(3, ge=0)  # per shard, on transient storage/network errors only
    retry_delay_seconds: float = Field(2.0, ge=0)  # first backoff; doubles on each retry
    on_busy: Literal["fail", "wait"] = "fail"  # another run holds this workspace


class CollectParams(_Section):
    source: str = "data/source/images"  # local folder or s3:// prefix
    extensions: list[str] = Field(
        default_factory=lambda: [".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"]
    )
    max_pixels: int = Field(100_000_000, ge=1)  # above this a file is a decompression bomb
    on_extension_mismatch: Literal["quarantine", "accept"] = "quarantine"


class AnonymizeParams(_Section):
    """Redaction. Detector defaults chosen on bench/bench_anonymize.py's face probe (LFW faces
    10-120 px on 30 face-free backgrounds, 3 seeds); see that script's closing note."""

    detector: str = "ensemble"  # a registered detector: ensemble | centerface | yunet | plug-in
    ensemble: list[str] = Field(default_factory=lambda: ["centerface", "yunet"], min_length=1)
    score_threshold: float = Field(0.25, gt=0, lt=1)  # for detectors not named in `thresholds`
    # Per-detector thresholds (scores of different models are not comparable).
    thresholds: dict[str, float] = Field(default_factory=lambda: {"yunet": 0.6, "plate": 0.5})
    detect_max_side: int = Field(1920, ge=64)  # detection input size; redaction is full-res
    # Small faces: each named face detector also runs on the image upscaled by this factor
    # (images whose longer side is <= upscale_max_side); larger images run in full-res tiles.
    upscale: dict[str, float] = Field(default_factory=lambda: {"yunet": 3.0})
    upscale_max_side: int = Field(1280, ge=0)
    upscale_max_face: int = Field(64, ge=1)  # the upscaled pass reports faces up to this (px)
    tile_overlap: float = Field(0.25, ge=0, lt=1)  # share of a tile its neighbour overlaps
    plates: bool = False  # also redact licence plates (classical detector; see plates.py)
    plate_detector: str = "plate"  # a registered detector of kind "plate"
    redaction: Literal["pixelate", "blur", "fill"] = "pixelate"
    shape: Literal["box", "ellipse"] = "box"
    dilation: float = Field(0.3, ge=0)  # grow each region by this fraction of its size
    pixelate_blocks: int = Field(8, ge=2)  # blocks across a region's longer side (blur too)
    verify: bool = True  # re-detect on the output; residual faces quarantine the image
    retry_residual: bool = True  # before quarantining, one solid-fill pass over residual faces
    jpeg_quality: int = Field(95, ge=50, le=100)
    keep_icc: bool = False  # copy the source's RGB/gray ICC profile (it can name a device)
    review_band: float = Field(0.1, ge=0, lt=1)  # scores this close to a threshold: review
    review_small_face: int = Field(24, ge=0)  # redacted faces smaller than this (px): review
    hold_frames: int = Field(5, ge=0)  # video: a track stays redacted N frames before/after

    @field_validator("thresholds")
    @classmethod
    def _thresholds_in_range(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: t for k, t in v.items() if not 0 < t < 1}
        if bad:
            raise ValueError(f"thresholds must be in (0, 1): {bad}")
        return v

    @field_validator("upscale")
    @classmethod
    def _upscale_at_least_one(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: f for k, f in v.items() if not 1 <= f <= 8}
        if bad:
            raise ValueError(f"upscale factors must be in [1, 8]: {bad}")
        return v


CurateFlag = Literal[
    "blurry",
    "dark",
    "overexposed",
    "low_information",
    "clipped",
    "grayscale",
    "color_cast",
    "odd_size",
    "odd_aspect",
    "pixel_duplicate",
    "near_duplicate",
    "split_leak",
]
ThresholdMode = Literal["absolute", "relative", "both"]


class CurateParams(_Section):
    """Quality flags (raw metric -> flag). Only ``work_max_side`` changes the metrics themselves
    (it is in the feature-cache fingerprint); every other key re-thresholds cached values.
    Defaults tuned on bench/bench_curate.py's tuning set (seed 1), reported on seed 0."""

    work_max_side: int = Field(512, ge=32)  # metrics are computed on a copy this long at most
    blur_threshold: float = Field(0.2, ge=0, le=1)  # blur score (1 = sharp) below this: blurry
    dark_threshold: float = Field(0.25, ge=0, le=1)  # 99th-pct luminance below this: too dark
    bright_threshold: float = Field(0.8, ge=0, le=1)  # 5th-pct luminance above this: overexposed
    low_information_threshold: float = Field(1.4, ge=0, le=8)  # entropy (bits) below: flat
    phash_radius: int = Field(8, ge=0, le=64)  # Hamming radius for near duplicates
    phash_min_entropy: float = Field(1.4, ge=0, le=8)  # flatter images never match (noise hash)
    day_start_hour: int = Field(6, ge=0, le=23)  # EXIF capture hour in [start, night) is day
    night_start_hour: int = Field(20, ge=0, le=24)
    night_brightness: float = Field(0.3, ge=0, le=1)  # no EXIF hour: mean luminance below: night


class AnnotationSource(_Section):
    format: Literal["auto", "coco", "yolo"]  # "auto" = detect_format(); it refuses ambiguity
    path: str  # file or folder, relative to the working directory, or s3://


class ImportAnnotationsParams(_Section):
    sources: list[AnnotationSource] = Field(default_factory=list)
    # A coordinate may fall outside the image by this fraction of the side (at least 1 px):
    # the box is clipped with a warning. Further out, the annotation is an error, not imported.
    out_of_bounds_tolerance: float = Field(0.01, ge=0, le=1)
    max_coordinate: float = Field(100_000.0, gt=0)  # |coordinate| above this is absurd (error)


class ValidateParams(_Section):
    max_quarantine_fraction: float = Field(0.5, ge=0, le=1)  # per stage, error level
    min_accepted: int = Field(1, ge=0)
    max_unmatched_annotation_fraction: float = Field(0.05, ge=0, le=1)
    bbox_tolerance_px: float = Field(1.0, ge=0)  # boxes may poke this far past the image edge
    data_docs: bool = True
    keep_validations: int = Field(20, ge=1)  # GX results kept per gate (Data Docs history)


class RefreshParams(_Section):
    reference: str = "latest"  # a dataset-vN tag, "latest", or "none"
    # Effect size above which a feature drifts: KS statistic (numeric) or total-variation
    # distance (categorical); both are in 0..1.
    drift_threshold: float = Field(0.2, ge=0)
    drift_alpha: float = Field(0.05, gt=0, le=1)  # ...and its test p-value must be below this
    dataset_drift_share: float = Field(0.5, gt=0, le=1)  # drifted share of features: dataset drift
    annotate_budget: int = Field(50, ge=0)


class Params(_Section):
    run: RunParams = Field(default_factory=RunParams)
    collect: CollectParams = Field(default_factory=CollectParams)
    anonymize: AnonymizeParams = Field(default_factory=AnonymizeParams)
    curate: CurateParams = Field(default_factory=CurateParams)
    import_annotations: ImportAnnotationsParams = Field(default_factory=ImportAnnotationsParams)
    validate_: ValidateParams = Field(default_factory=ValidateParams, alias="validate")
    refresh: RefreshParams = Field(default_factory=RefreshParams)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def with_overrides(self, overrides: dict[str, Any]) -> Params:
        """Return a copy with dotted-key overrides (``{"run.runner": "dask"}``); None is ignored."""
        data = self.model_dump(by_alias=True)
        for key, value in overrides.items():
            if value is None:
                continue
            node = data
            *parents, leaf = key.split(".")
            for p in parents:
                node = node[p]
            node[leaf] = value
        return Params.model_validate(data)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Load ``params.yaml``; a missing file means all defaults."""
    p = Path(path)
    if not p.exists():
        return Params()
    data = yaml.safe_load(p.read_text()) or {}
    return Params.model_validate(data)
