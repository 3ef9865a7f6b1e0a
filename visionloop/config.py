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
    # Video files (visionloop/video.py): each sampled frame becomes one PNG manifest row.
    # Default = visionloop.video.VIDEO_EXTENSIONS (not imported here: config stays light).
    video_extensions: list[str] = Field(
        default_factory=lambda: [".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm"]
    )
    video_fps: float = Field(1.0, gt=0)  # frames sampled per second of video
    video_max_frames: int = Field(300, ge=1)  # per video; the first ones are kept
    video_max_bytes: int = Field(4_000_000_000, ge=1)  # larger video files are too_large, unread


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
    # bench/bench_anonymize.py, tuning seeds 10-11, YuNet on the upscale at 0.6: 3x found
    # 0.36 of the 10-16 px faces and 0.91 of 16-32 px (158 ms/image at 640 px), 4x 0.50 and
    # 0.98 (252 ms), 5x 0.58 and 0.99 (427 ms).
    upscale: dict[str, float] = Field(default_factory=lambda: {"yunet": 4.0})
    upscale_max_side: int = Field(1280, ge=0)
    # Larger images up to upscale_large_max_side get this (cheaper) factor instead. 1920x1440,
    # seed 301, 8 images: no upscale 0.35 of 16-32 px faces found (588 ms/image), YuNet 2x
    # 0.77 (1037 ms), 3x 0.92 (1844 ms).
    upscale_large: dict[str, float] = Field(default_factory=lambda: {"yunet": 2.0})
    upscale_large_max_side: int = Field(1920, ge=0)
    upscale_max_face: int = Field(64, ge=1)  # the upscaled pass reports faces up to this (px)
    # Lower thresholds for faces of at most small_face_max px (YuNet 4x, same seeds: 0.4 for
    # <= 16 px found 0.62 of the 10-16 px faces instead of 0.51, 0.38 FP/image instead of 0.27).
    small_face_thresholds: dict[str, float] = Field(default_factory=lambda: {"yunet": 0.4})
    small_face_max: int = Field(16, ge=0)
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
    # zlib level of PNG outputs (lossless at any level): on the bench's 640x480 images 3 takes
    # 21 ms instead of 48 ms at Pillow's default 6, for files 4.6 % larger.
    png_compress_level: int = Field(3, ge=0, le=9)
    keep_icc: bool = False  # copy the source's RGB/gray ICC profile (it can name a device)
    review_band: float = Field(0.1, ge=0, lt=1)  # scores this close to a threshold: review
    review_small_face: int = Field(24, ge=0)  # redacted faces smaller than this (px): review
    hold_frames: int = Field(5, ge=0)  # video: a track stays redacted N frames before/after

    @field_validator("thresholds", "small_face_thresholds")
    @classmethod
    def _thresholds_in_range(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: t for k, t in v.items() if not 0 < t < 1}
        if bad:
            raise ValueError(f"thresholds must be in (0, 1): {bad}")
        return v

    @field_validator("upscale", "upscale_large")
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
    Defaults tuned on bench/bench_curate.py's tuning set (seed 1), reported on other seeds."""

    work_max_side: int = Field(512, ge=32)  # metrics are computed on a copy this long at most
    blur_threshold: float = Field(0.2, ge=0, le=1)  # blur score (1 = sharp) below this: blurry
    dark_threshold: float = Field(0.25, ge=0, le=1)  # 99th-pct luminance below this: too dark
    bright_threshold: float = Field(0.8, ge=0, le=1)  # 5th-pct luminance above this: overexposed
    low_information_threshold: float = Field(1.4, ge=0, le=8)  # entropy (bits) below: flat
    # Share of luminance pixels at exactly 0 (or exactly 255) above this: clipped.
    clipping_threshold: float = Field(0.25, ge=0, le=1)
    # 99th-percentile channel spread max(R,G,B) - min(R,G,B) (8-bit levels) at or below: grayscale.
    grayscale_threshold: float = Field(3.0, ge=0, le=255)
    # Colour cast: mean chroma offset (CIELAB a*b*) over the chroma spread above this...
    color_cast_threshold: float = Field(1.5, ge=0)
    color_cast_min_shift: float = Field(12.0, ge=0)  # ...and the offset itself above this
    # Odd size / aspect: "absolute" thresholds, "relative" to this dataset (robust z-score of
    # log2 values: (x - median) / max(1.4826 MAD, relative_min_scale)), or "both" (either flags).
    odd_size_mode: ThresholdMode = "both"
    odd_size_min_side: int = Field(64, ge=1)  # absolute: shorter side below this (px)
    odd_aspect_mode: ThresholdMode = "both"
    odd_aspect_max: float = Field(4.0, ge=1)  # absolute: longer / shorter side above this
    relative_z: float = Field(5.0, gt=0)  # relative: |robust z| above this
    relative_min_scale: float = Field(0.25, gt=0)  # floor of the robust scale (log2 units)
    relative_min_items: int = Field(20, ge=3)  # fewer measured images: relative checks skipped
    phash_radius: int = Field(8, ge=0, le=64)  # Hamming radius for near duplicates
    phash_min_entropy: float = Field(1.4, ge=0, le=8)  # flatter images never match (noise hash)
    # Flags that quarantine (in this fixed precedence); the others are recorded only.
    quarantine: list[CurateFlag] = Field(
        default_factory=lambda: [
            "odd_size",
            "odd_aspect",
            "blurry",
            "dark",
            "overexposed",
            "low_information",
            "pixel_duplicate",
            "near_duplicate",
            "split_leak",
        ]
    )
    # Train/validation/test split of each file: a manifest column, else the first group of a
    # regex searched in rel_path; null = no split (left out of the leakage check).
    split_column: str | None = None
    split_pattern: str | None = r"(?:^|/)(train|training|val|valid|validation|test|testing)(?:/|$)"
    # When two accepted copies sit in different splits, the one in the split named EARLIER here
    # is kept and the other flagged split_leak (splits not listed rank last).
    leakage_keep_order: list[str] = Field(
        default_factory=lambda: ["test", "testing", "validation", "valid", "val"]
    )
    # Coverage slices: day_night, time_of_day, camera, location, class (report only, from the
    # imported annotations), or any manifest column. The joint cells of all of them are gated.
    coverage: list[str] = Field(default_factory=lambda: ["day_night", "camera"])
    coverage_min_count: int = Field(25, ge=0)  # a joint cell with fewer accepted images: a gap
    coverage_max_share: float = Field(0.5, gt=0, le=1)  # a joint cell above this share: over
    coverage_cell_deg: float = Field(1.0, gt=0)  # location: GPS grid cell size (degrees)
    coverage_max_cells: int = Field(10_000, ge=1)  # above this, empty joint cells are not listed
    coverage_severity: Literal["warning", "error"] = "warning"  # of the gate's coverage checks
    balanced_budget: int = Field(1000, ge=0)  # images in balanced.parquet (0: no subset)
    balanced_min_distance: int = Field(12, ge=0, le=64)  # picks of a cell differ by more bits
    report: bool = True  # write data/curate/report.html in finalize
    report_thumbnails: int = Field(8, ge=0)  # per flagged group in the report
    day_start_hour: int = Field(6, ge=0, le=23)  # EXIF capture hour in [start, night) is day
    night_start_hour: int = Field(20, ge=0, le=24)
    night_brightness: float = Field(0.3, ge=0, le=1)  # no EXIF hour: mean luminance below: night


class AnnotationSource(_Section):
    # "auto" = detect_format(); it refuses ambiguity. One name per reader in
    # visionloop/annotations/formats/__init__.py (READERS).
    format: Literal["auto", "coco", "yolo", "label_studio", "voc", "cvat", "labelme", "mot", "sam"]
    path: str  # file or folder, relative to the working directory, or s3://


class ImportAnnotationsParams(_Section):
    sources: list[AnnotationSource] = Field(default_factory=list)
    # A coordinate may fall outside the image by this fraction of the side (at least 1 px):
    # the box is clipped with a warning. Further out, the annotation is an error, not imported.
    out_of_bounds_tolerance: float = Field(0.01, ge=0, le=1)
    max_coordinate: float = Field(100_000.0, gt=0)  # |coordinate| above this is absurd (error)


class QAParams(_Section):
    """Label QA (visionloop/qa). Its error-level findings block the import_annotations gate.
    Structure thresholds are Datumaro's validator defaults; gold scoring is CVAT's."""

    enabled: bool = True  # run label QA in validate and in the import_annotations gate
    few_samples: int = Field(1, ge=0)  # a label (attribute value) with 0 < n <= this: few
    imbalance_ratio: float = Field(50.0, gt=1)  # most / least frequent label >= this
    far_from_mean: float = Field(5.0, gt=0)  # outlier: |value - mean| > k standard deviations
    dominance_ratio: float = Field(0.8, gt=0, le=1)  # top bins holding this share: skewed
    topk_bins: float = Field(0.1, gt=0, le=1)  # share of histogram bins that are "top"
    histogram_bins: int = Field(10, ge=2)
    min_box_side: float = Field(1.0, ge=0)  # a box side below this (px) is an error
    mask_bbox_tolerance_px: float = Field(1.0, ge=0)  # mask/polygon extent vs box
    duplicate_iou: float = Field(0.95, gt=0, le=1)  # same annotator + label, IoU above this
    track_max_gap: int = Field(0, ge=0)  # frames a track may skip without being outside
    id_switch_iou: float = Field(0.5, gt=0, le=1)  # box IoU across consecutive frames
    agreement_iou: float = Field(0.5, gt=0, le=1)  # two annotators' objects match at >= this
    min_agreement_f1: float = Field(0.5, ge=0, le=1)  # item-level F1 below this: a finding
    min_alpha: float = Field(0.667, ge=-1, le=1)  # Krippendorff's bar for tentative conclusions
    gold_annotators: list[str] = Field(default_factory=list)  # their labels are ground truth
    gold_iou: float = Field(0.4, gt=0, le=1)  # CVAT's min overlap for a match
    gold_target: float = Field(0.7, ge=0, le=1)  # CVAT's target accuracy
    labels: list[str] = Field(default_factory=list)  # the label set; [] = categories.json
    # label (or "*" for all) -> attribute names it may carry; {} = attributes are not checked
    attributes: dict[str, list[str]] = Field(default_factory=dict)
    severity: dict[str, str] = Field(default_factory=dict)  # check -> error|warning|info|off

    @field_validator("severity")
    @classmethod
    def _known_checks(cls, v: dict[str, str]) -> dict[str, str]:
        if not v:
            return v
        from visionloop.qa.checks import CHECKS, OFF, SEVERITIES

        unknown = sorted(set(v) - set(CHECKS))
        if unknown:
            raise ValueError(f"unknown QA checks {unknown}; known: {', '.join(sorted(CHECKS))}")
        bad = {k: s for k, s in v.items() if s not in (*SEVERITIES, OFF)}
        if bad:
            raise ValueError(f"severities must be error, warning, info or off: {bad}")
        return v


class ValidateParams(_Section):
    max_quarantine_fraction: float = Field(0.5, ge=0, le=1)  # per stage, error level
    min_accepted: int = Field(1, ge=0)
    max_unmatched_annotation_fraction: float = Field(0.05, ge=0, le=1)
    bbox_tolerance_px: float = Field(1.0, ge=0)  # boxes may poke this far past the image edge
    data_docs: bool = True
    keep_validations: int = Field(20, ge=1)  # GX results kept per gate (Data Docs history)
    qa: QAParams = Field(default_factory=QAParams)  # label QA checks (visionloop/qa)


RefreshFeature = Literal[
    "brightness",
    "contrast",
    "blur",
    "colour_a",
    "colour_b",
    "saturation",
    "colourfulness",
    "entropy",
    "size",
    "aspect",
]
RefreshSlice = Literal["camera", "day_night", "time_of_day"]
# categorical drift features: the slices, and "outcome" (accepted or quarantine reason, over
# every row: a batch whose images are quarantined more often, e.g. for blur, has drifted too)
RefreshCategorical = Literal["camera", "day_night", "time_of_day", "outcome"]


class RebalanceParams(_Section):
    """Augmentation of under-represented classes or slices (albumentations), train only.

    ``pipelines`` name albumentations pipelines as lists of transforms, each a dict with the
    transform's class name under ``name`` and its arguments (``{name: HorizontalFlip, p: 0.5}``);
    ``assign`` maps a group value to a pipeline name ("*" = the rest). Every derived image
    records its parent and the serialised pipeline + seed that replays it exactly."""

    enabled: bool = True
    by: list[str] = Field(default_factory=lambda: ["class"])  # class, or slice dimensions
    target_ratio: float = Field(0.5, gt=0, le=1)  # groups below this x the largest: augmented
    min_target: int = Field(0, ge=0)  # ...and at least up to this many items
    max_per_parent: int = Field(3, ge=1)  # derived images per parent image at most
    max_items: int = Field(200, ge=0)  # derived images per run at most
    allow_unsplit: bool = True  # parents without a train/val/test split may be augmented
    seed: int = 0
    jpeg_quality: int = Field(95, ge=50, le=100)
    min_visibility: float = Field(0.3, ge=0, le=1)  # boxes cropped below this share: dropped
    pipelines: dict[str, list[dict[str, Any]]] = Field(
        default_factory=lambda: {
            "default": [
                {"name": "HorizontalFlip", "p": 0.5},
                {
                    "name": "RandomBrightnessContrast",
                    "brightness_limit": 0.2,
                    "contrast_limit": 0.2,
                    "p": 0.8,
                },
                {"name": "HueSaturationValue", "hue_shift_limit": 5, "p": 0.3},
                {"name": "GaussNoise", "std_range": [0.01, 0.04], "p": 0.3},
            ]
        }
    )
    assign: dict[str, str] = Field(default_factory=lambda: {"*": "default"})

    @field_validator("assign")
    @classmethod
    def _assign_known(cls, v: dict[str, str], info: Any) -> dict[str, str]:
        known = set((info.data or {}).get("pipelines") or {})
        bad = {g: p for g, p in v.items() if p not in known}
        if bad:
            raise ValueError(f"assign names unknown pipelines {bad}; known: {sorted(known)}")
        return v


class RefreshParams(_Section):
    """Drift of incoming items, the labelling shortlist and round trip, rebalancing.

    Drift thresholds: KS / total variation with Holm-adjusted p-values on small samples,
    Wasserstein / Jensen-Shannon distances on large ones (see visionloop/refresh/drift.py).
    Defaults measured on bench/bench_refresh.py (planted shifts and no-shift batches)."""

    reference: str = "latest"  # a dataset-vN tag, "latest", or "none"
    # Numeric features, small samples: KS statistic above this (and adjusted p below alpha).
    drift_threshold: float = Field(0.2, ge=0, le=1)
    drift_alpha: float = Field(0.01, gt=0, le=1)  # family-wise over every test (Holm)
    categorical_threshold: float = Field(0.1, ge=0, le=1)  # total-variation distance
    large_sample: int = Field(1000, ge=1)  # min(n_ref, n_new) above this: distance tests
    wasserstein_threshold: float = Field(0.1, ge=0)  # Wasserstein-1 / reference std
    jensen_shannon_threshold: float = Field(0.1, ge=0, le=1)  # JS distance, base 2
    dataset_drift_share: float = Field(0.5, gt=0, le=1)  # drifted share of features: dataset drift
    drift_features: list[RefreshFeature] = Field(
        default_factory=lambda: [
            "brightness",
            "contrast",
            "blur",
            "colour_a",
            "colour_b",
            "saturation",
            "colourfulness",
            "entropy",
            "size",
            "aspect",
        ]
    )
    drift_categorical: list[RefreshCategorical] = Field(
        default_factory=lambda: ["camera", "day_night", "time_of_day", "outcome"]
    )
    drift_slices: list[RefreshSlice] = Field(default_factory=lambda: ["camera", "day_night"])
    slice_min_items: int = Field(20, ge=2)  # per side, for a slice to be tested
    mmd_min_items: int = Field(10, ge=2)  # per side, for the embedding test
    mmd_permutations: int = Field(500, ge=10)
    mmd_max_permutations: int = Field(5000, ge=10)  # when the first leave p unresolved
    mmd_max_items: int = Field(300, ge=10)  # per side (sampled): the kernel matrix is O(n^2)
    mmd_dims: int = Field(16, ge=1)  # reference principal components the kernel sees
    embed_max_side: int = Field(256, ge=16)  # embeddings are computed on a copy this long
    drift_severity: Literal["warning", "error"] = "warning"  # dataset/image drift in the gate
    seed: int = 0  # permutations, samples, augmentation draws
    # Labelling shortlist: QA re-labels first, then the coverage gap quotas, then drifted
    # items, then diversity (farthest-first on the embedding) for what is left.
    annotate_budget: int = Field(50, ge=0)
    qa_share: float = Field(0.2, ge=0, le=1)  # of the budget, at most, for QA re-labels
    qa_checks: list[str] = Field(default_factory=lambda: ["low_agreement"])
    drift_share: float = Field(0.3, ge=0, le=1)  # of the budget, at most, for drifted items
    # Labelling round trip (visionloop/refresh/roundtrip.py).
    export_formats: list[Literal["label_studio", "cvat"]] = Field(
        default_factory=lambda: ["label_studio", "cvat"]
    )
    image_url_prefix: str = "/data/local-files/?d="  # Label Studio: prefix of the image path
    inbox: str = "labels/inbox"  # returned exports are dropped here
    returned_dir: str = "data/source/annotations/returned"  # normalised: an import source
    rebalance: RebalanceParams = Field(default_factory=RebalanceParams)


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
