"""``visionloop serve``, ``visionloop diff`` and ``visionloop refresh ...``: light at import
(click only); everything heavy is imported inside the commands."""

from __future__ import annotations

import json
import sys

import click


@click.command("serve")
@click.option("--prefect-yaml", default="prefect.yaml", show_default=True)
@click.option(
    "--only", multiple=True, help="Serve only this deployment (repeatable); default: all."
)
def serve(prefect_yaml: str, only: tuple[str, ...]) -> None:
    """Run the scheduled flows of prefect.yaml on this machine (flow.serve, no worker)."""
    from flows.serve import serve as serve_flows

    serve_flows(prefect_yaml, only)


@click.command("diff")
@click.argument("a")
@click.argument("b", default="latest")
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def diff(a: str, b: str, params_path: str, as_json: bool) -> None:
    """What changed from snapshot A to snapshot B (default: the latest): items added and
    removed, label changes, class and slice distributions, drift results."""
    from visionloop.config import load_params
    from visionloop.refresh.diff import snapshot_diff
    from visionloop.refresh.history import MissingInSnapshot
    from visionloop.snapshots import SnapshotError

    params = load_params(params_path)
    try:
        result = snapshot_diff(a, b, ".", params.run.data_dir, params.refresh.drift_slices)
    except (SnapshotError, MissingInSnapshot, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        click.echo(result.markdown(), nl=False)


@click.group("refresh")
def refresh_group() -> None:
    """The refresh loop's manual steps (the refresh flow runs them on its schedule)."""


@refresh_group.command("intake")
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@click.option("--no-source", is_flag=True, help="Do not add the returned folder to params.yaml.")
def intake_command(params_path: str, no_source: bool) -> None:
    """Take in returned label exports from refresh.inbox (match, QA, write returned_dir)."""
    from visionloop import storage
    from visionloop.config import load_params
    from visionloop.refresh.request import ensure_returned_source
    from visionloop.refresh.roundtrip import intake, returned_files
    from visionloop.stages.base import Workspace

    params = load_params(params_path)
    rp = params.refresh
    ws = Workspace.from_params(params)
    if not storage.exists(ws.manifest_uri("curate")):
        raise click.ClickException("no curate manifest yet: run the pipeline first")
    tasks_uri = ws.uri("refresh", "tasks", "tasks.parquet")
    cat_uri = ws.uri("import_annotations", "categories.json")
    result = intake(
        rp.inbox,
        rp.returned_dir,
        storage.read_table(ws.manifest_uri("curate")),
        storage.read_table(tasks_uri) if storage.exists(tasks_uri) else None,
        params,
        json.loads(storage.read_text(cat_uri)) if storage.exists(cat_uri) else None,
    )
    added = False
    if not no_source and returned_files(rp.returned_dir):
        added = ensure_returned_source(params_path, rp.returned_dir)
    click.echo(json.dumps({**result.to_dict(), "source_added": added}, indent=2, default=str))
    if result.failed:
        sys.exit(1)


@refresh_group.command("replay")
@click.argument("item_id")
@click.argument("out")
@click.option("--params", "params_path", default="params.yaml", show_default=True)
def replay_command(item_id: str, out: str, params_path: str) -> None:
    """Rebuild derived item ITEM_ID from its parent's published bytes and its recorded
    transform + seed into OUT (PNG), and check it: encoded as the stage encodes, the replay must
    have the derived item's sha256 (its item id)."""
    import hashlib

    import cv2
    import numpy as np

    from visionloop import storage
    from visionloop.config import load_params
    from visionloop.refresh.rebalance import replay
    from visionloop.stages.base import Workspace

    params = load_params(params_path)
    ws = Workspace.from_params(params)
    aug = storage.read_table(ws.uri("refresh", "augmented", "manifest.parquet"))
    rows = aug[aug["item_id"] == item_id]
    if rows.empty:
        raise click.ClickException(f"no derived item {item_id}")
    r = rows.iloc[0]
    man = storage.read_table(ws.manifest_uri("curate")).drop_duplicates("item_id")
    parent_uri = man.set_index("item_id").at[r["parent_item_id"], "anonymize_object_uri"]
    image, _ = replay(storage.read_bytes(ws.resolve(parent_uri)), r["transform"], int(r["seed"]))
    bgr = np.ascontiguousarray(image[..., ::-1])
    _, png = cv2.imencode(".png", bgr)
    storage.write_bytes_atomic(out, png.tobytes())
    quality = params.refresh.rebalance.jpeg_quality
    _, jpg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    same = hashlib.sha256(jpg.tobytes()).hexdigest() == item_id
    click.echo(json.dumps({"item_id": item_id, "out": out, "identical": same}))
    if not same:
        sys.exit(1)
