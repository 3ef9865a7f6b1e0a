"""``visionloop redact IN_DIR OUT_DIR --audit audit.parquet``: the anonymize stage's per-image
function on a folder, outside the pipeline.

For a one-off delivery (a vendor's folder, a bug report's screenshots) without a workspace:
every image under IN_DIR is decoded with the collect stage's guards, redacted, encoded without
metadata and verified exactly as the stage does, then written to OUT_DIR under the same
relative path and name (a WebP/BMP/TIFF input is published as PNG, so only its suffix changes).
Whatever cannot be published (undecodable, detector failure, a face still found after the fill
pass) is listed with its reason, in the audit and on stderr, and nothing is written for it; an
output left by an earlier run for it is removed. The exit status is 1 if any file was
quarantined, after every other file was processed.

This module is imported by ``visionloop --help``: only click at the top.
"""

from __future__ import annotations

import json
import sys
from pathlib import PurePosixPath
from typing import Any

import click

_JPEG_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif")


def output_rel(rel: str, fmt: str) -> str:
    """The output path for input ``rel`` published as ``fmt`` ("jpeg" or "png")."""
    suffix = PurePosixPath(rel).suffix.lower()
    if (fmt == "jpeg" and suffix in _JPEG_SUFFIXES) or (fmt == "png" and suffix == ".png"):
        return rel
    return str(PurePosixPath(rel).with_suffix(".jpg" if fmt == "jpeg" else ".png"))


def redact_folder(
    in_dir: str,
    out_dir: str,
    audit_uri: str,
    params: Any,
    review_uri: str | None = None,
) -> dict[str, Any]:
    """Redact every image under ``in_dir`` into ``out_dir``; write the audit (and review) table.

    ``params`` is a :class:`visionloop.config.Params`. Returns a summary with the quarantined
    files and their reasons.
    """
    import hashlib

    import pandas as pd
    import pyarrow as pa

    from visionloop import storage
    from visionloop.anonymize.review import review_rows, to_table
    from visionloop.imaging import ImageRejected, probe_and_decode
    from visionloop.stages.anonymize import (
        AUDIT_SCHEMA,
        AnonymizeError,
        _typed,
        build_detector,
        detector_label,
        output_format,
    )

    p = params.anonymize
    max_pixels = params.collect.max_pixels
    extensions = {e.lower() for e in params.collect.extensions}
    files = sorted(
        u for u in storage.walk_files(in_dir) if PurePosixPath(u).suffix.lower() in extensions
    )
    detector, load_error = None, None
    try:
        detector = build_detector(p)
    except Exception as exc:  # every file is quarantined with this reason: fail closed
        load_error = f"model load: {type(exc).__name__}: {exc}"
    models = None
    if detector is not None:
        from visionloop.anonymize.ensemble import member_records

        models = json.dumps(member_records(detector), sort_keys=True)
    audit, review, quarantined, taken = [], [], [], set()
    for uri in files:
        rel = storage.relative_to(in_dir, uri)
        row: dict[str, Any] = {
            "rel_path": rel,
            "output_rel_path": None,
            "detector": detector_label(p),
            "detector_version": getattr(detector, "version", None),
            "model_sha256": getattr(detector, "model_sha256", None),
            "models": models,
            "score_threshold": p.score_threshold,
            "redaction": p.redaction,
            "shape": p.shape,
            "dilation": p.dilation,
        }
        reason, detail, out = None, None, None
        try:
            data = storage.read_bytes(uri)
            row["item_id"] = row["input_sha256"] = hashlib.sha256(data).hexdigest()
            if load_error is not None:
                raise AnonymizeError("model load", load_error.removeprefix("model load: "))
            info = probe_and_decode(data, max_pixels)
            row["width"], row["height"] = info.width, info.height
            out = anonymize_one(data, info.format, detector, p, max_pixels)
            target = output_rel(rel, output_format(info.format))
            row.update(
                detect_width=out["detect_width"],
                detect_height=out["detect_height"],
                regions=out["regions"],
                verified=out["verified"],
                residual=out["residual"],
            )
            if out["residual"]:
                reason = "residual_detection"
                detail = f"{out['residual']} face(s) still detected after redaction"
            elif target in taken:
                reason, detail = "output_name_collision", f"{target} is another file's output"
            else:
                taken.add(target)
                storage.write_bytes_atomic(storage.join(out_dir, target), out["bytes"])
                row["output_rel_path"] = target
                row["output_sha256"] = hashlib.sha256(out["bytes"]).hexdigest()
        except ImageRejected as exc:
            reason, detail = str(exc.reason), f"decode: {exc.detail}"
        except AnonymizeError as exc:
            reason, detail = "anonymize_failed", str(exc)
        except OSError as exc:
            reason, detail = "unreadable", f"{type(exc).__name__}: {exc}"
        row.setdefault("item_id", "")  # unreadable: no content hash to name it by
        if reason is not None:  # withdraw what an earlier run may have published for it
            for candidate in {rel, output_rel(rel, "png"), output_rel(rel, "jpeg")} - taken:
                storage.remove(storage.join(out_dir, candidate))
            quarantined.append({"rel_path": rel, "reason": reason, "detail": detail})
        row.update(status="quarantined" if reason else "accepted", reason=reason, detail=detail)
        audit.append(row)
        if review_uri is not None:
            item = {
                "item_id": row["item_id"],
                "source_uri": uri,
                "rel_path": rel,
                "anonymize_object_uri": storage.join(out_dir, row["output_rel_path"])
                if row["output_rel_path"]
                else None,
                "object_uri": uri,
                "width": row.get("width"),
                "height": row.get("height"),
                "status": row["status"],
            }
            entries = out["review"] if out is not None else []
            review += review_rows(item, entries, "failed" if out is None else None, detail)
    extra = [
        pa.field("rel_path", pa.string()),
        pa.field("output_rel_path", pa.string()),
        pa.field("detail", pa.string()),
    ]
    schema = pa.schema([*AUDIT_SCHEMA, *extra])
    df = _typed(pd.DataFrame(audit), schema)
    storage.write_table(audit_uri, pa.Table.from_pandas(df, schema=schema, preserve_index=False))
    if review_uri is not None:
        storage.write_table(review_uri, to_table(review))
    return {
        "files": len(files),
        "published": len(files) - len(quarantined),
        "quarantined": quarantined,
        "audit": audit_uri,
    }


def anonymize_one(data: bytes, fmt: str, detector: Any, p: Any, max_pixels: int) -> dict:
    from visionloop.stages.anonymize import anonymize_image

    return anonymize_image(data, fmt, detector, p, max_pixels)


@click.command()
@click.argument("in_dir")
@click.argument("out_dir")
@click.option("--audit", "audit_path", required=True, help="Audit table to write (Parquet).")
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@click.option("--review", "review_path", default=None, help="Also write the review queue.")
@click.option(
    "--label-studio",
    "tasks_path",
    default=None,
    help="Also write Label Studio tasks for the review queue (JSON; needs --review).",
)
def redact(
    in_dir: str,
    out_dir: str,
    audit_path: str,
    params_path: str,
    review_path: str | None,
    tasks_path: str | None,
) -> None:
    """Redact faces (and plates, if on) in every image of IN_DIR into OUT_DIR, with an audit.

    Output files keep their names and relative paths. Exits 1 if any file was quarantined.
    """
    from visionloop.config import load_params

    if tasks_path and not review_path:
        raise click.UsageError("--label-studio needs --review")
    params = load_params(params_path)
    summary = redact_folder(in_dir, out_dir, audit_path, params, review_uri=review_path)
    if tasks_path and review_path:
        from visionloop.anonymize.review import export_label_studio

        export_label_studio(review_path, tasks_path, "", url_prefix="")  # paths are full
    for q in summary["quarantined"]:
        click.echo(f"quarantined {q['rel_path']}: {q['reason']} ({q['detail']})", err=True)
    click.echo(json.dumps({k: v for k, v in summary.items() if k != "quarantined"}, sort_keys=True))
    if summary["quarantined"]:
        sys.exit(1)
