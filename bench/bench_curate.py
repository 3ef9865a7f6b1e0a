"""Throughput and flag quality of the curate metrics (prints JSON figures; not a unit test).

Data: the peer benchmark's generator (``shared/bench/curation_peer.py``: 640x480-ish JPEGs with
planted blur, darkness, overexposure, flat frames, exact and near duplicates). Two sets with
different seeds: the TUNING set (seed 1) picks thresholds, the REPORT set (seed 0, the peer's
default) is scored with the thresholds that ship in params.yaml, so the reported precision and
recall are not measured on the data they were tuned on.

Throughput: images per CPU-second of the metric pass (read bytes, one reduced decode,
``compute_metrics``) against plain ``cv2.imread`` of the same files, in the same run (best of
``--repeat``, alternating, so both see the same machine load). Image sizes come from the
manifest in the pipeline, so here they are read beforehand, untimed.

Flags are scored with the peer's tool-agnostic ``score``. Exact duplicates are collect's job
(byte-identical files are quarantined there): they are removed first, as in the pipeline, and
scored from sha256. Grayscale, odd size and odd aspect ratio are not curate issues.

    python bench/bench_curate.py [--n 300] [--workdir DIR] [--peer PATH] [--repeat 3]
        [--cleanvision-python /tmp/cv-venv/bin/python]   # run the peer tool on the same files
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from visionloop.config import CurateParams, load_params
from visionloop.curate import QUALITY_CHECKS, flag_quality
from visionloop.curate.dedup import find_near_duplicates
from visionloop.curate.metrics import compute_metrics, decode_for_metrics

ROOT = Path(__file__).resolve().parents[1]
FLAG_TO_PEER = {
    "blurry": "blurry",
    "dark": "dark",
    "overexposed": "light",
    "low_information": "low_information",
}
SCORED = [*FLAG_TO_PEER.values(), "near_duplicates", "exact_duplicates"]


def load_peer(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location("curation_peer", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dataset(peer: Any, root: Path, name: str, n: int, seed: int) -> tuple[Path, dict]:
    images = root / name
    gt_path = root / f"{name}_ground_truth.json"
    if gt_path.exists():
        gt = json.loads(gt_path.read_text())
        if gt.get("n") == n and gt.get("seed") == seed and images.is_dir():
            return images, gt
    return images, peer.generate(images, n, seed)


def _cpu() -> float:
    return time.process_time()


def measure(files: list[Path], sizes: dict[str, tuple[int, int]], work_max_side: int) -> tuple:
    """One metric pass over ``files``; returns (metrics frame, CPU seconds)."""
    rows = []
    t = _cpu()
    for p in files:
        w, h = sizes[p.name]
        image, factor = decode_for_metrics(p.read_bytes(), w, h, work_max_side=work_max_side)
        m = compute_metrics(image, work_max_side)
        m["name"], m["decode_factor"] = p.name, factor
        rows.append(m)
    return pd.DataFrame(rows), _cpu() - t


def baseline(files: list[Path]) -> float:
    t = _cpu()
    for p in files:
        cv2.imread(str(p), cv2.IMREAD_COLOR)
    return _cpu() - t


def throughput(files: list[Path], work_max_side: int, repeat: int) -> tuple[pd.DataFrame, dict]:
    sizes = {}
    for p in files:
        with Image.open(p) as im:
            sizes[p.name] = im.size
    ours, base = [], []
    frame = pd.DataFrame()
    for _ in range(repeat):
        base.append(baseline(files))
        frame, cpu = measure(files, sizes, work_max_side)
        ours.append(cpu)
    n = len(files)
    return frame, {
        "work_max_side": work_max_side,
        "images": n,
        "metrics_img_per_cpu_s": round(n / min(ours), 1),
        "cv2_imread_img_per_cpu_s": round(n / min(base), 1),
        "ratio_vs_imread": round(min(base) / min(ours), 3),
        "decode_factors": {
            str(k): int(v) for k, v in frame["decode_factor"].value_counts().items()
        },
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
            gray, _ = decode_for_metrics(
                buf.getvalue(), 640, 480, work_max_side=params.work_max_side
            )
            hits[r] += compute_metrics(gray, params.work_max_side)["blur"] < params.blur_threshold
    return {f"radius_{r:g}": round(hits[r] / n, 3) for r in radii}


def flags_for(frame: pd.DataFrame, files: list[Path], params: CurateParams) -> dict[str, set]:
    """Our flags per file name, in the peer's issue vocabulary, as the pipeline would set them."""
    # collect: byte-identical files -> the first by name is kept, the rest are exact duplicates
    digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    first: dict[str, str] = {}
    exact: dict[str, str] = {}
    for name in sorted(digest):
        if digest[name] in first:
            exact[name] = first[digest[name]]
        else:
            first[digest[name]] = name
    out: dict[str, set] = {p.name: set() for p in files}
    for dup, kept in exact.items():
        out[dup].add("exact_duplicates")
        out[kept].add("exact_duplicates")

    live = frame[~frame["name"].isin(exact)].reset_index(drop=True)
    flags = flag_quality(live, params)
    for check in QUALITY_CHECKS:
        for name in live.loc[flags[f"is_{check.flag}"], "name"]:
            out[name].add(FLAG_TO_PEER[check.flag])
    items = pd.DataFrame(
        {
            "source_uri": live["name"],
            "phash": live["phash"],
            "entropy": live["entropy"],
            "blur": live["blur"],
            "width": live["work_width"],
            "height": live["work_height"],
            "passes_quality": ~flags.any(axis=1),
        }
    )
    dups = find_near_duplicates(items, params.phash_radius, params.phash_min_entropy)
    for name, kept in zip(live["name"], dups["near_duplicate_of"], strict=True):
        if isinstance(kept, str):
            out[name].add("near_duplicates")
            out[kept].add("near_duplicates")  # the peer counts both members of a pair
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


def tune(frame: pd.DataFrame, gt: dict) -> dict:
    """Thresholds the tuning set supports (we ship rounded values of these)."""

    def truth(cat: str) -> np.ndarray:
        return frame["name"].map(lambda n: cat in gt["files"][n]).to_numpy(bool)

    exact = truth("exact_duplicates") & frame["name"].str.startswith("exact_")
    live = frame[~exact]
    lt = {
        "blur_threshold": ("blur", "blurry", True),
        "dark_threshold": ("brightness_high", "dark", True),
        "bright_threshold": ("brightness_low", "light", False),
        "low_information_threshold": ("entropy", "low_information", True),
    }
    out = {}
    for param, (metric, cat, below) in lt.items():
        t = live["name"].map(lambda n, c=cat: c in gt["files"][n]).to_numpy(bool)
        out[param] = _best_threshold(live[metric].to_numpy(float), t, below)
    # pHash radius: planted near-copy pairs vs every other pair
    h = {n: int(p, 16) for n, p in zip(live["name"], live["phash"], strict=True)}
    pairs = []
    for n, cats in gt["files"].items():
        src = [c[7:] for c in cats if c.startswith("source=")]
        if n.startswith("near_duplicates") and src:
            pairs.append((n, src[0]))
    within = [(h[a] ^ h[b]).bit_count() for a, b in pairs]
    names = list(h)
    planted = {frozenset(p) for p in pairs}
    other = [
        (h[a] ^ h[b]).bit_count()
        for i, a in enumerate(names)
        for b in names[i + 1 :]
        if frozenset((a, b)) not in planted
    ]
    other_min = min(other) if other else 64
    out["phash_radius"] = {
        "planted_pairs_max_distance": max(within) if within else None,
        "other_pairs_min_distance": other_min,
        "threshold": (max(within) + other_min) // 2 if within else None,
    }
    return out


def run_cleanvision(python: str, peer_path: Path, images: Path) -> dict:
    cmd = [python, str(peer_path), "--images-dir", str(images), "--no-generate", "--repeat", "1"]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"}
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip()[-2000:]}
    res = json.loads(proc.stdout)
    med = res["median_run"]
    return {
        "version": med.get("version"),
        "images_per_cpu_s": med.get("images_per_cpu_s"),
        "vs_ground_truth": {
            k: {x: v[x] for x in ("precision", "recall", "tp", "truth", "flagged")}
            for k, v in med.get("vs_ground_truth", {}).items()
            if k in SCORED
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=300, help="images per generated set")
    ap.add_argument("--tune-seed", type=int, default=1)
    ap.add_argument("--report-seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/visionloop-bench-curate"))
    ap.add_argument(
        "--peer",
        type=Path,
        default=Path(
            os.environ.get("VISIONLOOP_PEER", ROOT.parent / "shared/bench/curation_peer.py")
        ),
    )
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--also-work-side", type=int, default=320, help="second throughput point")
    ap.add_argument("--large", type=int, default=16, help="12 MP images for a throughput point")
    ap.add_argument("--cleanvision-python", default=None)
    ap.add_argument("--out", type=Path, default=None)
    a, _unknown = ap.parse_known_args()  # bench/run.sh passes one argument list to every script

    if not a.peer.exists():
        print(json.dumps({"skipped": f"peer benchmark not found at {a.peer}"}))
        return
    peer = load_peer(a.peer)
    params = load_params(a.params).curate
    a.workdir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "opencv": cv2.__version__,
            "opencv_threads": cv2.getNumThreads(),
        },
        "shipped_params": params.model_dump(),
    }
    for role, seed in (("tuning", a.tune_seed), ("report", a.report_seed)):
        images, gt = dataset(peer, a.workdir, f"{role}_n{a.n}_seed{seed}", a.n, seed)
        files = sorted(p for p in images.iterdir() if p.suffix == ".jpg")
        frame, speed = throughput(files, params.work_max_side, a.repeat)
        block: dict[str, Any] = {"seed": seed, "n": len(files), "throughput": [speed]}
        if a.also_work_side and a.also_work_side != params.work_max_side:
            block["throughput"].append(throughput(files, a.also_work_side, a.repeat)[1])
        scores = peer.score(gt, flags_for(frame, files, params), issue_types=SCORED)
        block["scores_with_shipped_params"] = {
            k: {
                x: v[x]
                for x in ("precision", "recall", "tp", "truth", "flagged", "missed", "false_flags")
            }
            for k, v in scores.items()
        }
        if role == "tuning":
            block["tuned_thresholds"] = tune(frame, gt)
        if role == "report" and a.cleanvision_python:
            block["cleanvision_same_files"] = run_cleanvision(a.cleanvision_python, a.peer, images)
        result[role] = block
    result["blur_flag_rate_by_gaussian_radius"] = blur_sensitivity(peer, params)
    if a.large:
        big = large_set(peer, a.workdir, a.large)
        result["large_12mp"] = throughput(big, params.work_max_side, a.repeat)[1]
    text = json.dumps(result, indent=1, default=str)
    print(text)
    if a.out:
        a.out.write_text(text)


if __name__ == "__main__":
    main()
