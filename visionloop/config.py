"""The one typed loader of ``params.yaml``: every knob of every stage, with its default.

Nothing else in the project reads YAML for parameters. Defaults here are the shipped values;
``params.yaml`` restates them so that DVC can track each key a stage depends on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunParams(_Section):
    """Where stage outputs live and how the work is spread."""

    data_dir: str = "data"  # local path or s3:// prefix holding every stage's outputs
    shard_size: int = Field(100, ge=1)  # images per task run
    runner: Literal["threads", "processes", "dask"] = "threads"
    max_workers: int = Field(2, ge=1)  # bound for the thread/process pool
    dask_address: str | None = None  # an existing scheduler; None starts a LocalCluster


class CollectParams(_Section):
    source: str = "data/source/images"  # local folder or s3:// prefix
    extensions: list[str] = Field(
        default_factory=lambda: [".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"]
    )
    max_pixels: int = Field(100_000_000, ge=1)  # above this a file is a decompression bomb
    on_extension_mismatch: Literal["quarantine", "accept"] = "quarantine"


class AnonymizeParams(_Section):
    detector: str = "centerface"
    score_threshold: float = Field(0.4, gt=0, lt=1)
    detect_max_side: int = Field(1280, ge=64)  # detection input size; redaction is full-res
    redaction: Literal["pixelate", "blur", "fill"] = "pixelate"
    shape: Literal["box", "ellipse"] = "box"
    dilation: float = Field(0.2, ge=0)  # grow each region by this fraction of its size
    pixelate_blocks: int = Field(8, ge=2)
    verify: bool = True  # re-detect on the output; residual faces quarantine the image
    jpeg_quality: int = Field(95, ge=50, le=100)


class CurateParams(_Section):
    blur_threshold: float = 0.25  # blur score below this is blurry
    dark_threshold: float = 0.2  # brightness score below this is too dark
    bright_threshold: float = 0.95  # brightness score above this is overexposed
    low_information_threshold: float = 3.0  # entropy (bits) below this is low information
    phash_radius: int = Field(8, ge=0, le=64)  # Hamming radius for near duplicates


class AnnotationSource(_Section):
    format: Literal["coco", "yolo"]
    path: str


class ImportAnnotationsParams(_Section):
    sources: list[AnnotationSource] = Field(default_factory=list)


class ValidateParams(_Section):
    max_quarantine_fraction: float = Field(0.5, ge=0, le=1)  # per stage, error level
    min_accepted: int = Field(1, ge=0)
    max_unmatched_annotation_fraction: float = Field(0.05, ge=0, le=1)
    bbox_tolerance_px: float = Field(1.0, ge=0)  # boxes may poke this far past the image edge
    max_drifted_fraction: float = Field(0.0, ge=0, le=1)  # share of drifted features, warning
    data_docs: bool = True


class RefreshParams(_Section):
    reference: str = "latest"  # a dataset-vN tag, "latest", or "none"
    drift_threshold: float = Field(0.2, ge=0)  # KS statistic above which a metric drifts
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
