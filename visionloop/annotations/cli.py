"""``visionloop labels ...``: import any supported annotation export into the canonical table,
and export the table to COCO, YOLO, Label Studio or CVAT, with a loss report.

Light at import (click only): the readers, pandas and pyarrow are imported inside the
commands. The import command reads sources with the same registry and code as the pipeline's
import_annotations stage (``stages.import_annotations.read_source``).
"""

from __future__ import annotations

import importlib.util
import json
import sys

import click

from visionloop.cli import LazyGroup


def _lazy_commands() -> dict[str, str]:
    """Sub-commands living in other modules; listed only once their module exists, so
    ``visionloop labels --help`` works before they are written."""
    try:
        present = importlib.util.find_spec("visionloop.qa.cli") is not None
    except ModuleNotFoundError:  # the visionloop.qa package itself is absent
        present = False
    return {"qa": "visionloop.qa.cli:qa"} if present else {}


@click.group(cls=LazyGroup, name="labels", lazy=_lazy_commands())
def labels() -> None:
    """Annotation tables: import vendor exports, export to annotation formats."""


@labels.command("formats")
def formats() -> None:
    """List the formats that can be imported and exported."""
    from visionloop.annotations.export import WRITERS
    from visionloop.annotations.formats import READERS

    click.echo("import: " + ", ".join(sorted(READERS)))
    click.echo("export: " + ", ".join(sorted(WRITERS)))


@labels.command("detect")
@click.argument("path")
def detect(path: str) -> None:
    """Say which format PATH is in, and why (or why it cannot tell)."""
    from visionloop.annotations.formats import FormatDetectionError, detect_format

    try:
        name, why = detect_format(path)
    except FormatDetectionError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"{name}: {why}")


def _summary_lines(result_issues: list, n: int, categories: int) -> list[str]:
    errors = [i for i in result_issues if i.level == "error"]
    warnings = [i for i in result_issues if i.level == "warning"]
    lines = [
        f"{n} annotation(s), {categories} categor{'y' if categories == 1 else 'ies'}, "
        f"{len(errors)} error(s) (not imported), {len(warnings)} warning(s)"
    ]
    for issue in (errors + warnings)[:20]:
        lines.append(f"  {issue.level}: {issue.code}: {issue}")
    if len(errors) + len(warnings) > 20:
        lines.append(f"  ... {len(errors) + len(warnings) - 20} more in the report")
    return lines


@labels.command("import")
@click.argument("path")
@click.option(
    "--format", "fmt", default="auto", show_default=True, help="Source format, or auto-detect."
)
@click.option("--out", "out", required=True, help="Output table (.parquet).")
@click.option(
    "--manifest",
    default=None,
    help="A stage manifest (.parquet) to match images against and take image sizes from.",
)
@click.option("--label-config", default=None, help="Label Studio: the project's label config.")
@click.option("--out-of-bounds-tolerance", type=float, default=0.01, show_default=True)
@click.option("--max-coordinate", type=float, default=100_000.0, show_default=True)
@click.option("--strict", is_flag=True, help="Exit 1 when any record could not be imported.")
def import_(
    path: str,
    fmt: str,
    out: str,
    manifest: str | None,
    label_config: str | None,
    out_of_bounds_tolerance: float,
    max_coordinate: float,
    strict: bool,
) -> None:
    """Import the export at PATH into the canonical table OUT (+ OUT.categories.json and
    OUT.report.json beside it)."""
    from visionloop import storage
    from visionloop.annotations.export import (
        categories_path,
        import_to_table,
        write_annotation_table,
    )
    from visionloop.annotations.formats import FormatDetectionError, detect_format, get_reader
    from visionloop.annotations.match import build_report, match_annotations
    from visionloop.annotations.table import AnnotationImportError, Limits, category_counts
    from visionloop.stages.import_annotations import known_images

    limits = Limits(out_of_bounds_tolerance=out_of_bounds_tolerance, max_coordinate=max_coordinate)
    how = "given"
    try:
        if fmt == "auto":
            fmt, why = detect_format(path)
            how = f"detected: {why}"
        before = storage.read_table(manifest) if manifest else None
        images = known_images(before) if before is not None else None
        streamed = False
        if label_config and fmt == "label_studio":
            from visionloop.annotations.formats.label_studio import load_label_studio

            result = load_label_studio(
                path, images=images, limits=limits, label_config=label_config
            )
        elif before is None:  # nothing to match: straight to the table (COCO: streamed)
            result = import_to_table(path, fmt, out, images=images, limits=limits)
            streamed = True
        else:
            result = get_reader(fmt).load(path, images=images, limits=limits)
    except (FormatDetectionError, AnnotationImportError, KeyError) as e:
        raise click.ClickException(str(e)) from e
    df = result.annotations
    if before is not None:
        df, detail = match_annotations(df, before)
        report = build_report(df, detail, result.images, before, result.issues)
    else:
        errors = [i for i in result.issues if i.level == "error"]
        report = {
            "annotations": result.rows if streamed else len(df),
            "per_category": _category_counts(out) if streamed else category_counts(df),
            "errors": len(errors),
            "warnings": len(result.issues) - len(errors),
            "error_examples": [i.to_dict() for i in errors[:50]],
            "warning_examples": [i.to_dict() for i in result.issues if i.level != "error"][:50],
        }
    report.update({"source": path, "format": fmt, "format_choice": how})
    report["issues"] = [i.to_dict() for i in result.issues]
    if not streamed:
        write_annotation_table(df, result.categories, out)
    report_uri = (
        out[: -len(".parquet")] + ".report.json"
        if out.endswith(".parquet")
        else (out + ".report.json")
    )
    storage.write_text_atomic(report_uri, json.dumps(report, indent=2, default=str) + "\n")
    click.echo(f"{path}: {fmt} ({how})")
    for line in _summary_lines(result.issues, report["annotations"], len(result.categories)):
        click.echo(line)
    if before is not None:
        click.echo(
            f"matched {report['matched']}, on quarantined images {report['quarantined_item']}, "
            f"unmatched {report['unmatched']}; unlabelled accepted images "
            f"{report['unlabelled_accepted']}"
        )
    click.echo(f"wrote {out}, {categories_path(out)}, {report_uri}")
    if strict and report["errors"]:
        sys.exit(1)


def _category_counts(table: str) -> dict[str, int]:
    """Per-category counts of a table on disk, reading only its category column."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from visionloop import storage

    fs, p = storage.filesystem(table)
    with fs.open(p, "rb") as fh:
        col = pq.read_table(fh, columns=["category"]).column("category")
    counts = pc.value_counts(col).to_pylist()
    return {str(c["values"]): int(c["counts"]) for c in sorted(counts, key=lambda c: c["values"])}


@labels.command("export")
@click.argument("table")
@click.option("--format", "fmt", required=True, help="coco | yolo | label_studio | cvat")
@click.option("--out", "out", required=True, help="Output file or folder.")
@click.option(
    "--as-predictions",
    is_flag=True,
    help="Label Studio: write every row as a pre-annotation (prediction).",
)
@click.option("--model-version", default="visionloop", show_default=True)
@click.option("--strict", is_flag=True, help="Exit 1 when the format cannot carry everything.")
def export(
    table: str, fmt: str, out: str, as_predictions: bool, model_version: str, strict: bool
) -> None:
    """Export the canonical TABLE (.parquet) as FORMAT at OUT; prints, and writes beside OUT,
    the loss report (what the format could not carry)."""
    from visionloop.annotations.export import export_table, read_annotation_table
    from visionloop.annotations.table import AnnotationImportError

    options: dict[str, object] = {}
    if fmt == "label_studio":
        options = {"as_predictions": as_predictions, "model_version": model_version}
    elif as_predictions:
        raise click.UsageError("--as-predictions applies to --format label_studio only")
    try:
        df, categories = read_annotation_table(table)
        report = export_table(df, categories, fmt, out, **options)
    except (AnnotationImportError, KeyError) as e:
        raise click.ClickException(str(e)) from e
    for line in report.lines():
        click.echo(line)
    click.echo(f"loss report: {report.files[-1]}")
    if strict and not report.lossless:
        sys.exit(1)
