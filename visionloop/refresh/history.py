"""Read any stage output as it was in a snapshot, local (DVC cache) or remote (frozen copy).

``visionloop.snapshots.load_reference`` reads one table (the curate manifest); the diff and the
refresh stage need others (annotations, drift, embeddings, augmented items). A local snapshot
pins them in ``dvc.lock`` (``snapshots.read_at_tag`` reads the DVC cache); a snapshot of
outputs on ``s3://`` froze them under ``<data_dir>/snapshots/<tag>/`` and pinned them in
``remote-outputs.json`` at the tag.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd


class MissingInSnapshot(FileNotFoundError):
    """The snapshot holds no such output (an older snapshot, or a stage that did not run)."""


def resolve(ref: str, repo_dir: str | Path = ".") -> str:
    """A tag for ``ref`` (``latest`` or a tag); ValueError for ``none`` or no snapshot."""
    from visionloop import snapshots

    tag = snapshots.resolve_ref(ref, repo_dir)
    if tag is None:
        raise ValueError(f"{ref!r} names no snapshot")
    return tag


def read_bytes(ref: str, rel: str, repo_dir: str | Path = ".", data_dir: str = "data") -> bytes:
    """Bytes of ``<data_dir>/<rel>`` as of snapshot ``ref``."""
    from visionloop import snapshots, storage

    tag = resolve(ref, repo_dir)
    remote = snapshots._git(repo_dir, "show", f"{tag}:{snapshots.REMOTE_LOCK}", check=False)
    if remote.returncode == 0:
        lock = json.loads(remote.stdout)
        if rel not in lock.get("files", {}):
            raise MissingInSnapshot(f"{rel} is not part of snapshot {tag}")
        return storage.read_bytes(storage.join(lock["prefix"], rel))
    path = os.path.normpath(os.path.join(data_dir, rel))
    try:
        return snapshots.read_at_tag(tag, path, repo_dir)
    except snapshots.SnapshotError as exc:
        if "is not a DVC output" in str(exc) or "is not part of" in str(exc):
            raise MissingInSnapshot(str(exc)) from exc
        raise


def read_table(
    ref: str, rel: str, repo_dir: str | Path = ".", data_dir: str = "data"
) -> pd.DataFrame:
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(read_bytes(ref, rel, repo_dir, data_dir))).to_pandas()


def read_json(ref: str, rel: str, repo_dir: str | Path = ".", data_dir: str = "data") -> Any:
    return json.loads(read_bytes(ref, rel, repo_dir, data_dir))


def read_table_or_none(
    ref: str, rel: str, repo_dir: str | Path = ".", data_dir: str = "data"
) -> pd.DataFrame | None:
    try:
        return read_table(ref, rel, repo_dir, data_dir)
    except MissingInSnapshot:
        return None


__all__ = ["MissingInSnapshot", "read_bytes", "read_json", "read_table", "read_table_or_none"]
