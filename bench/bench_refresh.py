"""Refresh benchmarks: drift detection on planted shifts and false alarms; refresh cost.

Prints one JSON document; every figure comes with the baseline it is compared with, measured in
the same run.

1. Drift detection (``visionloop.refresh.synthetic``, known truth). A reference of ``--reference``
   images (1,000) and, per seed (``--seeds``, 20; 50 with ``--full``), one batch of
   ``--batch`` images (100: 1% of a 10,000-image snapshot) per scenario: no shift, night share
   10% -> 40%, a new camera with a colour cast, more blur. Images are rendered, JPEG-encoded and
   measured exactly as the stages measure them (curate metrics, the refresh embedding), in
   memory. The drift report runs with the shipped params. Scored per scenario: *detected* =
   the planted shift's feature is flagged (day_night / camera / blur), *any alarm* = any test
   flagged. The false-alarm rate is the share of no-shift batches with any alarm. Baseline:
   the same tests read naively (raw p < 0.05 per test, no effect size, no Holm adjustment).
2. Refresh cost. A git + DVC project with ``--n`` images (500; 10,000 with ``--full``) and
   their COCO labels; the full pipeline flow cuts dataset-v1 (baseline wall time), then 1% new
   images arrive and the refresh flow cuts dataset-v2 (wall time, as a share of the full run),
   then the refresh flow runs once more on the same input (nothing to do). Both flows run in
   this process against one Prefect server (``PREFECT_API_URL``, else a test harness started
   first and not timed), so imports (GX, albumentations) are paid by the full run.

    python bench/bench_refresh.py [--full] [--seeds 20] [--reference 1000] [--batch 100]
        [--n 500] [--size 160x120] [--workdir DIR] [--skip-timing] [--skip-drift]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

EXPECTED = {"none": set(), "night_share": {"day_night"}, "new_camera_cast": {"camera"}}
EXPECTED["more_blur"] = {"blur"}


def drift_benchmark(seeds: int, n_ref: int, n_batch: int) -> dict[str, Any]:
    from visionloop.config import Params
    from visionloop.refresh import synthetic as syn
    from visionloop.refresh.drift import DriftConfig, DriftData, drift_report
    from visionloop.refresh.features import embedding_matrix, feature_frame

    rp = Params().refresh
    cfg = DriftConfig.from_params(rp)
    numeric, cat, slices = (
        list(rp.drift_features),
        [c for c in rp.drift_categorical if c != "outcome"],
        list(rp.drift_slices),
    )

    def data(df: Any) -> DriftData:
        return DriftData(feature_frame(df, numeric, cat, slices), embedding_matrix(df))

    t0 = time.perf_counter()
    reference = data(syn.measured_batch(syn.no_shift(n_ref), seed=10_000, prefix="ref"))
    measure_s = time.perf_counter() - t0
    per: dict[str, dict[str, Any]] = {}
    report_s: list[float] = []
    for name, make in syn.SHIFTS.items():
        rows = []
        for seed in range(seeds):
            cur = syn.measured_batch(make(n_batch), seed=seed, prefix=name)
            t = time.perf_counter()
            table = drift_report(
                reference, data(cur), cfg, numeric=numeric, categorical=cat, slices=slices
            )
            report_s.append(time.perf_counter() - t)
            flagged = table[table["drifted"].astype(bool) & (table["feature"] != "dataset")]
            global_flags = set(flagged.loc[flagged["level"] == "feature", "feature"])
            naive = table[table["feature"] != "dataset"]
            p = naive["p_value"].astype(float)
            naive_flag = (p < 0.05) | (p.isna() & naive["drifted"].astype(bool))
            naive_global = set(naive.loc[naive_flag & (naive["level"] == "feature"), "feature"])
            rows.append(
                {
                    "detected": EXPECTED[name] <= global_flags if EXPECTED[name] else None,
                    "alarm": bool(len(flagged)),
                    "flags": sorted(flagged["feature"]),
                    "naive_detected": EXPECTED[name] <= naive_global if EXPECTED[name] else None,
                    "naive_alarm": bool(naive_flag.any()),
                    "dataset_drift": bool(
                        table.loc[table["feature"] == "dataset", "drifted"].iloc[0]
                    ),
                }
            )
        flags = Counter(f for r in rows for f in r["flags"])
        per[name] = {
            "batches": len(rows),
            "alarm_rate": float(np.mean([r["alarm"] for r in rows])),
            "naive_alarm_rate": float(np.mean([r["naive_alarm"] for r in rows])),
            "dataset_drift_rate": float(np.mean([r["dataset_drift"] for r in rows])),
            "most_flagged": flags.most_common(6),
        }
        if EXPECTED[name]:
            per[name]["detection_rate"] = float(np.mean([r["detected"] for r in rows]))
            per[name]["naive_detection_rate"] = float(np.mean([r["naive_detected"] for r in rows]))
    shifts = [n for n in per if n != "none"]
    return {
        "reference_items": n_ref,
        "batch_items": n_batch,
        "seeds": seeds,
        "scenarios": per,
        "false_alarm_rate": per["none"]["alarm_rate"],
        "false_alarm_rate_naive_baseline": per["none"]["naive_alarm_rate"],
        "every_shift_detected_in_every_batch": all(per[n]["detection_rate"] == 1.0 for n in shifts),
        "targets_met": all(per[n]["detection_rate"] == 1.0 for n in shifts)
        and per["none"]["alarm_rate"] <= 0.05,
        "report_seconds_mean": float(np.mean(report_s)),
        "measure_ms_per_image": 1000 * measure_s / n_ref,
    }


# ------------------------------------------------------------------------------------------


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", *args],
        cwd=repo, check=True, capture_output=True,
    )  # fmt: skip


def _project(dest: Path, n: int, size: tuple[int, int]) -> Path:
    import yaml

    from visionloop.config import Params
    from visionloop.refresh import synthetic as syn

    dest.mkdir(parents=True)
    for name in ("dvc.yaml", "visionloop", "flows", "tasks", "gx"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(
                src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "uncommitted")
            )
        else:
            shutil.copy2(src, dest / name)
    shutil.copy2(ROOT / ".gitignore", dest / ".gitignore")
    dvc = str(Path(sys.executable).with_name("dvc"))
    _git(dest, "init", "-q", "-b", "main")
    subprocess.run([dvc, "init", "-q"], cwd=dest, check=True)
    subprocess.run([dvc, "config", "core.analytics", "false"], cwd=dest, check=True)
    batch = syn.no_shift(n, width=size[0], height=size[1])
    truth = syn.write_batch(str(dest / "data/source/images"), batch, seed=1, prefix="v1")
    ann = dest / "data/source/annotations"
    ann.mkdir(parents=True)
    (ann / "v1.json").write_text(json.dumps(syn.coco_document(truth, batch)))
    params = Params().model_dump(by_alias=True)
    params["run"].update({"shard_size": 250, "max_workers": 2})
    params["import_annotations"]["sources"] = [
        {"format": "coco", "path": "data/source/annotations/v1.json"}
    ]
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _git(dest, "add", "-A")
    _git(dest, "commit", "-qm", "bench project")
    return dest


@contextlib.contextmanager
def _prefect() -> Any:
    url = os.environ.get("PREFECT_API_URL")
    if url:
        yield url
        return
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=240):
        from prefect.settings import PREFECT_API_URL

        yield str(PREFECT_API_URL.value())


def timing_benchmark(n: int, workdir: Path, size: tuple[int, int]) -> dict[str, Any]:
    from visionloop.refresh import synthetic as syn

    project = _project(workdir / "project", n, size)
    new = max(1, n // 100)
    with _prefect():
        from flows.pipeline import pipeline
        from flows.refresh import refresh

        cwd = Path.cwd()
        os.chdir(project)
        try:
            t = time.perf_counter()
            full = pipeline(repo_dir=".")
            full_s = time.perf_counter() - t
            batch = syn.no_shift(new, width=size[0], height=size[1])
            syn.write_batch(str(project / "data/source/images"), batch, seed=2, prefix="b1")
            t = time.perf_counter()
            fresh = refresh(repo_dir=".")
            refresh_s = time.perf_counter() - t
            t = time.perf_counter()
            idle = refresh(repo_dir=".")
            idle_s = time.perf_counter() - t
        finally:
            os.chdir(cwd)
    return {
        "image_size": f"{size[0]}x{size[1]}",
        "snapshot_items": n,
        "new_items": new,
        "full_pipeline_seconds": round(full_s, 2),
        "refresh_seconds": round(refresh_s, 2),
        "refresh_share_of_full": round(refresh_s / full_s, 4),
        "target_share": 0.05,
        "target_met": refresh_s / full_s <= 0.05,
        "idle_refresh_seconds": round(idle_s, 2),
        "idle_share_of_full": round(idle_s / full_s, 4),
        "snapshots": [full["snapshot"], fresh["snapshot"], idle["snapshot"]],
        "refresh_new_detected": fresh["new"],
        "refresh_embedded": fresh["refresh"].get("embedded"),
        "idle_ran_stages": idle["ran"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="50 seeds, a 10,000-image snapshot")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--reference", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--size", default="160x120", help="image size of the timing project, WxH")
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--skip-drift", action="store_true")
    args = ap.parse_args()
    seeds = args.seeds or (50 if args.full else 20)
    n = args.n or (10_000 if args.full else 500)
    out: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    if not args.skip_drift:
        out["drift"] = drift_benchmark(seeds, args.reference, args.batch)
        print(json.dumps({"drift": out["drift"]}, indent=2), flush=True)
    if not args.skip_timing:
        work = (
            Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-refresh-"))
        )
        try:
            w, h = (int(v) for v in args.size.lower().split("x"))
            out["refresh_cost"] = timing_benchmark(n, work, (w, h))
        finally:
            if not args.workdir:
                shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
