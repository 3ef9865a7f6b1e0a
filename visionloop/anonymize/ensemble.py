"""Union of several detectors: a region any member finds is redacted (maximum recall).

Detectors miss different faces (CenterFace and YuNet disagree most on small, turned and
partly covered faces), so for privacy the union is what counts. Each member keeps its own
score threshold (scores are not comparable across models) and, optionally, its own small-face
pass (:class:`~visionloop.anonymize.multiscale.MultiScaleDetector` with a per-member upscale
factor). Overlapping results of one kind merge into one box covering them all.

The anonymize stage runs *every* configuration through this class (one member for a single
detector, plus the plate detector when plates are on), so thresholds, tiling and the review
band work the same way for built-ins and plug-ins. With ``review_band`` > 0 each member runs
at its threshold minus the band, and :meth:`EnsembleDetector.detect_all` also returns what
scored within the band of a threshold (above: redacted; below: not redacted) for the review
queue. For CenterFace and YuNet a lower threshold only adds boxes (both apply the threshold
before a greedy NMS), so what gets redacted does not depend on the band.

``small_face_thresholds`` gives a member a lower threshold for faces of at most
``small_face_max`` px (image pixels): YuNet scores a 10-16 px face seen 4x upscaled lower than
a larger one, while its false alarms at that size stay rare. On bench/bench_anonymize.py's
tuning seeds (10, 11; not the reported ones) YuNet 4x at 0.6 found 0.51 of the 10-16 px faces
(0.27 false positives per image); 0.4 for boxes <= 16 px: 0.62 (0.38 FP/image).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from visionloop.anonymize.detectors import Detector, Regions, get_detector, to_rgb
from visionloop.anonymize.multiscale import MERGE_IOU, MultiScaleDetector, merge

DEFAULT_MEMBERS = ("centerface", "yunet")
MIN_THRESHOLD = 0.01


def _inside(boxes: np.ndarray, others: np.ndarray, share: float) -> np.ndarray:
    """(N,) bool: box n lies at least ``share`` inside one of ``others``."""
    if len(boxes) == 0 or len(others) == 0:
        return np.zeros(len(boxes), bool)
    x0 = np.maximum(boxes[:, None, 0], others[None, :, 0])
    y0 = np.maximum(boxes[:, None, 1], others[None, :, 1])
    x1 = np.minimum(boxes[:, None, 2], others[None, :, 2])
    y1 = np.minimum(boxes[:, None, 3], others[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1e-9)
    return (inter / area[:, None] >= share).any(axis=1)


def _joined(values: list[tuple[str, Any]]) -> str | None:
    """One member: its value; several: ``name=value;...``; None if any is missing."""
    if any(v is None for _, v in values):
        return None
    if len(values) == 1:
        return str(values[0][1])
    return ";".join(f"{n}={v}" for n, v in values)


class EnsembleDetector:
    """Runs every member on the image; merges what passes each member's own threshold."""

    name = "ensemble"

    def __init__(
        self,
        members: Sequence[str | Detector] = DEFAULT_MEMBERS,
        score_threshold: float | None = None,
        max_side: int = 1920,
        thresholds: Mapping[str, float] | None = None,
        upscale: Mapping[str, float] | None = None,
        upscale_max_side: int = 1280,
        upscale_max_face: int = 64,
        tile_overlap: float = 0.25,
        tiled: Sequence[str] | None = None,
        review_band: float = 0.0,
        label: str | None = None,
        merge_iou: float = MERGE_IOU,
        small_face_thresholds: Mapping[str, float] | None = None,
        small_face_max: int = 16,
        upscale_large: Mapping[str, float] | None = None,
        upscale_large_max_side: int = 0,
        **kwargs: Any,
    ) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member detector")
        if review_band < 0:
            raise ValueError(f"review_band must be >= 0, got {review_band}")
        thresholds, upscale = dict(thresholds or {}), dict(upscale or {})
        small = dict(small_face_thresholds or {})
        large = dict(upscale_large or {})
        leaves: list[tuple[Detector, float | None]] = []
        for m in members:
            if isinstance(m, str):
                if m == self.name:
                    raise ValueError("an ensemble cannot contain itself")
                threshold = thresholds.get(m, score_threshold)
                opts: dict[str, Any] = {"max_side": max_side, **kwargs}
                if threshold is not None:
                    lowest = min(threshold, small.get(m, threshold))
                    opts["score_threshold"] = max(MIN_THRESHOLD, lowest - review_band)
                det = get_detector(m, **opts)
            else:
                det, threshold = m, thresholds.get(str(m.name), score_threshold)
            name = str(det.name)
            if tiled is None or name in tiled:
                det = MultiScaleDetector(
                    det,
                    max_side=max_side,
                    upscale=float(upscale.get(name, 1.0)),
                    upscale_max_side=upscale_max_side,
                    upscale_max_face=upscale_max_face,
                    tile_overlap=tile_overlap,
                    merge_iou=merge_iou,
                    upscale_large=float(large.get(name, 1.0)),
                    upscale_large_max_side=upscale_large_max_side,
                )
            leaves.append((det, None if threshold is None else float(threshold)))
        names = [str(d.name) for d, _ in leaves]
        if len(set(names)) != len(names):
            raise ValueError(f"ensemble members must be distinct, got {names}")
        self._leaves = leaves
        self.members: tuple[Detector, ...] = tuple(d for d, _ in leaves)
        self.thresholds = {str(d.name): t for d, t in leaves}
        self.upscale = {n: float(upscale.get(n, 1.0)) for n in names}
        self.small_face_thresholds = {n: float(small[n]) for n in names if n in small}
        self.small_face_max = int(small_face_max)
        self.upscale_large = {n: float(large[n]) for n in names if large.get(n, 1.0) > 1}
        self.upscale_large_max_side = int(upscale_large_max_side)
        self.review_band = float(review_band)
        self.merge_iou = float(merge_iou)
        if label is not None:
            self.name = label
        # An unknown member identity stays unknown (None), so the audit check refuses it.
        self.version = _joined([(str(d.name), d.version) for d, _ in leaves])
        self.model_sha256 = _joined([(str(d.name), d.model_sha256) for d, _ in leaves])
        self.licence = " AND ".join(sorted({str(d.licence) for d, _ in leaves}))

    def records(self) -> list[dict[str, Any]]:
        """One audit record per member: model identity, hash, threshold, small-face pass."""
        return [
            {
                "detector": str(d.name),
                "version": str(d.version),
                "licence": str(d.licence),
                "model_sha256": str(d.model_sha256),
                "score_threshold": t,
                "upscale": self.upscale.get(str(d.name), 1.0),
                **(
                    {
                        "upscale_large": self.upscale_large[str(d.name)],
                        "upscale_large_max_side": self.upscale_large_max_side,
                    }
                    if str(d.name) in self.upscale_large
                    else {}
                ),
                **(
                    {
                        "small_face_threshold": self.small_face_thresholds[str(d.name)],
                        "small_face_max": self.small_face_max,
                    }
                    if str(d.name) in self.small_face_thresholds
                    else {}
                ),
            }
            for d, t in self._leaves
        ]

    def detect_size(self, width: int, height: int) -> tuple[int, int]:
        """The largest whole-image network input among the members (what the audit records)."""
        sizes = [
            d.detect_size(width, height)
            for d in self.members
            if callable(getattr(d, "detect_size", None))
        ]
        if not sizes:
            return width, height
        return max(s[0] for s in sizes), max(s[1] for s in sizes)

    def detect_all(self, image_rgb: np.ndarray) -> tuple[Regions, list[dict[str, Any]]]:
        """Regions to redact, and the near-threshold ones for review.

        A near-threshold region scores within ``review_band`` of its member's threshold, above
        (redacted, perhaps needlessly) or below (not redacted, perhaps a missed face); each is
        a dict ``{kind, box, score, detector, threshold, redacted}`` in image pixels.
        """
        return self._detect(image_rgb, None)

    def _detect(
        self, image_rgb: np.ndarray, changed: np.ndarray | None
    ) -> tuple[Regions, list[dict[str, Any]]]:
        rgb = to_rgb(image_rgb)
        height, width = rgb.shape[:2]
        keep: list[Regions] = []
        near: list[tuple[Regions, str, float]] = []
        for det, threshold in self._leaves:
            if changed is not None and isinstance(det, MultiScaleDetector):
                r = det.detect_changed(rgb, changed).clipped(width, height)
            else:
                r = det.detect(rgb).clipped(width, height)
            if threshold is None:
                keep.append(r)
                continue
            ok = r.scores >= threshold
            small = self.small_face_thresholds.get(str(det.name))
            if small is not None:  # faces this small score lower (see the class docstring)
                side = np.maximum(r.boxes[:, 2] - r.boxes[:, 0], r.boxes[:, 3] - r.boxes[:, 1])
                ok |= (side <= self.small_face_max) & (r.scores >= small)
            keep.append(r[ok])
            if self.review_band > 0:
                band = np.abs(r.scores - threshold) < self.review_band
                near.append((r[band], str(det.name), threshold))
        kept = merge(Regions.concat(keep), iou=self.merge_iou)
        review = []
        for r, name, threshold in near:
            redacted = _inside(r.boxes, kept.boxes, 0.5)
            for box, score, kind, red in zip(r.boxes, r.scores, r.kind, redacted, strict=True):
                review.append(
                    {
                        "kind": str(kind),
                        "box": [round(float(v), 1) for v in box],
                        "score": round(float(score), 4),
                        "detector": name,
                        "threshold": threshold,
                        "redacted": bool(score >= threshold or red),
                    }
                )
        return kept, review

    def detect(self, image_rgb: np.ndarray) -> Regions:
        return self.detect_all(image_rgb)[0]

    def detect_changed(self, image_rgb: np.ndarray, changed: np.ndarray) -> Regions:
        """What :meth:`detect` would find on an image that differs from one it already searched
        only inside the ``changed`` boxes: every whole-image and full-resolution pass runs
        again, the upscaled small-face passes only around ``changed``
        (:meth:`MultiScaleDetector.detect_changed`); members that are not multi-scale run
        whole."""
        return self._detect(image_rgb, np.asarray(changed, np.float64).reshape(-1, 4))[0]


def member_records(detector: Detector) -> list[dict[str, Any]]:
    """Audit records of the models behind any detector (an ensemble lists its members)."""
    records = getattr(detector, "records", None)
    if callable(records):
        return list(records())
    threshold = getattr(detector, "score_threshold", None)
    return [
        {
            "detector": str(detector.name),
            "version": str(detector.version),
            "licence": str(detector.licence),
            "model_sha256": str(detector.model_sha256),
            "score_threshold": None if threshold is None else float(threshold),
            "upscale": 1.0,
        }
    ]


def detect_changed(detector: Detector, image_rgb: np.ndarray, changed: np.ndarray) -> Regions:
    """Detections on ``image_rgb``, known to differ from an image ``detector`` already searched
    only inside the ``changed`` boxes: the cheaper :meth:`EnsembleDetector.detect_changed`
    when the detector has it, else a plain ``detect`` of everything."""
    method = getattr(detector, "detect_changed", None)
    if callable(method):
        return method(image_rgb, changed)
    return detector.detect(image_rgb)
