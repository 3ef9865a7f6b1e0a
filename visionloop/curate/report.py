"""The curate report: one self-contained HTML page (data/curate/report.html).

Histograms of every metric with its thresholds, the coverage heatmap and the gap table, the
cross-split leakage pairs, and thumbnails of each flagged group (duplicate groups side by side
with the copy that was kept). Thumbnails are only ever taken from PUBLISHED (anonymized)
images: a file quarantined before redaction may show a face, so it is never shown.

Class coverage appears when ``annotations`` (the imported annotation table) is passed: the
curate stage runs before labels are imported, so the stage's own report has no class section;
a later caller (after import_annotations) can rebuild the page with it.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
from typing import Any

import numpy as np
import pandas as pd

from visionloop import storage
from visionloop.config import Params
from visionloop.curate import FLAGS
from visionloop.curate import coverage as cov
from visionloop.stages.base import Workspace

log = logging.getLogger(__name__)

THUMB_SIDE = 150
MAX_TABLE_ROWS = 50
MAX_GROUPS = 6  # duplicate groups shown per tier

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:left}
th{background:#f2f2f2}.grid{display:flex;flex-wrap:wrap;gap:8px}
figure{margin:0;width:160px;font-size:11px;word-break:break-all}
figure img{max-width:150px;max-height:150px;display:block}
.noimg{width:150px;height:90px;background:#eee;color:#888;display:flex;align-items:center;
justify-content:center}.group{border:1px solid #ddd;padding:6px;margin:6px 0}
.kept figcaption{color:#1e7b34;font-weight:600}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _fig_uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _table(frame: pd.DataFrame, limit: int = MAX_TABLE_ROWS) -> str:
    if frame.empty:
        return "<p>none</p>"
    head = "".join(f"<th>{_esc(c)}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_esc(_fmt(v))}</td>" for v in row) + "</tr>"
        for row in frame.head(limit).itertuples(index=False)
    )
    more = f"<p>... {len(frame) - limit} more rows</p>" if len(frame) > limit else ""
    return f"<table><tr>{head}</tr>{body}</table>{more}"


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.3g}"
    return "" if v is None or v is pd.NA else v


def thumbnail(ws: Workspace, rel: object) -> str | None:
    """A JPEG data URI of a published image (``anonymize_object_uri``), or None."""
    import cv2

    if not isinstance(rel, str) or not rel.startswith("anonymize/"):
        return None  # only published (redacted) images are ever shown
    try:
        data = np.frombuffer(storage.read_bytes(ws.resolve(rel)), np.uint8)
    except OSError:
        return None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None:
        return None
    scale = min(1.0, THUMB_SIDE / max(img.shape[:2]))
    img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return "data:image/jpeg;base64," + base64.b64encode(enc.tobytes()).decode() if ok else None


def _figure(ws: Workspace, row: pd.Series, caption: str, css: str = "") -> str:
    thumb = thumbnail(ws, row.get("anonymize_object_uri"))
    img = f'<img src="{thumb}">' if thumb else '<div class="noimg">not shown</div>'
    name = row.get("rel_path") or row.get("source_uri")
    return (
        f'<figure class="{css}">{img}<figcaption>{_esc(name)}<br>'
        f"<small>{_esc(caption)}</small></figcaption></figure>"
    )


# ------------------------------------------------------------------------------------------
# Sections
# ------------------------------------------------------------------------------------------


def _histograms(df: pd.DataFrame, params: Params) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = params.curate
    clip = np.fmax(
        pd.to_numeric(df.get("curate_clip_low"), errors="coerce"),
        pd.to_numeric(df.get("curate_clip_high"), errors="coerce"),
    )
    panels: list[tuple[str, Any, list[float], bool]] = [
        ("blur score (1 = sharp)", df.get("curate_blur_score"), [c.blur_threshold], False),
        ("99th-pct luminance (dark)", df.get("curate_brightness_high"), [c.dark_threshold], False),
        (
            "5th-pct luminance (overexposed)",
            df.get("curate_brightness_low"),
            [c.bright_threshold],
            False,
        ),
        ("entropy (bits)", df.get("curate_entropy"), [c.low_information_threshold], False),
        ("clipped share (0 or 255)", clip, [c.clipping_threshold], False),
        (
            "channel spread p99 (levels)",
            df.get("curate_channel_spread"),
            [c.grayscale_threshold],
            False,
        ),
        ("colour cast", df.get("curate_color_cast"), [c.color_cast_threshold], False),
        ("size robust z", df.get("curate_size_z"), [-c.relative_z, c.relative_z], False),
        ("aspect ratio (long/short)", df.get("curate_aspect_ratio"), [c.odd_aspect_max], True),
    ]
    panels = [p for p in panels if p[1] is not None]
    cols = 3
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows))
    for ax, (title, values, lines, logx) in zip(np.ravel(axes), panels, strict=False):
        v = pd.to_numeric(pd.Series(values), errors="coerce").dropna()
        if len(v):
            ax.hist(v, bins=40, color="#4a78b5")
        for x in lines:
            ax.axvline(x, color="#c0392b", linestyle="--", linewidth=1)
        if logx and len(v) and v.min() > 0:
            ax.set_xscale("log")
        ax.set_title(title, fontsize=10)
    for ax in np.ravel(axes)[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    uri = _fig_uri(fig)
    plt.close(fig)
    return f'<img alt="metric histograms" src="{uri}">'


def _heatmap(coverage: pd.DataFrame, dims: list[str], params: Params) -> str:
    """Joint cells of the first two dimensions as a heatmap (one dimension: bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if coverage.empty or not dims:
        return "<p>no coverage dimensions</p>"
    min_count = params.curate.coverage_min_count
    if len(dims) == 1:
        part = coverage[coverage["slice"] == dims[0]]
        fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(part)), 3))
        colours = ["#c0392b" if n < min_count else "#4a78b5" for n in part["count"]]
        ax.bar(part[dims[0]].astype(str), part["count"], color=colours)
        ax.axhline(min_count, color="#c0392b", linestyle="--", linewidth=1)
        ax.tick_params(axis="x", rotation=45, labelsize=8)
    else:
        a, b = dims[0], dims[1]
        name = f"{a}×{b}" if len(dims) == 2 else "×".join(dims)
        part = coverage[coverage["slice"] == name]
        grid = part.groupby([a, b])["count"].sum().unstack(fill_value=0)
        fig, ax = plt.subplots(figsize=(max(4, 1.1 * grid.shape[1] + 2), 0.5 * grid.shape[0] + 2))
        ax.imshow(grid.to_numpy(), cmap="Blues", aspect="auto")
        ax.set_xticks(range(grid.shape[1]), grid.columns.astype(str), rotation=45, fontsize=8)
        ax.set_yticks(range(grid.shape[0]), grid.index.astype(str), fontsize=8)
        ax.set_xlabel(b)
        ax.set_ylabel(a)
        top = grid.to_numpy().max() if grid.size else 0
        for (r, k), n in np.ndenumerate(grid.to_numpy()):
            colour = "#c0392b" if n < min_count else ("white" if n > top / 2 else "black")
            ax.text(k, r, str(int(n)), ha="center", va="center", color=colour, fontsize=9)
        if len(dims) > 2:
            ax.set_title(f"summed over {', '.join(dims[2:])}", fontsize=9)
    uri = _fig_uri(fig)
    plt.close(fig)
    return f'<img alt="coverage heatmap" src="{uri}">'


def _flag_groups(ws: Workspace, df: pd.DataFrame, params: Params) -> str:
    n = params.curate.report_thumbnails
    quarantining = set(params.curate.quarantine)
    out = []
    for flag in FLAGS:
        col = f"curate_is_{flag}"
        if col not in df.columns:
            continue
        rows = df[df[col].fillna(False).astype(bool)]
        if rows.empty:
            continue
        role = "quarantines" if flag in quarantining else "flag only"
        out.append(f"<h3>{_esc(flag)} ({len(rows)}, {role})</h3>")
        if flag in ("near_duplicate", "pixel_duplicate"):
            out.append(_duplicate_groups(ws, df, rows, flag))
            continue
        cells = [_figure(ws, row, _caption(row, flag)) for _, row in rows.head(n).iterrows()]
        out.append(f"<div class='grid'>{''.join(cells)}</div>")
    return "".join(out) or "<p>no image flagged</p>"


def _caption(row: pd.Series, flag: str) -> str:
    status = row.get("reason") if row.get("status") == "quarantined" else "accepted"
    return f"{status}: {row.get('reason_detail') or ''}" if status != "accepted" else "accepted"


def _duplicate_groups(ws: Workspace, df: pd.DataFrame, rows: pd.DataFrame, flag: str) -> str:
    of_col = "curate_near_duplicate_of" if flag == "near_duplicate" else "curate_pixel_duplicate_of"
    by_uri = df.set_index("source_uri", drop=False)
    blocks = []
    for kept, group in list(rows.groupby(of_col, sort=True))[:MAX_GROUPS]:
        cells = []
        if kept in by_uri.index:
            cells.append(_figure(ws, by_uri.loc[kept], "kept copy", css="kept"))
        for _, row in group.iterrows():
            dist = row.get("curate_near_duplicate_distance")
            note = f"distance {dist}" if flag == "near_duplicate" else "same pixels"
            cells.append(_figure(ws, row, note))
        blocks.append(f"<div class='group grid'>{''.join(cells)}</div>")
    return "".join(blocks)


def _class_coverage(
    accepted: pd.DataFrame, annotations: pd.DataFrame | None, params: Params
) -> str:
    if annotations is None or annotations.empty:
        return "<p>no annotations imported yet: class coverage appears once labels exist</p>"
    frame, _ = cov.slice_frame(accepted, ["class"], annotations=annotations)
    table = cov.coverage_table(
        frame,
        ["class"],
        params.curate.coverage_min_count,
        params.curate.coverage_max_share,
        params.curate.coverage_max_cells,
    )
    return _table(table[["cell", "count", "share", "needed", "status"]])


FINGERPRINT_META = "visionloop-curate-fingerprint"


def report_fingerprint(ws: Workspace, params: Params) -> str:
    """What the page shows depends on: the curate tables and the curate params."""
    import hashlib

    digest = hashlib.sha256(params.curate.model_dump_json().encode())
    for name in ("manifest", "coverage", "gaps", "leakage", "balanced"):
        uri = ws.uri("curate", f"{name}.parquet")
        digest.update(storage.read_bytes(uri) if storage.exists(uri) else b"-")
    return digest.hexdigest()[:32]


def _current(uri: str, fingerprint: str) -> bool:
    if not storage.exists(uri):
        return False
    head = storage.read_bytes(uri)[:2000].decode("utf-8", "replace")
    return f'name="{FINGERPRINT_META}" content="{fingerprint}"' in head


def build_curate_report(
    ws: Workspace,
    params: Params,
    annotations: pd.DataFrame | None = None,
    fingerprint: str | None = None,
) -> str:
    """Write ``<data>/curate/report.html`` from the curate outputs and return its URI.

    With ``fingerprint`` (``report_fingerprint``) an existing page built from the same tables
    and params is kept as is: a rerun that changed nothing decodes no thumbnail.
    """
    uri = ws.uri("curate", "report.html")
    if fingerprint and annotations is None and _current(uri, fingerprint):
        log.info("curate: report unchanged (%s)", fingerprint)
        return uri
    df = storage.read_table(ws.manifest_uri("curate"))
    read = {
        name: storage.read_table(ws.uri("curate", f"{name}.parquet"))
        if storage.exists(ws.uri("curate", f"{name}.parquet"))
        else pd.DataFrame()
        for name in ("coverage", "gaps", "leakage", "balanced")
    }
    cp = params.curate
    accepted = df[df["status"] == "accepted"]
    measured = df[df["curate_blur_score"].notna()] if "curate_blur_score" in df else df.iloc[:0]
    dims = [d for d in cp.coverage if d in read["coverage"].columns]
    flag_rows = []
    for flag, reason in FLAGS.items():
        col = f"curate_is_{flag}"
        if col not in df.columns:
            continue
        flag_rows.append(
            {
                "flag": flag,
                "flagged": int(df[col].fillna(False).astype(bool).sum()),
                "quarantines": flag in cp.quarantine,
                "quarantined with this reason": int(
                    ((df["quarantined_by"] == "curate") & (df["reason"] == reason.value)).sum()
                ),
            }
        )
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>"
        + (f'<meta name="{FINGERPRINT_META}" content="{fingerprint}">' if fingerprint else "")
        + f"<title>curate report</title><style>{_CSS}</style></head><body>",
        "<h1>Curate report</h1>",
        f"<p>{len(df)} rows, {len(measured)} measured, <b>{len(accepted)} accepted</b>. "
        "Thumbnails show published (anonymized) images only.</p>",
        "<h2>Flags</h2>",
        _table(pd.DataFrame(flag_rows)),
        "<h2>Metrics</h2>",
        _histograms(measured, params) if len(measured) else "<p>nothing measured</p>",
        f"<h2>Coverage ({', '.join(dims) or 'no dimension'})</h2>",
        f"<p>minimum {cp.coverage_min_count} images per cell, maximum share "
        f"{cp.coverage_max_share:.0%}; red numbers are gaps.</p>",
        _heatmap(read["coverage"], dims, params),
        "<h3>Gaps (cell -> images still needed)</h3>",
        _table(read["gaps"]),
        "<h3>Classes</h3>",
        _class_coverage(accepted, annotations, params),
        f"<h3>Balanced subset ({len(read['balanced'])} of budget {cp.balanced_budget})</h3>",
        _table(
            read["balanced"].groupby("cell").size().rename("images").reset_index()
            if len(read["balanced"])
            else pd.DataFrame()
        ),
        "<h2>Split leakage</h2>",
        _table(read["leakage"]),
        "<h2>Flagged images</h2>",
        _flag_groups(ws, df, params),
        "</body></html>",
    ]
    storage.write_text_atomic(uri, "".join(parts))
    log.info("curate: report written to %s", uri)
    return uri


# ------------------------------------------------------------------------------------------
# Summary for the UI (Prefect artifacts are published by tasks/curate_artifacts.py)
# ------------------------------------------------------------------------------------------

MAX_LISTED = 15


def summary_rows(ws: Workspace, params: Params) -> list[dict[str, Any]]:
    """One row per curate flag: how many images carry it, and how many it quarantined."""
    df = storage.read_table(ws.manifest_uri("curate"))
    rows = []
    for flag, reason in FLAGS.items():
        col = f"curate_is_{flag}"
        flagged = int(df[col].fillna(False).astype(bool).sum()) if col in df.columns else 0
        quarantined = int(((df["quarantined_by"] == "curate") & (df["reason"] == reason)).sum())
        rows.append(
            {
                "flag": flag,
                "flagged": flagged,
                "quarantines": flag in params.curate.quarantine,
                "quarantined": quarantined,
            }
        )
    return rows


def summary_markdown(ws: Workspace, params: Params) -> str:
    """Counts, duplicate tiers, leakage, coverage gaps and where the report is, in markdown."""
    df = storage.read_table(ws.manifest_uri("curate"))
    summary_uri = ws.uri("curate", "summary.json")
    details: dict[str, Any] = {}
    if storage.exists(summary_uri):
        import json

        details = json.loads(storage.read_text(summary_uri)).get("details", {})
    acc = int((df["status"] == "accepted").sum())
    by_curate = df[df["quarantined_by"] == "curate"]
    lines = [
        f"# Curate: {acc} of {len(df)} images accepted",
        "",
        f"Quarantined by curate: {len(by_curate)} "
        + (
            "(" + ", ".join(f"{r} {n}" for r, n in by_curate["reason"].value_counts().items()) + ")"
            if len(by_curate)
            else ""
        ),
    ]
    dedup = details.get("dedup") or {}
    if dedup:
        lines += [
            "",
            f"Duplicates: {details.get('pixel_duplicate_groups', 0)} identical-pixel group(s), "
            f"{details.get('near_duplicate_groups', 0)} near-duplicate group(s) "
            f"(pHash radius {params.curate.phash_radius}); {dedup.get('searched')} of "
            f"{dedup.get('indexed')} hashes searched this run, {dedup.get('reused_pairs')} "
            "pairs reused from the previous run.",
        ]
    tables = {
        name: storage.read_table(ws.uri("curate", f"{name}.parquet"))
        for name in ("gaps", "leakage")
        if storage.exists(ws.uri("curate", f"{name}.parquet"))
    }
    leakage = tables.get("leakage")
    if leakage is not None and len(leakage):
        open_pairs = leakage[leakage["resolved_by"].isna()]
        lines += [
            "",
            f"## Split leakage: {len(leakage)} cross-split pair(s), {len(open_pairs)} unresolved",
        ]
        for r in leakage.head(MAX_LISTED).itertuples(index=False):
            lines.append(
                f"- {r.tier}: `{r.source_a}` ({r.split_a}) ~ `{r.source_b}` ({r.split_b}), "
                f"distance {r.distance}, resolved by {r.resolved_by or 'nothing'}"
            )
    gaps = tables.get("gaps")
    cov = details.get("coverage") or {}
    lines += [
        "",
        f"## Coverage ({', '.join(cov.get('dimensions', params.curate.coverage))})",
        "",
        f"{cov.get('cells', 0)} joint cell(s), {cov.get('gaps', 0)} below "
        f"{params.curate.coverage_min_count} images ({cov.get('images_needed', 0)} images "
        f"needed), {cov.get('over_max_share', 0)} above "
        f"{params.curate.coverage_max_share:.0%}; balanced subset: {cov.get('balanced', 0)} "
        "images.",
    ]
    if gaps is not None and len(gaps):
        lines += ["", "| slice | cell | images | still needed |", "|---|---|---:|---:|"]
        for r in gaps.head(MAX_LISTED).itertuples(index=False):
            lines.append(f"| {r.slice} | {r.cell} | {r.count} | {r.needed} |")
    report = ws.uri("curate", "report.html")
    if storage.exists(report):
        lines += ["", f"Report: `{report}`"]
    return "\n".join(lines)
