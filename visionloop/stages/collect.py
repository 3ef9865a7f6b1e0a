"""collect: turn every file below the source root into exactly one manifest row.

Each file ends ``accepted`` (bytes copied, unchanged, into the content-addressed store
``<data>/collect/objects/<id[:2]>/<id><ext>``) or ``quarantined`` with a Reason. Checks, in
order: the path must not resolve outside the source root (never read otherwise), the bytes must
be readable, the extension must be one of ``collect.extensions``, the file must not be empty,
the content must decode fully (format from content, pixel count checked from the header first)
and must match its extension. A local name that is not valid UTF-8 cannot be stored in the
manifest (Parquet strings are UTF-8) nor matched by any label export: it is shown
percent-encoded and quarantined unread (``bad_file_name``). Entries that are not regular files
(FIFO, socket, device) are never opened: reading a FIFO would block the worker forever.
Byte-identical files share an item id: in ``finalize`` the first by sorted source URI is kept
and the others are quarantined as exact duplicates.

Videos (extension in ``collect.video_extensions``) are sampled, not copied: about
``collect.video_fps`` frames per second of video, at most ``collect.video_max_frames``, and
each sampled frame becomes one row of its own: the frame encoded as a lossless PNG without
metadata, stored under the sha256 of those PNG bytes (its item id), ``format`` PNG,
``source_uri`` ``<video uri>#frame=<n>`` and ``rel_path`` ``<video rel path>/frame_<n>.png``
(n = the frame number in the video, 6 digits, so that sorting by either keeps frame order and
a CVAT video export's ``frame_000010`` finds its frame by stem), plus ``collect_video_uri``,
``collect_frame_index`` and ``collect_frame_time_s``. ``collect_video_note`` says where
decoding stopped when a damaged video yielded only its first frames (they are kept). A video
that yields no frame is ONE quarantined row: ``corrupt``, ``unsupported_format`` (a known
container whose codec this OpenCV/FFmpeg build cannot decode), ``empty_file`` or
``too_large`` (file above ``collect.video_max_bytes``, unread, or frames above
``collect.max_pixels``). A static video's identical frames are exact duplicates of its first.
So every listed file is represented: by its own row or by its frames.

Reruns are incremental: a file whose source URI and stamp (size + mtime locally, ETag on S3,
plus a fingerprint of the collect params; the video params too for a video) match the previous
manifest keeps its previous row(s), a video all its frame rows, without being read. The source
is only ever read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import re
import stat
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa

from visionloop import imaging, storage, video
from visionloop.config import CollectParams, Params
from visionloop.manifest import ManifestError, quarantine, status_counts
from visionloop.schema import MANIFEST_SCHEMA, Reason, Status
from visionloop.stages.base import (
    Shard,
    StageSummary,
    Workspace,
    clear_work,
    read_parts,
    write_work_list,
)

log = logging.getLogger(__name__)

STAGE = "collect"
# Bump when the checks change meaning, so reruns re-inspect files instead of reusing rows.
LOGIC_VERSION = 2  # 2: video files sampled into frame rows
VIDEO_LOGIC_VERSION = 2  # 2: an image named as a video is an extension mismatch
STAMP_COLUMN = "collect_source_stamp"
VIDEO_URI = "collect_video_uri"  # the listed video a frame row (or a rejected video) comes from
FRAME_INDEX = "collect_frame_index"  # frame number in that video (0-based)
FRAME_TIME = "collect_frame_time_s"  # its timestamp in seconds
VIDEO_NOTE = "collect_video_note"  # where decoding of a damaged video stopped, else null
COLLECT_SCHEMA: pa.Schema = pa.schema(
    [
        *MANIFEST_SCHEMA,
        pa.field(STAMP_COLUMN, pa.string()),
        pa.field(VIDEO_URI, pa.string()),
        pa.field(FRAME_INDEX, pa.int64()),
        pa.field(FRAME_TIME, pa.float64()),
        pa.field(VIDEO_NOTE, pa.string()),
    ]
)
_WRITTEN = "_object_written"  # part-file only: did this shard write the object
_PART_SCHEMA: pa.Schema = COLLECT_SCHEMA.append(pa.field(_WRITTEN, pa.bool_()))
_WORK_SCHEMA = pa.schema(
    [
        ("source_uri", pa.string()),
        ("rel_path", pa.string()),
        ("size_bytes", pa.int64()),
        (STAMP_COLUMN, pa.string()),
        ("name_problem", pa.string()),  # why the name is unusable (not UTF-8), else null
    ]
)
# Lone surrogates: how Python spells the bytes of a local name that are not valid UTF-8.
_SURROGATES = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class SourceFile:
    uri: str
    rel_path: str
    size: int | None
    stamp: str | None  # None: nothing trustworthy to compare, always re-inspect
    name_problem: str | None = None  # set when the real name is not valid UTF-8


def params_fingerprint(cfg: CollectParams, for_video: bool = False) -> str:
    """Short hash of every collect param that changes a row's outcome (``for_video``: a video
    file's rows, which also depend on the sampling params; images do not, so changing the
    frame rate re-reads videos only)."""
    payload: dict[str, Any] = {
        "extensions": sorted({e.lower() for e in cfg.extensions}),
        "video_extensions": sorted({e.lower() for e in cfg.video_extensions}),
        "max_pixels": cfg.max_pixels,
        "on_extension_mismatch": cfg.on_extension_mismatch,
        "logic": LOGIC_VERSION,
    }
    if for_video:
        payload.update(
            video_fps=cfg.video_fps,
            video_max_frames=cfg.video_max_frames,
            video_max_bytes=cfg.video_max_bytes,
            png_level=video.PNG_LEVEL,
            video_logic=VIDEO_LOGIC_VERSION,
        )
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def source_stamp(info: dict[str, Any]) -> str | None:
    """What identifies a file version without reading it: ETag (S3) or size + mtime (local)."""
    size = info.get("size")
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return f"etag={str(etag).strip(chr(34))};size={size}"
    mtime = info.get("mtime") or info.get("LastModified") or info.get("created")
    if mtime is None:
        return None
    stamp = f"size={size};mtime={mtime}"
    if info.get("islink"):  # the stat is the target's; a re-pointed link must not match
        stamp += f";link={utf8_safe(str(info.get('destination')))}"
    return stamp


def utf8_safe(text: str) -> str:
    """``text`` unchanged when it is valid Unicode; else (a local name holding bytes that are
    not UTF-8, decoded by Python with surrogateescape) percent-encoded: ``%`` -> ``%25`` and
    each undecodable byte -> ``%XX``, so the result is valid UTF-8 and
    ``urllib.parse.unquote_to_bytes`` gives back the name's bytes."""
    if not _SURROGATES.search(text):
        return text

    def byte(m: re.Match[str]) -> str:
        code = ord(m.group())
        return f"%{code - 0xDC00:02X}" if 0xDC80 <= code <= 0xDCFF else f"%u{code:04X}"

    return _SURROGATES.sub(byte, text.replace("%", "%25"))


def list_source(source: str) -> list[SourceFile]:
    """Every file below ``source`` (sorted), with a stamp from the same single listing call.

    Same URIs as ``storage.walk_files`` (relative roots stay relative); one listing call instead
    of one HEAD per file on S3. Local symlinks are listed as entries (not followed into
    directories).
    """
    if not storage.exists(source):
        raise FileNotFoundError(f"collect.source {source!r} does not exist")
    files = []
    listed = storage.list_files(source)
    taken = {uri for uri, _ in listed}
    for uri, info in listed:
        size = info.get("size")
        rel, problem = storage.relative_to(source, uri), None
        if _SURROGATES.search(uri):
            # A real name may already read like the percent-encoded one: number the copy so
            # every file keeps its own row.
            safe, suffix, n = utf8_safe(uri), "", 1
            while safe + suffix in taken:
                n += 1
                suffix = f"#{n}"
            taken.add(safe + suffix)
            uri, rel = safe + suffix, utf8_safe(rel) + suffix
            problem = (
                "file name is not valid UTF-8 (shown percent-encoded); not read: rename it to "
                "UTF-8 to ingest it"
            )
        files.append(
            SourceFile(
                uri=uri,
                rel_path=rel,
                size=int(size) if size is not None else None,
                stamp=source_stamp(info),
                name_problem=problem,
            )
        )
    return files


def escapes_root(source: str, uri: str, rel_path: str) -> bool:
    """True when the file resolves outside the source root (symlink or ``..`` in a key)."""
    if storage.is_remote(source):
        norm = posixpath.normpath(rel_path)
        return norm.startswith("../") or norm == ".." or posixpath.isabs(norm)
    root = os.path.realpath(source)
    real = os.path.realpath(uri)
    return os.path.commonpath([root, real]) != root


def not_regular_file(uri: str) -> str | None:
    """Why a local entry is not a regular file (FIFO, socket, device, directory), or None.

    Checked before reading because opening a FIFO blocks until a writer appears. A stat error
    (dangling link, link loop) returns None: the read then reports it as ``unreadable``.
    """
    if storage.is_remote(uri):
        return None
    try:
        mode = os.stat(uri).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    kind = next((name for test, name in kinds if test(mode)), "of an unknown type")
    return f"{kind}, not a regular file; not read"


def object_rel(item_id: str, extension: str) -> str:
    """Data-root-relative path of an object in the content-addressed store."""
    return f"{STAGE}/objects/{item_id[:2]}/{item_id}{extension}"


def _unread_id(uri: str) -> str:
    # No bytes were read (path escape, read error), so there is no content hash: use a hash
    # of the URI so the non-null item_id column stays a 64-hex id that never matches content.
    return hashlib.sha256(f"unread:{uri}".encode()).hexdigest()


def _blank_row(uri: str, rel_path: str, size: int | None, stamp: str | None) -> dict[str, Any]:
    row: dict[str, Any] = {name: None for name in COLLECT_SCHEMA.names}
    row.update(
        source_uri=uri,
        rel_path=rel_path,
        size_bytes=size,
        status=Status.ACCEPTED.value,
        has_gps=None,
        **{STAMP_COLUMN: stamp},
    )
    return row


def _reject(row: dict[str, Any], reason: Reason, detail: str) -> dict[str, Any]:
    row.update(
        status=Status.QUARANTINED.value,
        reason=reason.value,
        reason_detail=detail,
        quarantined_by=STAGE,
    )
    return row


def inspect_file(
    ws: Workspace,
    cfg: CollectParams,
    uri: str,
    rel_path: str,
    size: int | None,
    stamp: str | None,
    name_problem: str | None = None,
    any_extension: bool = False,
) -> dict[str, Any]:
    """Decide one file's row; copies accepted bytes into the store. The pixel work of collect.

    ``any_extension``: skip the ``collect.extensions`` check (an image named as a video,
    accepted under ``on_extension_mismatch: accept``)."""
    row = _blank_row(uri, rel_path, size, stamp)
    row[_WRITTEN] = False
    rejected = _refuse_unsafe(row, cfg, uri, rel_path, name_problem)
    if rejected is not None:
        return rejected
    try:
        data = storage.read_bytes(uri)
    except (OSError, ValueError) as err:  # fsspec maps storage errors onto OSError subclasses
        if storage.is_transient(err):
            raise  # an outage is not a property of the file: fail the shard, retry it
        row["item_id"] = _unread_id(uri)
        return _reject(row, Reason.UNREADABLE, f"{type(err).__name__}: {err}")
    row["item_id"] = hashlib.sha256(data).hexdigest()
    row["size_bytes"] = len(data)
    ext = posixpath.splitext(rel_path)[1].lower()
    if not any_extension and ext not in {e.lower() for e in cfg.extensions}:
        return _reject(
            row,
            Reason.UNSUPPORTED_FORMAT,
            f"extension {ext or '(none)'!r} not in collect.extensions",
        )
    if not data:
        return _reject(row, Reason.EMPTY_FILE, "file has zero bytes")
    try:
        info = imaging.probe_and_decode(data, cfg.max_pixels)
    except imaging.ImageRejected as err:
        return _reject(row, err.reason, err.detail)
    row.update(info.manifest_fields())
    if not imaging.extension_matches(info.format, ext):
        detail = f"content is {info.format}, name says {ext}"
        if cfg.on_extension_mismatch == "quarantine":
            return _reject(row, Reason.EXTENSION_MISMATCH, detail)
        log.info("%s: %s (accepted: collect.on_extension_mismatch=accept)", rel_path, detail)
    rel = object_rel(row["item_id"], info.extension)
    target = ws.resolve(rel)
    if not storage.exists(target):
        storage.write_bytes_atomic(target, data)
        row[_WRITTEN] = True
    row["object_uri"] = rel
    return row


def _refuse_unsafe(
    row: dict[str, Any], cfg: CollectParams, uri: str, rel_path: str, name_problem: str | None
) -> dict[str, Any] | None:
    """The rejections decided before a byte is read (unusable name, path escape, not a regular
    file), or None when the file may be opened."""
    if name_problem:  # ``uri`` is only the percent-encoded name: nothing to open
        row["item_id"] = _unread_id(uri)
        return _reject(row, Reason.BAD_FILE_NAME, name_problem)
    if escapes_root(cfg.source, uri, rel_path):
        row["item_id"] = _unread_id(uri)
        return _reject(row, Reason.PATH_ESCAPE, "resolves outside collect.source; not read")
    special = not_regular_file(uri)
    if special:
        row["item_id"] = _unread_id(uri)
        return _reject(row, Reason.UNREADABLE, special)
    return None


def is_video(cfg: CollectParams, rel_path: str) -> bool:
    return posixpath.splitext(rel_path)[1].lower() in {e.lower() for e in cfg.video_extensions}


def frame_uri(video_uri: str, index: int) -> str:
    return f"{video_uri}#frame={index:06d}"


def frame_rel_path(video_rel: str, index: int) -> str:
    return f"{video_rel}/frame_{index:06d}.png"


def inspect_video(
    ws: Workspace,
    cfg: CollectParams,
    uri: str,
    rel_path: str,
    size: int | None,
    stamp: str | None,
    name_problem: str | None = None,
) -> list[dict[str, Any]]:
    """One row per sampled frame (PNG objects written to the store), or ONE quarantined row
    for a video that yields no frame. The pixel work of collect for a video file."""
    row = _blank_row(uri, rel_path, size, stamp)
    row[_WRITTEN] = False
    row[VIDEO_URI] = uri
    rejected = _refuse_unsafe(row, cfg, uri, rel_path, name_problem)
    if rejected is not None:
        return [rejected]
    too_big = f"above collect.video_max_bytes ({cfg.video_max_bytes})"
    if size is not None and size > cfg.video_max_bytes:
        row["item_id"] = _unread_id(uri)
        return [_reject(row, Reason.TOO_LARGE, f"video file is {size} bytes, {too_big}; not read")]
    with ExitStack() as stack:
        try:
            path = stack.enter_context(video.local_copy(uri))  # remote: streamed to a temp file
            size = os.path.getsize(path)
        except OSError as err:  # fsspec maps storage errors onto OSError subclasses
            if storage.is_transient(err):
                raise  # an outage is not a property of the file: fail the shard, retry it
            row["item_id"] = _unread_id(uri)
            return [_reject(row, Reason.UNREADABLE, f"{type(err).__name__}: {err}")]
        row["size_bytes"] = size
        if size == 0:
            row["item_id"] = hashlib.sha256(b"").hexdigest()
            return [_reject(row, Reason.EMPTY_FILE, "file has zero bytes")]
        disguised = _image_named_as_video(path, rel_path)
        if disguised is not None:
            if cfg.on_extension_mismatch == "quarantine":
                row["item_id"] = video.file_sha256(path)
                return [_reject(row, Reason.EXTENSION_MISMATCH, disguised)]
            log.info("%s: %s (accepted as an image: collect.on_extension_mismatch=accept)",
                     rel_path, disguised)  # fmt: skip
            image_row = inspect_file(ws, cfg, uri, rel_path, size, stamp, any_extension=True)
            return [image_row]
        try:
            if size > cfg.video_max_bytes:  # the listing gave no size
                raise video.VideoRejected(
                    Reason.TOO_LARGE, f"video file is {size} bytes, {too_big}"
                )
            return _sample(ws, cfg, uri, rel_path, stamp, path)
        except video.VideoRejected as err:
            try:  # a rejected video's item id is the sha256 of its bytes, like any file's
                row["item_id"] = video.file_sha256(path)
            except OSError:
                row["item_id"] = _unread_id(uri)
            return [_reject(row, err.reason, err.detail)]
    raise AssertionError("unreachable")  # pragma: no cover (mypy: ExitStack may swallow)


def _image_named_as_video(path: str, rel_path: str) -> str | None:
    """Why a file with a video extension is really an image (content vs name), or None.

    FFmpeg opens a lone JPEG or PNG as a one-frame "video", so without this a renamed photo
    would slip in as a frame, past the extension check every image gets."""
    container, _ = video.declared_codec(path)
    if container is not None:
        return None
    with open(path, "rb") as fh:
        fmt = imaging.image_format_of(fh.read(1 << 16))
    if fmt is None:
        return None
    ext = posixpath.splitext(rel_path)[1].lower()
    return f"content is {fmt}, name says {ext} (a video extension)"


def _sample(
    ws: Workspace,
    cfg: CollectParams,
    uri: str,
    rel_path: str,
    stamp: str | None,
    path: str,
) -> list[dict[str, Any]]:
    """Frame rows of the video at local ``path``; raises VideoRejected when none decodes."""
    rows: list[dict[str, Any]] = []
    with video.VideoSampler(
        path, cfg.video_fps, cfg.video_max_frames, cfg.max_pixels, label=rel_path
    ) as sampler:
        for frame in sampler.frames():
            data = video.encode_png(frame.rgb)
            iid = hashlib.sha256(data).hexdigest()
            out = _blank_row(
                frame_uri(uri, frame.index), frame_rel_path(rel_path, frame.index), None, stamp
            )
            height, width = frame.rgb.shape[:2]
            out.update(
                item_id=iid,
                size_bytes=len(data),
                format="PNG",
                width=width,
                height=height,
                channels=3,
                mode="RGB",
                has_gps=False,
                object_uri=object_rel(iid, ".png"),
                **{VIDEO_URI: uri, FRAME_INDEX: frame.index, FRAME_TIME: frame.time_s},
            )
            out[_WRITTEN] = False
            target = ws.resolve(out["object_uri"])
            if not storage.exists(target):
                storage.write_bytes_atomic(target, data)
                out[_WRITTEN] = True
            rows.append(out)
        info, note = sampler.info, sampler.note
    if not rows:
        codec, w, h, n = (
            (info.codec, info.width, info.height, info.frame_count) if info else ("", 0, 0, None)
        )
        raise video.VideoRejected(
            Reason.CORRUPT,
            f"opened ({codec or 'unknown codec'}, {w}x{h}, {n or 'unknown'} frames declared) "
            "but no frame decodes" + (f": {note}" if note else ""),
        )
    for r in rows:
        r[VIDEO_NOTE] = note
    return rows


def _to_frame(table_or_df: pd.DataFrame | None, schema: pa.Schema) -> pd.DataFrame:
    if table_or_df is None or len(table_or_df) == 0:
        return schema.empty_table().to_pandas()
    return table_or_df


def quarantine_exact_duplicates(df: pd.DataFrame) -> pd.DataFrame:
    """Among accepted rows sharing an item id keep the first by source URI; quarantine the rest."""
    df = df.sort_values("source_uri", kind="stable").reset_index(drop=True)
    acc = df["status"] == Status.ACCEPTED.value
    kept = df.loc[acc].groupby("item_id")["source_uri"].transform("min")
    dup_index = kept.index[df.loc[acc, "source_uri"] != kept]
    if len(dup_index) == 0:
        return df
    mask = df.index.isin(dup_index)
    kept_of = pd.Series(None, index=df.index, dtype=object)
    kept_of.loc[dup_index] = kept.loc[dup_index]
    df = quarantine(
        df, mask, Reason.DUPLICATE_EXACT, "byte-identical to " + kept_of.fillna(""), STAGE
    )
    df.loc[mask, "duplicate_of"] = kept_of[mask]
    return df


class CollectStage:
    """Stage ``collect`` (see module docstring)."""

    name = STAGE

    def plan(self, ws: Workspace, params: Params) -> list[Shard]:
        cfg = params.collect
        _refuse_self_ingest(ws, cfg.source)
        fp = params_fingerprint(cfg)
        fp_video = params_fingerprint(cfg, for_video=True)
        listing = pd.DataFrame(
            [
                {
                    "source_uri": f.uri,
                    "rel_path": f.rel_path,
                    "size_bytes": f.size,
                    STAMP_COLUMN: (
                        f"{f.stamp};params={fp_video if is_video(cfg, f.rel_path) else fp}"
                        if f.stamp
                        else None
                    ),
                    "name_problem": f.name_problem,
                }
                for f in list_source(cfg.source)
            ],
            columns=_WORK_SCHEMA.names,
        )
        previous = _previous_manifest(ws)
        reuse = _reusable(listing, previous, ws)
        prev_key = listed_uri(previous)
        reused = _undo_duplicates(previous[prev_key.isin(listing.loc[reuse, "source_uri"])])
        todo = listing.loc[~reuse]
        shards = write_work_list(
            ws,
            STAGE,
            pa.Table.from_pandas(todo, schema=_WORK_SCHEMA, preserve_index=False).to_pandas(),
            params.run.shard_size,
        )
        storage.write_table(ws.work_uri(STAGE, "reused.parquet"), reused, schema=COLLECT_SCHEMA)
        plan_info = {
            "listed": len(listing),
            "reused": int(reuse.sum()),
            "reused_rows": len(reused),
            "to_process": len(todo),
            "removed_since_last_run": int(
                prev_key[~prev_key.isin(listing["source_uri"])].nunique()
            ),
            "params_fingerprint": fp,
            "params_fingerprint_video": fp_video,
        }
        storage.write_text_atomic(ws.work_uri(STAGE, "plan.json"), json.dumps(plan_info))
        log.info(
            "collect: %d file(s) listed, %d reused from the last manifest, %d to inspect",
            len(listing),
            plan_info["reused"],
            len(todo),
        )
        return shards

    def process(self, ws: Workspace, params: Params, shard: Shard) -> str:
        rows = shard.rows()
        out = []
        for r in rows.itertuples(index=False):
            size = None if pd.isna(r.size_bytes) else int(r.size_bytes)
            stamp = getattr(r, STAMP_COLUMN)
            args = (
                ws,
                params.collect,
                r.source_uri,
                r.rel_path,
                size,
                None if pd.isna(stamp) else stamp,
                None if pd.isna(r.name_problem) else r.name_problem,
            )
            if is_video(params.collect, r.rel_path):
                out.extend(inspect_video(*args))
            else:
                out.append(inspect_file(*args))
        storage.write_table(shard.part_uri, pa.Table.from_pylist(out, schema=_PART_SCHEMA))
        n_acc = sum(o["status"] == Status.ACCEPTED.value for o in out)
        log.info(
            "collect shard %d: %d file(s), %d row(s), %d accepted",
            shard.index,
            len(rows),
            len(out),
            n_acc,
        )
        return shard.part_uri

    def finalize(self, ws: Workspace, params: Params, parts: list[str]) -> StageSummary:
        plan_info = json.loads(storage.read_text(ws.work_uri(STAGE, "plan.json")))
        fresh = _to_frame(read_parts(parts), _PART_SCHEMA)
        # distinct ids: two shards may race to write the same new object (harmless, atomic)
        written = int(fresh.loc[fresh[_WRITTEN].fillna(False).astype(bool), "item_id"].nunique())
        fresh = fresh.drop(columns=[_WRITTEN])
        reused = storage.read_table(ws.work_uri(STAGE, "reused.parquet"))
        frames = [f for f in (reused, fresh) if len(f)]
        df = (
            pd.concat(frames, ignore_index=True)
            if frames
            else COLLECT_SCHEMA.empty_table().to_pandas()
        )
        represented = listed_uri(df).nunique()
        if represented != plan_info["listed"] or df["source_uri"].duplicated().any():
            raise ManifestError(
                f"collect: {plan_info['listed']} file(s) listed but {represented} represented "
                f"in {len(df)} row(s) ({int(df['source_uri'].duplicated().sum())} source_uri "
                "repeated); every file must be represented (by its row or its frames) and "
                "source_uri must be unique"
            )
        df = quarantine_exact_duplicates(df)
        manifest_uri = ws.manifest_uri(STAGE)
        storage.write_table(manifest_uri, df[COLLECT_SCHEMA.names], schema=COLLECT_SCHEMA)
        clear_work(ws, STAGE)
        counts = status_counts(df)
        summary = StageSummary(
            stage=STAGE,
            input=counts["input"],
            accepted=counts["accepted"],
            quarantined=counts["quarantined"],
            reasons=counts["reasons"],
            outputs=[manifest_uri, ws.uri(STAGE, "objects")],
            details={
                **plan_info,
                "objects_written": written,
                "videos": int(df[VIDEO_URI].nunique()),
                "video_frames": int(df[FRAME_INDEX].notna().sum()),
                "videos_cut_short": int(df.loc[df[VIDEO_NOTE].notna(), VIDEO_URI].nunique()),
                "bytes_accepted": int(
                    df.loc[df["status"] == Status.ACCEPTED.value, "size_bytes"].sum()
                ),
            },
        )
        log.info(
            "collect: %d in, %d accepted, %d quarantined %s",
            summary.input,
            summary.accepted,
            summary.quarantined,
            summary.reasons,
        )
        return summary


def _previous_manifest(ws: Workspace) -> pd.DataFrame:
    """The last collect manifest (empty when there is none or it predates the stamp column)."""
    uri = ws.manifest_uri(STAGE)
    if storage.exists(uri):
        prev = storage.read_table(uri)
        if STAMP_COLUMN in prev.columns:  # older manifests lack the video columns: nulls
            return prev.reindex(columns=COLLECT_SCHEMA.names)
    return COLLECT_SCHEMA.empty_table().to_pandas()


def listed_uri(df: pd.DataFrame) -> pd.Series:
    """The listed file each manifest row stands for: its video for a frame row, else itself."""
    return df[VIDEO_URI].where(df[VIDEO_URI].notna(), df["source_uri"])


def _reusable(listing: pd.DataFrame, previous: pd.DataFrame, ws: Workspace) -> pd.Series:
    """Which listed files keep their previous row(s): same URI, same stamp (incl. params), not
    a read error (those may be transient), and every stored object still exists (a video's
    frames are reused all together or not at all)."""
    if previous.empty or listing.empty:
        return pd.Series(False, index=listing.index)
    objects = _existing_objects(ws)
    prev = pd.DataFrame(
        {
            "key": listed_uri(previous),
            "stamp": previous[STAMP_COLUMN],
            "bad": (previous["reason"] == Reason.UNREADABLE.value)
            | ~(previous["object_uri"].isna() | previous["object_uri"].isin(objects)),
        }
    )
    per_file = prev.groupby("key").agg(
        stamp=("stamp", "first"), stamps=("stamp", "nunique"), bad=("bad", "any")
    )
    stamp = listing["source_uri"].map(per_file["stamp"])
    ok = listing["source_uri"].map((per_file["stamps"] == 1) & ~per_file["bad"])
    return listing[STAMP_COLUMN].notna() & (stamp == listing[STAMP_COLUMN]) & ok.eq(True)


def _undo_duplicates(rows: pd.DataFrame) -> pd.DataFrame:
    """Reused duplicates go back to accepted: finalize re-decides duplicates on every run
    (the kept copy may be gone, or a new file may now sort first)."""
    rows = rows.copy()
    dup = (rows["reason"] == Reason.DUPLICATE_EXACT.value) & (rows["quarantined_by"] == STAGE)
    rows.loc[dup, "status"] = Status.ACCEPTED.value
    for col in ("reason", "reason_detail", "quarantined_by", "duplicate_of"):
        rows.loc[dup, col] = None
    return rows


def _existing_objects(ws: Workspace) -> set[str]:
    """Data-root-relative paths of every object in the store (one listing call)."""
    root = ws.uri(STAGE, "objects")
    if not storage.exists(root):
        return set()
    return {storage.relative_to(ws.data_dir, uri) for uri in storage.walk_files(root)}


def _refuse_self_ingest(ws: Workspace, source: str) -> None:
    """The data dir inside the source would make collect ingest its own outputs."""
    if storage.is_remote(source) or storage.is_remote(ws.data_dir):
        return
    src = os.path.realpath(source)
    data = os.path.realpath(ws.data_dir)
    if os.path.commonpath([src, data]) == src:
        raise ValueError(f"run.data_dir {ws.data_dir!r} lies inside collect.source {source!r}")
