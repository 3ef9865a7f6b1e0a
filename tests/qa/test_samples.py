"""QA on real third-party exports (../shared/samples/annotations, read in place): every folder a
reader imports is checked without a crash, and the samples' known quirks are not false alarms."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from visionloop.config import Params
from visionloop.qa.run import run_qa

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = next(
    (
        p
        for p in (
            ROOT.parent / "shared/samples/annotations",
            Path("/work/shared/samples/annotations"),
        )
        if p.is_dir()
    ),
    None,
)
pytestmark = pytest.mark.skipif(
    SAMPLES is None, reason="third-party samples (../shared/samples/annotations) are not present"
)
FOLDERS = sorted(
    str(p.relative_to(SAMPLES)) for p in (SAMPLES.glob("*/*") if SAMPLES else []) if p.is_dir()
)


def load(rel: str) -> pd.DataFrame:
    from visionloop.annotations.formats import AnnotationImportError, detect_format, get_reader

    assert SAMPLES is not None
    path = str(SAMPLES / rel)
    try:
        name, _why = detect_format(path)
        reader = get_reader(name)
    except (AnnotationImportError, KeyError) as e:
        pytest.skip(f"no reader for {rel} in this tree yet ({e})")
    logging.disable(logging.WARNING)
    try:
        return reader.load(path).annotations
    finally:
        logging.disable(logging.NOTSET)


@pytest.mark.parametrize("rel", FOLDERS)
def test_every_sample_is_checked_without_errors(rel: str) -> None:
    res = run_qa(load(rel), Params())
    assert res.summary["annotations"] > 0
    assert res.errors.empty, res.errors[["check", "reason"]].to_string()


def test_file_names_repeated_across_subsets_are_different_items() -> None:
    """CVAT project: Train, Test and Validation each hold an img0.jpg with the same box."""
    res = run_qa(load("cvat_images/project_multisubset"), Params())
    assert res.findings[res.findings["check"] == "duplicate_annotation"].empty
    assert res.summary["items"] > res.summary["annotations"] / 4


def test_a_declared_rle_box_one_pixel_off_is_tolerated() -> None:
    """COCO: the declared bbox [0, 0, 1, 9] vs the mask's extent [0, 0, 2, 10] (Datumaro's)."""
    df = load("coco/instances_rle_crowd")
    assert df["attributes"].fillna("").str.contains("declared_bbox").any()
    res = run_qa(df, Params())
    assert res.findings[res.findings["check"] == "mask_bbox_mismatch"].empty
    strict = Params().with_overrides({"validate.qa.mask_bbox_tolerance_px": 0.5})
    found = run_qa(df, strict).findings
    assert found[found["check"] == "mask_bbox_mismatch"]["value"].tolist() == [1.0]
