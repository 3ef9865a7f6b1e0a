"""One stage signature for both drivers (the Prefect flow and ``dvc repro`` via the CLI).

A stage is three plain functions over a workspace:

- ``plan(ws, params) -> list[Shard]``: decide what to do; writes the stage's work list to
  ``<data>/<stage>/_work/input.parquet`` and cuts it into shards of ``run.shard_size`` rows.
- ``process(ws, params, shard) -> str``: do the pixel work for one shard; writes objects to the
  content-addressed store and one part file, returns the part's URI. Idempotent: a rerun
  rewrites the same part.
- ``finalize(ws, params, parts) -> StageSummary``: merge the parts into the stage's outputs
  (atomically), drop the work folder and return the counts.

Shards are small, picklable descriptions (a URI and a row range), so the same shard can run in
a thread, a process or a Dask worker on another machine.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import pandas as pd

from visionloop import storage
from visionloop.config import Params

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Workspace:
    """Where every stage's outputs live: ``<data_dir>/<stage>/...`` (local or ``s3://``)."""

    data_dir: str

    @classmethod
    def from_params(cls, params: Params) -> Workspace:
        return cls(data_dir=params.run.data_dir)

    def stage_dir(self, stage: str) -> str:
        return storage.join(self.data_dir, stage)

    def uri(self, stage: str, *parts: str) -> str:
        return storage.join(self.data_dir, stage, *parts)

    def manifest_uri(self, stage: str) -> str:
        return self.uri(stage, "manifest.parquet")

    def work_uri(self, stage: str, *parts: str) -> str:
        return self.uri(stage, "_work", *parts)

    def resolve(self, relative: str) -> str:
        """Turn a data-root-relative path stored in a manifest into a URI."""
        return storage.join(self.data_dir, relative)


@dataclass(frozen=True)
class Shard:
    stage: str
    index: int
    input_uri: str  # the stage's work list (Parquet)
    start: int  # row range [start, stop) of the work list
    stop: int

    @property
    def part_uri(self) -> str:
        return storage.join(storage.dirname(self.input_uri), f"part-{self.index:05d}.parquet")

    def rows(self) -> pd.DataFrame:
        return storage.read_table(self.input_uri).iloc[self.start : self.stop]


@dataclass
class StageSummary:
    """What a stage did, written to ``<data>/<stage>/summary.json`` (a DVC metric)."""

    stage: str
    input: int = 0
    accepted: int = 0
    quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> StageSummary:
        return cls(**json.loads(text))


class Stage(Protocol):
    name: str

    def plan(self, ws: Workspace, params: Params) -> list[Shard]: ...

    def process(self, ws: Workspace, params: Params, shard: Shard) -> str: ...

    def finalize(self, ws: Workspace, params: Params, parts: list[str]) -> StageSummary: ...


def write_work_list(ws: Workspace, stage: str, rows: pd.DataFrame, shard_size: int) -> list[Shard]:
    """Write the rows a stage must process and cut them into shards (the usual ``plan`` tail)."""
    storage.remove(ws.uri(stage, "_work"), recursive=True)
    input_uri = ws.work_uri(stage, "input.parquet")
    storage.write_table(input_uri, rows.reset_index(drop=True))
    n = len(rows)
    return [
        Shard(stage, i, input_uri, start, min(start + shard_size, n))
        for i, start in enumerate(range(0, n, shard_size))
    ]


def read_parts(parts: Sequence[str]) -> pd.DataFrame:
    frames = [storage.read_table(p) for p in parts]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def write_summary(ws: Workspace, summary: StageSummary) -> None:
    storage.write_text_atomic(ws.uri(summary.stage, "summary.json"), summary.to_json() + "\n")


def read_summary(ws: Workspace, stage: str) -> StageSummary | None:
    uri = ws.uri(stage, "summary.json")
    if not storage.exists(uri):
        return None
    return StageSummary.from_json(storage.read_text(uri))


def clear_work(ws: Workspace, stage: str) -> None:
    storage.remove(ws.uri(stage, "_work"), recursive=True)


# Stages by name, as dotted paths so that importing the registry stays cheap.
STAGE_REGISTRY: dict[str, str] = {
    "collect": "visionloop.stages.collect:CollectStage",
    "anonymize": "visionloop.stages.anonymize:AnonymizeStage",
    "curate": "visionloop.stages.curate:CurateStage",
    "import_annotations": "visionloop.stages.import_annotations:ImportAnnotationsStage",
    "validate": "visionloop.stages.validate:ValidateStage",
    "refresh": "visionloop.stages.refresh:RefreshStage",
}


def get_stage(name: str) -> Stage:
    if name not in STAGE_REGISTRY:
        raise KeyError(f"unknown stage {name!r}; known: {', '.join(STAGE_REGISTRY)}")
    module, cls = STAGE_REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)()


def run_stage(
    stage: Stage,
    ws: Workspace,
    params: Params,
    mapper: Callable[[Callable[[Shard], str], list[Shard]], Iterable[str]] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> StageSummary:
    """Run a whole stage in this process: plan, process every shard, finalize.

    ``mapper`` defaults to a bounded thread pool of ``run.max_workers``; ``progress`` is called
    with (shards done, shards total).
    """
    shards = stage.plan(ws, params)
    log.info("%s: %d shard(s)", stage.name, len(shards))

    def work(shard: Shard) -> str:
        return stage.process(ws, params, shard)

    parts: list[str] = []
    if mapper is None:
        with ThreadPoolExecutor(max_workers=params.run.max_workers) as pool:
            for part in pool.map(work, shards):
                parts.append(part)
                if progress:
                    progress(len(parts), len(shards))
    else:
        parts = list(mapper(work, shards))
    summary = stage.finalize(ws, params, parts)
    write_summary(ws, summary)
    return summary
