"""``visionloop labels qa TABLE.parquet``: every label-QA finding of an annotation table.

A light module (the ``labels`` group imports it lazily): the QA code, pandas and pyarrow are
imported inside the command. The exit status is 1 when an error-level finding exists (so CI
can use it as a gate), else 0.
"""

from __future__ import annotations

import json
import math
from typing import Any

import click

SEVERITY_CHOICES = ("error", "warning", "info")


def _clean(v: Any) -> Any:
    """JSON-ready values (numpy scalars and arrays, NaN)."""
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    if hasattr(v, "tolist") and not isinstance(v, str):
        return _clean(v.tolist())
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if v is None or isinstance(v, bool | int | float | str):
        return v
    try:
        import pandas as pd

        if v is pd.NA:
            return None
    except ImportError:  # pragma: no cover
        pass
    return str(v)


def _records(df: Any) -> list[dict[str, Any]]:
    return [_clean(r) for r in df.to_dict("records")]


def format_finding(r: dict[str, Any]) -> str:
    """One line: severity, check, the items and annotations concerned, and the reason."""
    where = []
    if r.get("item"):
        where.append(f"item={r['item']}")
    if r.get("image_ref") and r.get("image_ref") != r.get("item"):
        where.append(f"image={r['image_ref']}")
    ids = list(r.get("annotation_ids") or [])
    if ids:
        where.append("annotations=" + ",".join(str(i) for i in ids))
    for key in ("category", "attribute", "annotator", "track_id", "frame"):
        if r.get(key) is not None:
            where.append(f"{'label' if key == 'category' else key}={r[key]}")
    head = f"{str(r['severity']).upper():<7} {r['check']}"
    return f"{head}  {'  '.join(where)}  {r['reason']}" if where else f"{head}  {r['reason']}"


@click.command("qa")
@click.argument("table", metavar="TABLE.parquet")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--params",
    "params_path",
    default="params.yaml",
    show_default=True,
    help="Thresholds (validate.qa); a missing file means the defaults.",
)
@click.option(
    "--categories",
    "categories_path",
    default=None,
    help="categories.json with the label set [default: the one beside TABLE, if any].",
)
@click.option(
    "--manifest",
    "manifest_path",
    default=None,
    help="A manifest whose accepted items must be labelled (missing_annotation).",
)
@click.option(
    "--published-only",
    is_flag=True,
    help="Only rows with match_status 'matched' (what a snapshot publishes).",
)
@click.option(
    "--min-severity",
    type=click.Choice(SEVERITY_CHOICES),
    default="info",
    show_default=True,
    help="Print findings at least this severe (the JSON always has all).",
)
@click.option("--out", "out_dir", default=None, help="Also write the QA tables (Parquet) here.")
def qa(
    table: str,
    as_json: bool,
    params_path: str,
    categories_path: str | None,
    manifest_path: str | None,
    published_only: bool,
    min_severity: str,
    out_dir: str | None,
) -> None:
    """Check an annotation table (structure, geometry, tracks, agreement, gold) and print
    every finding with its severity, the items and annotations concerned and the reason.

    Exits with status 1 when an error-level finding exists.
    """
    from visionloop import storage
    from visionloop.config import load_params
    from visionloop.qa.checks import SEVERITY_RANK
    from visionloop.qa.run import published_rows, run_qa, write_qa

    if not storage.exists(table):
        raise click.ClickException(f"{table} does not exist")
    params = load_params(params_path)
    df = storage.read_table(table)
    if published_only:
        df = published_rows(df)
    if categories_path is None:
        beside = storage.join(storage.dirname(table), "categories.json")
        categories_path = beside if storage.exists(beside) else None
    categories = json.loads(storage.read_text(categories_path)) if categories_path else None
    items = None
    if manifest_path:
        man = storage.read_table(manifest_path)
        items = man.loc[man["status"] == "accepted", "item_id"].astype(str).tolist()
    result = run_qa(df, params, categories=categories, items=items)
    written = write_qa(result, out_dir) if out_dir else {}
    summary = {**result.summary, "table": table, "categories": categories_path}
    if written:
        summary["outputs"] = written
    if as_json:
        doc = {
            "summary": summary,
            "findings": _records(result.findings),
            "agreement": _records(result.agreement),
            "scorecards": _records(result.scorecards),
            "gold": _records(result.gold),
        }
        click.echo(json.dumps(_clean(doc), indent=2, sort_keys=True))
    else:
        _echo_text(result, summary, SEVERITY_RANK[min_severity])
    if len(result.errors):
        raise SystemExit(1)


def _echo_text(result: Any, summary: dict[str, Any], max_rank: int) -> None:
    from visionloop.qa.checks import SEVERITY_RANK

    shown = 0
    for r in _records(result.findings):
        if SEVERITY_RANK[r["severity"]] <= max_rank:
            click.echo(format_finding(r))
            shown += 1
    sev = summary.get("by_severity") or {}
    spec = summary.get("label_set") or {}
    click.echo(
        f"{summary.get('annotations', 0)} annotation(s) on {summary.get('items', 0)} item(s), "
        f"label set from {spec.get('source')}: {sev.get('error', 0)} error(s), "
        f"{sev.get('warning', 0)} warning(s), {sev.get('info', 0)} info"
        + (f" ({shown} shown)" if shown != summary.get("findings") else "")
    )
    agree = summary.get("agreement") or {}
    if agree.get("items_compared"):
        alpha = (agree.get("alpha") or {}).get("alpha")
        click.echo(
            f"agreement on {agree['items_compared']} item(s): F1 {_f(agree.get('f1'))}, "
            f"mean IoU {_f(agree.get('mean_iou'))}, Krippendorff's alpha (1 - IoU) {_f(alpha)} "
            f"(match at IoU >= {agree.get('iou_threshold')})"
        )
    for card in _records(result.scorecards):
        if not card["shared_items"] and not card["gold_items"]:
            continue  # nobody to compare with
        parts = [
            f"annotator {card['annotator']}:",
            f"{card['shared_items']} shared item(s), F1 {_f(card['f1'])}, "
            f"mean IoU {_f(card['mean_iou'])}",
        ]
        if card.get("gold_items"):
            parts.append(
                f"gold accuracy {_f(card['gold_accuracy'])} on {card['gold_items']} item(s) "
                f"({card['gold_valid']} valid, {card['gold_mismatched']} mismatched, "
                f"{card['gold_missing']} missing, {card['gold_extra']} extra)"
            )
        click.echo(" ".join(parts))


def _f(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):.3f}"
