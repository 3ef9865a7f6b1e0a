"""Dataset snapshots: git commits of dvc.lock, params.yaml and suites, tagged ``dataset-vN``.

This module talks to git and the DVC *command line* in a subprocess (never ``import dvc``), so the
domain library keeps its import boundary and both drivers (the Prefect flow, the CLI) share one
implementation. DVC holds one repo-wide lock: callers serialise the writes (see ``repo_lock``).
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import yaml

log = logging.getLogger(__name__)

TAG_PREFIX = "dataset-v"
_TAG_RE = re.compile(rf"^{re.escape(TAG_PREFIX)}(\d+)$")
# What a snapshot commit records besides the data hashes in dvc.lock.
SNAPSHOT_PATHS = ("dvc.lock", "params.yaml", "gx", "remote-outputs.json")
# Outputs on s3:// are not DVC-tracked: a snapshot freezes a copy of each stage's small files
# (manifests, tables, reports) under <data_dir>/snapshots/<tag>/ and pins them by sha256 in
# remote-outputs.json; the manifests pin the content-addressed images in turn.
REMOTE_LOCK = "remote-outputs.json"
_NOT_FROZEN = ("objects", "_work")


class SnapshotError(RuntimeError):
    """git or DVC refused a snapshot step; the message carries their output."""


@dataclass
class SnapshotResult:
    tag: str
    commit: str
    created: bool  # False when nothing changed since the latest snapshot
    pushed: bool
    details: dict[str, object] = field(default_factory=dict)


def _run(args: list[str], cwd: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise SnapshotError(
            f"`{' '.join(args)}` failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout}"
        )
    return proc


def dvc_executable() -> str:
    """The ``dvc`` beside this interpreter (the project venv), else the one on PATH."""
    local = Path(sys.executable).with_name("dvc")
    return str(local) if local.exists() else (shutil.which("dvc") or "dvc")


def _git(repo_dir: str | Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    identity: list[str] = []
    probe = _run(["git", "config", "user.email"], repo_dir, check=False)
    if not probe.stdout.strip():
        identity = ["-c", "user.name=visionloop", "-c", "user.email=visionloop@localhost"]
    return _run(["git", *identity, *args], repo_dir, check=check)


def _dvc(repo_dir: str | Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run([dvc_executable(), *args], repo_dir, check=check)


@contextlib.contextmanager
def repo_lock(
    repo_dir: str | Path, wait: bool = True, name: str = "visionloop.lock"
) -> Iterator[None]:
    """Serialise DVC and git writes between concurrent runs on one workspace.

    ``wait=False`` fails at once with a clear message instead of queueing. The lock is an
    ``flock``: the kernel releases it when its holder dies, so a killed run never leaves it.
    """
    path = Path(repo_dir) / ".dvc" / "tmp" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        flags = fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB)
        try:
            fcntl.flock(fh, flags)
        except BlockingIOError as exc:
            raise SnapshotError(
                f"another visionloop run holds {path}; wait for it to finish and retry"
            ) from exc
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run_lock(repo_dir: str | Path, wait: bool = False) -> contextlib.AbstractContextManager[None]:
    """Held for a whole pipeline run: two runs on one workspace would write the same outputs."""
    return repo_lock(repo_dir, wait=wait, name="visionloop-run.lock")


def list_tags(repo_dir: str | Path = ".") -> list[str]:
    """Snapshot tags, oldest first by version number."""
    proc = _git(repo_dir, "tag", "--list", f"{TAG_PREFIX}*", check=False)
    tags = [t for t in proc.stdout.split() if _TAG_RE.match(t)]
    return sorted(tags, key=lambda t: int(_TAG_RE.match(t).group(1)))  # type: ignore[union-attr]


def latest_tag(repo_dir: str | Path = ".") -> str | None:
    tags = list_tags(repo_dir)
    return tags[-1] if tags else None


def next_tag(repo_dir: str | Path = ".") -> str:
    latest = latest_tag(repo_dir)
    n = int(_TAG_RE.match(latest).group(1)) + 1 if latest else 1  # type: ignore[union-attr]
    return f"{TAG_PREFIX}{n}"


def resolve_ref(ref: str, repo_dir: str | Path = ".") -> str | None:
    """``latest`` -> newest snapshot tag, ``none`` -> None, anything else is a tag to check."""
    if ref == "none":
        return None
    if ref == "latest":
        return latest_tag(repo_dir)
    if ref not in list_tags(repo_dir):
        raise SnapshotError(f"no snapshot tag {ref!r}; known: {list_tags(repo_dir) or 'none'}")
    return ref


def commit_stage(stage: str, repo_dir: str | Path = ".") -> None:
    """Record a stage that ran outside ``dvc repro`` in ``dvc.lock`` (hashes deps and outs)."""
    _dvc(repo_dir, "commit", "--force", stage)


def _cache_path(repo_dir: Path, md5: str) -> Path:
    return repo_dir / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def _cached(root: Path, md5: str, what: str) -> Path:
    path = _cache_path(root, md5)
    if not path.exists():
        raise SnapshotError(f"{what} is not in the local DVC cache; run `dvc fetch --all-tags`")
    return path


def read_at_tag(tag: str, path: str, repo_dir: str | Path = ".") -> bytes:
    """Bytes of a DVC-tracked file as of a snapshot tag, from the DVC cache (pulled if needed).

    Reads ``dvc.lock`` at the tag from git, finds the stage output that holds ``path`` and looks
    its content hash up in the cache: no checkout, the workspace is left alone.
    """
    root = Path(repo_dir)
    lock = yaml.safe_load(_git(root, "show", f"{tag}:dvc.lock").stdout) or {}
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            out_path = out["path"].rstrip("/")
            if path != out_path and not path.startswith(out_path + "/"):
                continue
            md5 = out["md5"]
            if md5.endswith(".dir"):
                listing = json.loads(_cached(root, md5, f"{out_path}@{tag}").read_text())
                rel = path[len(out_path) + 1 :]
                entry = next((e for e in listing if e["relpath"] == rel), None)
                if entry is None:
                    raise SnapshotError(f"{path} is not part of {out_path} at {tag}")
                md5 = entry["md5"]
            return _cached(root, md5, f"{path}@{tag}").read_bytes()
    raise SnapshotError(f"{path} is not a DVC output at {tag}")


def load_reference(
    ref: str, repo_dir: str | Path = ".", data_dir: str = "data"
) -> pd.DataFrame | None:
    """The curated manifest of snapshot ``ref`` (``latest``, ``none`` or a tag), or None."""
    tag = resolve_ref(ref, repo_dir)
    if tag is None:
        return None
    remote = _git(repo_dir, "show", f"{tag}:{REMOTE_LOCK}", check=False)
    if remote.returncode == 0:
        from visionloop import storage

        lock = json.loads(remote.stdout)
        uri = storage.join(lock["prefix"], "curate", "manifest.parquet")
        return storage.read_table(uri)
    rel = os.path.normpath(os.path.join(data_dir, "curate", "manifest.parquet"))
    data = read_at_tag(tag, rel, repo_dir)
    return pq.read_table(io.BytesIO(data)).to_pandas()


def has_remote(repo_dir: str | Path = ".") -> bool:
    proc = _dvc(repo_dir, "remote", "list", check=False)
    return bool(proc.stdout.strip())


def _stage_files(data_dir: str, stages: tuple[str, ...]) -> dict[str, str]:
    """sha256 of every small output file of each stage (objects are pinned by the manifests)."""
    import hashlib

    from visionloop import storage

    files: dict[str, str] = {}
    for stage in stages:
        root = storage.join(data_dir, stage)
        if not storage.exists(root):
            continue
        for uri in storage.walk_files(root):
            rel = storage.relative_to(data_dir, uri)
            if rel.split("/")[1] in _NOT_FROZEN:
                continue
            files[rel] = hashlib.sha256(storage.read_bytes(uri)).hexdigest()
    return dict(sorted(files.items()))


def freeze_remote_outputs(
    data_dir: str, stages: tuple[str, ...], tag: str, repo_dir: str | Path = "."
) -> bool:
    """Copy each stage's small outputs to ``<data_dir>/snapshots/<tag>/`` and pin them.

    Returns False (and copies nothing) when they are identical to the ones already pinned.
    """
    from visionloop import storage

    files = _stage_files(data_dir, stages)
    lock_path = Path(repo_dir) / REMOTE_LOCK
    if lock_path.exists() and json.loads(lock_path.read_text()).get("files") == files:
        return False
    prefix = storage.join(data_dir, "snapshots", tag)
    for rel in files:
        storage.write_bytes_atomic(
            storage.join(prefix, rel), storage.read_bytes(storage.join(data_dir, rel))
        )
    lock = {"data_dir": data_dir, "snapshot": tag, "prefix": prefix, "files": files}
    lock_path.write_text(json.dumps(lock, indent=2) + "\n")
    return True


def cut_snapshot(
    repo_dir: str | Path = ".",
    message: str = "",
    push: bool | None = None,
    remote_data_dir: str | None = None,
    stages: tuple[str, ...] = (),
) -> SnapshotResult:
    """Commit ``dvc.lock``, ``params.yaml`` and the suites to git, tag ``dataset-vN`` and push.

    With ``remote_data_dir`` (outputs on s3://), the stages' small outputs are frozen under
    ``<data_dir>/snapshots/<tag>/`` and pinned in ``remote-outputs.json`` instead of DVC.
    When nothing changed since the latest snapshot, no commit or tag is made and the latest tag
    is returned with ``created=False``.
    """
    root = Path(repo_dir)
    tag = next_tag(root)
    if remote_data_dir is not None:
        freeze_remote_outputs(remote_data_dir, stages, tag, root)
    paths = [p for p in SNAPSHOT_PATHS if (root / p).exists()]
    _git(root, "add", "--", *paths)
    staged = _git(root, "diff", "--cached", "--quiet", "--", *paths, check=False).returncode != 0
    latest = latest_tag(root)
    if not staged and latest is not None:
        head = _git(root, "rev-parse", "HEAD").stdout.strip()
        at_tag = _git(root, "rev-list", "-n", "1", latest).stdout.strip()
        if head == at_tag or not _lock_differs(root, latest):
            return SnapshotResult(latest, at_tag, created=False, pushed=False)
    body = message or f"Snapshot {tag}"
    title = f"{tag}: dataset snapshot"
    _git(root, "commit", "--allow-empty", "-m", title, "-m", body, "--", *paths)
    _git(root, "tag", "-a", tag, "-m", body)
    commit = _git(root, "rev-parse", "HEAD").stdout.strip()
    pushed = False
    if push is None:
        push = has_remote(root)
    if push:
        _dvc(root, "push")
        pushed = True
    return SnapshotResult(tag, commit, created=True, pushed=pushed)


def _lock_differs(root: Path, tag: str) -> bool:
    paths = ("dvc.lock", "params.yaml", REMOTE_LOCK)
    proc = _git(root, "diff", "--quiet", tag, "--", *paths, check=False)
    return proc.returncode != 0
