from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from visionloop.config import Params, load_params

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_params_yaml_restates_every_default() -> None:
    """params.yaml must list every key (DVC tracks keys it can see) with the coded defaults."""
    shipped = yaml.safe_load((ROOT / "params.yaml").read_text())
    defaults = Params().model_dump(by_alias=True)
    for section, values in defaults.items():
        assert section in shipped, section
        if section == "import_annotations":
            continue  # sources name the sample exports; the coded default is none
        assert shipped[section] == values, section
    assert load_params(ROOT / "params.yaml").import_annotations.sources


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    assert load_params(tmp_path / "nope.yaml") == Params()


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"run": {"runner": "kubernetes"}}, "runner"),
        ({"curate": {"phash_radius": 99}}, "phash_radius"),
        ({"collect": {"typo_key": 1}}, "typo_key"),
        ({"unknown_stage": {}}, "unknown_stage"),
    ],
)
def test_bad_params_are_rejected_with_the_key(tmp_path: Path, data: dict, error: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValidationError, match=error):
        load_params(path)


def test_overrides_merge_dotted_keys_and_ignore_none() -> None:
    p = Params().with_overrides({"run.runner": "dask", "run.max_workers": None})
    assert p.run.runner == "dask"
    assert p.run.max_workers == Params().run.max_workers
