"""The labelling round trip: picks out as tasks, returned exports back in as an import source.

**Out** (the refresh stage, ``export_tasks``): the shortlist (``to_annotate.parquet``) becomes,
in ``<data>/refresh/tasks/``:

- ``label_studio.json``: Label Studio tasks in priority order. ``data.image`` is the published
  (anonymized, never the raw) image as ``refresh.image_url_prefix`` + its data-root path
  (Label Studio local storage with ``LOCAL_FILES_DOCUMENT_ROOT`` = the data dir serves it);
  ``data`` also carries item_id, priority, reason and why. Existing labels of an item (a QA
  re-label) and model predictions become ``predictions`` (pre-annotations), written by the
  project's Label Studio exporter (``visionloop.annotations.export``);
- ``cvat.xml`` (CVAT for images 1.1, one ``<image>`` per pick in priority order, with the
  pre-annotations as shapes, written by the project's CVAT exporter) and ``cvat_task.json``
  (task name, labels and image list: what CVAT's task API and ``cvat-cli create`` take);
- ``tasks.parquet``: one row per task (item id, image path, size, priority, reason).

**Back** (``intake``, run by the refresh flow before the stages, or ``visionloop refresh
intake``): every export dropped into ``refresh.inbox`` (any format the import stage reads;
Label Studio JSON and CVAT XML in practice) is read with that format's reader and matched back
to its items: by the item id in the image file name (published objects are named
``<item_id>.<ext>``, whatever folder or upload prefix the tool added), else by the task's image
path, else by the manifest's ``rel_path``. Matched rows are rewritten to the manifest's
spelling (``image_ref`` = ``rel_path``, ``image_sha256`` = item id) and run through label QA
(``visionloop.qa.run_qa``) with the project's label set; rows named by error-level findings
are held back. The rest is written as Label Studio JSON (annotators kept) to
``refresh.returned_dir/<export stem>-<sha256[:12]>.json``, with the findings beside it
(``.qa.parquet``) and a log of every intake (``intake.parquet``). ``returned_dir`` is one of
``import_annotations.sources`` (``ensure_returned_source`` adds it to params.yaml), so the next
run imports the labels, QA checks them again with everything else in the validate gate and the
snapshot publishes them. An export already taken in (same bytes) is skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import re
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from visionloop import storage

log = logging.getLogger(__name__)

TASKS_DIR = "tasks"
TASK_COLUMNS = [
    "task_id",
    "item_id",
    "image",
    "source_uri",
    "rel_path",
    "width",
    "height",
    "priority",
    "reason",
    "why",
    "pre_annotations",
]
INTAKE_LOG = "intake.parquet"
INTAKE_COLUMNS = [
    "inbox_file",
    "sha256",
    "format",
    "output",
    "rows",
    "matched",
    "unmatched",
    "held_back",
    "qa_errors",
    "qa_warnings",
    "items",
]
_HEX64 = re.compile(r"([0-9a-f]{64})")
PRE_ANNOTATION_VERSION = "visionloop-refresh"


# ------------------------------------------------------------------------------------------
# Out
# ------------------------------------------------------------------------------------------


def task_table(picks: pd.DataFrame, manifest: pd.DataFrame, pre: pd.DataFrame) -> pd.DataFrame:
    """One task per pick: the published image (data-root relative), its size and why."""
    man = manifest.drop_duplicates("item_id").set_index("item_id")
    counts = pre.groupby("item_id").size() if len(pre) else pd.Series(dtype=int)
    rows = []
    for p in picks.itertuples(index=False):
        m = man.loc[p.item_id]
        rows.append(
            {
                "task_id": int(p.priority),
                "item_id": p.item_id,
                "image": str(m["anonymize_object_uri"]),
                "source_uri": p.source_uri,
                "rel_path": str(m.get("rel_path", "")),
                "width": _int(m.get("width")),
                "height": _int(m.get("height")),
                "priority": int(p.priority),
                "reason": getattr(p, "reason", None),
                "why": p.why,
                "pre_annotations": int(counts.get(p.item_id, 0)),
            }
        )
    out = pd.DataFrame(rows, columns=TASK_COLUMNS)
    for c in ("width", "height"):
        out[c] = out[c].astype("Int64")
    return out


def _int(v: Any) -> int | None:
    return None if v is None or pd.isna(v) else int(v)


def pre_annotations(picks: pd.DataFrame, annotations: pd.DataFrame | None) -> pd.DataFrame:
    """The matched rows (labels and predictions) of the picked items: the pre-annotations."""
    from visionloop.annotations.table import with_all_columns

    if annotations is None or not len(annotations):
        return with_all_columns(pd.DataFrame())
    rows = annotations[annotations["item_id"].isin(set(picks["item_id"]))]
    if "match_status" in rows.columns:
        rows = rows[rows["match_status"] == "matched"]
    return with_all_columns(rows.reset_index(drop=True))


def export_tasks(
    picks: pd.DataFrame,
    manifest: pd.DataFrame,
    annotations: pd.DataFrame | None,
    categories: dict[str, Any] | None,
    out_dir: str,
    *,
    formats: list[str],
    url_prefix: str,
    name: str = "visionloop refresh",
) -> dict[str, Any]:
    """Write the task files of ``picks`` into ``out_dir``; returns what was written."""
    from visionloop.annotations.table import CategoryMap

    pre = pre_annotations(picks, annotations)
    tasks = task_table(picks, manifest, pre)
    cmap = CategoryMap.from_json(categories) if categories else _cmap_of(pre)
    image_of = dict(zip(tasks["item_id"], tasks["image"], strict=True))
    pre = pre.assign(image_ref=pre["item_id"].map(image_of)) if len(pre) else pre
    files: dict[str, str] = {"tasks": storage.join(out_dir, "tasks.parquet")}
    storage.write_table(files["tasks"], tasks)
    report: dict[str, Any] = {"tasks": len(tasks), "pre_annotations": len(pre), "files": files}
    if "label_studio" in formats:
        files["label_studio"] = storage.join(out_dir, "label_studio.json")
        docs = label_studio_tasks(tasks, pre, cmap, url_prefix)
        storage.write_text_atomic(files["label_studio"], json.dumps(docs, indent=1) + "\n")
    if "cvat" in formats:
        files["cvat"] = storage.join(out_dir, "cvat.xml")
        storage.write_text_atomic(files["cvat"], cvat_xml(tasks, pre, cmap, name))
        files["cvat_task"] = storage.join(out_dir, "cvat_task.json")
        spec = {
            "name": name,
            "labels": [{"name": n, "attributes": []} for n in cmap.names()],
            "image_quality": 95,
            "files": tasks["image"].tolist(),
            "annotations": {"file": "cvat.xml", "format": "CVAT 1.1"},
            "item_ids": tasks["item_id"].tolist(),
        }
        storage.write_text_atomic(files["cvat_task"], json.dumps(spec, indent=1) + "\n")
    return report


def _cmap_of(rows: pd.DataFrame) -> Any:
    from visionloop.annotations.table import CategoryMap

    cmap = CategoryMap()
    if len(rows):
        pairs = rows[["category_id", "category"]].drop_duplicates().sort_values("category_id")
        for cid, cat in pairs.itertuples(index=False):
            cmap._ids.setdefault(str(cat), int(cid))
    return cmap


def _scratch(name: str) -> str:
    return f"memory://visionloop-refresh/{uuid.uuid4().hex}/{name}"


def label_studio_tasks(
    tasks: pd.DataFrame, pre: pd.DataFrame, cmap: Any, url_prefix: str
) -> list[dict[str, Any]]:
    """Label Studio task documents, pre-annotations as predictions (the project's writer)."""
    from visionloop.annotations.export import export_table

    predictions: dict[str, list[dict[str, Any]]] = {}
    if len(pre):
        tmp = _scratch("ls.json")
        export_table(
            pre, cmap, "label_studio", tmp, as_predictions=True,
            model_version=PRE_ANNOTATION_VERSION, report=False,
        )  # fmt: skip
        for doc in json.loads(storage.read_text(tmp)):
            predictions[doc["data"]["image"]] = doc.get("predictions", [])
        storage.remove(storage.dirname(tmp), recursive=True)
    docs = []
    for t in tasks.itertuples(index=False):
        docs.append(
            {
                "id": int(t.task_id),
                "data": {
                    "image": f"{url_prefix}{t.image}",
                    "item_id": t.item_id,
                    "priority": int(t.priority),
                    "reason": t.reason,
                    "why": t.why,
                },
                "annotations": [],
                "predictions": predictions.get(t.image, []),
            }
        )
    return docs


def cvat_xml(tasks: pd.DataFrame, pre: pd.DataFrame, cmap: Any, name: str) -> str:
    """CVAT for images 1.1: every task image in priority order, pre-annotations as shapes."""
    from xml.sax.saxutils import escape, quoteattr

    from visionloop.annotations.export import export_table

    shapes: dict[str, list[str]] = {}
    labels_xml = ""
    if len(pre):
        tmp = _scratch("cvat.xml")
        export_table(pre, cmap, "cvat", tmp, report=False)
        root = ET.fromstring(storage.read_text(tmp))
        storage.remove(storage.dirname(tmp), recursive=True)
        labels = root.find("meta/task/labels")
        if labels is not None:
            labels_xml = ET.tostring(labels, encoding="unicode")
        for image in root.findall("image"):
            shapes[image.get("name", "")] = [
                ET.tostring(child, encoding="unicode").strip() for child in image
            ]
    if not labels_xml:
        labels_xml = (
            "<labels>"
            + "".join(
                f"<label><name>{escape(n)}</name><attributes /></label>" for n in cmap.names()
            )
            + "</labels>"
        )
    lines = [
        '<?xml version="1.0" encoding="utf-8"?>',
        "<annotations>",
        "  <version>1.1</version>",
        "  <meta>",
        "    <task>",
        f"      <name>{escape(name)}</name>",
        f"      <size>{len(tasks)}</size>",
        "      <mode>annotation</mode>",
        f"      {labels_xml}",
        "    </task>",
        "  </meta>",
    ]
    for i, t in enumerate(tasks.itertuples(index=False)):
        head = f"  <image id={quoteattr(str(i))} name={quoteattr(str(t.image))}"
        if pd.notna(t.width) and pd.notna(t.height):
            head += f" width={quoteattr(str(int(t.width)))} height={quoteattr(str(int(t.height)))}"
        body = shapes.get(str(t.image), [])
        if not body:
            lines.append(head + " />")
            continue
        lines.append(head + ">")
        lines.extend(f"    {s}" for s in body)
        lines.append("  </image>")
    lines.append("</annotations>")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------
# Back
# ------------------------------------------------------------------------------------------


@dataclass
class IntakeResult:
    """What one intake did (also appended to ``intake.parquet``)."""

    taken: list[dict[str, Any]] = field(default_factory=list)  # one per new inbox file
    skipped: list[str] = field(default_factory=list)  # already taken in (same bytes)
    failed: list[dict[str, str]] = field(default_factory=list)  # unreadable exports

    @property
    def changed(self) -> bool:
        return bool(self.taken)

    def to_dict(self) -> dict[str, Any]:
        return {"taken": self.taken, "skipped": self.skipped, "failed": self.failed}


def item_of_ref(
    ref: str, by_image: dict[str, str], by_rel: dict[str, str], ids: set[str]
) -> str | None:
    """The item an exported image reference names (see the module docstring)."""
    name = posixpath.basename(str(ref).replace("\\", "/").split("?", 1)[0])
    found = _HEX64.search(name.lower())
    if found and found.group(1) in ids:
        return found.group(1)
    norm = str(ref).replace("\\", "/").lstrip("/")
    return by_image.get(norm) or by_rel.get(norm)


def _inbox_files(inbox: str) -> list[str]:
    if not storage.exists(inbox):
        return []
    return sorted(
        u
        for u in storage.walk_files(inbox)
        if u.lower().endswith((".json", ".xml")) and not posixpath.basename(u).startswith(".")
    )


def _known(returned_dir: str) -> pd.DataFrame:
    uri = storage.join(returned_dir, INTAKE_LOG)
    return storage.read_table(uri) if storage.exists(uri) else pd.DataFrame(columns=INTAKE_COLUMNS)


def intake(
    inbox: str,
    returned_dir: str,
    manifest: pd.DataFrame,
    tasks: pd.DataFrame | None,
    params: Any,
    categories: dict[str, Any] | None = None,
) -> IntakeResult:
    """Take in every new export of ``inbox`` (see the module docstring)."""
    from visionloop.annotations.formats import detect_format, get_reader
    from visionloop.annotations.table import AnnotationImportError, CategoryMap, with_all_columns
    from visionloop.qa.run import run_qa

    result = IntakeResult()
    log_df = _known(returned_dir)
    seen = set(log_df["sha256"].astype(str))
    acc = manifest.drop_duplicates("item_id")
    by_rel = dict(zip(acc["rel_path"].astype(str), acc["item_id"].astype(str), strict=True))
    by_image: dict[str, str] = {}
    if "anonymize_object_uri" in acc.columns:
        pub = acc[acc["anonymize_object_uri"].notna()]
        by_image.update(zip(pub["anonymize_object_uri"].astype(str), pub["item_id"], strict=True))
    if tasks is not None and len(tasks):
        by_image.update(zip(tasks["image"].astype(str), tasks["item_id"].astype(str), strict=True))
    info = acc.set_index("item_id")
    ids = set(info.index.astype(str))
    sizes = {
        img: (_int(info.at[i, "width"]), _int(info.at[i, "height"]))
        for img, i in by_image.items()
        if i in info.index and "width" in info.columns
    }
    new_log = []
    for uri in _inbox_files(inbox):
        data = storage.read_bytes(uri)
        sha = hashlib.sha256(data).hexdigest()
        if sha in seen:
            result.skipped.append(uri)
            continue
        seen.add(sha)
        try:
            fmt, _ = detect_format(uri)
            got = get_reader(fmt).load(uri, images=sizes)
        except (AnnotationImportError, ValueError, KeyError) as exc:
            result.failed.append({"inbox_file": uri, "error": str(exc)})
            log.warning("refresh intake: %s not taken in: %s", uri, exc)
            continue
        rows = with_all_columns(got.annotations).copy()
        rows["item_id"] = [item_of_ref(r, by_image, by_rel, ids) for r in rows["image_ref"]]
        matched = rows["item_id"].notna()
        unmatched_refs = sorted(set(rows.loc[~matched, "image_ref"].astype(str)))
        rows = rows[matched].reset_index(drop=True)
        rows["image_sha256"] = rows["item_id"]
        rows["image_ref"] = rows["item_id"].map(info["rel_path"]).astype(str)
        for col in ("width", "height"):
            have = rows[f"image_{col}"]
            rows[f"image_{col}"] = have.where(have.notna(), rows["item_id"].map(info[col]))
        # the project's category ids (a reader numbers labels by first use in its file)
        cmap = _merged_map(categories, got.categories, CategoryMap)
        rows["category_id"] = rows["category"].map(cmap.id_of).astype("int64")
        qa = run_qa(rows, params, categories=categories, items=sorted(set(rows["item_id"])))
        errors = qa.findings[qa.findings["severity"] == "error"]
        bad_ids = {a for ids in errors["annotation_ids"] for a in ids}
        held = rows["annotation_id"].isin(bad_ids)
        keep = rows[~held].reset_index(drop=True)
        stem = posixpath.splitext(posixpath.basename(uri))[0]
        out = storage.join(returned_dir, f"{stem}-{sha[:12]}.json")
        if len(keep):
            from visionloop.annotations.export import export_table

            export_table(keep, cmap, "label_studio", out, report=False)
        from visionloop.qa.checks import findings_to_arrow

        storage.write_table(out[: -len(".json")] + ".qa.parquet", findings_to_arrow(qa.findings))
        entry = {
            "inbox_file": uri,
            "sha256": sha,
            "format": fmt,
            "output": out if len(keep) else None,
            "rows": len(got.annotations),
            "matched": int(matched.sum()),
            "unmatched": int((~matched).sum()),
            "held_back": int(held.sum()),
            "qa_errors": len(errors),
            "qa_warnings": int((qa.findings["severity"] == "warning").sum()),
            "items": int(keep["item_id"].nunique()) if len(keep) else 0,
        }
        if unmatched_refs:
            log.warning(
                "refresh intake: %s: %d image reference(s) match no item (e.g. %s)",
                uri,
                len(unmatched_refs),
                unmatched_refs[0],
            )
        result.taken.append({**entry, "unmatched_refs": unmatched_refs[:10]})
        new_log.append(entry)
    if new_log:
        frame = pd.DataFrame(new_log, columns=INTAKE_COLUMNS)
        log_df = frame if not len(log_df) else pd.concat([log_df, frame], ignore_index=True)
        storage.write_table(storage.join(returned_dir, INTAKE_LOG), log_df)
    return result


def _merged_map(categories: dict[str, Any] | None, extra: Any, cls: Any) -> Any:
    """The project's category map, extended by names only the returned export uses."""
    cmap = cls.from_json(categories) if categories else cls()
    for name in extra.names():
        if name not in cmap:
            cmap._ids[name] = len(cmap._ids)
    return cmap


def returned_files(returned_dir: str) -> list[str]:
    """The normalised returned exports (what the import source reads)."""
    if not storage.exists(returned_dir):
        return []
    return sorted(u for u in storage.walk_files(returned_dir) if u.endswith(".json"))


__all__ = [
    "INTAKE_COLUMNS",
    "TASK_COLUMNS",
    "IntakeResult",
    "cvat_xml",
    "export_tasks",
    "intake",
    "item_of_ref",
    "label_studio_tasks",
    "pre_annotations",
    "returned_files",
    "task_table",
]
