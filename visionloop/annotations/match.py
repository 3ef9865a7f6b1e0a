"""Match annotations (and the images an export declares) to manifest rows.

An export names its images its own way: a path relative to some folder (COCO ``file_name``,
"cam_a/img_0003.jpg"), a bare file name, or a path with a subset folder in front. The manifest
knows each file by ``rel_path`` below the collect source. Matching tries, in order:

1. ``rel_path``: the normalised reference equals a manifest path;
2. ``file_name``: exactly one manifest file has that name (``file_stem`` for a reference
   without an extension, e.g. a CVAT video frame "frame_000010");
   when several do (the same name in Train/ and Test/), ``path_suffix`` keeps the one sharing
   the most trailing folders with the reference, and ``subset_folder`` the one inside a folder
   named like the export's subset;
3. ``sha256``: the export gave a content hash and it is an item id (sha256 of the bytes).

The match then says what became of the item: ``matched`` when the item (its item id) is
accepted after curate, even if the row the export named is a quarantined byte-identical copy;
``quarantined_item`` when the item exists but was quarantined; ``unmatched`` when no image fits.
"""

from __future__ import annotations

import posixpath
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from visionloop.annotations.table import ImportIssue, category_counts
from visionloop.schema import Status

MATCHED = "matched"
QUARANTINED_ITEM = "quarantined_item"
UNMATCHED = "unmatched"
MAX_EXAMPLES = 10
MAX_ISSUE_EXAMPLES = 50

_KEYS = ("image_ref", "subset", "image_sha256")


def normalise_ref(ref: str) -> str:
    """An export's image reference in manifest spelling: ``/`` separators, no ``./``."""
    r = str(ref).strip().replace("\\", "/")
    while r.startswith("./"):
        r = r[2:]
    while "//" in r and "://" not in r:
        r = r.replace("//", "/")
    return r


@dataclass(frozen=True)
class Match:
    row: int | None  # position in the manifest
    method: str | None
    why: str | None = None  # for a reference that matched nothing


class ManifestIndex:
    """Lookups over the manifest's ``rel_path`` and ``item_id`` (built once per run)."""

    def __init__(self, manifest: pd.DataFrame) -> None:
        self.rel = [normalise_ref(p) for p in manifest["rel_path"].tolist()]
        self.item_id = manifest["item_id"].tolist()
        self.status = manifest["status"].tolist()
        self.by_path = {p: i for i, p in enumerate(self.rel)}
        self.by_name: dict[str, list[int]] = {}
        self.by_stem: dict[str, list[int]] = {}
        for i, p in enumerate(self.rel):
            name = posixpath.basename(p)
            self.by_name.setdefault(name, []).append(i)
            self.by_stem.setdefault(posixpath.splitext(name)[0], []).append(i)
        self.by_sha: dict[str, list[int]] = {}
        for i, sha in enumerate(self.item_id):
            self.by_sha.setdefault(str(sha).lower(), []).append(i)
        self.accepted_ids = {
            self.item_id[i] for i, s in enumerate(self.status) if s == Status.ACCEPTED
        }

    def find(self, ref: str, subset: str | None = None, sha256: str | None = None) -> Match:
        norm = normalise_ref(ref)
        if norm in self.by_path:
            return Match(self.by_path[norm], "rel_path")
        base = posixpath.basename(norm)
        cands = self.by_name.get(base, [])
        why = "no manifest file with this path or file name"
        method = "file_name"
        if not cands and not posixpath.splitext(base)[1]:
            # No extension (Label Studio "/image1", CVAT video "frame_000010"): the stem.
            cands, method = self.by_stem.get(base, []), "file_stem"
        if len(cands) == 1:
            return Match(cands[0], method)
        if len(cands) > 1:
            picked = self._by_suffix(norm, cands)
            if picked is not None:
                return Match(picked, "path_suffix")
            picked, fits = self._by_subset(subset, cands)
            if picked is not None:
                return Match(picked, "subset_folder")
            shown = ", ".join(sorted(self.rel[i] for i in cands)[:3])
            why = f"{len(cands)} manifest files share this name ({shown})"
            why += f"; subset {subset!r} fits {fits} of them" if subset else "; no subset given"
        if sha256:
            rows = self.by_sha.get(str(sha256).lower(), [])
            if rows:
                acc = [i for i in rows if self.status[i] == Status.ACCEPTED]
                return Match((acc or rows)[0], "sha256")
        return Match(None, None, why)

    def _by_suffix(self, norm: str, cands: list[int]) -> int | None:
        parts = norm.split("/")
        if len(parts) < 2:
            return None
        scores = []
        for i in cands:
            rparts = self.rel[i].split("/")
            n = 0
            while n < min(len(parts), len(rparts)) and parts[-1 - n] == rparts[-1 - n]:
                n += 1
            scores.append(n)
        best = max(scores)
        if best >= 2 and scores.count(best) == 1:
            return cands[scores.index(best)]
        return None

    def _by_subset(self, subset: str | None, cands: list[int]) -> tuple[int | None, int]:
        """(row, how many candidates sit in a folder named like the subset): exact names
        first, then case-insensitive ("train" vs "Train")."""
        if not subset:
            return None, 0
        hits: list[int] = []
        for fold in (False, True):
            key = subset.casefold() if fold else subset
            hits = [
                i
                for i in cands
                if key in [(d.casefold() if fold else d) for d in self.rel[i].split("/")[:-1]]
            ]
            if hits:
                break
        return (hits[0] if len(hits) == 1 else None), len(hits)

    def status_of(self, row: int) -> str:
        return MATCHED if self.item_id[row] in self.accepted_ids else QUARANTINED_ITEM


def _key_frame(df: pd.DataFrame) -> pd.DataFrame:
    keys = pd.DataFrame({k: df[k].astype(object) for k in _KEYS})
    return keys.where(keys.notna(), "")


def match_frame(df: pd.DataFrame, index: ManifestIndex) -> pd.DataFrame:
    """For each row of ``df`` (columns image_ref, subset, image_sha256): manifest row
    (``_row``, -1 if none), item_id, match_status, match_method and why (when unmatched).
    Each distinct reference is looked up once."""
    keys = _key_frame(df)
    unique = keys.drop_duplicates()
    rows, ids, statuses, methods, whys = [], [], [], [], []
    for ref, subset, sha in unique.itertuples(index=False):
        m = index.find(ref, subset or None, sha or None)
        rows.append(-1 if m.row is None else m.row)
        ids.append(None if m.row is None else index.item_id[m.row])
        statuses.append(UNMATCHED if m.row is None else index.status_of(m.row))
        methods.append(m.method)
        whys.append(m.why)
    found = unique.assign(
        _row=rows, item_id=ids, match_status=statuses, match_method=methods, why=whys
    )
    merged = keys.merge(found, on=list(_KEYS), how="left")
    merged.index = df.index
    return merged[["_row", "item_id", "match_status", "match_method", "why"]]


def match_annotations(
    annotations: pd.DataFrame, manifest: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Set item_id, match_status and match_method on the annotation table. Returns the table
    and the per-annotation match detail (manifest row and why) used by the report."""
    index = ManifestIndex(manifest)
    detail = match_frame(annotations, index)
    out = annotations.copy()
    out["item_id"] = detail["item_id"].astype(object)
    out["match_status"] = detail["match_status"].astype(object)
    out["match_method"] = detail["match_method"].astype(object)
    return out, detail


def _examples(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return records[:MAX_EXAMPLES]


def _clean(v: Any) -> Any:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    if isinstance(v, np.generic):
        return v.item()
    return v


def build_report(
    annotations: pd.DataFrame,
    detail: pd.DataFrame,
    images: pd.DataFrame,
    manifest: pd.DataFrame,
    issues: list[ImportIssue],
) -> dict[str, Any]:
    """The ``report.json`` document: match counts with examples, unlabelled accepted images,
    per-category counts, declared-vs-manifest size mismatches and the import's issues."""
    index = ManifestIndex(manifest)
    n = len(annotations)
    status = annotations["match_status"] if n else pd.Series(dtype=object)
    report: dict[str, Any] = {
        "annotations": n,
        "matched": int((status == MATCHED).sum()),
        "quarantined_item": int((status == QUARANTINED_ITEM).sum()),
        "unmatched": int((status == UNMATCHED).sum()),
    }
    report["unmatched_fraction"] = round(report["unmatched"] / n, 6) if n else 0.0
    report["match_methods"] = (
        {str(k): int(v) for k, v in annotations["match_method"].value_counts().items()} if n else {}
    )

    unmatched = annotations[status == UNMATCHED] if n else annotations
    report["unmatched_examples"] = _examples(
        [
            {
                "image_ref": r.image_ref,
                "subset": _clean(r.subset),
                "source_file": r.source_file,
                "source_pointer": r.source_pointer,
                "why": detail.at[i, "why"],
            }
            for i, r in unmatched.head(MAX_EXAMPLES).iterrows()
        ]
    )
    quarantined = annotations[status == QUARANTINED_ITEM] if n else annotations
    report["quarantined_item_examples"] = _examples(
        [
            {
                "image_ref": r.image_ref,
                "item_id": r.item_id,
                "reason": _clean(manifest["reason"].iloc[int(detail.at[i, "_row"])]),
                "source_file": r.source_file,
                "source_pointer": r.source_pointer,
            }
            for i, r in quarantined.head(MAX_EXAMPLES).iterrows()
        ]
    )
    if n:
        rows = detail["_row"].to_numpy()
        via_dup = [
            r >= 0 and index.status[r] != Status.ACCEPTED and s == MATCHED
            for r, s in zip(rows, status, strict=True)
        ]
        report["matched_via_duplicate"] = int(np.sum(via_dup))
    else:
        report["matched_via_duplicate"] = 0

    # Accepted images: labelled, declared empty by an export, or unlabelled.
    accepted = manifest[manifest["status"] == Status.ACCEPTED]
    labelled_ids = set(annotations.loc[status == MATCHED, "item_id"]) if n else set()
    declared_ids: set[str] = set()
    if len(images):
        img_detail = match_frame(images, index)
        declared_ids = set(img_detail.loc[img_detail["match_status"] == MATCHED, "item_id"])
    acc_ids = accepted["item_id"]
    is_labelled = acc_ids.isin(labelled_ids)
    is_declared_empty = ~is_labelled & acc_ids.isin(declared_ids)
    unlabelled = accepted[~is_labelled & ~is_declared_empty]
    report["accepted_images"] = len(accepted)
    report["labelled_accepted"] = int(is_labelled.sum())
    report["declared_empty_accepted"] = int(is_declared_empty.sum())
    report["unlabelled_accepted"] = len(unlabelled)
    report["unlabelled_accepted_examples"] = sorted(unlabelled["rel_path"].tolist())[:MAX_EXAMPLES]

    report["per_category"] = category_counts(annotations)
    report["per_category_matched"] = category_counts(annotations[status == MATCHED]) if n else {}
    report["size_mismatches"] = _size_mismatches(annotations, detail, manifest)

    errors = [i for i in issues if i.level == "error"]
    warnings = [i for i in issues if i.level == "warning"]
    report["errors"] = len(errors)
    report["warnings"] = len(warnings)
    report["errors_by_code"] = dict(sorted(Counter(i.code for i in errors).items()))
    report["warnings_by_code"] = dict(sorted(Counter(i.code for i in warnings).items()))
    report["error_examples"] = [i.to_dict() for i in errors[:MAX_ISSUE_EXAMPLES]]
    report["warning_examples"] = [i.to_dict() for i in warnings[:MAX_ISSUE_EXAMPLES]]
    return report


def _size_mismatches(
    annotations: pd.DataFrame, detail: pd.DataFrame, manifest: pd.DataFrame
) -> dict[str, Any]:
    """Images whose size in the export differs from the manifest's (e.g. an export made before
    EXIF rotation): their boxes are probably in another coordinate frame."""
    if not len(annotations) or "width" not in manifest:
        return {"count": 0, "examples": []}
    rows = detail["_row"].to_numpy()
    has = (rows >= 0) & annotations["image_width"].notna().to_numpy()
    if not has.any():
        return {"count": 0, "examples": []}
    sub = annotations.loc[has, ["image_ref", "source_file", "image_width", "image_height"]].copy()
    mrows = rows[has]
    sub["m_width"] = manifest["width"].to_numpy()[mrows]
    sub["m_height"] = manifest["height"].to_numpy()[mrows]
    sub = sub[sub["m_width"].notna()]
    bad = sub[
        (sub["image_width"].astype(float) != sub["m_width"].astype(float))
        | (sub["image_height"].astype(float) != sub["m_height"].astype(float))
    ].drop_duplicates(["image_ref", "source_file"])
    examples = []
    for r in bad.head(MAX_EXAMPLES).itertuples(index=False):
        ew, eh, mw, mh = (int(r.image_width), int(r.image_height), int(r.m_width), int(r.m_height))
        examples.append(
            {
                "image_ref": r.image_ref,
                "source_file": r.source_file,
                "export_size": [ew, eh],
                "manifest_size": [mw, mh],
                "hint": "width and height swapped: EXIF orientation?"
                if (ew, eh) == (mh, mw)
                else "",
            }
        )
    return {"count": len(bad), "examples": examples}


def annotation_counts(annotations: pd.DataFrame) -> Mapping[str, int]:
    """Matched annotations per item id (for the stage's manifest column)."""
    if not len(annotations):
        return {}
    matched = annotations[annotations["match_status"] == MATCHED]
    return {str(k): int(v) for k, v in matched["item_id"].value_counts().items()}
