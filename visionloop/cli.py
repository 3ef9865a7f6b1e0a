"""The ``visionloop`` command line: sample data, single stages (what ``dvc repro`` runs), the
Prefect pipeline, and status. Heavy libraries are imported inside the commands so that
``visionloop --help`` answers at once.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import click

STAGE_NAMES = (
    "collect",
    "anonymize",
    "curate",
    "import_annotations",
    "validate",
    "refresh",
)


# Commands that live beside the code they drive, imported only when used (or listed by --help).
# Each value is "module:attribute" of a click command; keep those modules light at import.
PLUGIN_COMMANDS: dict[str, str] = {
    "labels": "visionloop.annotations.cli:labels",
    "redact": "visionloop.anonymize.cli:redact",
    "inspect": "visionloop.curate.cli:inspect_command",
    "serve": "visionloop.refresh.cli:serve",
    "diff": "visionloop.refresh.cli:diff",
    "refresh": "visionloop.refresh.cli:refresh_group",
}


class LazyGroup(click.Group):
    """A click group whose plug-in commands are imported on first use.

    ``lazy`` maps a command name to "module:attribute"; the top-level group uses
    ``PLUGIN_COMMANDS``, sub-groups (``visionloop labels ...``) can pass their own.
    """

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = PLUGIN_COMMANDS if lazy is None else lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            import importlib

            module, attr = self.lazy[cmd_name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, cmd_name)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # Every Prefect API call is an INFO line from httpx: keep them for --verbose only.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)
    # botocore/s3fs DEBUG lines carry signed request headers (the access key id): never shown.
    for signer in ("botocore", "aiobotocore", "s3fs", "urllib3"):
        logging.getLogger(signer).setLevel(logging.INFO)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """visionloop: an open data engine for computer-vision datasets."""
    _setup_logging(verbose)


@main.command()
@click.argument("out_dir")
@click.option(
    "--n", "n", default=240, show_default=True, help="Files to write, broken ones included."
)
@click.option("--seed", default=0, show_default=True)
def sample(out_dir: str, n: int, seed: int) -> None:
    """Write the bundled sample dataset (images with known truth + COCO/YOLO exports)."""
    from visionloop.sample import build_sample

    summary = build_sample(out_dir, n=n, seed=seed)
    click.echo(json.dumps(summary, indent=2, default=str))


@main.command()
@click.argument("name", type=click.Choice(STAGE_NAMES))
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@click.option("--no-gate", is_flag=True, help="Skip the Great Expectations gate after the stage.")
def stage(name: str, params_path: str, no_gate: bool) -> None:
    """Run one stage in this process, then its gate (this is what dvc.yaml calls)."""
    from rich.progress import Progress

    from visionloop.config import load_params
    from visionloop.expectations.gate import GateFailed
    from visionloop.pipeline import run_gate_for
    from visionloop.stages.base import Workspace, get_stage, run_stage

    params = load_params(params_path)
    ws = Workspace.from_params(params)
    try:
        with Progress(transient=True) as bar:
            task = bar.add_task(f"{name}: shards", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            summary = run_stage(get_stage(name), ws, params, progress=progress)
        _echo_summary(summary.stage, summary.input, summary.accepted, summary.reasons)
        result = None if no_gate else run_gate_for(name, ws, params)
    except GateFailed as exc:
        raise click.ClickException(str(exc)) from exc
    if result is not None:
        click.echo(f"gate {name}: passed ({_docs_hint(result)})")


def _docs_hint(result: Any) -> str:
    return f"Data Docs: {getattr(result, 'docs_path', '') or 'n/a'}"


def _echo_summary(stage: str, n_in: int, n_acc: int, reasons: dict[str, int]) -> None:
    detail = ", ".join(f"{k}={v}" for k, v in sorted(reasons.items())) or "none"
    click.echo(f"{stage}: {n_in} in, {n_acc} accepted, {n_in - n_acc} quarantined ({detail})")


@main.command()
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@click.option(
    "--runner",
    type=click.Choice(["threads", "processes", "dask"]),
    default=None,
    help="Task runner (default: run.runner in params.yaml).",
)
@click.option("--dask-address", default=None, help="Address of an existing Dask scheduler.")
@click.option("--max-workers", type=int, default=None)
@click.option("--no-snapshot", is_flag=True, help="Run and gate every stage but cut no snapshot.")
@click.option(
    "--flow",
    "which",
    type=click.Choice(["pipeline", "refresh"]),
    default="pipeline",
    show_default=True,
    help="pipeline: every stage; refresh: intake returned labels, then run only if "
    "something is new (see README, the refresh loop).",
)
def run(
    params_path: str,
    runner: str | None,
    dask_address: str | None,
    max_workers: int | None,
    no_snapshot: bool,
    which: str,
) -> None:
    """Run the whole pipeline (or the refresh flow) as a Prefect flow and cut a snapshot."""
    if which == "refresh":
        from flows.refresh import refresh as flow_fn
    else:
        from flows.pipeline import pipeline as flow_fn

    overrides = {
        "run.runner": runner,
        "run.dask_address": dask_address,
        "run.max_workers": max_workers,
    }
    result = flow_fn(
        params_path=params_path,
        overrides={k: v for k, v in overrides.items() if v is not None},
        snapshot=not no_snapshot,
    )
    click.echo(json.dumps(result, indent=2, default=str))


@main.command()
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(params_path: str, as_json: bool) -> None:
    """The latest snapshot tag and each stage's counts (accepted / quarantined by reason)."""
    from visionloop.config import load_params
    from visionloop.pipeline import gate_results, summaries
    from visionloop.snapshots import latest_tag
    from visionloop.stages.base import Workspace

    params = load_params(params_path)
    ws = Workspace.from_params(params)
    stages = summaries(ws)
    gates = gate_results(ws)
    out = {
        "snapshot": latest_tag("."),
        "stages": {
            name: {
                "input": s.input,
                "accepted": s.accepted,
                "quarantined": s.quarantined,
                "reasons": s.reasons,
                "gate": gates.get(name, {}).get("success"),
            }
            for name, s in stages.items()
        },
    }
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"snapshot: {out['snapshot'] or 'none yet'}")
    for name, s in stages.items():
        _echo_summary(name, s.input, s.accepted, s.reasons)


@main.command()
@click.option("--params", "params_path", default="params.yaml", show_default=True)
def report(params_path: str) -> None:
    """Write the HTML run report (<data>/report/index.html) from the latest outputs."""
    from visionloop.config import load_params
    from visionloop.report import build_report
    from visionloop.snapshots import latest_tag
    from visionloop.stages.base import Workspace

    params = load_params(params_path)
    click.echo(build_report(Workspace.from_params(params), params, latest_tag(".")))


if __name__ == "__main__":
    sys.exit(main())
