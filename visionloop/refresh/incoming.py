"""Which files in the source are new since a reference snapshot, by content hash, cheaply.

The refresh flow asks this before running any stage: when nothing is new and nothing went
away, there is nothing to do (and no snapshot to cut). One listing of the source (collect's
``list_source``: size + mtime locally, ETag on S3) gives each file's stamp; a file whose
(source URI, stamp) the reference or the workspace's collect manifest already recorded keeps
that row's item id without being read. Only the other files are read and hashed (sha256 of
the bytes, collect's item id), in a small thread pool.

A file is *new* when its item id is not in the reference manifest (any status): a renamed or
copied file with known bytes is not new (collect will record it as a byte-identical duplicate
of the kept copy). An item of the reference whose bytes are no longer anywhere in the source is
*gone*. The stages that then run are incremental by item id, so only new items are decoded;
curate checks the new items' near duplicates against every accepted item.

A video file stands for the rows of its sampled frames (item id = hash of each frame's PNG,
known only after decoding): a video known by stamp contributes all its frames' ids; a video
not known by stamp is new (collect samples it; frames identical to known ones then come out
as exact duplicates).
"""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from visionloop import storage
from visionloop.config import CollectParams

log = logging.getLogger(__name__)
STAMP_COLUMN = "collect_source_stamp"


@dataclass
class Incoming:
    """What the source holds compared with the reference."""

    reference_items: int
    listed: int
    known_by_stamp: int  # id taken from a manifest row, file not read
    hashed: int  # read and hashed now
    unreadable: int  # could not be read (collect will quarantine them): counted as new
    new: list[dict[str, str | None]] = field(default_factory=list)  # source_uri, item_id
    gone: list[str] = field(default_factory=list)  # reference item ids no longer in the source
    known_elsewhere: int = 0  # files with known bytes under a new name (renames, copies)

    @property
    def changed(self) -> bool:
        return bool(self.new or self.gone)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["changed"] = self.changed
        return d


def _stamps(*manifests: pd.DataFrame | None) -> dict[tuple[str, str], dict[str, str]]:
    """(listed file URI, stamp) -> {item id: row URI} of its rows (one, or a video's frames)."""
    from visionloop.stages.collect import VIDEO_URI, listed_uri

    known: dict[tuple[str, str], dict[str, str]] = {}
    for m in manifests:
        if m is None or not len(m) or STAMP_COLUMN not in m.columns:
            continue
        rows = m[m[STAMP_COLUMN].notna()]
        uris = listed_uri(rows) if VIDEO_URI in rows.columns else rows["source_uri"]
        cols = (uris, rows[STAMP_COLUMN], rows["item_id"], rows["source_uri"])
        for uri, stamp, iid, row_uri in zip(*cols, strict=True):
            known.setdefault((str(uri), str(stamp)), {})[str(iid)] = str(row_uri)
    return known


def _sha256(uri: str) -> str | None:
    try:
        return hashlib.sha256(storage.read_bytes(uri)).hexdigest()
    except OSError as exc:
        log.warning("incoming: cannot read %s: %s", uri, exc)
        return None


def find_incoming(
    params: CollectParams,
    reference: pd.DataFrame | None,
    workspace_manifest: pd.DataFrame | None = None,
    max_workers: int = 4,
) -> Incoming:
    """Compare the source of ``params`` with the ``reference`` manifest (None: no snapshot)."""
    from visionloop.stages.collect import is_video, list_source, params_fingerprint

    fp = {False: params_fingerprint(params), True: params_fingerprint(params, for_video=True)}
    files = list_source(params.source)
    known = _stamps(reference, workspace_manifest)
    ids: dict[str, str | None] = {}
    frames: dict[str, str] = {}  # item id -> frame URI, of the videos known by stamp
    unknown_videos: list[str] = []
    to_hash: list[str] = []
    for f in files:
        video = is_video(params, f.rel_path)
        stamp = f"{f.stamp};params={fp[video]}" if f.stamp else None
        hit = known.get((f.uri, stamp)) if stamp else None
        if hit is not None and f.name_problem is None:
            if video:
                frames.update(hit)
            else:
                ids[f.uri] = next(iter(hit))
        elif f.name_problem is not None:
            ids[f.uri] = None  # collect never reads it; it is new unless already recorded
        elif video:
            unknown_videos.append(f.uri)  # its frames are known only once collect decodes it
        else:
            to_hash.append(f.uri)
    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        for uri, sha in zip(to_hash, pool.map(_sha256, to_hash), strict=True):
            ids[uri] = sha
    ref_ids = set(reference["item_id"].astype(str)) if reference is not None else set()
    ref_uris = set(reference["source_uri"].astype(str)) if reference is not None else set()
    new = [
        {"source_uri": uri, "item_id": iid}
        for uri, iid in sorted(ids.items())
        if (iid is None and uri not in ref_uris) or (iid is not None and iid not in ref_ids)
    ]
    new += [
        {"source_uri": uri, "item_id": iid} for iid, uri in frames.items() if iid not in ref_ids
    ]
    new += [{"source_uri": uri, "item_id": None} for uri in unknown_videos]
    new.sort(key=lambda n: str(n["source_uri"]))
    present = {iid for iid in ids.values() if iid is not None}
    present |= set(frames)
    accepted_ref = (
        set(reference.loc[reference["status"] == "accepted", "item_id"].astype(str))
        if reference is not None and "status" in reference.columns
        else ref_ids
    )
    gone = sorted(accepted_ref - present)
    elsewhere = sum(
        1 for uri, iid in ids.items() if iid is not None and iid in ref_ids and uri not in ref_uris
    )
    out = Incoming(
        reference_items=len(ref_ids),
        listed=len(files),
        known_by_stamp=len(files)
        - len(to_hash)
        - len(unknown_videos)
        - sum(1 for f in files if f.name_problem),
        hashed=len(to_hash),
        unreadable=sum(1 for u in to_hash if ids[u] is None),
        new=new,
        gone=gone,
        known_elsewhere=elsewhere,
    )
    log.info(
        "incoming: %d file(s) listed, %d known by stamp, %d hashed: %d new, %d gone",
        out.listed,
        out.known_by_stamp,
        out.hashed,
        len(out.new),
        len(out.gone),
    )
    return out


__all__ = ["Incoming", "find_incoming"]
