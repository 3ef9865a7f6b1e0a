"""``visionloop inspect DIR``: curate metrics and duplicates on any folder (light module).

Registered in ``visionloop.cli.PLUGIN_COMMANDS``; numpy, OpenCV and pandas are imported only
when the command runs, so ``visionloop --help`` stays fast.
"""

from __future__ import annotations

import json
import sys

import click


@click.command("inspect")
@click.argument("directory")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one entry per file).")
@click.option(
    "--params",
    "params_path",
    default="params.yaml",
    show_default=True,
    help="Thresholds come from its curate section (defaults when the file is absent).",
)
@click.option("--workers", type=int, default=None, help="Decoding threads (default: CPUs, <=4).")
@click.option("--all", "show_all", is_flag=True, help="Table: list clean files too.")
def inspect_command(
    directory: str, as_json: bool, params_path: str, workers: int | None, show_all: bool
) -> None:
    """Find quality issues and duplicates in the images below DIRECTORY (local or s3://).

    Issue names follow cleanvision's where they correspond (blurry, dark, light,
    low_information, grayscale, odd_size, odd_aspect_ratio, exact_duplicates,
    near_duplicates), plus clipped, color_cast and corrupt.
    """
    from visionloop import storage
    from visionloop.config import load_params
    from visionloop.curate.inspect import inspect_folder

    if not storage.exists(directory):
        raise click.ClickException(f"no such folder: {directory}")
    params = load_params(params_path)
    result = inspect_folder(
        directory, params.curate, workers=workers, extensions=params.collect.extensions
    )
    if as_json:
        json.dump(result.to_json(), sys.stdout, indent=1)
        sys.stdout.write("\n")
        return
    _print_table(result, show_all)


def _print_table(result: object, show_all: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    files = result.files  # type: ignore[attr-defined]
    console = Console()
    if not console.is_terminal:  # piped or captured: do not wrap paths at 80 columns
        console = Console(width=200)
    table = Table(title=f"{result.root}: {len(files)} image file(s)")  # type: ignore[attr-defined]
    for col in ("file", "issues", "duplicate of", "blur", "p99 luma", "entropy", "size"):
        table.add_column(col)
    shown = files if show_all else files[files["issues"].map(bool)]
    for row in shown.itertuples(index=False):
        size = "" if row.width != row.width else f"{int(row.width)}x{int(row.height)}"
        table.add_row(
            row.file,
            ", ".join(row.issues) or "-",
            row.duplicate_of if isinstance(row.duplicate_of, str) else "",
            _f(row.blur),
            _f(row.brightness_high),
            _f(row.entropy, 2),
            size,
        )
    console.print(table)
    counts = {k: v for k, v in result.issue_counts().items() if v}  # type: ignore[attr-defined]
    clean = int((~files["issues"].map(bool)).sum())
    console.print(
        f"{clean} clean; issues: "
        + (", ".join(f"{k} {v}" for k, v in counts.items()) or "none")
        + f"; {result.cpu_seconds:.2f} CPU-s"  # type: ignore[attr-defined]
    )


def _f(v: float, digits: int = 3) -> str:
    return "" if v != v else f"{v:.{digits}f}"
