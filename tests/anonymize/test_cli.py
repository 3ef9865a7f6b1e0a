from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from visionloop.anonymize.cli import output_rel, redact
from visionloop.anonymize.detectors import Regions, register_detector, unregister_detector
from visionloop.anonymize.publish import verify_stripped
from visionloop.cli import main


class WhiteFinder:
    """Finds pure-white pixels (one box around them)."""

    name = "white"
    version = "1"
    model_sha256 = "0" * 64
    licence = "MIT"

    def __init__(self, **kwargs: object) -> None:
        pass

    def detect(self, image_rgb: np.ndarray) -> Regions:
        ys, xs = np.nonzero((image_rgb == 255).all(axis=2))
        if len(ys) == 0:
            return Regions.empty()
        return Regions([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], [0.9], ["face"])


@pytest.fixture
def white() -> object:
    register_detector("white", WhiteFinder, clobber=True)
    yield
    unregister_detector("white")


def save(path: Path, px: np.ndarray, fmt: str, **kw: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(px).save(path, fmt, **kw)


@pytest.mark.parametrize(
    ("rel", "fmt", "expected"),
    [
        ("a/b.JPG", "jpeg", "a/b.JPG"),
        ("b.jpeg", "jpeg", "b.jpeg"),
        ("c.png", "png", "c.png"),
        ("d.webp", "png", "d.png"),
        ("e.tif", "png", "e.png"),
    ],
)
def test_output_names_keep_the_input_name(rel: str, fmt: str, expected: str) -> None:
    assert output_rel(rel, fmt) == expected


def test_redact_folder_keeps_paths_lists_quarantined_and_exits_1(
    tmp_path: Path, white: None
) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    rng = np.random.default_rng(0)
    px = rng.integers(0, 200, (60, 80, 3), dtype=np.uint8)
    face = px.copy()
    face[10:30, 10:30] = 255
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    save(src / "a.jpg", px, "JPEG", exif=exif.tobytes())
    save(src / "sub" / "b.png", face, "PNG")
    save(src / "sub" / "c.webp", px, "WEBP")
    (src / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 30)
    (src / "notes.txt").write_text("not an image")
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "broken.png").write_bytes(b"stale output of an earlier run")
    params = tmp_path / "params.yaml"
    params.write_text("anonymize:\n  detector: white\n  review_small_face: 30\n")
    audit, review = tmp_path / "audit.parquet", tmp_path / "review.parquet"
    tasks = tmp_path / "tasks.json"
    result = CliRunner().invoke(
        main,
        [
            "redact",
            str(src),
            str(out),
            "--audit",
            str(audit),
            "--params",
            str(params),
            "--review",
            str(review),
            "--label-studio",
            str(tasks),
        ],
    )
    assert result.exit_code == 1, result.output
    assert "quarantined sub/broken.png: corrupt" in result.output
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "a.jpg",
        "sub/b.png",
        "sub/c.png",
    ]
    data = (out / "a.jpg").read_bytes()
    assert verify_stripped(data) == [] and b"Canon" not in data
    with Image.open(io.BytesIO(data)) as im:
        assert im.size == (80, 60)
    a = pd.read_parquet(audit).set_index("rel_path")
    assert a.loc["a.jpg", "status"] == "accepted" and a.loc["a.jpg", "output_rel_path"] == "a.jpg"
    assert a.loc["sub/broken.png", "reason"] == "corrupt"
    assert a.loc["sub/c.webp", "output_rel_path"] == "sub/c.png"
    assert json.loads(a.loc["a.jpg", "regions"]) == []
    (region, *_) = json.loads(a.loc["sub/b.png", "regions"])
    x0, y0, x1, y1 = region["box"]  # the white square, grown by the dilation
    assert region["kind"] == "face" and x0 <= 10 and y0 <= 10 and x1 >= 30 and y1 >= 30
    assert json.loads(a.loc["a.jpg", "models"])[0]["detector"] == "white"
    with Image.open(out / "sub" / "b.png") as im:
        assert np.asarray(im)[10:30, 10:30].max() < 255  # pixelated, then filled (verify)
    rv = pd.read_parquet(review)
    assert sorted(rv["reason"]) == ["failed", "small_face"]
    assert len(json.loads(tasks.read_text())) == 2
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary == {"audit": str(audit), "files": 4, "published": 3}


def test_redact_fails_every_file_closed_when_the_detector_cannot_load(tmp_path: Path) -> None:
    src = tmp_path / "in"
    save(src / "a.png", np.zeros((20, 20, 3), np.uint8), "PNG")
    params = tmp_path / "params.yaml"
    params.write_text("anonymize:\n  detector: no_such_detector\n")
    result = CliRunner().invoke(
        redact,
        [
            str(src),
            str(tmp_path / "out"),
            "--audit",
            str(tmp_path / "a.parquet"),
            "--params",
            str(params),
        ],
    )
    assert result.exit_code == 1
    assert "anonymize_failed" in result.output and "unknown detector" in result.output
    assert not (tmp_path / "out" / "a.png").exists()
