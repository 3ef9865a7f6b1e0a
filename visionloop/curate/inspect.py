"""Curate metrics and duplicate detection on any folder, outside the pipeline.

``inspect_folder`` runs what the curate stage runs (one colour decode per image, the same
``compute_metrics``, flags from the same ``params.curate`` thresholds, the same duplicate tiers)
on the image files below a local or ``s3://`` folder, and names the issues found per file in
the vocabulary of cleanvision and of ``shared/bench/curation_peer.py`` where they correspond,
so the same folder can be compared with other tools:

    blurry, dark, light (= overexposed), low_information, grayscale, odd_size,
    odd_aspect_ratio, exact_duplicates (same bytes or same decoded pixels), near_duplicates

plus ours: clipped, color_cast, corrupt (does not decode). As in those tools, every member of
a duplicate group carries the issue; ``duplicate_of`` names the copy the keep rule would keep
(the others' group leader), so a reader knows which files to drop.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from visionloop import storage
from visionloop.config import CurateParams
from visionloop.curate import flag_quality, flag_shape, metrics
from visionloop.curate.dedup import find_near_duplicates, pixel_duplicates

log = logging.getLogger(__name__)

# our flag -> issue name used by cleanvision / the peer benchmark
ISSUE_NAMES: dict[str, str] = {
    "blurry": "blurry",
    "dark": "dark",
    "overexposed": "light",
    "low_information": "low_information",
    "grayscale": "grayscale",
    "odd_size": "odd_size",
    "odd_aspect": "odd_aspect_ratio",
    "clipped": "clipped",
    "color_cast": "color_cast",
}
EXACT = "exact_duplicates"
NEAR = "near_duplicates"
CORRUPT = "corrupt"
ISSUE_ORDER = (*ISSUE_NAMES.values(), EXACT, NEAR, CORRUPT)
DEFAULT_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
METRIC_OUT = (
    "blur",
    "brightness",
    "brightness_low",
    "brightness_high",
    "entropy",
    "clip_low",
    "clip_high",
    "spread",
    "cast",
    "phash",
)


@dataclass
class InspectResult:
    root: str
    files: pd.DataFrame  # one row per file: file, issues (list), metrics, duplicate_of
    cpu_seconds: float
    wall_seconds: float
    skipped: list[str] = field(default_factory=list)  # files without an image extension

    def issue_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(ISSUE_ORDER, 0)
        for issues in self.files["issues"]:
            for name in issues:
                counts[name] = counts.get(name, 0) + 1
        return counts

    def flags(self) -> dict[str, set[str]]:
        """file name (relative path) -> issue names, as ``curation_peer.score`` takes them."""
        return {f: set(i) for f, i in zip(self.files["file"], self.files["issues"], strict=True)}

    def to_json(self) -> dict[str, Any]:
        files = []
        for row in self.files.itertuples(index=False):
            files.append(
                {
                    "file": row.file,
                    "issues": list(row.issues),
                    "duplicate_of": _text(row.duplicate_of),
                    "width": _int(row.width),
                    "height": _int(row.height),
                    "metrics": {m: _num(getattr(row, m)) for m in METRIC_OUT},
                    "error": _text(row.error),
                }
            )
        return {
            "root": self.root,
            "n_files": len(self.files),
            "issue_counts": self.issue_counts(),
            "cpu_seconds": round(self.cpu_seconds, 3),
            "wall_seconds": round(self.wall_seconds, 3),
            "images_per_cpu_second": round(len(self.files) / self.cpu_seconds, 1)
            if self.cpu_seconds > 0
            else None,
            "skipped_files": self.skipped,
            "files": files,
        }


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _int(v: Any) -> int | None:
    return None if v is None or pd.isna(v) else int(v)


def _num(v: Any) -> Any:
    if isinstance(v, str) or v is None:
        return v
    if isinstance(v, float | np.floating):
        return None if np.isnan(v) else round(float(v), 4)
    return v


def list_images(root: str, extensions: Iterable[str]) -> tuple[list[str], list[str]]:
    """(image URIs, other files) below ``root``, sorted."""
    ext = tuple(e.lower() for e in extensions)
    images, other = [], []
    for uri in storage.walk_files(root):
        (images if uri.lower().endswith(ext) else other).append(uri)
    return images, other


def _header_size(data: bytes) -> tuple[int | None, int | None]:
    """Width and height from the header only (no pixel decode), to pick the reduced decode."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except (UnidentifiedImageError, OSError, ValueError):
        return None, None


def measure_file(uri: str, work_max_side: int) -> dict[str, Any]:
    """Read, hash, decode once and measure one file (errors become an ``error`` entry)."""
    rec: dict[str, Any] = {"uri": uri, "error": None}
    try:
        data = storage.read_bytes(uri)
    except OSError as exc:
        rec["error"] = f"unreadable: {type(exc).__name__}: {exc}"
        return rec
    rec["sha256"] = hashlib.sha256(data).hexdigest()
    w, h = _header_size(data)
    import cv2

    try:
        image, factor = metrics.decode_for_metrics(data, w, h, work_max_side=work_max_side)
    except (ValueError, cv2.error) as exc:
        rec["error"] = f"corrupt: {exc}"
        return rec
    rec.update(metrics.compute_metrics(image, work_max_side, "bgr"))
    rec["width"] = w if w else image.shape[1] * factor
    rec["height"] = h if h else image.shape[0] * factor
    return rec


def inspect_files(
    uris: list[str], root: str, params: CurateParams, workers: int = 2
) -> pd.DataFrame:
    """Measure ``uris`` and decide every issue; one row per file (see ``InspectResult``)."""
    import cv2

    cv2.setNumThreads(1)  # parallelism comes from the file pool, not from inside OpenCV

    def chunk(part: list[str]) -> list[dict[str, Any]]:
        return [measure_file(u, params.work_max_side) for u in part]

    size = max(1, min(64, len(uris) // max(1, 4 * workers) or 1))
    parts = [uris[i : i + size] for i in range(0, len(uris), size)]
    records: list[dict[str, Any]] = []
    if workers > 1 and len(parts) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for got in pool.map(chunk, parts):
                records.extend(got)
    else:
        for part in parts:
            records.extend(chunk(part))
    frame = pd.DataFrame.from_records(records)
    for col in (*metrics.METRIC_KEYS, "sha256", "width", "height"):
        if col not in frame.columns:
            frame[col] = np.nan
    frame["file"] = [storage.relative_to(root, u) for u in frame["uri"]]
    return decide(frame, params)


def decide(frame: pd.DataFrame, params: CurateParams) -> pd.DataFrame:
    """Issues per measured file: quality and shape flags, then the duplicate tiers."""
    frame = frame.sort_values("file", kind="stable").reset_index(drop=True)
    ok = frame["error"].isna()
    issues: list[list[str]] = [[] for _ in range(len(frame))]
    for i in np.flatnonzero(~ok):
        issues[i].append(CORRUPT)
    measured = frame[ok]
    flags = flag_quality(measured, params)
    shape = flag_shape(measured["width"], measured["height"], params)
    flags["is_odd_size"] = shape["is_odd_size"]
    flags["is_odd_aspect"] = shape["is_odd_aspect"]
    for flag, name in ISSUE_NAMES.items():
        col = f"is_{flag}"
        if col in flags:
            for i in flags.index[flags[col].astype(bool)]:
                issues[i].append(name)
    gate = [f"is_{f}" for f in params.quarantine if f"is_{f}" in flags]
    passes = ~flags[gate].any(axis=1) if gate else pd.Series(True, index=flags.index)
    duplicate_of = pd.Series(None, index=frame.index, dtype=object)

    # Exact: same bytes (first by name kept), then same pixels among the byte-unique files.
    first = measured.groupby("sha256", sort=False)["file"].transform("first")
    byte_dup = first != measured["file"]
    duplicate_of[byte_dup[byte_dup].index] = first[byte_dup]
    unique = measured[~byte_dup]
    items = pd.DataFrame(
        {
            "source_uri": unique["file"],
            "pixel_hash": unique["pixel_hash"],
            "phash": unique["phash"],
            "entropy": unique["entropy"],
            "blur": unique["blur"],
            "width": unique["width"].astype(float),
            "height": unique["height"].astype(float),
            "passes_quality": passes[unique.index],
        }
    )
    pixel_of = pixel_duplicates(items)
    duplicate_of[pixel_of.dropna().index] = pixel_of.dropna()
    exact_members = set(duplicate_of.dropna().index)
    by_file = pd.Series(frame.index, index=frame["file"])
    exact_members |= {int(by_file[f]) for f in duplicate_of.dropna()}
    # Near: pHash within the radius among what is left (flat images kept out).
    rest = items[pixel_of.isna()]
    near = find_near_duplicates(rest, params.phash_radius, params.phash_min_entropy)
    near_of = near["near_duplicate_of"].dropna()
    duplicate_of[near_of.index] = near_of
    near_members = set(near_of.index) | {int(by_file[f]) for f in near_of}
    # Copies of an exact duplicate's kept file inherit its near-duplicate group.
    for i in sorted(exact_members):
        issues[i].append(EXACT)
    for i in sorted(near_members):
        issues[i].append(NEAR)
    frame["issues"] = [sorted(set(x), key=ISSUE_ORDER.index) for x in issues]
    frame["duplicate_of"] = pd.Series(
        [v if isinstance(v, str) else None for v in duplicate_of], index=frame.index, dtype=object
    )
    return frame


def inspect_folder(
    root: str,
    params: CurateParams | None = None,
    workers: int | None = None,
    extensions: Iterable[str] = DEFAULT_EXTENSIONS,
) -> InspectResult:
    """Inspect every image file below ``root``; CPU time is this process's (threads included)."""
    params = params or CurateParams()
    workers = workers or min(4, os.cpu_count() or 1)
    t_cpu, t_wall = time.process_time(), time.perf_counter()
    uris, other = list_images(root, extensions)
    frame = inspect_files(uris, root, params, workers)
    return InspectResult(
        root=root,
        files=frame,
        cpu_seconds=time.process_time() - t_cpu,
        wall_seconds=time.perf_counter() - t_wall,
        skipped=[storage.relative_to(root, u) for u in other],
    )
