"""The ONNX shape rewrite, and YuNet on onnxruntime against OpenCV's own FaceDetectorYN."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from visionloop.anonymize import models, onnxgraph
from visionloop.anonymize.yunet import _INPUT_DIMS, _OUTPUT_DIMS, YuNetDetector


@pytest.fixture(scope="module")
def yunet_bytes() -> bytes:
    return models.load(models.YUNET)[1]


def test_dynamic_shapes_refuses_a_model_with_other_inputs_or_outputs(yunet_bytes: bytes) -> None:
    with pytest.raises(ValueError, match="unexpected model input 'input'"):
        onnxgraph.dynamic_shapes(yunet_bytes, {"x": ["B", 3, "H", "W"]}, _OUTPUT_DIMS)
    outputs = {k: v for k, v in _OUTPUT_DIMS.items() if k != "kps_32"}
    with pytest.raises(ValueError, match="unexpected model output 'kps_32'"):
        onnxgraph.dynamic_shapes(yunet_bytes, _INPUT_DIMS, outputs)


def test_rewritten_yunet_runs_at_any_multiple_of_32(yunet_bytes: bytes) -> None:
    import onnxruntime as ort

    model = onnxgraph.dynamic_shapes(yunet_bytes, _INPUT_DIMS, _OUTPUT_DIMS)
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    assert [i.shape for i in sess.get_inputs()] == [["B", 3, "H", "W"]]
    for h, w in ((96, 160), (480, 640)):
        out = dict(
            zip(
                ["cls_8", "bbox_16"],
                sess.run(["cls_8", "bbox_16"], {"input": np.zeros((1, 3, h, w), np.float32)}),
                strict=True,
            )
        )
        assert out["cls_8"].shape == (1, h // 8 * w // 8, 1)
        assert out["bbox_16"].shape == (1, h // 16 * w // 16, 4)


def _opencv_yunet(data: bytes, rgb: np.ndarray, threshold: float) -> np.ndarray:
    """(N, 5) x0, y0, x1, y1, score from cv2.FaceDetectorYN, best first."""
    h, w = rgb.shape[:2]
    net = cv2.FaceDetectorYN.create(
        "onnx", np.frombuffer(data, np.uint8), np.empty(0, np.uint8), (w, h), threshold, 0.3, 5000
    )
    _, faces = net.detect(np.ascontiguousarray(rgb[:, :, ::-1]))
    if faces is None:
        return np.zeros((0, 5), np.float32)
    faces = faces[np.argsort(-faces[:, 14], kind="stable")]
    x, y, bw, bh = faces[:, 0], faces[:, 1], faces[:, 2], faces[:, 3]
    boxes = np.stack([x, y, x + np.maximum(bw, 0), y + np.maximum(bh, 0)], axis=1)
    boxes = boxes.clip(0, [w, h, w, h])
    return np.column_stack([boxes, faces[:, 14]])


def test_yunet_on_onnxruntime_matches_opencv_exactly(yunet_bytes: bytes) -> None:
    """Same boxes and scores as cv2.FaceDetectorYN (whose decode we reimplemented)."""
    face = (skimage.data.lfw_subset()[:6] * 255).round().astype(np.uint8)
    img = cv2.resize(skimage.data.astronaut(), (640, 480))
    for k, (x, s) in enumerate(((20, 40), (80, 60), (500, 30), (560, 50), (40, 90), (300, 24))):
        img[380 : 380 + s, x : x + s] = cv2.resize(face[k], (s, s))[:, :, None]
    det = YuNetDetector(score_threshold=0.3)
    total = 0
    for scale in (1, 2):
        rgb = cv2.resize(img, None, fx=scale, fy=scale) if scale > 1 else img
        ours = det.detect(rgb)
        ref = _opencv_yunet(yunet_bytes, rgb, 0.3)
        assert len(ours) == len(ref)
        np.testing.assert_allclose(ours.boxes, ref[:, :4], atol=1e-3)
        np.testing.assert_allclose(ours.scores, ref[:, 4], atol=1e-6)
        total += len(ours)
    assert total >= 6  # the comparison covers real detections, not two empty lists
