"""Refresh stage: new items since the reference snapshot, drift, what to label next, the task
exports, and rebalancing by augmentation.

plan     the curate manifest's accepted items without a cached embedding (``embed.py``), and
         the rebalancing derivations not made yet (``rebalance.plan_rebalance``): one work list
         of ``kind`` embed / augment rows, cut into shards.
process  embed rows: read + decode the published image once, embed it. Augment rows: run one
         albumentations derivation and store the derived image.
finalize the embedding cache; new items = accepted items not accepted in the reference
         (snapshot ``refresh.reference``, via ``visionloop.snapshots.load_reference``); the
         drift report of the new items against the reference (``drift.drift_report``); the
         labelling shortlist (``select.select_for_annotation``) and its task files
         (``roundtrip.export_tasks``); the derived items (asserted train-only) and their boxes.

Outputs (``<data>/refresh/``, COLUMNS.md + extras): ``new_items.parquet``, ``drift.parquet``,
``to_annotate.parquet``, ``embeddings.parquet`` (per-item cache), ``tasks/`` (Label Studio,
CVAT, task table), ``augmented/manifest.parquet`` (``rebalance.AUGMENTED_SCHEMA``; a row with
an ``error`` is a derivation that failed and made no image) + ``augmented/annotations.parquet``
+ ``augmented/objects/``. Refresh quarantines nothing and writes no manifest: its summary counts
mirror curate's.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from visionloop import manifest, storage
from visionloop.config import Params
from visionloop.refresh import drift as drift_mod
from visionloop.refresh import embed, features, rebalance, roundtrip, select
from visionloop.schema import Status
from visionloop.stages.base import Shard, StageSummary, Workspace, clear_work, write_work_list

log = logging.getLogger(__name__)

STAGE = "refresh"
PREVIOUS = "curate"
FILES = {
    "new_items": "new_items.parquet",
    "drift": "drift.parquet",
    "to_annotate": "to_annotate.parquet",
    "embeddings": "embeddings.parquet",
    "augmented": "augmented/manifest.parquet",
    "augmented_annotations": "augmented/annotations.parquet",
}
AUGMENTED_OBJECTS = "augmented/objects"
# the work list: embed rows use the first seven columns, augment rows all of them
_AUG_FIELDS = ("group", "pipeline", "spec", "spec_sha256", "seed", "k", "boxes")
WORK_COLUMNS = [
    "kind",
    "item_id",  # the image (embed) or the parent (augment)
    "source_uri",
    "object_uri",
    "sha256",
    "width",
    "height",
    *_AUG_FIELDS,
]
_AUG_SUFFIX = ".augmented.parquet"

ReferenceLoader = Callable[[str, Params], "pd.DataFrame | None"]
_UNSET: Any = object()


def load_snapshot_reference(ref: str, params: Params) -> pd.DataFrame | None:
    """The curate manifest of snapshot ``ref`` (imported lazily: it shells out to git/DVC)."""
    from visionloop import snapshots

    return snapshots.load_reference(ref, ".", data_dir=params.run.data_dir)


def load_snapshot_embeddings(ref: str, params: Params) -> pd.DataFrame | None:
    """The embedding cache of snapshot ``ref`` (for reference items no longer in the data)."""
    from visionloop import snapshots
    from visionloop.refresh import history

    rel = f"{STAGE}/{FILES['embeddings']}"
    try:
        return history.read_table(ref, rel, ".", params.run.data_dir)
    except (snapshots.SnapshotError, FileNotFoundError, ValueError) as exc:
        log.info("refresh: no embeddings in snapshot %s (%s)", ref, exc)
        return None


class RefreshStage:
    """New items, drift against the reference snapshot, labelling shortlist, rebalancing.

    ``reference`` injects the reference manifest directly (None = no reference); otherwise
    ``reference_loader(params.refresh.reference, params)`` provides it (default: the snapshot).
    ``reference_embeddings`` likewise for reference items missing from the embedding cache.
    """

    name = STAGE

    def __init__(
        self,
        reference: pd.DataFrame | None = _UNSET,
        reference_loader: ReferenceLoader | None = None,
        reference_embeddings: ReferenceLoader | None = None,
    ) -> None:
        self._reference = reference
        self._loader = reference_loader or load_snapshot_reference
        self._ref_embeddings = reference_embeddings or load_snapshot_embeddings

    # -- plan ------------------------------------------------------------------------------

    def plan(self, ws: Workspace, params: Params) -> list[Shard]:
        clear_work(ws, STAGE)
        rp = params.refresh
        current = storage.read_table(ws.manifest_uri(PREVIOUS))
        manifest.require_columns(current, ["item_id", "source_uri", "status"], STAGE)
        acc = _accepted(current)
        cached = _valid_embeddings(ws, params)
        todo = _to_embed(acc, cached)
        annotations = _annotations(ws)
        derivations, report = rebalance.plan_rebalance(current, annotations, rp.rebalance)
        previous = _previous_augmented(ws)
        reuse_keys = _reusable_augmented(ws, derivations, previous, rp.rebalance)
        fresh = derivations[~_aug_keys(derivations).isin(reuse_keys)]
        for name in sorted(set(fresh["pipeline"])):  # a bad declaration fails before any pixel
            try:
                rebalance.build_pipeline(
                    rp.rebalance.pipelines[name], rp.rebalance.min_visibility, 0
                )
            except (TypeError, ValueError, AttributeError) as exc:
                raise ValueError(f"refresh.rebalance.pipelines.{name}: {exc}") from exc
        reused = previous[_aug_keys(previous).isin(set(_aug_keys(derivations)) & reuse_keys)]
        rows = [
            {
                "kind": "embed",
                "item_id": r.item_id,
                "source_uri": r.source_uri,
                "object_uri": r.anonymize_object_uri,
                "sha256": getattr(r, "anonymize_sha256", None),
                "width": _int(getattr(r, "width", None)),
                "height": _int(getattr(r, "height", None)),
            }
            for r in todo.itertuples(index=False)
        ]
        for r in fresh.itertuples(index=False):
            rows.append(
                {
                    "kind": "augment",
                    "item_id": r.parent_item_id,
                    "source_uri": r.parent_source_uri,
                    "object_uri": r.parent_object_uri,
                    "sha256": r.parent_sha256,
                    **{c: getattr(r, c) for c in _AUG_FIELDS},
                }
            )
        work = pd.DataFrame(rows, columns=WORK_COLUMNS)
        for col in ("width", "height", "seed", "k"):
            work[col] = work[col].astype("Int64")
        shards = write_work_list(ws, STAGE, work, params.run.shard_size)
        storage.write_table(
            ws.work_uri(STAGE, "reused_augmented.parquet"),
            pa.Table.from_pandas(
                reused[rebalance.AUGMENTED_COLUMNS],
                rebalance.AUGMENTED_SCHEMA,
                preserve_index=False,
            ),
        )
        plan = {
            "embed": len(todo),
            "embeddings_cached": int(len(acc) - len(todo)),
            "augment": len(fresh),
            "augmented_reused": len(reused),
            "rebalance": report,
        }
        storage.write_text_atomic(ws.work_uri(STAGE, "plan.json"), json.dumps(plan, default=str))
        log.info(
            "refresh: %d image(s) to embed (%d cached), %d to derive (%d reused)",
            len(todo),
            plan["embeddings_cached"],
            len(fresh),
            len(reused),
        )
        return shards

    # -- process ---------------------------------------------------------------------------

    def process(self, ws: Workspace, params: Params, shard: Shard) -> str:
        rp = params.refresh
        rows = shard.rows()
        fp = embed.embed_fingerprint(rp.embed_max_side)
        emb, aug = [], []
        for r in rows.itertuples(index=False):
            if r.kind == "embed":
                emb.append(_embed_one(ws, r, rp.embed_max_side, fp))
            else:
                aug.append(_derive_one(ws, r, rp.rebalance))
        part = pd.DataFrame(emb, columns=[*embed.EMBED_COLUMNS, "transient"])
        storage.write_table(shard.part_uri, _embed_table(part, keep_transient=True))
        aug_df = pd.DataFrame(aug, columns=rebalance.AUGMENTED_COLUMNS)
        storage.write_table(
            shard.part_uri[: -len(".parquet")] + _AUG_SUFFIX,
            pa.Table.from_pandas(
                _typed_aug(aug_df), rebalance.AUGMENTED_SCHEMA, preserve_index=False
            ),
        )
        log.info("refresh: shard %d embedded %d, derived %d", shard.index, len(emb), len(aug))
        return shard.part_uri

    # -- finalize --------------------------------------------------------------------------

    def finalize(self, ws: Workspace, params: Params, parts: list[str]) -> StageSummary:
        rp = params.refresh
        plan = json.loads(storage.read_text(ws.work_uri(STAGE, "plan.json")))
        current = storage.read_table(ws.manifest_uri(PREVIOUS))
        manifest.require_columns(current, ["item_id", "source_uri", "status"], STAGE)
        annotations = _annotations(ws)
        categories = _json(ws.uri("import_annotations", "categories.json"))

        # Embeddings: the cache plus this run's, for the live items.
        fresh = [storage.read_table(p) for p in parts]
        fresh_df = (
            pd.concat([f for f in fresh if len(f)], ignore_index=True)
            if any(len(f) for f in fresh)
            else pd.DataFrame(columns=[*embed.EMBED_COLUMNS, "transient"])
        )
        transient = fresh_df["transient"].fillna(False).astype(bool) if len(fresh_df) else None
        cache = _valid_embeddings(ws, params)
        keep_fresh = fresh_df[~transient] if transient is not None else fresh_df
        embeddings = _concat(cache, keep_fresh[embed.EMBED_COLUMNS] if len(keep_fresh) else None)
        embeddings = embeddings.drop_duplicates("item_id", keep="last")
        live = set(current["item_id"].astype(str))
        embeddings = embeddings[embeddings["item_id"].isin(live)].sort_values("item_id")
        lookup = _concat(embeddings, fresh_df[embed.EMBED_COLUMNS] if len(fresh_df) else None)

        # Reference and new items.
        if self._reference is _UNSET:
            reference = self._loader(rp.reference, params)
        else:
            reference = self._reference
        acc = _accepted(current).reset_index(drop=True)
        ref = _accepted(reference).reset_index(drop=True) if reference is not None else None
        ref_ids = set(ref["item_id"].astype(str)) if ref is not None else set()
        new_mask = ~acc["item_id"].astype(str).isin(ref_ids)
        new_items = acc.loc[new_mask, ["item_id", "source_uri"]].drop_duplicates("item_id")
        new_items = new_items.sort_values("source_uri").reset_index(drop=True)

        # Drift of the new items against the reference.
        table, drift_notes = self._drift(rp, params, acc, new_mask, ref, reference, current, lookup)

        # Selection and task files.
        picks, select_notes = _select(ws, params, current, acc, ref, lookup, annotations, table)
        out = {k: ws.uri(STAGE, v) for k, v in FILES.items()}
        tasks_dir = ws.uri(STAGE, roundtrip.TASKS_DIR)
        storage.remove(tasks_dir, recursive=True)
        exported = roundtrip.export_tasks(
            picks,
            current,
            annotations,
            categories,
            tasks_dir,
            formats=list(rp.export_formats),
            url_prefix=rp.image_url_prefix,
            name=f"visionloop refresh against {rp.reference}",
        )

        # Rebalancing: reused + derived now, asserted train-only.
        augmented = _merge_augmented(ws, parts)
        rebalance.assert_train_only(augmented, current)
        aug_ann = rebalance.derived_annotations(augmented)
        _prune_augmented_objects(ws, augmented)

        storage.write_table(out["new_items"], new_items)
        storage.write_table(out["drift"], table)
        storage.write_table(out["to_annotate"], picks)
        storage.write_table(out["embeddings"], _embed_table(embeddings))
        storage.write_table(
            out["augmented"],
            pa.Table.from_pandas(
                _typed_aug(augmented), rebalance.AUGMENTED_SCHEMA, preserve_index=False
            ),
        )
        from visionloop.annotations.table import annotations_to_arrow

        storage.write_table(out["augmented_annotations"], annotations_to_arrow(aug_ann))
        clear_work(ws, STAGE)

        counts = manifest.status_counts(current)
        labelled = select.labelled_items(annotations)
        drift_summary = drift_mod.summary(table)
        details: dict[str, Any] = {
            "reference": rp.reference,
            "reference_items": len(ref) if ref is not None else 0,
            "n_new": len(new_items),
            "n_drifted": drift_summary["drifted"],
            "drifted_features": drift_summary["drifted_features"],
            "drifted_slices": drift_summary["drifted_slices"],
            "image_drift": drift_summary["image_drift"],
            "dataset_drift": drift_summary["dataset_drift"],
            "drift_tests": drift_summary["tests"],
            "n_to_annotate": len(picks),
            "to_annotate_by_reason": {
                str(k): int(v) for k, v in picks["reason"].value_counts().sort_index().items()
            },
            "n_labelled": int(acc["item_id"].astype(str).isin(labelled).sum()),
            "n_unlabelled": int((~acc["item_id"].astype(str).isin(labelled)).sum()),
            "embedded": int(len(fresh_df) - (int(transient.sum()) if transient is not None else 0)),
            "embeddings_cached": plan["embeddings_cached"],
            "embed_failures": int(lookup["error"].notna().sum()) if len(lookup) else 0,
            "tasks": {k: v for k, v in exported.items() if k != "files"},
            "augmented": {
                "items": len(augmented),
                "derived_now": int(len(augmented) - plan["augmented_reused"]),
                "reused": plan["augmented_reused"],
                "annotations": len(aug_ann),
                "rebalance": plan["rebalance"],
            },
            **drift_notes,
            **select_notes,
        }
        log.info(
            "refresh: %d new, %d drifted test(s)%s, %d proposed for labelling, %d augmented",
            details["n_new"],
            details["n_drifted"],
            " (dataset drift)" if details["dataset_drift"] else "",
            details["n_to_annotate"],
            len(augmented),
        )
        outputs = [*out.values(), *exported["files"].values()]
        return StageSummary(
            stage=STAGE,
            input=counts["input"],
            accepted=counts["accepted"],
            quarantined=counts["quarantined"],
            reasons=counts["reasons"],
            outputs=outputs,
            details=details,
        )

    def _drift(
        self,
        rp: Any,
        params: Params,
        acc: pd.DataFrame,
        new_mask: pd.Series,
        ref: pd.DataFrame | None,
        reference: pd.DataFrame | None,
        current: pd.DataFrame,
        lookup: pd.DataFrame,
    ) -> tuple[pd.DataFrame, dict[str, Any]]:
        notes: dict[str, Any] = {}
        if ref is None:
            table = drift_mod.empty_drift(
                f"no reference snapshot (refresh.reference={rp.reference!r}): nothing to compare"
            )
            notes["drift_skipped_reason"] = table.attrs["reason"]
            return table, notes
        missing = set(ref["item_id"].astype(str)) - set(lookup["item_id"].astype(str))
        if missing:
            extra = self._ref_embeddings(rp.reference, params)
            if extra is not None and len(extra):
                extra = extra[extra["item_id"].isin(missing)]
                lookup = _concat(lookup, extra[[c for c in embed.EMBED_COLUMNS if c in extra]])
                notes["reference_embeddings_from_snapshot"] = len(extra)
        usable_numeric, usable_cat, usable_slices, skipped = _usable_features(rp, ref, acc)
        if skipped:
            notes["features_missing_in_reference"] = skipped
        cfg = drift_mod.DriftConfig.from_params(rp)
        ref_rows = features.with_embeddings(ref, lookup)
        cur_rows = features.with_embeddings(acc[new_mask.to_numpy()], lookup)
        r_data = drift_mod.DriftData(
            features.feature_frame(ref_rows, usable_numeric, usable_cat, usable_slices),
            features.embedding_matrix(ref_rows),
        )
        c_data = drift_mod.DriftData(
            features.feature_frame(cur_rows, usable_numeric, usable_cat, usable_slices),
            features.embedding_matrix(cur_rows),
        )
        outcome = None
        if "outcome" in rp.drift_categorical:
            new_rows = current[~current["item_id"].astype(str).isin(set(reference["item_id"]))]  # type: ignore[index]
            outcome = (_outcome_labels(reference), _outcome_labels(new_rows))  # type: ignore[arg-type]
            notes["new_outcomes"] = _outcomes(new_rows)
        table = drift_mod.drift_report(
            r_data,
            c_data,
            cfg,
            numeric=usable_numeric,
            categorical=usable_cat,
            slices=usable_slices,
            outcome=outcome,
        )
        reason = table.attrs.get("reason")
        if reason:
            notes["drift_skipped_reason"] = reason
        return table, notes


# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------


def _int(v: Any) -> int | None:
    if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return None
    return int(v)


def _accepted(df: pd.DataFrame) -> pd.DataFrame:
    if "status" not in df.columns:
        return df
    return df[df["status"] == Status.ACCEPTED]


def _outcome_labels(df: pd.DataFrame) -> pd.Series:
    """ "accepted", or the quarantine reason, per row."""
    status = df["status"].astype(str)
    reason = df["reason"].astype(object) if "reason" in df.columns else status
    return status.where(status != Status.QUARANTINED, reason.astype(str)).reset_index(drop=True)


def _outcomes(df: pd.DataFrame) -> dict[str, int]:
    """accepted / quarantine reason counts of a set of rows."""
    if not len(df):
        return {}
    label = _outcome_labels(df)
    return {str(k): int(v) for k, v in label.value_counts().sort_index().items()}


def _json(uri: str) -> dict[str, Any] | None:
    return json.loads(storage.read_text(uri)) if storage.exists(uri) else None


def _annotations(ws: Workspace) -> pd.DataFrame | None:
    uri = ws.uri("import_annotations", "annotations.parquet")
    return storage.read_table(uri) if storage.exists(uri) else None


def _concat(a: pd.DataFrame | None, b: pd.DataFrame | None) -> pd.DataFrame:
    frames = [f for f in (a, b) if f is not None and len(f)]
    if not frames:
        return pd.DataFrame(columns=embed.EMBED_COLUMNS)
    return pd.concat(frames, ignore_index=True)


def _embed_table(df: pd.DataFrame, keep_transient: bool = False) -> pa.Table:
    schema = embed.EMBED_SCHEMA
    cols = list(embed.EMBED_COLUMNS)
    if keep_transient:
        schema = schema.append(pa.field("transient", pa.bool_()))
        cols.append("transient")
    out = df.reindex(columns=cols).copy()
    out["vector"] = pd.Series(
        [
            None
            if v is None or (isinstance(v, float) and np.isnan(v))
            else np.asarray(v, np.float32)
            for v in out["vector"]
        ],
        index=out.index,
        dtype=object,
    )
    for c in embed.STAT_COLUMNS:
        out[c] = pd.to_numeric(out[c], errors="coerce").astype(float)
    return pa.Table.from_pandas(out, schema=schema, preserve_index=False)


def _valid_embeddings(ws: Workspace, params: Params) -> pd.DataFrame:
    uri = ws.uri(STAGE, FILES["embeddings"])
    if not storage.exists(uri):
        return pd.DataFrame(columns=embed.EMBED_COLUMNS)
    cached = storage.read_table(uri)
    if not set(embed.EMBED_COLUMNS) <= set(cached.columns):
        return pd.DataFrame(columns=embed.EMBED_COLUMNS)
    fp = embed.embed_fingerprint(params.refresh.embed_max_side)
    return cached.loc[cached["fingerprint"] == fp, embed.EMBED_COLUMNS].reset_index(drop=True)


def _to_embed(acc: pd.DataFrame, cached: pd.DataFrame) -> pd.DataFrame:
    """Accepted rows whose (item_id, anonymize_sha256) has no cached embedding."""
    rows = acc[acc["anonymize_object_uri"].notna()] if "anonymize_object_uri" in acc else acc
    if len(cached):
        by_id = cached.drop_duplicates("item_id", keep="last").set_index("item_id")
        hit = rows["item_id"].isin(by_id.index)
        if "anonymize_sha256" in rows.columns:
            have = rows["item_id"].map(by_id["anonymize_sha256"])
            hit &= rows["anonymize_sha256"].isna() | (have == rows["anonymize_sha256"])
        rows = rows[~hit]
    return rows.drop_duplicates("item_id").sort_values("item_id").reset_index(drop=True)


def _embed_one(ws: Workspace, r: Any, max_side: int, fp: str) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "item_id": r.item_id,
        "anonymize_sha256": None if pd.isna(r.sha256) else r.sha256,
        "fingerprint": fp,
        "vector": None,
        "error": None,
        "transient": False,
        **dict.fromkeys(embed.STAT_COLUMNS, np.nan),
    }
    try:
        data = storage.read_bytes(ws.resolve(r.object_uri))
    except OSError as exc:
        log.warning("refresh: cannot read %s: %s", r.object_uri, exc)
        rec.update(error=f"unreadable: {type(exc).__name__}: {exc}", transient=True)
        return rec
    try:
        rec.update(embed.embed_bytes(data, _int(r.width), _int(r.height), max_side))
    except ValueError as exc:
        rec["error"] = f"corrupt: {exc}"
    return rec


def _aug_keys(df: pd.DataFrame) -> pd.Series:
    """Identity of a derivation: parent bytes, group, declared pipeline, seed, k."""
    if not len(df):
        return pd.Series(dtype=object)
    return (
        df["parent_item_id"].astype(str)
        + "|" + df["parent_sha256"].astype(str)
        + "|" + df["group"].astype(str)
        + "|" + df["spec_sha256"].astype(str)
        + "|" + df["plan_seed" if "plan_seed" in df.columns else "seed"].astype(str)
        + "|" + df["k"].astype(str)
    )  # fmt: skip


def _previous_augmented(ws: Workspace) -> pd.DataFrame:
    uri = ws.uri(STAGE, FILES["augmented"])
    if not storage.exists(uri):
        return pd.DataFrame(columns=rebalance.AUGMENTED_COLUMNS)
    df = storage.read_table(uri)
    if list(df.columns) != rebalance.AUGMENTED_COLUMNS:
        return pd.DataFrame(columns=rebalance.AUGMENTED_COLUMNS)
    # a read error may pass: retried; a derivation that failed on its own is not retried
    transient = df["error"].fillna("").astype(str).str.startswith("unreadable")
    return df[~transient]


def _reusable_augmented(
    ws: Workspace, derivations: pd.DataFrame, previous: pd.DataFrame, rb: Any
) -> set[str]:
    """Keys of wanted derivations already made (their derived object still exists)."""
    if not len(derivations) or not len(previous):
        return set()
    objects = _existing(ws, AUGMENTED_OBJECTS)
    prev = previous[previous["object_uri"].isin(objects) | previous["error"].notna()]
    return set(_aug_keys(prev)) & set(_aug_keys(derivations))


def _existing(ws: Workspace, rel: str) -> set[str]:
    root = ws.uri(STAGE, rel)
    if not storage.exists(root):
        return set()
    return {storage.relative_to(ws.data_dir, u) for u in storage.walk_files(root)}


def _derive_one(ws: Workspace, r: Any, rb: Any) -> dict[str, Any]:
    boxes = json.loads(r.boxes or "[]")
    rec: dict[str, Any] = {
        "item_id": None,
        "parent_item_id": r.item_id,
        "parent_sha256": None if pd.isna(r.sha256) else r.sha256,
        "parent_source_uri": r.source_uri,
        "family_id": r.item_id,
        "group": r.group,
        "pipeline": r.pipeline,
        "spec_sha256": r.spec_sha256,
        "transform": "",
        "seed": int(r.seed),
        "plan_seed": int(r.seed),
        "k": int(r.k),
        "split": rebalance.TRAIN,
        "object_uri": None,
        "width": None,
        "height": None,
        "boxes": "[]",
        "boxes_dropped": 0,
        "why": None,
        "error": None,
    }
    try:
        data = storage.read_bytes(ws.resolve(r.object_uri))
        out = rebalance.derive(
            data,
            json.loads(r.spec),
            int(r.seed),
            boxes,
            min_visibility=rb.min_visibility,
            jpeg_quality=rb.jpeg_quality,
        )
    except OSError as exc:  # storage: retried on the next run
        log.warning("refresh: cannot read parent %s: %s", r.object_uri, exc)
        rec.update(item_id=f"failed:{r.item_id}:{r.group}:{r.k}", error=f"unreadable: {exc}")
        return rec
    except ValueError as exc:  # the derivation itself: recorded, not retried
        log.warning("refresh: derivation of %s failed: %s", r.item_id, exc)
        rec.update(item_id=f"failed:{r.item_id}:{r.group}:{r.k}", error=str(exc))
        return rec
    iid = out["item_id"]
    rel = f"{STAGE}/{AUGMENTED_OBJECTS}/{iid[:2]}/{iid}.jpg"
    storage.write_bytes_atomic(ws.resolve(rel), out["data"])
    rec.update(
        item_id=iid,
        transform=out["transform"],
        seed=out["seed"],
        object_uri=rel,
        width=out["width"],
        height=out["height"],
        boxes=json.dumps(out["boxes"], sort_keys=True),
        boxes_dropped=out["boxes_dropped"],
        why=f"rebalance {r.group!s}: derivation {int(r.k) + 1} of parent {r.item_id[:12]} "
        f"with pipeline {r.pipeline!s} (seed {out['seed']})",
    )
    return rec


def _typed_aug(df: pd.DataFrame) -> pd.DataFrame:
    out = df.reindex(columns=rebalance.AUGMENTED_COLUMNS).copy()
    for c in ("seed", "plan_seed"):
        out[c] = pd.to_numeric(out[c]).astype("int64")
    for c in ("k", "width", "height", "boxes_dropped"):
        out[c] = pd.to_numeric(out[c], errors="coerce").astype("Int32")
    return out.reset_index(drop=True)


def _merge_augmented(ws: Workspace, parts: list[str]) -> pd.DataFrame:
    frames = [storage.read_table(ws.work_uri(STAGE, "reused_augmented.parquet"))]
    for p in parts:
        aug = p[: -len(".parquet")] + _AUG_SUFFIX
        if storage.exists(aug):
            frames.append(storage.read_table(aug))
    frames = [f for f in frames if len(f)]
    if not frames:
        return _typed_aug(pd.DataFrame(columns=rebalance.AUGMENTED_COLUMNS))
    df = pd.concat(frames, ignore_index=True)
    df = df.drop_duplicates("item_id", keep="first")
    df = df.sort_values(["group", "parent_item_id", "k"], kind="stable")
    return _typed_aug(df)


def _prune_augmented_objects(ws: Workspace, augmented: pd.DataFrame) -> None:
    """Derived objects no longer in the augmented manifest are removed (they are outputs)."""
    keep = set(augmented["object_uri"].dropna())
    for rel in _existing(ws, AUGMENTED_OBJECTS) - keep:
        storage.remove(ws.resolve(rel))


def _usable_features(
    rp: Any, ref: pd.DataFrame, acc: pd.DataFrame
) -> tuple[list[str], list[str], list[str], list[str]]:
    """The configured features both sides can provide (old snapshots may lack columns)."""
    needs = {
        **{k: [v] for k, v in features.CURATE_NUMERIC.items()},
        "size": ["width", "height"],
        "aspect": ["width", "height"],
        "day_night": ["curate_day_night"],
        "time_of_day": ["capture_time"],
    }
    skipped = []

    def ok(name: str) -> bool:
        cols = needs.get(name, [])
        good = all(c in ref.columns and c in acc.columns for c in cols)
        if not good:
            skipped.append(name)
        return good

    numeric = [f for f in rp.drift_features if ok(f)]
    cat = [f for f in rp.drift_categorical if f != "outcome" and ok(f)]
    slices = [f for f in rp.drift_slices if f in cat or ok(f)]
    return numeric, cat, slices, sorted(set(skipped))


def _select(
    ws: Workspace,
    params: Params,
    current: pd.DataFrame,
    acc: pd.DataFrame,
    ref: pd.DataFrame | None,
    lookup: pd.DataFrame,
    annotations: pd.DataFrame | None,
    table: pd.DataFrame,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The labelling shortlist with every input the passes use (see ``select``)."""
    rp = params.refresh
    notes: dict[str, Any] = {}
    rows = features.with_embeddings(acc, lookup)
    ref_ids = set(ref["item_id"].astype(str)) if ref is not None else set()
    new_ids = set(acc["item_id"].astype(str)) - ref_ids
    matrix = features.embedding_matrix(rows)
    vectors, ref_vectors = _selection_space(matrix, rows["item_id"].astype(str).isin(ref_ids))
    gaps, cells = _gaps_and_cells(ws, params, acc)
    findings_uri = ws.uri("validate", "qa_findings.parquet")
    findings = storage.read_table(findings_uri) if storage.exists(findings_uri) else None
    qa_items = select.qa_disputed(findings, rp.qa_checks)
    slice_cols = {d: features.slice_values(acc, d) for d in rp.drift_slices}
    cfg = select.SelectConfig(
        budget=rp.annotate_budget,
        qa_share=rp.qa_share,
        drift_share=rp.drift_share,
        min_count=params.curate.coverage_min_count,
    )
    picks = select.select_for_annotation(
        acc,
        annotations,
        new_ids,
        cfg,
        vectors=vectors,
        reference_vectors=ref_vectors,
        gaps=gaps,
        cells=cells,
        drift=table,
        slice_columns=slice_cols,
        qa_items=qa_items,
    )
    notes["gap_cells"] = len(gaps) if gaps is not None else 0
    notes["qa_disputed_items"] = len(qa_items)
    return picks, notes


def _selection_space(matrix: np.ndarray, is_ref: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Standardised embeddings projected on 16 principal components (cheap distances)."""
    z = select.standardise(matrix)
    if z.shape[0] > 2 and z.shape[1] > 16:
        rng = np.random.default_rng(0)
        fit = z if len(z) <= 2000 else z[np.sort(rng.choice(len(z), 2000, replace=False))]
        _, _, vt = np.linalg.svd(fit - fit.mean(axis=0), full_matrices=False)
        z = z @ vt[:16].T
    return z, z[is_ref.to_numpy()]


def _gaps_and_cells(
    ws: Workspace, params: Params, acc: pd.DataFrame
) -> tuple[pd.DataFrame | None, dict[str, pd.Series]]:
    """Curate's gap table (or one computed the same way when curate wrote none) and each
    accepted row's cell in every slice of it (slices with ``class`` are left out)."""
    from visionloop.curate import coverage as cov

    cp = params.curate
    uri = ws.uri("curate", "gaps.parquet")
    gaps = storage.read_table(uri) if storage.exists(uri) else None
    if gaps is None:
        frame, skipped = cov.slice_frame(acc, list(cp.coverage), cell_deg=cp.coverage_cell_deg)
        dims = [d for d in cp.coverage if d not in skipped]
        table = cov.coverage_table(
            frame, dims, cp.coverage_min_count, cp.coverage_max_share, cp.coverage_max_cells
        )
        gaps = cov.gap_table(table)
    cells: dict[str, pd.Series] = {}
    for name in sorted(set(gaps["slice"].astype(str))) if len(gaps) else []:
        dims = name.split("×")
        if "class" in dims or name == "all":
            continue
        try:
            frame, _ = cov.slice_frame(acc, dims, cell_deg=cp.coverage_cell_deg)
        except KeyError:
            continue
        cells[name] = frame["cell"].reset_index(drop=True).astype(str)
    return gaps, cells


__all__ = ["RefreshStage", "load_snapshot_embeddings", "load_snapshot_reference"]
