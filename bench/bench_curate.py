"""Curate benchmarks: flag quality and speed against CleanVision, dedup index, scale run.

Prints one JSON document (figures as ratios against baselines measured in the same run).

1. Peer comparison. ``shared/bench/curation_peer.py`` generates JPEGs (~640x480) with planted
   issues and a ground truth. The TUNING set (seed 1) is where thresholds were chosen; the
   REPORT sets (seeds 0 and 2 by default) were never looked at while tuning. On each report set
   ``visionloop inspect`` (in this process: ``inspect_folder``) and CleanVision (its own venv,
   a subprocess per run, via the peer script) see the same files, alternately, ``--repeat``
   times each; the best run of each counts. Both are timed the same way: CPU seconds of the
   work (all threads / worker processes), interpreter start and imports excluded. We also run
   the real ``visionloop inspect --json`` command once and report its total CPU, start-up
   included. Precision and recall per issue type use the peer's ``score`` for both tools.
2. Metric pass vs a plain ``cv2.imread`` of the same files (what one decode costs), and on
   12 MP photos (where the reduced decode pays off); blur flag rate per Gaussian radius.
3. Near-duplicate index: multi-index hashing vs the blocked all-pairs scan on random 64-bit
   hashes with planted neighbours (exact same pairs asserted), at 200k hashes (1M with
   ``--full``), plus the incremental case: 10k new hashes against all of them.
4. Scale run (a child process, for a clean peak RSS): the curate stage end to end on N small
   synthetic images (10,000; 100,000 with ``--full``) with planted near copies: wall time,
   images/s, peak memory, bytes of state per image, found/planted copies, and a refresh with
   10 new images (decodes and pHash searches counted).

    python bench/bench_curate.py [--full] [--n 300] [--workdir DIR] [--repeat 2]
        [--cleanvision-python /tmp/cv-venv/bin/python]  # default: that path when it exists

CleanVision's venv: python3.11 -m venv /tmp/cv-venv && /tmp/cv-venv/bin/pip install cleanvision
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from visionloop.config import CurateParams, Params, load_params  # noqa: E402
from visionloop.curate.dedup import cross_pairs, hamming_pairs  # noqa: E402
from visionloop.curate.inspect import inspect_folder  # noqa: E402
from visionloop.curate.metrics import compute_metrics, decode_for_metrics  # noqa: E402

SCORED = [
    "blurry",
    "dark",
    "light",
    "low_information",
    "grayscale",
    "odd_size",
    "odd_aspect_ratio",
    "exact_duplicates",
    "near_duplicates",
]
DEFAULT_CV = Path("/tmp/cv-venv/bin/python")


def load_peer(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location("curation_peer", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dataset(peer: Any, root: Path, name: str, n: int, seed: int) -> tuple[Path, dict]:
    images = root / name
    gt_path = root / f"{name}_ground_truth.json"
    if gt_path.exists() and images.is_dir():
        gt = json.loads(gt_path.read_text())
        if gt.get("n") == n and gt.get("seed") == seed:
            return images, gt
    return images, peer.generate(images, n, seed)


def _cpu() -> float:
    return time.process_time()


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _pr(scores: dict) -> dict:
    return {
        k: {x: v[x] for x in ("precision", "recall", "tp", "truth", "flagged")}
        | (
            {"missed": v["missed"][:4], "false_flags": v["false_flags"][:4]}
            if v["tp"] < max(v["truth"], v["flagged"])
            else {}
        )
        for k, v in scores.items()
    }


# ------------------------------------------------------------------------------------------
# 1. Peer comparison
# ------------------------------------------------------------------------------------------


def run_cleanvision(python: str, peer_path: Path, images: Path) -> dict:
    cmd = [python, str(peer_path), "--images-dir", str(images), "--no-generate", "--repeat", "1"]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"}
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip()[-2000:]}
    return json.loads(proc.stdout)["median_run"]


def run_inspect_cli(images: Path, params_path: Path) -> dict:
    """The real command, once: total CPU (start-up and imports included) and its flags."""
    before = _children_cpu()
    t = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "visionloop.cli",
            "inspect",
            str(images),
            "--json",
            "--params",
            str(params_path),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    wall = time.perf_counter() - t
    cpu = _children_cpu() - before
    if proc.returncode != 0:
        return {"error": proc.stderr.strip()[-2000:]}
    out = json.loads(proc.stdout)
    n = out["n_files"]
    return {
        "n": n,
        "cpu_s_total": round(cpu, 3),
        "wall_s": round(wall, 3),
        "images_per_cpu_s_incl_startup": round(n / cpu, 1),
        "flags": {f["file"]: set(f["issues"]) for f in out["files"]},
    }


def peer_comparison(
    peer: Any, peer_path: Path, images: Path, gt: dict, params: Params, a: argparse.Namespace
) -> dict:
    ours_runs, cv_runs = [], []
    result = None
    for _ in range(a.repeat):
        r = inspect_folder(str(images), params.curate, workers=a.workers)
        ours_runs.append(r)
        if a.cleanvision_python:
            cv_runs.append(run_cleanvision(a.cleanvision_python, peer_path, images))
    result = min(ours_runs, key=lambda r: r.cpu_seconds)
    n = len(result.files)
    block: dict[str, Any] = {
        "n": n,
        "visionloop": {
            "images_per_cpu_s": round(n / result.cpu_seconds, 1),
            "cpu_s": round(result.cpu_seconds, 3),
            "wall_s": round(result.wall_seconds, 3),
            "runs_cpu_s": [round(r.cpu_seconds, 3) for r in ours_runs],
            "workers": a.workers,
            "scores": _pr(peer.score(gt, result.flags(), issue_types=SCORED)),
        },
    }
    cli = run_inspect_cli(images, a.params)
    if "flags" in cli:
        same = cli.pop("flags") == result.flags()
        cli["same_flags_as_in_process"] = same
    block["visionloop_cli_once"] = cli
    good = [r for r in cv_runs if "error" not in r]
    if good:
        best = max(good, key=lambda r: r["images_per_cpu_s"] or 0)
        block["cleanvision"] = {
            "version": best.get("version"),
            "images_per_cpu_s": best["images_per_cpu_s"],
            "cpu_s": best["cpu_s_user_sys"],
            "wall_s": best["wall_s_total"],
            "peak_rss_mb": best["peak_rss_mb"],
            "runs_images_per_cpu_s": [r["images_per_cpu_s"] for r in good],
            "scores": _pr({k: v for k, v in best["vs_ground_truth"].items() if k in SCORED}),
        }
        block["speed_ratio_vs_cleanvision"] = round(
            block["visionloop"]["images_per_cpu_s"] / best["images_per_cpu_s"], 2
        )
    elif cv_runs:
        block["cleanvision"] = cv_runs[0]
    return block


def tune(frame: pd.DataFrame, gt: dict) -> dict:
    """Thresholds the tuning set supports (we ship rounded values of these)."""

    def truth(cat: str) -> np.ndarray:
        return frame["file"].map(lambda n: cat in gt["files"][n]).to_numpy(bool)

    live = frame[~frame["file"].str.startswith("exact_")]
    lt = {
        "blur_threshold": ("blur", "blurry", True),
        "dark_threshold": ("brightness_high", "dark", True),
        "bright_threshold": ("brightness_low", "light", False),
        "low_information_threshold": ("entropy", "low_information", True),
        "grayscale_threshold": ("spread", "grayscale", True),
    }
    out = {}
    for param, (metric, cat, below) in lt.items():
        t = live["file"].map(lambda n, c=cat: c in gt["files"][n]).to_numpy(bool)
        out[param] = _best_threshold(live[metric].to_numpy(float), t, below)
    side = np.fmin(live["width"].astype(float), live["height"].astype(float))
    odd = truth("odd_size")[~frame["file"].str.startswith("exact_")]
    out["odd_size_min_side"] = {
        "odd_max_shorter_side": float(side[odd].max()),
        "others_min_shorter_side": float(side[~odd].min()),
    }
    ratio = np.fmax(live["width"], live["height"]) / side
    oddr = truth("odd_aspect_ratio")[~frame["file"].str.startswith("exact_")]
    out["odd_aspect_max"] = {
        "odd_min_ratio": round(float(ratio[oddr].min()), 2),
        "others_max_ratio": round(float(ratio[~oddr].max()), 2),
    }
    h = {f: int(p, 16) for f, p in zip(live["file"], live["phash"], strict=True)}
    pairs = []
    for name, cats in gt["files"].items():
        src = [c[7:] for c in cats if c.startswith("source=")]
        if name.startswith("near_duplicates") and src:
            pairs.append((name, src[0]))
    within = [(h[x] ^ h[y]).bit_count() for x, y in pairs]
    names = list(h)
    planted = {frozenset(p) for p in pairs}
    other = [
        (h[x] ^ h[y]).bit_count()
        for i, x in enumerate(names)
        for y in names[i + 1 :]
        if frozenset((x, y)) not in planted
        and gt["files"][x] != ["low_information"]
        and gt["files"][y] != ["low_information"]
    ]
    out["phash_radius"] = {
        "planted_pairs_max_distance": max(within) if within else None,
        "other_pairs_min_distance": min(other) if other else 64,
    }
    return out


def _best_threshold(values: np.ndarray, truth: np.ndarray, below: bool) -> dict:
    """Threshold maximising F1 of ``value < t`` (or ``> t``); ties -> the widest gap's middle."""
    order = np.sort(np.unique(values))
    cands = (order[:-1] + order[1:]) / 2
    best: tuple = (-1.0, -1.0, None)
    for k, t in enumerate(cands):
        pred = values < t if below else values > t
        tp = int((pred & truth).sum())
        f1 = 2 * tp / (pred.sum() + truth.sum()) if (pred.sum() + truth.sum()) else 0.0
        gap = order[k + 1] - order[k]
        if (f1, gap) > best[:2]:
            best = (f1, gap, t)
    return {
        "threshold": round(float(best[2]), 3),
        "f1": round(best[0], 3),
        "gap": round(best[1], 3),
    }


# ------------------------------------------------------------------------------------------
# 2. Metric pass vs decode
# ------------------------------------------------------------------------------------------


def throughput(files: list[Path], work_max_side: int, repeat: int) -> dict:
    sizes = {}
    for p in files:
        with Image.open(p) as im:
            sizes[p.name] = im.size
    ours, base = [], []
    for _ in range(repeat):
        t = _cpu()
        for p in files:
            cv2.imread(str(p), cv2.IMREAD_COLOR)
        base.append(_cpu() - t)
        t = _cpu()
        for p in files:
            w, h = sizes[p.name]
            image, _ = decode_for_metrics(p.read_bytes(), w, h, work_max_side=work_max_side)
            compute_metrics(image, work_max_side)
        ours.append(_cpu() - t)
    n = len(files)
    return {
        "work_max_side": work_max_side,
        "images": n,
        "metrics_img_per_cpu_s": round(n / min(ours), 1),
        "cv2_imread_img_per_cpu_s": round(n / min(base), 1),
        "ratio_vs_imread": round(min(base) / min(ours), 3),
    }


def large_set(peer: Any, root: Path, n: int, seed: int = 7) -> list[Path]:
    """``n`` 12 MP phone-sized JPEGs (4032x3024): where the reduced decode pays off."""
    out = root / f"large_n{n}_seed{seed}"
    files = sorted(out.glob("*.jpg")) if out.is_dir() else []
    if len(files) == n:
        return files
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        small = np.asarray(peer._textured_image(rng, 640, 480))[:, :, ::-1]
        big = cv2.resize(small, (4032, 3024), interpolation=cv2.INTER_CUBIC).astype(np.float32)
        big += rng.normal(0, 4, big.shape).astype(np.float32)
        ok, buf = cv2.imencode(".jpg", np.clip(big, 0, 255).astype(np.uint8))
        assert ok
        (out / f"large_{i:03d}.jpg").write_bytes(buf.tobytes())
    return sorted(out.glob("*.jpg"))


def blur_sensitivity(peer: Any, params: CurateParams, n: int = 30, seed: int = 11) -> dict:
    """Share flagged blurry at the shipped threshold per Gaussian radius (640x480, JPEG q90)."""
    from PIL import ImageFilter

    rng = np.random.default_rng(seed)
    radii = (0.0, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
    hits = dict.fromkeys(radii, 0)
    for _ in range(n):
        img = peer._textured_image(rng, 640, 480)
        for r in radii:
            x = img.filter(ImageFilter.GaussianBlur(radius=r)) if r else img
            buf = io.BytesIO()
            x.save(buf, "JPEG", quality=90)
            image, _ = decode_for_metrics(
                buf.getvalue(), 640, 480, work_max_side=params.work_max_side
            )
            hits[r] += compute_metrics(image, params.work_max_side)["blur"] < params.blur_threshold
    return {f"radius_{r:g}": round(hits[r] / n, 3) for r in radii}


# ------------------------------------------------------------------------------------------
# 3. Near-duplicate index
# ------------------------------------------------------------------------------------------


def planted_hashes(n: int, seed: int = 3, share: float = 0.01) -> np.ndarray:
    """Random 64-bit hashes plus ``share`` x n copies with 0..8 bits flipped."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
    base ^= rng.integers(0, 2, n).astype(np.uint64) << np.uint64(63)
    k = int(n * share)
    src = rng.choice(n, k, replace=False)
    flips = np.zeros(k, np.uint64)
    for t in range(k):
        for b in rng.choice(64, int(rng.integers(0, 9)), replace=False):
            flips[t] |= np.uint64(1) << np.uint64(int(b))
    base[rng.choice(np.setdiff1d(np.arange(n), src), k, replace=False)] = base[src] ^ flips
    return base


def index_bench(n: int, radius: int) -> dict:
    h = planted_hashes(n)
    t = _cpu()
    i, j, _ = hamming_pairs(h, radius, method="mih")
    mih = _cpu() - t
    scan_n = min(n, 50_000)
    t = _cpu()
    si, sj, _ = hamming_pairs(h[:scan_n], radius, method="scan")
    scan = _cpu() - t
    sub = (i < scan_n) & (j < scan_n)
    assert set(zip(si.tolist(), sj.tolist(), strict=True)) == set(
        zip(i[sub].tolist(), j[sub].tolist(), strict=True)
    )
    scan_extrapolated = scan * (n / scan_n) ** 2
    new = np.arange(n - 10_000, n)
    t = _cpu()
    cross_pairs(h, new, radius)
    incr = _cpu() - t
    return {
        "hashes": n,
        "radius": radius,
        "pairs": len(i),
        "mih_all_pairs_cpu_s": round(mih, 2),
        f"scan_all_pairs_cpu_s_at_{scan_n}": round(scan, 2),
        "scan_all_pairs_cpu_s_extrapolated": round(scan_extrapolated, 1),
        "speedup_vs_scan": round(scan_extrapolated / mih, 1),
        "incremental_10k_new_vs_all_cpu_s": round(incr, 2),
        "same_pairs_as_scan_on_overlap": True,
    }


# ------------------------------------------------------------------------------------------
# 4. Scale run (child process)
# ------------------------------------------------------------------------------------------


def _small_image(rng: np.random.Generator, w: int = 128, h: int = 96) -> np.ndarray:
    """A sharp synthetic frame: low-frequency colour, 8 px blocks, rectangles, noise."""
    low = cv2.resize(
        rng.integers(0, 256, (3, 4, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC
    ).astype(np.int16)
    blocks = cv2.resize(
        rng.integers(-60, 61, (h // 8, w // 8, 3)).astype(np.int16),
        (w, h),
        interpolation=cv2.INTER_NEAREST,
    )
    img = low + blocks
    for _ in range(6):
        x, y = int(rng.integers(0, w - 8)), int(rng.integers(0, h - 8))
        colour = [int(v) for v in rng.integers(0, 256, 3)]
        corner = (x + int(rng.integers(3, 40)), y + int(rng.integers(3, 30)))
        cv2.rectangle(img, (x, y), corner, colour, -1)
    img += rng.integers(-8, 9, img.shape, dtype=np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def scale_images(root: Path, n: int, seed: int = 5) -> tuple[pd.DataFrame, int]:
    """N small JPEGs in a published-object layout + an anonymize manifest; 1 % near copies."""
    data = root / f"scale_n{n}" / "data"
    man_uri = root / f"scale_n{n}" / "anonymize_manifest.parquet"  # the stage input is a copy
    marker = root / f"scale_n{n}" / "planted.json"
    if man_uri.exists() and marker.exists():
        return pd.read_parquet(man_uri), json.loads(marker.read_text())["near_copies"]
    rng = np.random.default_rng(seed)
    rows = []
    originals: list[np.ndarray] = []
    n_copies = n // 100
    for k in range(n):
        if k >= n - n_copies:  # a near copy: 95 % size, JPEG q=60
            src = originals[int(rng.integers(0, len(originals)))]
            img = cv2.resize(src, (121, 91), interpolation=cv2.INTER_LINEAR)
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 60])
        else:
            img = _small_image(rng)
            if len(originals) < 5000:
                originals.append(img)
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        payload = buf.tobytes()
        iid = hashlib.sha256(f"scale-{k}".encode()).hexdigest()
        rel = f"anonymize/objects/{iid[:2]}/{iid}.jpg"
        path = data / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)
        h, w = img.shape[:2]
        rows.append(
            {
                "item_id": iid,
                "source_uri": f"/scale/img_{k:06d}.jpg",
                "rel_path": f"img_{k:06d}.jpg",
                "status": "accepted",
                "reason": None,
                "reason_detail": None,
                "quarantined_by": None,
                "width": w,
                "height": h,
                "capture_time": None,
                "camera_make": "Synth",
                "camera_model": f"S{k % 3}",
                "anonymize_object_uri": rel,
                "anonymize_sha256": hashlib.sha256(payload).hexdigest(),
            }
        )
    df = pd.DataFrame(rows)
    df["width"] = df["width"].astype("int32")
    df["height"] = df["height"].astype("int32")
    man_uri.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(man_uri)
    marker.write_text(json.dumps({"near_copies": n_copies}))
    return df, n_copies


def scale_child(root: Path, n: int) -> dict:
    """Run in a fresh process: the curate stage end to end, then a refresh with 10 new images."""
    from visionloop import storage
    from visionloop.curate import metrics as m
    from visionloop.stages.base import Workspace, run_stage
    from visionloop.stages.curate import CurateStage

    df, planted = scale_images(root, n)  # generated beforehand by another child process
    data = root / f"scale_n{n}" / "data"
    shutil.rmtree(data / "curate", ignore_errors=True)
    params = Params().with_overrides(
        {
            "run.data_dir": str(data),
            "run.shard_size": 1000,
            "run.max_workers": 2,
            "curate.coverage": ["camera"],
            "curate.report": False,
        }
    )
    ws = Workspace.from_params(params)
    # The manifest without the last 10 rows first; then the refresh adds them.
    full = df
    storage.write_table(ws.manifest_uri("anonymize"), full.iloc[: n - 10])
    decodes = []
    real = m.decode_for_metrics

    def counting(*args: Any, **kwargs: Any) -> Any:
        decodes.append(1)
        return real(*args, **kwargs)

    m.decode_for_metrics = counting  # type: ignore[assignment]
    t, c = time.perf_counter(), _cpu()
    summary = run_stage(CurateStage(), ws, params)
    wall, cpu = time.perf_counter() - t, _cpu() - c
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = ws.uri("curate")
    state_files = ("features.parquet", "near_pairs.parquet", "dedup_index.parquet")
    state_bytes = sum(os.path.getsize(os.path.join(out, f)) for f in state_files)
    manifest_bytes = os.path.getsize(os.path.join(out, "manifest.parquet"))
    found = summary.reasons.get("near_duplicate", 0)
    first_decodes = len(decodes)
    storage.write_table(ws.manifest_uri("anonymize"), full)
    t = time.perf_counter()
    refresh = run_stage(CurateStage(), ws, params)
    refresh_wall = time.perf_counter() - t
    final = storage.read_table(ws.manifest_uri("curate"))
    planted_rows = final["source_uri"].str[-10:-4].astype(int) >= n - planted
    dup = final["reason"].isin(["near_duplicate", "duplicate_pixels"])
    return {
        "images": n,
        "image_size": "128x96 JPEG",
        # after the refresh: planted copies quarantined as near (or, when one original was
        # copied twice, identical-pixel) duplicates, and originals quarantined as duplicates
        "planted_copies_found": int((dup & planted_rows).sum()),
        "originals_flagged_as_duplicates": int((dup & ~planted_rows).sum()),
        "stage_wall_s": round(wall, 1),
        "stage_cpu_s": round(cpu, 1),
        "images_per_s": round((n - 10) / wall, 1),
        "peak_rss_mb": round(peak_mb, 1),
        "state_bytes_per_image": round(state_bytes / (n - 10), 1),
        "state_files": list(state_files),
        "manifest_bytes_per_image": round(manifest_bytes / (n - 10), 1),
        "planted_near_copies": planted,
        "near_duplicates_found_first_run": found,
        "decodes_first_run": first_decodes,
        "refresh_10_new": {
            "wall_s": round(refresh_wall, 1),
            "decoded": len(decodes) - first_decodes,
            "dedup": refresh.details["dedup"],
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--full", action="store_true", help="100k-image scale run, 1M-hash index")
    ap.add_argument("--n", type=int, default=300, help="images per generated peer set")
    ap.add_argument("--tune-seed", type=int, default=1)
    ap.add_argument("--report-seeds", default="0,2", help="comma-separated, never tuned on")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/visionloop-bench-curate"))
    ap.add_argument(
        "--peer",
        type=Path,
        default=Path(
            os.environ.get("VISIONLOOP_PEER", ROOT.parent / "shared/bench/curation_peer.py")
        ),
    )
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="inspect decoding threads")
    ap.add_argument("--scale", type=int, default=None, help="images in the scale run")
    ap.add_argument("--hashes", type=int, default=None, help="hashes in the index benchmark")
    ap.add_argument("--large", type=int, default=8, help="12 MP images for a throughput point")
    ap.add_argument("--cleanvision-python", default=None)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--_scale_child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_scale_generate", type=int, default=None, help=argparse.SUPPRESS)
    a, _unknown = ap.parse_known_args()  # bench/run.sh passes one argument list to every script

    a.workdir.mkdir(parents=True, exist_ok=True)
    if a._scale_generate:
        t = time.perf_counter()
        scale_images(a.workdir, a._scale_generate)
        print(json.dumps({"generate_s": round(time.perf_counter() - t, 1)}))
        return
    if a._scale_child:
        print(json.dumps(scale_child(a.workdir, a._scale_child)))
        return
    if a.cleanvision_python is None and DEFAULT_CV.exists():
        a.cleanvision_python = str(DEFAULT_CV)
    scale_n = a.scale or (100_000 if a.full else 10_000)
    hashes_n = a.hashes or (1_000_000 if a.full else 200_000)
    params = load_params(a.params)
    cv2.setNumThreads(1)
    result: dict[str, Any] = {
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "loadavg_at_start": os.getloadavg(),
            "opencv": cv2.__version__,
        },
        "shipped_params": params.curate.model_dump(),
    }
    if a.peer.exists():
        peer = load_peer(a.peer)
        images, gt = dataset(peer, a.workdir, f"tuning_n{a.n}_seed{a.tune_seed}", a.n, a.tune_seed)
        tuned = inspect_folder(str(images), params.curate, workers=a.workers)
        result["tuning"] = {
            "seed": a.tune_seed,
            "tuned_thresholds": tune(tuned.files, gt),
            "scores_with_shipped_params": _pr(peer.score(gt, tuned.flags(), issue_types=SCORED)),
        }
        first = None
        for seed in (int(s) for s in a.report_seeds.split(",")):
            images, gt = dataset(peer, a.workdir, f"report_n{a.n}_seed{seed}", a.n, seed)
            first = first or images
            result[f"report_seed_{seed}"] = peer_comparison(peer, a.peer, images, gt, params, a)
        if first is not None:
            files = sorted(p for p in first.iterdir() if p.suffix == ".jpg")
            result["metric_pass_vs_imread"] = throughput(files, params.curate.work_max_side, 3)
        result["blur_flag_rate_by_gaussian_radius"] = blur_sensitivity(peer, params.curate)
        if a.large:
            big = large_set(peer, a.workdir, a.large)
            result["large_12mp"] = throughput(big, params.curate.work_max_side, 2)
    else:
        result["peer"] = f"skipped: peer benchmark not found at {a.peer}"
    result["near_duplicate_index"] = index_bench(hashes_n, params.curate.phash_radius)
    # Two children: one writes the images (cached across runs), a fresh one runs the stage,
    # so that its peak RSS is the stage's own.
    scale: dict[str, Any] = {}
    for flag in ("--_scale_generate", "--_scale_child"):
        proc = subprocess.run(
            [sys.executable, __file__, flag, str(scale_n), "--workdir", str(a.workdir)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            scale = {"error": proc.stderr[-2000:]}
            break
        scale.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    result["scale_run"] = scale
    result["machine"]["loadavg_at_end"] = os.getloadavg()
    text = json.dumps(result, indent=1, default=str)
    print(text)
    if a.out:
        a.out.write_text(text)


if __name__ == "__main__":
    main()
