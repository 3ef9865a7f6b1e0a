"""The run report: one self-contained HTML page a person reads after a run.

Counts per stage, every gate, metric histograms with their thresholds, and thumbnails of what
was excluded. Thumbnails are only ever taken from *published* (anonymized) images: a raw file
quarantined before redaction may show a face, so it is listed by name, never shown.
"""

from __future__ import annotations

import base64
import html
import io
import json
from typing import Any

import numpy as np
import pandas as pd

from visionloop import storage
from visionloop.config import Params
from visionloop.pipeline import gate_results, summaries
from visionloop.stages.base import Workspace

THUMBS_PER_REASON = 6
THUMB_SIDE = 160


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _png_data_uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _thumbnail(ws: Workspace, rel: str) -> str | None:
    import cv2

    try:
        data = np.frombuffer(storage.read_bytes(ws.resolve(rel)), np.uint8)
        img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except (OSError, ValueError):
        return None
    if img is None:
        return None
    scale = THUMB_SIDE / max(img.shape[:2])
    img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return "data:image/jpeg;base64," + base64.b64encode(enc.tobytes()).decode() if ok else None


def _histograms(curated: pd.DataFrame, params: Params) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = params.curate
    panels = [
        ("curate_blur_score", "blur score (higher = sharper)", [c.blur_threshold]),
        ("curate_brightness", "brightness", [c.dark_threshold, c.bright_threshold]),
        ("curate_entropy", "entropy (bits)", [c.low_information_threshold]),
    ]
    panels = [p for p in panels if p[0] in curated.columns]
    if not panels:
        return ""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3))
    for ax, (col, title, lines) in zip(np.atleast_1d(axes), panels, strict=True):
        values = pd.to_numeric(curated[col], errors="coerce").dropna()
        ax.hist(values, bins=30, color="#4a78b5")
        for x in lines:
            ax.axvline(x, color="#c0392b", linestyle="--", linewidth=1)
        ax.set_title(title, fontsize=10)
    uri = _png_data_uri(fig)
    plt.close(fig)
    return f'<img alt="metric histograms" src="{uri}">'


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>none</p>"
    head = "".join(f"<th>{_esc(k)}</th>" for k in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{_esc(v)}</td>" for v in r.values()) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _quarantine_section(ws: Workspace, manifest: pd.DataFrame) -> str:
    out = []
    quarantined = manifest[manifest["status"] == "quarantined"]
    for reason, group in quarantined.groupby("reason", sort=True):
        cells = []
        for _, row in group.head(THUMBS_PER_REASON).iterrows():
            rel = row.get("anonymize_object_uri")
            thumb = _thumbnail(ws, rel) if isinstance(rel, str) and rel else None
            img = f'<img src="{thumb}">' if thumb else '<div class="noimg">not shown</div>'
            cells.append(
                f"<figure>{img}<figcaption>{_esc(row['rel_path'])}<br>"
                f"<small>{_esc(row.get('reason_detail') or '')}</small></figcaption></figure>"
            )
        out.append(
            f"<h3>{_esc(reason)} ({len(group)})</h3><div class='grid'>{''.join(cells)}</div>"
        )
    return "".join(out) or "<p>nothing quarantined</p>"


def build_report(ws: Workspace, params: Params, snapshot: str | None = None) -> str:
    """Write ``<data>/report/index.html`` and return its URI."""
    stages = summaries(ws)
    gates = gate_results(ws)
    parts = [f"<h1>visionloop run report</h1><p>snapshot: <b>{_esc(snapshot or 'none')}</b></p>"]
    parts.append("<h2>Stages</h2>")
    parts.append(
        _table(
            [
                {
                    "stage": name,
                    "input": s.input,
                    "accepted": s.accepted,
                    "quarantined": s.quarantined,
                    "reasons": ", ".join(f"{k}: {v}" for k, v in s.reasons.items()) or "-",
                }
                for name, s in stages.items()
            ]
        )
    )
    parts.append("<h2>Gates</h2>")
    gate_rows = []
    for stage, g in gates.items():
        failed = [r for r in g.get("results", []) if not r.get("success")]
        gate_rows.append(
            {
                "gate": stage,
                "passed": g.get("success"),
                "failed expectations": "; ".join(
                    f"{r.get('severity')}: {r.get('expectation')} {r.get('column') or ''} "
                    f"({r.get('unexpected_count')} of {r.get('element_count')})"
                    for r in failed
                )
                or "-",
                "Data Docs": "gx/uncommitted/data_docs/local_site/index.html",
            }
        )
    parts.append(_table(gate_rows))
    curate_uri = ws.manifest_uri("curate")
    latest = next(
        (
            ws.manifest_uri(s)
            for s in ("curate", "anonymize", "collect")
            if storage.exists(ws.manifest_uri(s))
        ),
        None,
    )
    if storage.exists(curate_uri):
        curated = storage.read_table(curate_uri)
        parts.append("<h2>Curation metrics</h2>")
        parts.append(_histograms(curated[curated["status"] == "accepted"], params))
    if latest:
        parts.append("<h2>Quarantined items</h2>")
        parts.append(_quarantine_section(ws, storage.read_table(latest)))
    report_uri = ws.uri("import_annotations", "report.json")
    if storage.exists(report_uri):
        ann = json.loads(storage.read_text(report_uri))
        parts.append("<h2>Annotations</h2><pre>")
        parts.append(_esc(json.dumps(ann, indent=2)[:4000]))
        parts.append("</pre>")
    drift_uri = ws.uri("refresh", "drift.parquet")
    if storage.exists(drift_uri):
        parts.append("<h2>Drift against the reference snapshot</h2>")
        parts.append(_table(storage.read_table(drift_uri).to_dict("records")))
    picks_uri = ws.uri("refresh", "to_annotate.parquet")
    if storage.exists(picks_uri):
        picks = storage.read_table(picks_uri).head(20)
        parts.append("<h2>Next to annotate (first 20)</h2>")
        parts.append(_table(picks.to_dict("records")))
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>visionloop report</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
        "padding:4px 8px;font-size:13px;text-align:left}.grid{display:flex;flex-wrap:wrap}"
        "figure{margin:6px;width:170px;font-size:11px}.noimg{width:160px;height:100px;"
        "background:#eee;display:flex;align-items:center;justify-content:center}</style>"
        "</head><body>" + "".join(parts) + "</body></html>"
    )
    out = ws.uri("report", "index.html")
    storage.write_text_atomic(out, page)
    return out
