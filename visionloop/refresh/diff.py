"""What changed between two dataset snapshots: items, labels, distributions, drift.

``snapshot_diff(a, b)`` reads both snapshots' outputs (``history``: the DVC cache for local
snapshots, the frozen copies for remote ones) and ``diff_tables`` compares them:

- **items**: accepted in B but not in A (*added*), accepted in A but not in B (*removed*:
  quarantined since, or gone from the source), with examples;
- **labels**: per item accepted in both, the multiset of (category, box rounded to 0.5 px) of
  its matched human annotations: items newly labelled, unlabelled since, relabelled (boxes or
  classes changed), and annotation totals;
- **classes**: matched annotations per category in A and B;
- **slices**: accepted items per slice value (camera, day/night...) in A and B, with shares;
- **drift**: B's drift report (B's new items against B's reference): drifted rows and the
  dataset-level verdict;
- **augmented**: derived training items in A and B.

``SnapshotDiff.markdown()`` is what ``visionloop diff`` prints and the refresh flow publishes
as a Prefect artifact; ``to_dict()`` its JSON form.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from visionloop.schema import Status

MAX_EXAMPLES = 10
DEFAULT_DIMS = ("camera", "day_night")


@dataclass
class SnapshotDiff:
    a: str
    b: str
    items: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, Any] = field(default_factory=dict)
    classes: pd.DataFrame = field(default_factory=pd.DataFrame)
    slices: pd.DataFrame = field(default_factory=pd.DataFrame)
    drift: dict[str, Any] = field(default_factory=dict)
    augmented: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "items": self.items,
            "labels": self.labels,
            "classes": _records(self.classes),
            "slices": _records(self.slices),
            "drift": self.drift,
            "augmented": self.augmented,
        }

    def markdown(self) -> str:
        it, lb = self.items, self.labels
        lines = [
            f"# Snapshot diff `{self.a}` -> `{self.b}`",
            "",
            "## Items",
            "",
            f"Accepted: {it['accepted_a']} -> {it['accepted_b']} "
            f"(**+{it['added']}** added, **-{it['removed']}** removed: "
            f"{it['removed_quarantined']} quarantined since, {it['removed_gone']} gone from the "
            f"source). Rows: {it['rows_a']} -> {it['rows_b']}.",
        ]
        for title, key in (("Added", "added_examples"), ("Removed", "removed_examples")):
            if it.get(key):
                lines += ["", f"{title} (first {len(it[key])}):", ""]
                lines += [f"- `{e['source_uri']}` ({e['item_id'][:12]})" for e in it[key]]
        lines += [
            "",
            "## Labels",
            "",
            f"Matched annotations: {lb['annotations_a']} -> {lb['annotations_b']}. Of the items "
            f"accepted in both: {lb['newly_labelled']} newly labelled, {lb['unlabelled_since']} "
            f"unlabelled since, {lb['relabelled']} relabelled ({lb['boxes_added']} box(es) "
            f"added, {lb['boxes_removed']} removed); {lb['added_items_labelled']} of the added "
            "items are labelled.",
        ]
        if lb.get("relabelled_examples"):
            lines += ["", "Relabelled (first few):", ""]
            for e in lb["relabelled_examples"]:
                lines.append(f"- `{e['item_id'][:12]}`: {e['before']} -> {e['after']}")
        if len(self.classes):
            lines += ["", "## Classes", "", "| class | A | B | change |", "|---|---:|---:|---:|"]
            for r in self.classes.itertuples(index=False):
                lines.append(f"| {r.category} | {r.a} | {r.b} | {r.delta:+d} |")
        if len(self.slices):
            lines += [
                "",
                "## Slices (accepted items)",
                "",
                "| slice | value | A | B | share A | share B |",
                "|---|---|---:|---:|---:|---:|",
            ]
            for r in self.slices.itertuples(index=False):
                lines.append(
                    f"| {r.dimension} | {r.value} | {r.a} | {r.b} | {r.share_a:.1%} | "
                    f"{r.share_b:.1%} |"
                )
        d = self.drift
        lines += ["", "## Drift", ""]
        if not d.get("available"):
            lines.append(f"No drift report in `{self.b}`.")
        else:
            verdict = "**the dataset drifted**" if d["dataset_drift"] else "no dataset-level drift"
            lines.append(
                f"`{self.b}` compared {d['n_current']} new item(s) with {d['n_reference']} of "
                f"its reference (`{d.get('reference') or '?'}`): {d['tests']} test(s), "
                f"{len(d['drifted'])} drifted; {verdict}."
            )
            if d["drifted"]:
                lines += ["", "| feature | test | statistic | threshold | adj. p |",
                          "|---|---|---:|---:|---:|"]  # fmt: skip
                for r in d["drifted"]:
                    p = r.get("p_value_adjusted")
                    ptxt = "-" if p is None or p != p else f"{p:.2g}"
                    lines.append(
                        f"| {r['feature']} | {r['test']} | {r['statistic']:.3f} | "
                        f"{r['threshold']:.3g} | {ptxt} |"
                    )
        ag = self.augmented
        lines += [
            "",
            "## Augmented training items",
            "",
            f"{ag.get('a', 0)} -> {ag.get('b', 0)} derived items (train split only).",
        ]
        return "\n".join(lines) + "\n"


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return df.astype(object).where(df.notna(), None).to_dict("records") if len(df) else []


def _accepted(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == Status.ACCEPTED] if "status" in df.columns else df


def _human_matched(ann: pd.DataFrame | None) -> pd.DataFrame:
    if ann is None or not len(ann):
        return pd.DataFrame(columns=["item_id", "category", "bbox_x", "bbox_y", "bbox_w", "bbox_h"])
    rows = ann
    if "match_status" in rows.columns:
        rows = rows[rows["match_status"] == "matched"]
    if "annotator" in rows.columns:
        rows = rows[~rows["annotator"].fillna("").astype(str).str.startswith("prediction:")]
    return rows


def _signatures(ann: pd.DataFrame) -> dict[str, Counter[tuple[Any, ...]]]:
    """item id -> multiset of (category, box rounded to half pixels)."""
    out: dict[str, Counter[tuple[Any, ...]]] = {}
    for r in ann.itertuples(index=False):
        box = tuple(
            None if pd.isna(getattr(r, c)) else round(float(getattr(r, c)) * 2) / 2
            for c in ("bbox_x", "bbox_y", "bbox_w", "bbox_h")
        )
        out.setdefault(str(r.item_id), Counter())[(str(r.category), *box)] += 1
    return out


def _summary(sig: Counter[tuple[Any, ...]]) -> str:
    cats = Counter(k[0] for k in sig.elements())
    return ", ".join(f"{n} {c}" for c, n in sorted(cats.items())) or "no label"


def diff_tables(
    a: str,
    b: str,
    manifest_a: pd.DataFrame,
    manifest_b: pd.DataFrame,
    annotations_a: pd.DataFrame | None = None,
    annotations_b: pd.DataFrame | None = None,
    drift_b: pd.DataFrame | None = None,
    augmented_a: pd.DataFrame | None = None,
    augmented_b: pd.DataFrame | None = None,
    dims: Sequence[str] = DEFAULT_DIMS,
    reference_of_b: str | None = None,
) -> SnapshotDiff:
    """Compare two snapshots' tables (see the module docstring). Pure."""
    acc_a, acc_b = _accepted(manifest_a), _accepted(manifest_b)
    ids_a, ids_b = set(acc_a["item_id"].astype(str)), set(acc_b["item_id"].astype(str))
    all_b = set(manifest_b["item_id"].astype(str))
    added = acc_b[~acc_b["item_id"].astype(str).isin(ids_a)].drop_duplicates("item_id")
    removed = acc_a[~acc_a["item_id"].astype(str).isin(ids_b)].drop_duplicates("item_id")
    quarantined = removed["item_id"].astype(str).isin(all_b)
    items = {
        "rows_a": len(manifest_a),
        "rows_b": len(manifest_b),
        "accepted_a": len(ids_a),
        "accepted_b": len(ids_b),
        "added": len(added),
        "removed": len(removed),
        "removed_quarantined": int(quarantined.sum()),
        "removed_gone": int((~quarantined).sum()),
        "added_examples": _examples(added),
        "removed_examples": _examples(removed),
        "added_ids": sorted(added["item_id"].astype(str)),
        "removed_ids": sorted(removed["item_id"].astype(str)),
    }
    ha, hb = _human_matched(annotations_a), _human_matched(annotations_b)
    sa, sb = _signatures(ha), _signatures(hb)
    both = ids_a & ids_b
    newly = sorted(i for i in both if i not in sa and i in sb)
    lost = sorted(i for i in both if i in sa and i not in sb)
    changed = sorted(i for i in both if i in sa and i in sb and sa[i] != sb[i])
    added_boxes = sum(sum((sb[i] - sa[i]).values()) for i in changed)
    removed_boxes = sum(sum((sa[i] - sb[i]).values()) for i in changed)
    labels = {
        "annotations_a": len(ha),
        "annotations_b": len(hb),
        "newly_labelled": len(newly),
        "unlabelled_since": len(lost),
        "relabelled": len(changed),
        "boxes_added": int(added_boxes),
        "boxes_removed": int(removed_boxes),
        "added_items_labelled": int(sum(1 for i in items["added_ids"] if i in sb)),
        "newly_labelled_ids": newly,
        "relabelled_ids": changed,
        "relabelled_examples": [
            {"item_id": i, "before": _summary(sa[i]), "after": _summary(sb[i])}
            for i in changed[:MAX_EXAMPLES]
        ],
    }
    ca = ha["category"].astype(str).value_counts() if len(ha) else pd.Series(dtype=int)
    cb = hb["category"].astype(str).value_counts() if len(hb) else pd.Series(dtype=int)
    cats = sorted(set(ca.index) | set(cb.index))
    classes = pd.DataFrame(
        {
            "category": cats,
            "a": [int(ca.get(c, 0)) for c in cats],
            "b": [int(cb.get(c, 0)) for c in cats],
        }
    )
    classes["delta"] = (classes["b"] - classes["a"]).astype(int) if len(classes) else []
    slices = _slice_table(acc_a, acc_b, dims)
    drift = _drift_part(drift_b, reference_of_b)
    augmented = {
        "a": 0 if augmented_a is None else len(augmented_a),
        "b": 0 if augmented_b is None else len(augmented_b),
    }
    return SnapshotDiff(a, b, items, labels, classes, slices, drift, augmented)


def _examples(df: pd.DataFrame) -> list[dict[str, str]]:
    rows = df.sort_values("source_uri").head(MAX_EXAMPLES)
    return [
        {"item_id": str(r.item_id), "source_uri": str(r.source_uri)}
        for r in rows.itertuples(index=False)
    ]


def _slice_table(acc_a: pd.DataFrame, acc_b: pd.DataFrame, dims: Sequence[str]) -> pd.DataFrame:
    from visionloop.refresh.features import slice_values

    rows = []
    for dim in dims:
        try:
            va = slice_values(acc_a, dim).astype(str).value_counts()
            vb = slice_values(acc_b, dim).astype(str).value_counts()
        except KeyError:
            continue
        for value in sorted(set(va.index) | set(vb.index)):
            a, b = int(va.get(value, 0)), int(vb.get(value, 0))
            rows.append(
                {
                    "dimension": dim,
                    "value": value,
                    "a": a,
                    "b": b,
                    "share_a": a / len(acc_a) if len(acc_a) else 0.0,
                    "share_b": b / len(acc_b) if len(acc_b) else 0.0,
                }
            )
    return pd.DataFrame(rows, columns=["dimension", "value", "a", "b", "share_a", "share_b"])


def _drift_part(drift: pd.DataFrame | None, reference: str | None) -> dict[str, Any]:
    from visionloop.refresh.drift import dataset_drift, drifted_rows

    if drift is None or not len(drift):
        return {"available": False}
    tested = drift[drift["statistic"].notna()]
    feature_rows = drift[drift["feature"] != "dataset"] if "feature" in drift else drift
    cols = [
        c
        for c in ("feature", "test", "statistic", "threshold", "p_value_adjusted", "level")
        if c in drift.columns
    ]
    drifted = drifted_rows(drift)
    drifted = drifted[drifted["feature"] != "dataset"] if len(drifted) else drifted
    return {
        "available": True,
        "reference": reference,
        "tests": len(tested[tested["feature"] != "dataset"]) if len(tested) else 0,
        "n_reference": int(feature_rows["n_reference"].max()) if len(feature_rows) else 0,
        "n_current": int(feature_rows["n_current"].max()) if len(feature_rows) else 0,
        "dataset_drift": dataset_drift(drift),
        "drifted": _records(drifted[cols]) if len(drifted) else [],
    }


def reference_of(tag: str, repo_dir: str | Path = ".") -> str | None:
    """The snapshot ``tag``'s refresh stage compared with: ``refresh.reference`` of the
    params.yaml committed at ``tag`` ("latest" then meant the snapshot before ``tag``)."""
    import yaml

    from visionloop import snapshots

    shown = snapshots._git(repo_dir, "show", f"{tag}:params.yaml", check=False)
    if shown.returncode != 0:
        return None
    ref = str(
        ((yaml.safe_load(shown.stdout) or {}).get("refresh") or {}).get("reference", "latest")
    )
    if ref == "none":
        return None
    if ref != "latest":
        return ref
    tags = snapshots.list_tags(repo_dir)
    earlier = tags[: tags.index(tag)] if tag in tags else []
    return earlier[-1] if earlier else None


def snapshot_diff(
    a: str,
    b: str,
    repo_dir: str | Path = ".",
    data_dir: str = "data",
    dims: Sequence[str] = DEFAULT_DIMS,
) -> SnapshotDiff:
    """Diff two snapshots by tag (``latest`` allowed) from their recorded outputs."""
    from visionloop.refresh import history

    tag_a, tag_b = history.resolve(a, repo_dir), history.resolve(b, repo_dir)

    def table(tag: str, rel: str) -> pd.DataFrame | None:
        return history.read_table_or_none(tag, rel, repo_dir, data_dir)

    manifest_a = table(tag_a, "curate/manifest.parquet")
    manifest_b = table(tag_b, "curate/manifest.parquet")
    if manifest_a is None or manifest_b is None:
        missing = tag_a if manifest_a is None else tag_b
        raise history.MissingInSnapshot(f"snapshot {missing} has no curate manifest")
    reference_of_b = reference_of(tag_b, repo_dir)
    return diff_tables(
        tag_a,
        tag_b,
        manifest_a,
        manifest_b,
        table(tag_a, "import_annotations/annotations.parquet"),
        table(tag_b, "import_annotations/annotations.parquet"),
        table(tag_b, "refresh/drift.parquet"),
        table(tag_a, "refresh/augmented/manifest.parquet"),
        table(tag_b, "refresh/augmented/manifest.parquet"),
        dims,
        reference_of_b,
    )


__all__ = ["SnapshotDiff", "diff_tables", "reference_of", "snapshot_diff"]
