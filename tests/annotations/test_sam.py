"""SA-1B JSON: compressed RLE masks, validated; empty or mis-sized masks reported."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from visionloop.annotations.formats import detect_format
from visionloop.annotations.formats.coco import mask_to_rle, rle_to_mask
from visionloop.annotations.formats.sam import load_sam, sam_to_annotations


def doc(*masks: dict, w: int = 8, h: int = 6) -> dict:
    anns = [{"id": i, "segmentation": m, "bbox": [0, 0, 1, 1], "predicted_iou": 0.5}
            for i, m in enumerate(masks)]  # fmt: skip
    return {
        "image": {"image_id": 1, "width": w, "height": h, "file_name": "a.jpg"},
        "annotations": anns,
    }


def test_masks_boxes_attributes_and_errors() -> None:
    mask = np.zeros((6, 8), dtype=bool)
    mask[1:3, 2:5] = True
    empty = mask_to_rle(np.zeros((6, 8), dtype=bool))
    wrong = mask_to_rle(np.ones((8, 6), dtype=bool))
    result = sam_to_annotations(
        doc(mask_to_rle(mask), empty, wrong, {"size": [6, 8], "counts": "zz"})
    )
    df = result.annotations
    assert len(df) == 1 and df["shape"].iloc[0] == "mask" and df["category"].iloc[0] == "object"
    assert df[["bbox_x", "bbox_y", "bbox_w", "bbox_h"]].iloc[0].tolist() == [2, 1, 3, 2]
    assert (rle_to_mask(json.loads(df["segmentation"].iloc[0])) == mask).all()
    attrs = json.loads(df["attributes"].iloc[0])
    assert attrs == {"declared_bbox": [0, 0, 1, 1], "predicted_iou": 0.5}
    assert [(e.code, e.pointer) for e in result.errors] == [
        ("empty_mask", "/annotations/1/segmentation"),
        ("rle_size_mismatch", "/annotations/2/segmentation"),
        ("invalid_rle", "/annotations/3/segmentation"),
    ]


def test_folder_detection(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(doc()))
    assert detect_format(str(tmp_path))[0] == "sam"
    assert len(load_sam(str(tmp_path)).images) == 1
