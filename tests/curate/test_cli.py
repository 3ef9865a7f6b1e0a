"""``visionloop inspect DIR``: issues per file in the peer vocabulary, JSON and table."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from tests.curate import synthetic as S
from visionloop.cli import PLUGIN_COMMANDS, main
from visionloop.curate.inspect import inspect_folder


def _with_comment(jpeg: bytes, text: bytes) -> bytes:
    """The same JPEG with a COM segment after SOI: other bytes, identical pixels."""
    segment = b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text
    return jpeg[:2] + segment + jpeg[2:]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("inspect")
    rng = np.random.default_rng(99)
    scenes = [S.texture(rng, 400, 300) for _ in range(8)]
    files = {
        "a/clean_0.jpg": S.jpeg(scenes[0]),
        "a/clean_1.jpg": S.jpeg(scenes[1]),
        "a/blurry.jpg": S.jpeg(S.blurred(scenes[2], 5.0)),
        "a/dark.jpg": S.jpeg(S.darkened(scenes[3], 0.08)),
        "a/light.jpg": S.jpeg(S.washed_out(scenes[4], 0.05)),
        "a/flat.jpg": S.jpeg(S.flat(rng, 400, 300)),
        "b/gray.jpg": S.jpeg(cv2.cvtColor(scenes[5], cv2.COLOR_BGR2GRAY)),
        "b/tiny.jpg": S.jpeg(S.texture(rng, 40, 30)),
        "b/strip.png": S.png(S.texture(rng, 1000, 100)),
        "b/near_copy_of_6.jpg": S.jpeg(S.near_copy(scenes[6])),
        "b/orig_6.jpg": S.jpeg(scenes[6]),
        "c/exact_copy_of_clean_1.jpg": S.jpeg(scenes[1]),
        "c/other_metadata_7.jpg": _with_comment(S.jpeg(scenes[7]), b"edited by someone"),
        "c/orig_7.jpg": S.jpeg(scenes[7]),
        "c/broken.jpg": b"\xff\xd8\xff\xe0 not really a jpeg",
        "notes.txt": b"not an image",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


EXPECTED = {
    "a/clean_0.jpg": [],
    "a/clean_1.jpg": ["exact_duplicates"],
    "a/blurry.jpg": ["blurry"],
    "a/dark.jpg": ["dark"],
    "a/light.jpg": ["light"],
    "a/flat.jpg": ["low_information", "color_cast"],
    "b/gray.jpg": ["grayscale"],
    "b/tiny.jpg": ["odd_size"],
    "b/strip.png": ["odd_aspect_ratio"],
    "b/near_copy_of_6.jpg": ["near_duplicates"],
    "b/orig_6.jpg": ["near_duplicates"],
    "c/exact_copy_of_clean_1.jpg": ["exact_duplicates"],
    "c/other_metadata_7.jpg": ["exact_duplicates"],
    "c/orig_7.jpg": ["exact_duplicates"],
    "c/broken.jpg": ["corrupt"],
}


def test_inspect_json_names_each_file_and_its_issues(folder: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["inspect", str(folder), "--json", "--params", str(tmp_path / "none.yaml")]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert {f["file"]: f["issues"] for f in out["files"]} == EXPECTED
    assert out["skipped_files"] == ["notes.txt"]
    by_file = {f["file"]: f for f in out["files"]}
    # duplicate_of names the copy to keep: first by name for equal bytes or pixels, the
    # sharpest for near copies (the original, not the resized q=60 copy)
    assert by_file["c/exact_copy_of_clean_1.jpg"]["duplicate_of"] == "a/clean_1.jpg"
    assert by_file["c/other_metadata_7.jpg"]["duplicate_of"] == "c/orig_7.jpg"  # same pixels
    assert by_file["b/near_copy_of_6.jpg"]["duplicate_of"] == "b/orig_6.jpg"
    assert by_file["a/clean_1.jpg"]["duplicate_of"] is None
    assert by_file["b/tiny.jpg"]["width"] == 40 and by_file["b/tiny.jpg"]["height"] == 30
    assert 0 <= by_file["a/clean_0.jpg"]["metrics"]["blur"] <= 1
    assert by_file["c/broken.jpg"]["error"].startswith("corrupt")
    assert out["issue_counts"]["exact_duplicates"] == 4
    assert out["n_files"] == 15 and out["images_per_cpu_second"] > 0


def test_inspect_table_lists_files_with_issues(folder: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["inspect", str(folder), "--params", str(tmp_path / "none.yaml")]
    )
    assert result.exit_code == 0, result.output
    assert "a/blurry.jpg" in result.output and "blurry" in result.output
    assert "a/clean_0.jpg" not in result.output  # clean files only with --all
    assert "1 clean; issues:" in result.output
    everything = CliRunner().invoke(
        main, ["inspect", str(folder), "--all", "--params", str(tmp_path / "none.yaml")]
    )
    assert "a/clean_0.jpg" in everything.output


def test_thresholds_come_from_params(folder: Path, tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("curate:\n  blur_threshold: 0.0\n  odd_size_min_side: 10\n")
    result = CliRunner().invoke(main, ["inspect", str(folder), "--json", "--params", str(params)])
    issues = {f["file"]: f["issues"] for f in json.loads(result.output)["files"]}
    assert issues["a/blurry.jpg"] == [] and issues["b/tiny.jpg"] == []


def test_missing_folder_is_a_clean_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["inspect", str(tmp_path / "nope")])
    assert result.exit_code != 0 and "no such folder" in result.output


def test_registered_and_in_process_agree(folder: Path) -> None:
    assert PLUGIN_COMMANDS["inspect"] == "visionloop.curate.cli:inspect_command"
    one = inspect_folder(str(folder), workers=1).flags()
    two = inspect_folder(str(folder), workers=3).flags()
    assert one == two == {f: set(i) for f, i in EXPECTED.items()}
