"""The same stages on s3:// (a real S3 endpoint on loopback): source and outputs alike."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from visionloop import storage
from visionloop.config import Params
from visionloop.stages.base import Workspace, get_stage, run_stage

pytestmark = pytest.mark.s3


@pytest.fixture()
def bucket(s3_endpoint: str) -> str:
    import uuid

    import s3fs

    name = f"vl-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint}).mkdir(name)
    return name


def test_collect_and_anonymize_on_s3_match_a_local_run(bucket: str, tmp_path: Path) -> None:
    from visionloop.sample import build_sample

    build_sample(f"s3://{bucket}/source", n=24, seed=11)
    build_sample(str(tmp_path / "source"), n=24, seed=11)
    results = {}
    for name, source, data in [
        ("s3", f"s3://{bucket}/source/images", f"s3://{bucket}/data"),
        ("local", str(tmp_path / "source" / "images"), str(tmp_path / "data")),
    ]:
        params = Params().with_overrides(
            {"collect.source": source, "run.data_dir": data, "run.shard_size": 8}
        )
        ws = Workspace.from_params(params)
        for stage in ("collect", "anonymize"):
            run_stage(get_stage(stage), ws, params)
        manifest = storage.read_table(ws.manifest_uri("anonymize"))
        results[name] = manifest.set_index("rel_path")[["item_id", "status", "reason"]]
        for rel in manifest["anonymize_object_uri"].dropna():
            assert storage.exists(ws.resolve(rel)), rel
    assert results["s3"].fillna("").equals(results["local"].fillna(""))
    truth = json.loads((tmp_path / "source" / "truth.json").read_text())
    assert len(results["s3"]) == len(truth["files"])
