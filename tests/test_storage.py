from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from visionloop import storage


@pytest.fixture(params=["local", "memory"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    import uuid

    return f"memory://vl-{uuid.uuid4().hex}"


def test_bytes_round_trip_and_listing(root: str) -> None:
    storage.write_bytes_atomic(storage.join(root, "b", "2.bin"), b"two")
    storage.write_bytes_atomic(storage.join(root, "a", "1.bin"), b"one")
    files = list(storage.walk_files(root))
    assert [storage.relative_to(root, f) for f in files] == ["a/1.bin", "b/2.bin"]
    assert storage.read_bytes(files[0]) == b"one"
    assert storage.exists(files[1])
    storage.remove(storage.join(root, "b"), recursive=True)
    assert not storage.exists(files[1])


def test_tables_round_trip(root: str) -> None:
    df = pd.DataFrame({"item_id": ["a", "b"], "n": [1, 2]})
    uri = storage.join(root, "t.parquet")
    storage.write_table(uri, df)
    pd.testing.assert_frame_equal(storage.read_table(uri), df)


def test_local_atomic_write_leaves_no_temporaries(tmp_path: Path) -> None:
    target = tmp_path / "x" / "f.txt"
    storage.write_text_atomic(str(target), "hello")
    storage.write_text_atomic(str(target), "again")
    assert target.read_text() == "again"
    assert [p.name for p in target.parent.iterdir()] == ["f.txt"]
