"""Pipeline benchmarks (issue 7): throughput, Prefect bookkeeping, snapshot time, Dask scaling.

Every figure is printed next to a baseline measured in the same run, on the same files:

1. collect + curate metrics on generated 1080p JPEGs (natural-looking: smooth colour fields,
   texture, grain, hard-edged shapes; quality 90, ~510 kB): ``run_stage(CollectStage)`` then
   the curate metric pass (``decode_for_metrics`` + ``compute_metrics`` per accepted image, as
   ``CurateStage.process`` does, run as a stage over shards; no face detection in between),
   against a plain ``cv2.imdecode`` of the same files with the same number of threads (the
   practical limit). Baseline and pipeline alternate (``--repeat`` times, fresh workspace each
   time, one more baseline at the end) and the best of each counts. Target: >= 0.5. Also CPU
   seconds per image: on a shared machine the wall ratio mostly measures which phase got the
   cores, the CPU ratio is what an idle machine would show. And the no-change rerun of collect.
2. Prefect bookkeeping: the same two stages through the flow machinery (``tasks/stage.py``'s
   plan / process-shard / finalize tasks, shards mapped on a ``ThreadPoolTaskRunner`` inside a
   ``@flow`` against a Prefect server) against ``run_stage`` on the same inputs, alternately,
   best of ``--repeat``; at the configured shard size and at a quarter of it (4x the task
   runs), which separates the cost per flow run from the cost per task run (wall, and CPU of
   this process + the server when this run started it). Task runs are counted on the server,
   computed per 10,000 images from the shard size, and the overhead is projected to 10,000.
   Target: < 5 %.
3. Snapshot: ``dvc commit`` of a data dir holding the N collected images (the collect stage's
   outputs) in a throw-away git + DVC repo, git commit + tag, and ``dvc push`` to an S3
   endpoint on loopback (a moto server); baselines: a plain copy + md5 of the same files, and
   a plain s3fs upload of them to a fresh endpoint. Also the no-change re-snapshot.
4. Dask: the curate metric pass over shards as Prefect tasks on ``DaskTaskRunner`` with a
   ``LocalCluster`` of 1, then 2 worker processes (``threads_per_worker=1``, workers warmed up
   before the clock starts): speed-up, and the cores the workers actually got.

Each part runs in a child process (clean peak RSS: ``ru_maxrss`` of the child, and of its own
children: dvc, Dask workers). Wall time is ``time.perf_counter``; CPU is ``getrusage``.

    python bench/bench_pipeline.py            # N = 500 images (a few minutes)
    python bench/bench_pipeline.py --full     # N = 10,000 (the issue's size)
    python bench/bench_pipeline.py --n 200 --parts collect,prefect --workdir /tmp/vl-bench

A Prefect server is used when PREFECT_API_URL answers; else one is started for the run (own
PREFECT_HOME and port, stopped at the end).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from visionloop import storage  # noqa: E402
from visionloop.config import Params  # noqa: E402
from visionloop.curate import flag_quality  # noqa: E402
from visionloop.curate.metrics import compute_metrics, decode_for_metrics  # noqa: E402
from visionloop.stages.base import (  # noqa: E402
    STAGE_REGISTRY,
    Shard,
    StageSummary,
    Workspace,
    clear_work,
    read_parts,
    run_stage,
    write_work_list,
)
from visionloop.stages.collect import CollectStage  # noqa: E402

PARTS = ("collect", "prefect", "snapshot", "dask")
METRICS_STAGE = "bench_curate_metrics"
WIDTH, HEIGHT, QUALITY = 1920, 1080, 90

# ------------------------------------------------------------------------------------------
# Measuring


def _rusage(who: int = resource.RUSAGE_SELF) -> resource.struct_rusage:
    return resource.getrusage(who)


@contextmanager
def measured(out: dict[str, Any], key: str) -> Iterator[None]:
    """Wall and CPU seconds (this process, all threads, plus waited-for children)."""
    s, c = _rusage(), _rusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    yield
    wall = time.perf_counter() - t0
    s2, c2 = _rusage(), _rusage(resource.RUSAGE_CHILDREN)
    cpu = (s2.ru_utime - s.ru_utime) + (s2.ru_stime - s.ru_stime)
    child = (c2.ru_utime - c.ru_utime) + (c2.ru_stime - c.ru_stime)
    out[key] = {"wall_s": round(wall, 3), "cpu_s": round(cpu + child, 3)}


def peak_rss_mb() -> dict[str, float]:
    """Peak resident set of this process and of its largest waited-for descendant (Linux: kB)."""
    return {
        "self_mb": round(_rusage().ru_maxrss / 1024, 1),
        "children_mb": round(_rusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
    }


# ------------------------------------------------------------------------------------------
# Inputs: deterministic natural-looking 1080p JPEGs


def natural_image(seed: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """Smooth colour fields + mid-frequency texture + grain + a few hard-edged shapes (BGR).

    Compresses like a photo (~510 kB at quality 90), unlike pure noise (incompressible) or
    flat colour (tiny files that decode unrealistically fast). Integer maths at half size,
    then one upscale: ~16 ms per image, so 10,000 inputs take minutes, not an hour."""
    rng = np.random.default_rng(seed)
    half_w, half_h = width // 2, height // 2
    base = rng.integers(30, 226, (6, 10, 3), dtype=np.uint8)
    img = cv2.resize(base, (half_w, half_h), interpolation=cv2.INTER_LINEAR).astype(np.int16)
    texture = rng.integers(-30, 31, (height // 16, width // 16, 3), dtype=np.int16)
    img += cv2.resize(texture, (half_w, half_h), interpolation=cv2.INTER_LINEAR)
    img += rng.integers(-12, 13, (half_h, half_w, 1), dtype=np.int16)  # grain
    half = np.clip(img, 0, 255).astype(np.uint8)
    out = cv2.resize(half, (width, height), interpolation=cv2.INTER_NEAREST)
    for _ in range(int(rng.integers(6, 16))):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        if rng.random() < 0.5:
            corner = (x + int(rng.integers(40, 400)), y + int(rng.integers(40, 300)))
            cv2.rectangle(out, (x, y), corner, color, -1)
        else:
            cv2.circle(out, (x, y), int(rng.integers(20, 200)), color, -1, lineType=cv2.LINE_AA)
    return out


def image_path(src: Path, i: int) -> Path:
    return src / f"cam_{i % 4}" / f"img_{i:05d}.jpg"


def _write_one(job: tuple[str, int]) -> int:
    src, i = Path(job[0]), job[1]
    path = image_path(src, i)
    ok, buf = cv2.imencode(".jpg", natural_image(i), [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
    if not ok:
        raise RuntimeError(f"cannot encode image {i}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(buf.tobytes())
    tmp.replace(path)
    return len(buf)


def generate(src: Path, n: int, workers: int) -> dict[str, Any]:
    """Write images 0..n-1 below ``src`` (kept between runs of the same --workdir)."""
    todo = [(str(src), i) for i in range(n) if not image_path(src, i).exists()]
    t0 = time.perf_counter()
    if todo:
        with Pool(workers) as pool:
            pool.map(_write_one, todo, chunksize=8)
    files = sorted(src.rglob("*.jpg"))
    extra = [f for f in files if int(f.stem.split("_")[1]) >= n]
    for f in extra:  # a bigger earlier run: keep exactly n
        f.unlink()
    size = sum(image_path(src, i).stat().st_size for i in range(n))
    return {
        "images": n,
        "generated": len(todo),
        "generate_s": round(time.perf_counter() - t0, 1),
        "mean_kb": round(size / n / 1024, 1),
        "total_mb": round(size / 2**20, 1),
    }


# ------------------------------------------------------------------------------------------
# The curate metric pass as a stage (what CurateStage.process does per image), so the same
# shard work runs under run_stage, Prefect tasks and Dask.


def measure_object(data: bytes, width: Any, height: Any, work_max_side: int) -> dict[str, Any]:
    w = None if pd.isna(width) else int(width)
    h = None if pd.isna(height) else int(height)
    image, factor = decode_for_metrics(data, w, h, work_max_side=work_max_side)
    rec = compute_metrics(image, work_max_side, "bgr")
    rec["decode_factor"] = factor
    return rec


class MetricsPassStage:
    """Curate's metric pass over collect's accepted objects (no face detection in between)."""

    name = METRICS_STAGE

    def plan(self, ws: Workspace, params: Params) -> list[Shard]:
        df = storage.read_table(ws.manifest_uri("collect"))
        acc = df.loc[df["status"] == "accepted", ["item_id", "object_uri", "width", "height"]]
        return write_work_list(ws, self.name, acc, params.run.shard_size)

    def process(self, ws: Workspace, params: Params, shard: Shard) -> str:
        side = params.curate.work_max_side
        records = []
        for row in shard.rows().itertuples(index=False):
            data = storage.read_bytes(ws.resolve(row.object_uri))
            rec = measure_object(data, row.width, row.height, side)
            records.append({"item_id": row.item_id, **rec})
        storage.write_table(shard.part_uri, pd.DataFrame.from_records(records))
        return shard.part_uri

    def finalize(self, ws: Workspace, params: Params, parts: list[str]) -> StageSummary:
        features = read_parts(parts)
        flags = flag_quality(features, params.curate)
        out = ws.uri(self.name, "features.parquet")
        storage.write_table(out, pd.concat([features, flags], axis=1))
        clear_work(ws, self.name)
        return StageSummary(
            stage=self.name,
            input=len(features),
            accepted=len(features),
            outputs=[out],
            details={"flagged": {c: int(flags[c].sum()) for c in flags.columns}},
        )


def register_metrics_stage() -> None:
    """Let ``get_stage`` (and so tasks/stage.py's tasks) find the bench stage by name."""
    STAGE_REGISTRY[METRICS_STAGE] = f"{__name__}:MetricsPassStage"


def bench_params(
    workdir: Path, data: str, shard_size: int, max_workers: int, source: str = "src"
) -> Params:
    return Params().with_overrides(
        {
            "run.data_dir": str(workdir / data),
            "run.shard_size": shard_size,
            "run.max_workers": max_workers,
            "collect.source": str(workdir / source),
        }
    )


def tree_cpu_s(pid: int) -> float:
    """CPU seconds used so far by ``pid`` and every live descendant (Linux /proc)."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == parent and p not in tree]
        tree.update(kids)
        frontier.extend(kids)
    return sum(cpu.get(p, 0.0) for p in tree)


def run_plain(params: Params) -> dict[str, StageSummary]:
    ws = Workspace.from_params(params)
    storage.remove(ws.data_dir, recursive=True)
    return {
        "collect": run_stage(CollectStage(), ws, params),
        METRICS_STAGE: run_stage(MetricsPassStage(), ws, params),
    }


# ------------------------------------------------------------------------------------------
# Part 1: collect + curate metrics vs plain decode


def plain_decode(files: list[Path], threads: int) -> int:
    def one(path: Path) -> int:
        image = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
        return int(image.shape[0])

    if threads == 1:
        return sum(map(one, files))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return sum(pool.map(one, files))


def part_collect(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(args.workdir)
    files = sorted((workdir / "src").rglob("*.jpg"))
    n = len(files)
    params = bench_params(workdir, "ws_collect", args.shard_size, args.workers)
    ws = Workspace.from_params(params)
    t: dict[str, Any] = {}
    with measured(t, "decode_1thread"):
        plain_decode(files, 1)
    # Alternate baseline and pipeline (fresh workspace each time), then one more baseline:
    # best of each, so a burst of load from elsewhere does not decide the ratio.
    for i in range(args.repeat):
        with measured(t, f"decode_{i}"):
            plain_decode(files, args.workers)
        storage.remove(ws.data_dir, recursive=True)
        with measured(t, f"collect_{i}"):
            summary = run_stage(CollectStage(), ws, params)
        with measured(t, f"metrics_{i}"):
            metrics = run_stage(MetricsPassStage(), ws, params)
        if summary.accepted != n or metrics.input != n:
            raise RuntimeError(f"unexpected counts: {summary}, {metrics}")
    with measured(t, f"decode_{args.repeat}"):
        plain_decode(files, args.workers)
    with measured(t, "collect_rerun"):
        rerun = run_stage(CollectStage(), ws, params)
    if rerun.details["to_process"] != 0:
        raise RuntimeError(f"the rerun inspected files again: {rerun.details}")
    runs = range(args.repeat)
    base = min(t[f"decode_{i}"]["wall_s"] for i in range(args.repeat + 1))
    base_cpu = min(t[f"decode_{i}"]["cpu_s"] for i in range(args.repeat + 1))
    pipe = min(t[f"collect_{i}"]["wall_s"] + t[f"metrics_{i}"]["wall_s"] for i in runs)
    pipe_cpu = min(t[f"collect_{i}"]["cpu_s"] + t[f"metrics_{i}"]["cpu_s"] for i in runs)
    collect = min(t[f"collect_{i}"]["wall_s"] for i in runs)
    metric = min(t[f"metrics_{i}"]["wall_s"] for i in runs)
    return {
        "images": n,
        "threads": args.workers,
        "timings": t,
        "pipeline_images_per_s": round(n / pipe, 1),
        "collect_images_per_s": round(n / collect, 1),
        "metrics_images_per_s": round(n / metric, 1),
        "decode_images_per_s": round(n / base, 1),
        "decode_1thread_images_per_s": round(n / t["decode_1thread"]["wall_s"], 1),
        "ratio_vs_decode": round(base / pipe, 3),
        "ratio_vs_decode_1thread": round(t["decode_1thread"]["wall_s"] / pipe, 3),
        "cpu_ms_per_image": round(1000 * pipe_cpu / n, 2),
        "collect_cpu_ms_per_image": round(
            1000 * min(t[f"collect_{i}"]["cpu_s"] for i in runs) / n, 2
        ),
        "metrics_cpu_ms_per_image": round(
            1000 * min(t[f"metrics_{i}"]["cpu_s"] for i in runs) / n, 2
        ),
        "decode_cpu_ms_per_image": round(1000 * base_cpu / n, 2),
        "cpu_ratio": round(base_cpu / pipe_cpu, 3),
        "rerun_s": t["collect_rerun"]["wall_s"],
        "flagged": metrics.details["flagged"],
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "rss": peak_rss_mb(),
    }


# ------------------------------------------------------------------------------------------
# Part 2: Prefect bookkeeping


def task_runs_per_stage(images: int, shard_size: int, extra: int) -> int:
    return math.ceil(images / shard_size) + extra


def part_prefect(args: argparse.Namespace) -> dict[str, Any]:
    from prefect import flow, unmapped
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.task_runners import ThreadPoolTaskRunner

    from tasks.stage import finalize_stage, plan_stage, process_shard

    register_metrics_stage()
    workdir = Path(args.workdir)

    @flow(name="bench-pipeline", persist_result=False)
    def bench_flow(data_dir: str, shard_size: int, source: str = "src") -> str:
        """The flow machinery of flows/pipeline.py (run_one_stage) for collect + metrics."""
        from prefect.runtime import flow_run

        params = bench_params(workdir, data_dir, shard_size, args.workers, source)
        with ThreadPoolTaskRunner(max_workers=params.run.max_workers) as runner:
            for name in ("collect", METRICS_STAGE):
                shards = plan_stage(name, params)
                futures = runner.map(process_shard, {"shard": shards, "params": unmapped(params)})
                finalize_stage(name, params, [f.result() for f in futures])
        return str(flow_run.id)

    files = sorted((workdir / "src").rglob("*.jpg"))
    n = len(files)
    warm_src = workdir / "src_warmup"
    shutil.rmtree(warm_src, ignore_errors=True)
    warm_src.mkdir()
    for f in files[:8]:
        shutil.copy2(f, warm_src / f.name)
    server = os.environ.get("BENCH_PREFECT_SERVER_PID")

    def prefect_run(key: str, shard_size: int) -> dict[str, Any]:
        t: dict[str, Any] = {}
        storage.remove(str(workdir / "ws_prefect"), recursive=True)
        before = tree_cpu_s(int(server)) if server else None
        with measured(t, key):
            run_id = bench_flow("ws_prefect", shard_size)
        out = {**t[key], "run_id": run_id}
        if before is not None and server:
            out["server_cpu_s"] = round(tree_cpu_s(int(server)) - before, 3)
        return out

    def plain_run(key: str, shard_size: int) -> dict[str, Any]:
        t: dict[str, Any] = {}
        before = tree_cpu_s(int(server)) if server else None
        with measured(t, key):
            run_plain(bench_params(workdir, "ws_plain", shard_size, args.workers))
        if before is not None and server:  # the server's background work, nothing of ours
            t[key]["server_cpu_s"] = round(tree_cpu_s(int(server)) - before, 3)
        return t[key]

    t: dict[str, Any] = {}
    with measured(t, "warmup_flow"):  # imports, client, flow registration: once per process
        storage.remove(str(workdir / "ws_warmup"), recursive=True)
        bench_flow("ws_warmup", args.shard_size, "src_warmup")
    # The configured shard size, and a quarter of it (4x the task runs on the same images):
    # the difference separates the per-flow-run cost from the per-task-run cost.
    sizes = {"std": args.shard_size, "fine": max(1, args.shard_size // 4)}
    for i in range(args.repeat):
        for cfg, size in sizes.items():
            t[f"plain_{cfg}_{i}"] = plain_run(f"plain_{cfg}_{i}", size)
            t[f"prefect_{cfg}_{i}"] = prefect_run(f"prefect_{cfg}_{i}", size)
    # the two drivers must leave the same outputs behind
    a = storage.read_table(str(workdir / "ws_plain/collect/manifest.parquet"))
    b = storage.read_table(str(workdir / "ws_prefect/collect/manifest.parquet"))
    stamp = ["collect_source_stamp"]
    same = a.drop(columns=stamp).equals(b.drop(columns=stamp))

    def expected_runs(size: int) -> int:
        return 2 * task_runs_per_stage(n, size, 2)  # two stages: shards + plan + finalize

    def count(run_id: str, expected: int) -> int:
        flt = FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
        total = 0
        with get_client(sync_client=True) as client:
            for _ in range(30):  # task runs reach the server as events: wait for all of them
                total, page = 0, 200  # the API's largest page
                while True:
                    got = client.read_task_runs(flow_run_filter=flt, limit=page, offset=total)
                    total += len(got)
                    if len(got) < page:
                        break
                if total >= expected:
                    break
                time.sleep(1)
        return total

    # The server burns some CPU with no client at all (its background services): measured
    # during the plain runs, and subtracted from what it used during the flow runs.
    plain_keys = [k for k in t if k.startswith("plain_") and "server_cpu_s" in t[k]]
    idle_rate = (
        float(np.median([t[k]["server_cpu_s"] / t[k]["wall_s"] for k in plain_keys]))
        if plain_keys
        else 0.0
    )
    per_cfg: dict[str, Any] = {}
    for cfg, size in sizes.items():
        runs = range(args.repeat)
        plain = [t[f"plain_{cfg}_{i}"] for i in runs]
        pref = [t[f"prefect_{cfg}_{i}"] for i in runs]
        best_plain = min(r["wall_s"] for r in plain)
        best_pref = min(r["wall_s"] for r in pref)
        plain_cpu = min(r["cpu_s"] for r in plain)
        pref_cpu = min(r["cpu_s"] for r in pref)
        server_cpu = [
            max(r["server_cpu_s"] - idle_rate * r["wall_s"], 0.0)
            for r in pref
            if "server_cpu_s" in r
        ]
        extra_cpu = pref_cpu - plain_cpu + (min(server_cpu) if server_cpu else 0.0)
        per_cfg[cfg] = {
            "shard_size": size,
            "task_runs_expected": expected_runs(size),
            "task_runs_counted": count(pref[-1]["run_id"], expected_runs(size)),
            "plain_best_s": best_plain,
            "prefect_best_s": best_pref,
            "overhead": round(best_pref / best_plain - 1, 4),
            "median_overhead": round(
                float(
                    np.median([r["wall_s"] for r in pref]) / np.median([r["wall_s"] for r in plain])
                    - 1
                ),
                4,
            ),
            "extra_wall_s": round(best_pref - best_plain, 3),
            "plain_cpu_s": plain_cpu,
            "extra_cpu_s": round(extra_cpu, 3),  # client + server (when we run the server)
            "cpu_overhead": round(extra_cpu / plain_cpu, 4),
            "server_cpu_measured": bool(server_cpu),
            "server_cpu_s": round(min(server_cpu), 3) if server_cpu else None,
        }
    std, fine = per_cfg["std"], per_cfg["fine"]
    # Linear model: extra = per_flow + per_task * task_runs, fitted on the two shard sizes.
    d_tasks = fine["task_runs_counted"] - std["task_runs_counted"]
    projection: dict[str, Any] = {}
    for kind in ("wall", "cpu"):
        per_task = (fine[f"extra_{kind}_s"] - std[f"extra_{kind}_s"]) / max(d_tasks, 1)
        per_task = max(per_task, 0.0)
        per_flow = max(std[f"extra_{kind}_s"] - per_task * std["task_runs_counted"], 0.0)
        base = std["plain_best_s"] if kind == "wall" else std["plain_cpu_s"]
        runs_10k = 2 * task_runs_per_stage(10_000, args.shard_size, 2)
        projection[kind] = {
            "per_task_run_ms": round(1000 * per_task, 1),
            "per_flow_run_s": round(per_flow, 3),
            "overhead_at_10k": round((per_flow + per_task * runs_10k) / (base * 10_000 / n), 4),
        }
    return {
        "images": n,
        "timings": t,
        "std": std,
        "fine": fine,
        "projection_10k": projection,
        "server_idle_cpu_per_s": round(idle_rate, 4),
        # per image stage: one process-shard task per shard + plan + finalize (bench flow);
        # the pipeline flow adds a gate and a dvc-commit task per stage
        "task_runs_per_10k_per_stage": task_runs_per_stage(10_000, args.shard_size, 2),
        "task_runs_per_10k_per_stage_with_gate_commit": task_runs_per_stage(
            10_000, args.shard_size, 4
        ),
        "same_manifest": bool(same),
        "rss": peak_rss_mb(),
    }


# ------------------------------------------------------------------------------------------
# Part 3: snapshot (dvc commit + push to S3 on loopback)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dvc_bin() -> str:
    local = Path(sys.executable).with_name("dvc")
    return str(local) if local.exists() else "dvc"


def sh(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def md5_tree(root: Path) -> int:
    count = 0
    for path in sorted(root.rglob("*")):
        if path.is_file():
            hashlib.md5(path.read_bytes()).hexdigest()
            count += 1
    return count


@contextmanager
def moto_endpoint(workdir: Path) -> Iterator[str]:
    """A moto S3 server in a child process on loopback, with a ``bench`` bucket.

    Object bodies spill to temporary files (MOTO_S3_DEFAULT_KEY_BUFFER_SIZE=1) instead of
    staying in the server's memory: 10,000 1080p JPEGs would otherwise need gigabytes of RAM.
    Its CPU and peak RSS count as this process's children.
    """
    import boto3

    port = free_port()
    spill = workdir / "moto-tmp"
    spill.mkdir(exist_ok=True)
    env = {**os.environ, "MOTO_S3_DEFAULT_KEY_BUFFER_SIZE": "1", "TMPDIR": str(spill)}
    code = "from moto.server import main; main()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("moto server exited") from None
                time.sleep(0.1)
        boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket="bench")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(spill, ignore_errors=True)


def part_snapshot(args: argparse.Namespace) -> dict[str, Any]:
    import s3fs

    workdir = Path(args.workdir)
    collected = workdir / "ws_collect" / "collect"
    if not (collected / "manifest.parquet").exists():  # --parts snapshot alone
        run_stage(
            CollectStage(),
            Workspace(str(workdir / "ws_collect")),
            bench_params(workdir, "ws_collect", args.shard_size, args.workers),
        )
    n = sum(1 for p in (collected / "objects").rglob("*") if p.is_file())
    repo = workdir / "snap_repo"
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir()
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    sh([*git, "init", "-q", "-b", "main"], repo)
    sh([dvc_bin(), "init", "-q"], repo)
    sh([dvc_bin(), "config", "core.analytics", "false"], repo)
    (repo / "dvc.yaml").write_text(
        "stages:\n  collect:\n    cmd: 'true'\n    outs:\n    - data/collect\n"
    )
    sh([*git, "add", "-A"], repo)
    sh([*git, "commit", "-qm", "project"], repo)

    t: dict[str, Any] = {}
    with measured(t, "plain_copy"):  # the bytes a snapshot must move at least once
        shutil.copytree(collected, repo / "data" / "collect")
    with measured(t, "plain_md5"):  # and hash (DVC's md5) at least once
        md5_tree(repo / "data" / "collect")

    os.environ.update(
        AWS_ACCESS_KEY_ID="bench-key",
        AWS_SECRET_ACCESS_KEY="bench-secret",
        AWS_DEFAULT_REGION="us-east-1",
    )
    env = dict(os.environ)
    with measured(t, "dvc_commit"):
        sh([dvc_bin(), "commit", "--force", "collect"], repo, env)
    with measured(t, "git_commit_tag"):
        sh([*git, "add", "-A"], repo)
        sh([*git, "commit", "-qm", "dataset-v1"], repo)
        sh([*git, "tag", "dataset-v1"], repo)
    # One S3 endpoint per upload, each empty, so neither upload finds the other's objects.
    with moto_endpoint(workdir) as url:
        sh([dvc_bin(), "remote", "add", "-f", "-d", "s3", "s3://bench/dvcstore"], repo)
        sh([dvc_bin(), "remote", "modify", "s3", "endpointurl", url], repo)
        with measured(t, "dvc_push"):
            sh([dvc_bin(), "push"], repo, env)
        with measured(t, "resnapshot_no_change"):
            sh([dvc_bin(), "commit", "--force", "collect"], repo, env)
            sh([dvc_bin(), "push"], repo, env)
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": url}, skip_instance_cache=True)
        pushed = len(fs.find("bench/dvcstore"))
    with moto_endpoint(workdir) as url:
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": url}, skip_instance_cache=True)
        with measured(t, "plain_s3_put"):
            fs.put(str(collected) + "/", "bench/plain/", recursive=True)
        plain = len(fs.find("bench/plain"))
    commit_base = t["plain_copy"]["wall_s"] + t["plain_md5"]["wall_s"]
    return {
        "images": n,
        "files_pushed": pushed,
        "files_plain_put": plain,
        "mb": round(sum(p.stat().st_size for p in collected.rglob("*") if p.is_file()) / 2**20),
        "timings": t,
        "commit_ratio_vs_copy_md5": round(t["dvc_commit"]["wall_s"] / commit_base, 2),
        "push_ratio_vs_s3fs_put": round(t["dvc_push"]["wall_s"] / t["plain_s3_put"]["wall_s"], 2),
        "snapshot_s": round(
            t["dvc_commit"]["wall_s"] + t["git_commit_tag"]["wall_s"] + t["dvc_push"]["wall_s"],
            2,
        ),
        "snapshot_s_per_10k": round(
            (t["dvc_commit"]["wall_s"] + t["git_commit_tag"]["wall_s"] + t["dvc_push"]["wall_s"])
            * 10_000
            / n,
            1,
        ),
        "rss": peak_rss_mb(),
    }


# ------------------------------------------------------------------------------------------
# Part 4: Dask, one vs two workers


def metrics_shard(rows: list[tuple[str, int, int]], work_max_side: int) -> dict[str, float]:
    """One shard of the curate metric pass; returns its image count and CPU seconds."""
    r0 = resource.getrusage(resource.RUSAGE_THREAD)
    for path, width, height in rows:
        with open(path, "rb") as fh:
            measure_object(fh.read(), width, height, work_max_side)
    r1 = resource.getrusage(resource.RUSAGE_THREAD)
    return {"images": len(rows), "cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)}


def warm(i: int) -> int:
    """Import what the shard work needs, once per worker, before the clock starts."""
    import visionloop.curate.metrics  # noqa: F401

    return i


def part_dask(args: argparse.Namespace) -> dict[str, Any]:
    from prefect import flow, task
    from prefect_dask import DaskTaskRunner

    workdir = Path(args.workdir)
    ws = Workspace(str(workdir / "ws_collect"))
    manifest = storage.read_table(ws.manifest_uri("collect"))
    acc = manifest[manifest["status"] == "accepted"]
    rows = [
        (ws.resolve(r.object_uri), int(r.width), int(r.height)) for r in acc.itertuples(index=False)
    ]
    shards = [rows[i : i + args.shard_size] for i in range(0, len(rows), args.shard_size)]
    side = Params().curate.work_max_side
    shard_task = task(name="metrics-shard", persist_result=False)(metrics_shard)
    warm_task = task(name="warm", persist_result=False)(warm)

    results: dict[str, Any] = {"images": len(rows), "shards": len(shards)}
    for workers in (1, 2):
        runner = DaskTaskRunner(
            cluster_kwargs={
                "n_workers": workers,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": ":0",
            }
        )

        @flow(name=f"bench-dask-{workers}", task_runner=runner, persist_result=False)
        def dask_flow(n_workers: int) -> dict[str, float]:
            [f.result() for f in warm_task.map(list(range(4 * n_workers)))]
            t0 = time.perf_counter()
            futures = shard_task.map(shards, work_max_side=side)
            done = [f.result() for f in futures]
            return {
                "work_s": time.perf_counter() - t0,
                "images": sum(d["images"] for d in done),
                "worker_cpu_s": sum(d["cpu_s"] for d in done),
            }

        t: dict[str, Any] = {}
        with measured(t, "flow"):
            out = dask_flow(workers)
        results[f"workers_{workers}"] = {
            "flow_wall_s": t["flow"]["wall_s"],  # cluster start + warm-up + work
            "work_s": round(out["work_s"], 2),
            "images_per_s": round(out["images"] / out["work_s"], 1),
            "worker_cpu_s": round(out["worker_cpu_s"], 2),
            # cores the workers actually got: < workers when the machine is busy elsewhere
            "cores_used": round(out["worker_cpu_s"] / out["work_s"], 2),
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }
    one, two = results["workers_1"]["work_s"], results["workers_2"]["work_s"]
    results["speedup"] = round(one / two, 2)
    results["cpu_count"] = os.cpu_count()
    results["loadavg_1m"] = round(os.getloadavg()[0], 2)
    results["rss"] = peak_rss_mb()
    return results


# ------------------------------------------------------------------------------------------
# Orchestration


PART_FUNCS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "collect": part_collect,
    "prefect": part_prefect,
    "snapshot": part_snapshot,
    "dask": part_dask,
}


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=5) as resp:
            return resp.status == 200
    except OSError:
        return False


@contextmanager
def prefect_api(workdir: Path) -> Iterator[tuple[str, int | None]]:
    """(API URL, server pid or None): PREFECT_API_URL when it answers; else a server of our
    own for this run (own PREFECT_HOME and port, stopped after)."""
    url = os.environ.get("PREFECT_API_URL")
    if url and _healthy(url):
        yield url, None
        return
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_PORT": str(port),
        "PREFECT_HOME": str(workdir / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    script = str(ROOT / "scripts" / "prefect_server.sh")
    print(f"starting a Prefect server on port {port} (about 30-60 s) ...", file=sys.stderr)
    proc = subprocess.run(["bash", script, "start"], env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"Prefect server did not start: {proc.stderr[-2000:]}")
    pidfile = workdir / ".prefect" / "server.pid"
    pid = int(pidfile.read_text().strip()) if pidfile.exists() else None
    try:
        yield proc.stdout.strip().splitlines()[-1], pid
    finally:
        subprocess.run(["bash", script, "stop"], env=env, capture_output=True)


def run_part(name: str, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--part", name]
    cmd += ["--workdir", args.workdir, "--n", str(args.n), "--repeat", str(args.repeat)]
    cmd += ["--shard-size", str(args.shard_size), "--workers", str(args.workers)]
    log = Path(args.workdir) / f"{name}.log"
    print(f"--> {name} (log: {log})", file=sys.stderr, flush=True)
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=fh, text=True)
    if proc.returncode:
        tail = log.read_text()[-3000:]
        return {"error": f"exit {proc.returncode}", "log_tail": tail}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt_table(res: dict[str, Any], n: int) -> str:
    rows: list[tuple[str, str, str, str, str]] = []

    def add(name: str, value: str, baseline: str, ratio: str, target: str = "") -> None:
        rows.append((name, value, baseline, ratio, target))

    c = res.get("collect", {})
    if "ratio_vs_decode" in c:
        add(
            "collect + curate metrics",
            f"{c['pipeline_images_per_s']} img/s",
            f"cv2.imdecode x{c['threads']} thr: {c['decode_images_per_s']} img/s",
            f"{c['ratio_vs_decode']:.2f}",
            ">= 0.5",
        )
        add(
            "  same, CPU per image",
            f"{c['cpu_ms_per_image']} ms ({c['collect_cpu_ms_per_image']} + "
            f"{c['metrics_cpu_ms_per_image']})",
            f"decode: {c['decode_cpu_ms_per_image']} ms",
            f"{c['cpu_ratio']:.2f}",
            ">= 0.5",
        )
        add(
            "  collect / metrics alone",
            f"{c['collect_images_per_s']} / {c['metrics_images_per_s']} img/s",
            f"1 thread: {c['decode_1thread_images_per_s']} img/s",
            f"{c['ratio_vs_decode_1thread']:.2f} (vs 1 thr)",
        )
        add("  collect rerun, no change", f"{c['rerun_s']} s", "", "")
    p = res.get("prefect", {})
    if "std" in p:
        std, fine, proj = p["std"], p["fine"], p["projection_10k"]
        add(
            "Prefect flow (threads)",
            f"{std['prefect_best_s']} s",
            f"run_stage: {std['plain_best_s']} s",
            f"{100 * std['overhead']:+.1f} % wall",
            "< 5 %",
        )
        add(
            "  CPU, client + server",
            f"+{std['extra_cpu_s']} s",
            f"run_stage: {std['plain_cpu_s']} s",
            f"{100 * std['cpu_overhead']:+.1f} % cpu",
        )
        add(
            "  4x task runs (shard/4)",
            f"{fine['prefect_best_s']} s",
            f"run_stage: {fine['plain_best_s']} s",
            f"{100 * fine['overhead']:+.1f} % wall",
        )
        add(
            "  task runs (counted)",
            f"{std['task_runs_counted']} / {fine['task_runs_counted']}",
            f"expected {std['task_runs_expected']} / {fine['task_runs_expected']}",
            "",
        )
        add(
            "  fit: per task run, per flow",
            f"{proj['wall']['per_task_run_ms']} ms, {proj['wall']['per_flow_run_s']} s wall",
            f"{proj['cpu']['per_task_run_ms']} ms, {proj['cpu']['per_flow_run_s']} s cpu",
            "",
        )
        add(
            "  projected at 10k images",
            f"{100 * proj['wall']['overhead_at_10k']:+.1f} % wall",
            f"{100 * proj['cpu']['overhead_at_10k']:+.1f} % cpu",
            "",
            "< 5 %",
        )
        add(
            "  task runs / 10k img / stage",
            f"{p['task_runs_per_10k_per_stage']} (+gate, commit: "
            f"{p['task_runs_per_10k_per_stage_with_gate_commit']})",
            f"shard_size {std['shard_size']}",
            "",
        )
    s = res.get("snapshot", {})
    if "timings" in s:
        st = s["timings"]
        add(
            "dvc commit",
            f"{st['dvc_commit']['wall_s']} s",
            f"copy+md5: {round(st['plain_copy']['wall_s'] + st['plain_md5']['wall_s'], 2)} s",
            f"{s['commit_ratio_vs_copy_md5']:.2f}x",
        )
        add(
            "dvc push (moto S3)",
            f"{st['dvc_push']['wall_s']} s",
            f"s3fs put: {st['plain_s3_put']['wall_s']} s",
            f"{s['push_ratio_vs_s3fs_put']:.2f}x",
        )
        add(
            "snapshot total",
            f"{s['snapshot_s']} s ({s['images']} img, {s['mb']} MB)",
            f"per 10k: {s['snapshot_s_per_10k']} s",
            "",
        )
        add("  re-snapshot, no change", f"{st['resnapshot_no_change']['wall_s']} s", "", "")
    d = res.get("dask", {})
    if "speedup" in d:
        add(
            "Dask 1 -> 2 workers",
            f"{d['workers_2']['images_per_s']} img/s",
            f"1 worker: {d['workers_1']['images_per_s']} img/s",
            f"{d['speedup']:.2f}x",
            f"(cpus {d['cpu_count']}, load {d['loadavg_1m']})",
        )
        add(
            "  cores the workers got",
            f"{d['workers_2']['cores_used']} (2 workers)",
            f"{d['workers_1']['cores_used']} (1 worker)",
            f"{d['workers_2']['cores_used'] / max(d['workers_1']['cores_used'], 1e-9):.2f}x",
        )
    for name, r in res.items():
        if isinstance(r, dict) and "error" in r:
            add(name, "FAILED", r["error"], "")
    widths = [
        max(len(r[i]) for r in [("figure", "value", "baseline", "ratio", "target"), *rows])
        for i in range(5)
    ]
    lines = []
    for r in [("figure", "value", "baseline (same run)", "ratio", "target"), *rows]:
        lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    lines.insert(1, "-" * len(lines[0]))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    head = f"bench_pipeline: N = {n} generated 1080p JPEGs; {os.cpu_count()} CPUs, load {load}"
    return head + "\n" + "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--full", action="store_true", help="the issue's size: N = 10,000")
    ap.add_argument("--n", type=int, default=None, help="images (default 500; 10,000 with --full)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"subset of {','.join(PARTS)}")
    ap.add_argument("--workdir", default=None, help="kept (and reused) when given")
    ap.add_argument("--repeat", type=int, default=None, help="Prefect/plain alternations")
    ap.add_argument("--shard-size", type=int, default=Params().run.shard_size)
    ap.add_argument("--workers", type=int, default=Params().run.max_workers)
    ap.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.n = args.n or (10_000 if args.full else 500)
    args.repeat = args.repeat or (1 if args.full else 2)

    if args.part:  # child: one part, one JSON line on stdout
        result = PART_FUNCS[args.part](args)
        print(json.dumps(result, default=str))
        return

    keep = args.workdir is not None
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="vl-bench-pipeline-")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    parts = [p for p in args.parts.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        ap.error(f"unknown parts {sorted(unknown)}")
    results: dict[str, Any] = {}
    try:
        print(f"generating {args.n} images in {workdir / 'src'} ...", file=sys.stderr)
        results["inputs"] = generate(workdir / "src", args.n, max(os.cpu_count() or 1, 1))
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
        }
        need_api = {"prefect", "dask"} & set(parts)
        with prefect_api(workdir) if need_api else _nothing() as api:
            if api:
                env["PREFECT_API_URL"] = api[0]
                if api[1]:
                    env["BENCH_PREFECT_SERVER_PID"] = str(api[1])
            for name in parts:
                results[name] = run_part(name, args, env)
    finally:
        out = json.dumps(results, indent=2, default=str)
        (workdir / "results.json").write_text(out)
        print(out)
        print()
        print(fmt_table(results, args.n))
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


if __name__ == "__main__":
    main()
