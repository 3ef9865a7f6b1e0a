"""collect: one row per file, every quarantine reason, the object store, incremental reruns."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image, TiffImagePlugin

from visionloop import storage
from visionloop.config import Params
from visionloop.schema import MANIFEST_SCHEMA, Reason, Status
from visionloop.stages import collect as collect_mod
from visionloop.stages.base import Workspace, run_stage
from visionloop.stages.collect import CollectStage

R = TiffImagePlugin.IFDRational


def jpeg(seed: int, w: int = 64, h: int = 48, exif: bytes | None = None) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    kw = {"exif": exif} if exif else {}
    Image.fromarray(arr).save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def camera_exif() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "Birch"
    exif[0x0110] = "B7"
    exif[0x0112] = 6
    exif.get_ifd(0x8769)[0x9003] = "2024:06:01 21:05:09"
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "S", (R(33, 1), R(52, 1), R(71688, 10000))
    gps[3], gps[4] = "E", (R(151, 1), R(12, 1), R(334800, 10000))
    return exif.tobytes()


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=40, loop=0)
    return buf.getvalue()


# rel path -> (status, reason) expected at collect
EXPECTED: dict[str, tuple[str, str | None]] = {
    "cam/good.jpg": ("accepted", None),
    "cam/exif_rot.JPG": ("accepted", None),
    "cam/gray.jpeg": ("accepted", None),
    "cam/cmyk.jpg": ("accepted", None),
    "cam/deep.png": ("accepted", None),
    "cam/rgb16.png": ("accepted", None),
    "cam/façade_北京.jpg": ("accepted", None),
    "cam/dup_a.jpg": ("accepted", None),
    "cam/dup_b.jpg": ("quarantined", Reason.DUPLICATE_EXACT),
    "cam/sub/dup_c.jpg": ("quarantined", Reason.DUPLICATE_EXACT),
    "cam/empty.jpg": ("quarantined", Reason.EMPTY_FILE),
    "cam/truncated.jpg": ("quarantined", Reason.TRUNCATED),
    "cam/corrupt.jpg": ("quarantined", Reason.CORRUPT),
    "cam/wrong.jpg": ("quarantined", Reason.EXTENSION_MISMATCH),
    "cam/anim.gif": ("quarantined", Reason.UNSUPPORTED_FORMAT),
    "cam/anim_named.png": ("quarantined", Reason.UNSUPPORTED_FORMAT),
    "cam/notes.txt": ("quarantined", Reason.UNSUPPORTED_FORMAT),
    "cam/bomb.png": ("quarantined", Reason.TOO_LARGE),
    "cam/escape.jpg": ("quarantined", Reason.PATH_ESCAPE),
    "cam/escape_dir": ("quarantined", Reason.PATH_ESCAPE),
    "cam/broken.jpg": ("quarantined", Reason.UNREADABLE),
    "cam/inside_link.jpg": ("quarantined", Reason.DUPLICATE_EXACT),  # same bytes as good.jpg
}


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    cam = root / "cam"
    (cam / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(jpeg(99))

    def put(rel: str, data: bytes) -> None:
        (root / rel).write_bytes(data)

    good = jpeg(1)
    put("cam/good.jpg", good)
    put("cam/exif_rot.JPG", jpeg(2, 40, 30, exif=camera_exif()))
    buf = io.BytesIO()
    Image.fromarray(np.full((20, 30), 77, np.uint8)).save(buf, "JPEG")
    put("cam/gray.jpeg", buf.getvalue())
    buf = io.BytesIO()
    Image.new("CMYK", (16, 16), (10, 200, 30, 0)).save(buf, "JPEG")
    put("cam/cmyk.jpg", buf.getvalue())
    put("cam/deep.png", png(np.arange(600, dtype=np.uint16).reshape(20, 30) * 100))
    put("cam/rgb16.png", cv2.imencode(".png", np.full((5, 6, 3), 40000, np.uint16))[1].tobytes())
    put("cam/façade_北京.jpg", jpeg(3))
    dup = jpeg(4)
    put("cam/dup_a.jpg", dup)
    put("cam/dup_b.jpg", dup)
    put("cam/sub/dup_c.jpg", dup)
    put("cam/empty.jpg", b"")
    full = jpeg(5, 200, 150)
    put("cam/truncated.jpg", full[: int(len(full) * 0.6)])
    put("cam/corrupt.jpg", b"\x00\x01" + np.random.default_rng(6).bytes(5000))
    put("cam/wrong.jpg", png(np.zeros((8, 8, 3), np.uint8)))
    put("cam/anim.gif", animated_gif())
    put("cam/anim_named.png", animated_gif())
    put("cam/notes.txt", b"delivery notes\n")
    put("cam/bomb.png", png(np.zeros((1200, 1000), np.uint8)))  # 1.2 MP, a few kB
    os.symlink(outside / "secret.jpg", cam / "escape.jpg")
    os.symlink(outside, cam / "escape_dir")
    os.symlink(cam / "gone.jpg", cam / "broken.jpg")
    os.symlink("good.jpg", cam / "inside_link.jpg")
    return root


def make_params(tmp_path: Path, source: Path, **overrides: object) -> Params:
    base = {
        "run.data_dir": str(tmp_path / "data"),
        "run.shard_size": 5,
        "collect.source": str(source),
        "collect.max_pixels": 1_000_000,
    }
    base.update({f"collect.{k}": v for k, v in overrides.items()})
    return Params().with_overrides(base)


def run(params: Params) -> tuple[pd.DataFrame, object]:
    ws = Workspace.from_params(params)
    summary = run_stage(CollectStage(), ws, params)
    return storage.read_table(ws.manifest_uri("collect")).set_index("rel_path"), summary


def tree_fingerprint(root: Path) -> dict[str, tuple[str, int]]:
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            p = Path(dirpath) / name
            if p.is_symlink():
                out[str(p)] = (os.readlink(p), 0)
            else:
                out[str(p)] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return out


def test_every_file_gets_its_expected_status_and_reason(tmp_path: Path, source: Path) -> None:
    before = tree_fingerprint(source)
    df, summary = run(make_params(tmp_path, source))
    got = {
        rel: (row.status, row.reason if isinstance(row.reason, str) else None)
        for rel, row in df.iterrows()
    }
    assert got == {k: (s, r.value if r else None) for k, (s, r) in EXPECTED.items()}
    # conservation: every file found is exactly one row, and the counts add up
    assert summary.input == len(EXPECTED) == summary.accepted + summary.quarantined
    assert summary.accepted == 8
    assert summary.reasons == {
        "corrupt": 1,
        "duplicate_exact": 3,
        "empty_file": 1,
        "extension_mismatch": 1,
        "path_escape": 2,
        "too_large": 1,
        "truncated": 1,
        "unreadable": 1,
        "unsupported_format": 3,
    }
    assert (df.loc[df.status == "quarantined", "quarantined_by"] == "collect").all()
    assert df.loc[df.status == "accepted", "reason"].isna().all()
    assert tree_fingerprint(source) == before  # raw data untouched


def test_manifest_columns_and_values(tmp_path: Path, source: Path) -> None:
    params = make_params(tmp_path, source)
    ws = Workspace.from_params(params)
    run_stage(CollectStage(), ws, params)
    raw = storage.read_table(ws.manifest_uri("collect"))
    assert list(raw.columns) == [
        *MANIFEST_SCHEMA.names,
        "collect_source_stamp",
        "collect_video_uri",
        "collect_frame_index",
        "collect_frame_time_s",
        "collect_video_note",
    ]
    assert raw[["collect_video_uri", "collect_frame_index"]].isna().all().all()  # no videos
    assert raw["source_uri"].is_monotonic_increasing
    df = raw.set_index("rel_path")
    rot = df.loc["cam/exif_rot.JPG"]
    assert rot.format == "JPEG" and (rot.width, rot.height) == (30, 40)
    assert rot.exif_orientation == 6
    assert (rot.camera_make, rot.camera_model) == ("Birch", "B7")
    assert rot.capture_time == "2024-06-01T21:05:09"
    assert bool(rot.has_gps)
    assert rot.gps_lat == pytest.approx(-(33 + 52 / 60 + 7.1688 / 3600), abs=1e-6)
    assert rot.gps_lon == pytest.approx(151 + 12 / 60 + 33.48 / 3600, abs=1e-6)
    assert df.loc["cam/cmyk.jpg", "mode"] == "CMYK" and df.loc["cam/cmyk.jpg", "channels"] == 4
    assert df.loc["cam/deep.png", "mode"].startswith("I;16")
    assert df.loc["cam/gray.jpeg", "channels"] == 1
    assert df.loc["cam/wrong.jpg", "reason_detail"] == "content is PNG, name says .jpg"
    assert "1000x1200 = 1200000 pixels" in df.loc["cam/bomb.png", "reason_detail"]
    # item ids are content hashes; the empty file's is the hash of nothing
    good = (source / "cam/good.jpg").read_bytes()
    assert df.loc["cam/good.jpg", "item_id"] == hashlib.sha256(good).hexdigest()
    assert df.loc["cam/empty.jpg", "item_id"] == hashlib.sha256(b"").hexdigest()
    assert df["item_id"].str.fullmatch(r"[0-9a-f]{64}").all()
    assert df.loc["cam/notes.txt", "item_id"] == hashlib.sha256(b"delivery notes\n").hexdigest()
    # duplicates point at the kept copy (first by sorted source URI)
    kept = df.loc["cam/dup_a.jpg", "source_uri"]
    assert df.loc["cam/dup_b.jpg", "duplicate_of"] == kept
    assert df.loc["cam/sub/dup_c.jpg", "duplicate_of"] == kept
    assert df.loc["cam/inside_link.jpg", "duplicate_of"] == df.loc["cam/good.jpg", "source_uri"]


def test_objects_are_byte_exact_copies_in_the_content_addressed_store(
    tmp_path: Path, source: Path
) -> None:
    params = make_params(tmp_path, source)
    df, summary = run(params)
    ws = Workspace.from_params(params)
    acc = df[df.status == Status.ACCEPTED]
    for rel, row in acc.iterrows():
        iid = row.item_id
        assert (
            row.object_uri
            == f"collect/objects/{iid[:2]}/{iid}{'.png' if rel.endswith('png') else '.jpg'}"
        )
        assert (Path(ws.resolve(row.object_uri))).read_bytes() == (source / rel).read_bytes()
    stored = sorted(p for p in (tmp_path / "data/collect/objects").rglob("*") if p.is_file())
    assert len(stored) == len(acc) == summary.details["objects_written"] == 8
    # duplicates keep the shared object's path; rejected files have none
    assert df.loc["cam/dup_b.jpg", "object_uri"] == df.loc["cam/dup_a.jpg", "object_uri"]
    assert pd.isna(df.loc["cam/corrupt.jpg", "object_uri"])
    assert pd.isna(df.loc["cam/wrong.jpg", "object_uri"])
    assert not (tmp_path / "data/collect/_work").exists()


def test_escaping_symlinks_are_never_read(
    tmp_path: Path, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    read: list[str] = []
    real_read = storage.read_bytes

    def spy(uri: str) -> bytes:
        read.append(uri)
        return real_read(uri)

    monkeypatch.setattr(storage, "read_bytes", spy)
    df, _ = run(make_params(tmp_path, source))
    from_source = [uri for uri in read if uri.startswith(str(source))]
    assert not any("escape" in uri for uri in from_source)
    assert len(from_source) == len(EXPECTED) - 2
    assert df.loc["cam/escape.jpg", "size_bytes"] is not None  # from the listing only
    assert "outside collect.source" in df.loc["cam/escape.jpg", "reason_detail"]


def test_pixel_limit_comes_from_params(tmp_path: Path, source: Path) -> None:
    df, _ = run(make_params(tmp_path, source, max_pixels=2_000_000))
    assert df.loc["cam/bomb.png", "status"] == "accepted"
    assert (df.loc["cam/bomb.png", "width"], df.loc["cam/bomb.png", "height"]) == (1000, 1200)


def test_extension_mismatch_can_be_accepted(tmp_path: Path, source: Path) -> None:
    df, _ = run(make_params(tmp_path, source, on_extension_mismatch="accept"))
    row = df.loc["cam/wrong.jpg"]
    assert row.status == "accepted" and row.format == "PNG"
    assert row.object_uri.endswith(f"{row.item_id}.png")  # named after the content


def test_rerun_does_no_decode_work_and_reuses_rows(
    tmp_path: Path, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = collect_mod.imaging.probe_and_decode

    def counting(data: bytes, max_pixels: int):  # type: ignore[no-untyped-def]
        calls.append(len(data))
        return real(data, max_pixels)

    monkeypatch.setattr(collect_mod.imaging, "probe_and_decode", counting)
    params = make_params(tmp_path, source)
    first, _ = run(params)
    decoded_first = len(calls)
    assert decoded_first == 16  # every non-empty readable file with an image extension

    calls.clear()
    second, summary = run(params)
    assert calls == []
    assert summary.details["reused"] == len(EXPECTED) - 1  # the unreadable one is retried
    pd.testing.assert_frame_equal(first.sort_index(), second.sort_index())

    # a changed file (and the symlink to it) is all that is inspected again
    (source / "cam/good.jpg").write_bytes(jpeg(42))
    os.utime(source / "cam/good.jpg", ns=(1, 1_000_000_000))
    calls.clear()
    third, summary = run(params)
    assert len(calls) == 2 and summary.details["to_process"] == 3  # + the unreadable retry
    assert third.loc["cam/inside_link.jpg", "item_id"] == third.loc["cam/good.jpg", "item_id"]
    assert third.loc["cam/good.jpg", "item_id"] != first.loc["cam/good.jpg", "item_id"]

    # deleting the kept copy promotes a duplicate without reading it
    (source / "cam/dup_a.jpg").unlink()
    calls.clear()
    fourth, summary = run(params)
    assert calls == []
    assert summary.input == len(EXPECTED) - 1
    assert summary.details["removed_since_last_run"] == 1
    assert fourth.loc["cam/dup_b.jpg", "status"] == "accepted"
    assert pd.isna(fourth.loc["cam/dup_b.jpg", "duplicate_of"])
    assert (
        fourth.loc["cam/sub/dup_c.jpg", "duplicate_of"] == fourth.loc["cam/dup_b.jpg", "source_uri"]
    )

    # other params: every readable image file left is inspected again
    calls.clear()
    run(make_params(tmp_path, source, max_pixels=5_000_000))
    assert len(calls) == 15


def test_rerun_rewrites_a_missing_object(tmp_path: Path, source: Path) -> None:
    params = make_params(tmp_path, source)
    df, _ = run(params)
    obj = Path(Workspace.from_params(params).resolve(df.loc["cam/gray.jpeg", "object_uri"]))
    obj.unlink()
    _, summary = run(params)
    assert obj.read_bytes() == (source / "cam/gray.jpeg").read_bytes()
    assert summary.details["objects_written"] == 1


def test_empty_source_and_missing_source(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    df, summary = run(make_params(tmp_path, empty))
    assert len(df) == 0 and summary.input == 0
    with pytest.raises(FileNotFoundError):
        run(make_params(tmp_path, tmp_path / "nope"))


def test_data_dir_inside_source_is_refused(tmp_path: Path, source: Path) -> None:
    params = Params().with_overrides(
        {"run.data_dir": str(source / "data"), "collect.source": str(source)}
    )
    with pytest.raises(ValueError, match=r"inside collect\.source"):
        CollectStage().plan(Workspace.from_params(params), params)


def test_remote_filesystem_paths(tmp_path: Path) -> None:
    """memory:// stands in for s3://: same code path, stamps from the listing, path escapes."""
    root = f"memory://collect-test-{tmp_path.name}"
    try:
        storage.write_bytes_atomic(f"{root}/src/a.jpg", jpeg(1))
        storage.write_bytes_atomic(f"{root}/src/b.jpg", jpeg(1))
        storage.write_bytes_atomic(f"{root}/src/x/../../evil.jpg", jpeg(2))
        params = Params().with_overrides(
            {"run.data_dir": f"{root}/data", "collect.source": f"{root}/src"}
        )
        ws = Workspace.from_params(params)
        run_stage(CollectStage(), ws, params)
        df = storage.read_table(ws.manifest_uri("collect")).set_index("rel_path")
        assert df.loc["a.jpg", "status"] == "accepted"
        assert df.loc["b.jpg", "reason"] == "duplicate_exact"
        escaped = [r for r in df.index if r.endswith("evil.jpg")]
        assert len(escaped) == 1 and df.loc[escaped[0], "reason"] == "path_escape"
        assert storage.exists(ws.resolve(df.loc["a.jpg", "object_uri"]))
        summary = run_stage(CollectStage(), ws, params)
        assert summary.details["reused"] == 3
    finally:
        storage.remove(root, recursive=True)
