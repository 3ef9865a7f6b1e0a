"""anonymize: redact faces, publish without metadata, verify, and quarantine anything unsure.

Per accepted image: decode the oriented pixels, detect faces, redact them at full resolution,
encode with no metadata, check the encoded bytes carry none, then (``verify``) detect again on
the decoded output. If the verification still finds a face, one stronger pass (solid fill over
a wider box, ``retry_residual``) is tried and verified again; a face that survives that
quarantines the image as ``residual_detection``. Any exception for an image (decode, model
load, detection, encode, write) quarantines it as ``anonymize_failed`` with the error text.
An object is written only after it passed verification, and finalize deletes every object
that no accepted row references, so a quarantined image is never published (fail closed).

Video frames (collect rows with ``collect_video_uri``) are redacted as sequences: a video's
accepted frames go to ONE shard, in frame order (a shard may then exceed ``run.shard_size``),
through :func:`visionloop.video.redact_sequence`, which links detections into tracks and holds
each track's box ``hold_frames`` sampled frames before and after it was seen (gaps filled), so
a face the detector missed in one frame is still redacted. Held regions are marked
(``"held": true`` in the audit's regions JSON, ``held`` in ``regions.parquet``). Each frame is
still verified and fails closed on its own; a video's cached results are reused only all
together (same frames in the same order, same params), else the whole video is redone.

Detection is :func:`build_detector`: the configured face detector(s) (default: the union of
CenterFace and YuNet, YuNet also on a 4x upscale of small images, 2x up to 1920 px), each with
its own threshold, large images also in full-resolution tiles, plus the plate detector when
``plates`` is on.

Outputs (``<data>/anonymize/``): ``manifest.parquet`` (collect columns + ``anonymize_*``),
``audit.parquet`` (one row per processed image; ``models`` lists every model with its hash),
``regions.parquet`` (one row per redacted region), ``review.parquet`` (the review queue, see
:mod:`visionloop.anonymize.review`), ``objects/<id[:2]>/<id>.<jpg|png>`` and
``cache.parquet`` (per-item results + params fingerprint, so a rerun redoes nothing).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import re
import time
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from visionloop import manifest, storage
from visionloop.anonymize.detectors import Detector, Regions
from visionloop.anonymize.ensemble import EnsembleDetector, member_records
from visionloop.anonymize.publish import (
    EXTENSIONS,
    encode_clean,
    output_format,
    source_icc,
    verify_stripped,
)
from visionloop.anonymize.redact import redact
from visionloop.config import AnonymizeParams, Params
from visionloop.imaging import load_oriented_rgb
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

NAME = "anonymize"
PREVIOUS = "collect"
# Bump when a code change alters published bytes, so cached results are recomputed.
LOGIC_VERSION = "2"
RETRY_METHOD = "fill"  # the stronger pass: nothing of the region survives
RETRY_MIN_DILATION = 0.5

MANIFEST_FIELDS = [
    pa.field("anonymize_object_uri", pa.string()),
    pa.field("anonymize_sha256", pa.string()),
    pa.field("anonymize_faces", pa.int32()),
    pa.field("anonymize_residual", pa.int32()),
    pa.field("anonymize_metadata_stripped", pa.bool_()),
    pa.field("anonymize_audit_complete", pa.bool_()),
]

AUDIT_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("input_sha256", pa.string()),
        pa.field("output_sha256", pa.string()),
        pa.field("detector", pa.string()),
        pa.field("detector_version", pa.string()),
        pa.field("model_sha256", pa.string()),
        pa.field("score_threshold", pa.float64()),
        pa.field("detect_width", pa.int32()),
        pa.field("detect_height", pa.int32()),
        pa.field("redaction", pa.string()),
        pa.field("shape", pa.string()),
        pa.field("dilation", pa.float64()),
        pa.field("regions", pa.string()),  # JSON [{kind, box, score, redaction}]
        pa.field("verified", pa.bool_()),
        pa.field("residual", pa.int32()),
        pa.field("status", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("models", pa.string()),  # JSON [{detector, version, licence, model_sha256, ...}]
    ]
)

# One row per redacted region (the audit's regions JSON, exploded), and the review queue.
REGIONS_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("region", pa.int32()),  # index in the audit row's regions list
        pa.field("kind", pa.string()),
        pa.field("x0", pa.int32()),
        pa.field("y0", pa.int32()),
        pa.field("x1", pa.int32()),
        pa.field("y1", pa.int32()),
        pa.field("score", pa.float64()),
        pa.field("redaction", pa.string()),
        pa.field("status", pa.string()),
        # Video: the region was not detected in this frame but held from the same track in
        # neighbouring frames (anonymize.hold_frames); false for detections and for images.
        pa.field("held", pa.bool_()),
    ]
)

# Per-item result rows (parts, cache): audit fields + manifest fields + bookkeeping.
PUBLISHED, RESIDUAL, FAILED = "published", "residual", "failed"
# Video frames (collect columns) and the key of the sequence a frame was redacted in.
VIDEO_URI, FRAME_INDEX = "collect_video_uri", "collect_frame_index"
SEQUENCE = "sequence"
WORK_COLUMNS = ["item_id", "object_uri", "format", VIDEO_URI, FRAME_INDEX, SEQUENCE]


def fingerprint(p: AnonymizeParams, detector: Detector) -> str:
    """What a published image depends on: detector identity, model weights, every param."""
    blob = json.dumps(
        {
            "logic": LOGIC_VERSION,
            "detector": detector_label(p),
            "detector_version": str(detector.version),
            "model_sha256": str(detector.model_sha256),
            "params": p.model_dump(mode="json"),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def detector_label(p: AnonymizeParams) -> str:
    """The audit's name for the configured detection: ``ensemble``, ``centerface+plate``..."""
    return f"{p.detector}+{p.plate_detector}" if p.plates else p.detector


def face_members(p: AnonymizeParams) -> list[str]:
    return list(p.ensemble) if p.detector == "ensemble" else [p.detector]


def build_detector(p: AnonymizeParams) -> EnsembleDetector:
    """Everything one image is searched with: the face detector(s), each with its threshold
    and small-face pass, and the plate detector when ``plates`` is on (never tiled)."""
    faces = face_members(p)
    members = [*faces, p.plate_detector] if p.plates else faces
    return EnsembleDetector(
        members=members,
        score_threshold=p.score_threshold,
        max_side=p.detect_max_side,
        thresholds=p.thresholds,
        upscale=p.upscale,
        upscale_max_side=p.upscale_max_side,
        upscale_max_face=p.upscale_max_face,
        tile_overlap=p.tile_overlap,
        tiled=faces,
        review_band=p.review_band,
        label=detector_label(p),
        small_face_thresholds=p.small_face_thresholds,
        small_face_max=p.small_face_max,
        upscale_large=p.upscale_large,
        upscale_large_max_side=p.upscale_large_max_side,
    )


def object_rel(item_id: str, fmt: str) -> str:
    return f"{NAME}/objects/{item_id[:2]}/{item_id}{EXTENSIONS[fmt]}"


def _region_records(regions: Regions, applied: np.ndarray, method: str) -> list[dict[str, Any]]:
    return [
        {
            "kind": str(kind),
            "box": [int(v) for v in box],  # the redacted (grown, clipped) box, full-res pixels
            "score": round(float(score), 4),
            "redaction": method,
        }
        for kind, box, score in zip(regions.kind, applied, regions.scores, strict=True)
    ]


class AnonymizeError(RuntimeError):
    """One image could not be anonymized; ``step`` says where (decode, detect, ...)."""

    def __init__(self, step: str, cause: BaseException | str) -> None:
        self.step = step
        text = cause if isinstance(cause, str) else f"{type(cause).__name__}: {cause}"
        # Object reprs carry memory addresses; drop them so reruns write identical manifests.
        super().__init__(f"{step}: {re.sub(r' at 0x[0-9a-fA-F]+', '', text)}"[:1000])


def detect_for_redaction(
    detector: Detector, pixels: np.ndarray
) -> tuple[Regions, list[dict[str, Any]]]:
    """Regions to redact and near-threshold review entries (a plain detector has none)."""
    height, width = pixels.shape[:2]
    detect_all = getattr(detector, "detect_all", None)
    if callable(detect_all):
        found, near = detect_all(pixels)
    else:
        found, near = detector.detect(pixels), []
    return found.clipped(width, height), near


def _review_entries(
    found: Regions, near: list[dict[str, Any]], residual: Regions, p: AnonymizeParams
) -> list[dict[str, Any]]:
    """What a human should look at: near-threshold scores, very small faces, residual faces."""
    out = [{**n, "reason": "near_threshold"} for n in near]
    side = np.maximum(found.boxes[:, 2] - found.boxes[:, 0], found.boxes[:, 3] - found.boxes[:, 1])
    for box, score, kind, s in zip(found.boxes, found.scores, found.kind, side, strict=True):
        if kind == "face" and s < p.review_small_face:
            out.append(
                {
                    "reason": "small_face",
                    "kind": "face",
                    "box": [round(float(v), 1) for v in box],
                    "score": round(float(score), 4),
                    "redacted": True,
                }
            )
    for box, score, kind in zip(residual.boxes, residual.scores, residual.kind, strict=True):
        out.append(
            {
                "reason": "residual",
                "kind": str(kind),
                "box": [round(float(v), 1) for v in box],
                "score": round(float(score), 4),
                "redacted": False,
            }
        )
    return out


def anonymize_image(
    data: bytes,
    source_format: str | None,
    detector: Detector,
    p: AnonymizeParams,
    max_pixels: int | None = None,
    held: Regions | None = None,
    found: tuple[Regions, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Redact, encode and verify one image in memory; the caller decides what to publish.

    ``held`` are extra regions to redact (a video track held over frames where it was not
    seen); ``found`` is a detection already made on these pixels (video: first pass), so it is
    not repeated. Raises on any failure; every step that can fail is named (``step: ...``).

    Verification (``p.verify``) decodes the published bytes and searches them again with
    :func:`~visionloop.anonymize.ensemble.detect_changed`: every whole-image pass (and the
    full-resolution tiles of large images) of every member runs over the whole output, but the
    upscaled small-face pass -- most of the detection cost -- only in windows around the
    redacted boxes grown by ``upscale_max_face`` px (or over the whole image when the windows
    cover 70 % of it). Why that still fails closed: the output differs from the pixels the
    first pass searched only inside the redacted boxes (plus JPEG re-encoding noise). A face
    the redaction left detectable is either larger than ``upscale_max_face``, and the
    whole-image passes see it wherever it is, or at most that size (the only faces the
    upscaled pass reports) and touching a redacted box -- anywhere else it would sit in
    unchanged pixels, with unchanged surroundings up to that margin, where the first pass
    found nothing it did not redact -- so it lies whole inside a window, searched again with
    that context. Only window detections that touch a redacted box count (a window's edges
    are a different context for the untouched pixels in it). What the check no longer does is
    act as a second small-face detector on untouched pixels: a small face the first pass
    missed there (e.g. scored just under threshold) is a detection miss, for the review
    queue's near-threshold list, not a redaction that failed. Measured (640x480, default
    params, one core): images with one face 10-120 px, verification 93 ms instead of 244 ms
    for the whole search; the bench's dense probe (8 faces + 4 non-faces per image) has
    windows over 70 % of the image, so there it costs what the whole search costs.
    """
    step = "decode"
    try:
        pixels = load_oriented_rgb(data, max_pixels)
        height, width = pixels.shape[:2]
        step = "detect"
        size = getattr(detector, "detect_size", None)
        detect_w, detect_h = size(width, height) if callable(size) else (width, height)
        regions, near = found if found is not None else detect_for_redaction(detector, pixels)
        regions = regions.clipped(width, height)
        if held is not None and len(held):
            regions = Regions.concat([regions, held.clipped(width, height)])
        step = "redact"
        redacted, applied = redact(
            pixels,
            regions.boxes,
            method=p.redaction,
            shape=p.shape,
            dilation=p.dilation,
            blocks=p.pixelate_blocks,
        )
        records = _region_records(regions, applied, p.redaction)
        step = "encode"
        fmt = output_format(source_format)
        icc = source_icc(data, redacted) if p.keep_icc else None

        def publish(px: np.ndarray) -> bytes:
            out = encode_clean(
                px,
                fmt,
                jpeg_quality=p.jpeg_quality,
                icc_profile=icc,
                png_compress_level=p.png_compress_level,
            )
            leftover = verify_stripped(out, allow_icc=p.keep_icc)
            if leftover:
                raise ValueError(f"metadata remains after encoding: {leftover}")
            return out

        out = publish(redacted)
        residual: Regions = Regions.empty()
        retried = False
        if p.verify:
            from visionloop.anonymize.ensemble import detect_changed

            step = "verify"
            changed = np.asarray(applied, np.float64).reshape(-1, 4)
            output = load_oriented_rgb(out, max_pixels)
            residual = detect_changed(detector, output, changed).clipped(width, height)
            if len(residual) and p.retry_residual:
                retried = True
                dilation = max(2 * p.dilation, RETRY_MIN_DILATION)
                redacted, applied2 = redact(
                    redacted, residual.boxes, method=RETRY_METHOD, shape="box", dilation=dilation
                )
                records += _region_records(residual, applied2, RETRY_METHOD)
                out = publish(redacted)
                changed = np.concatenate([changed, np.asarray(applied2, np.float64)])
                output = load_oriented_rgb(out, max_pixels)
                residual = detect_changed(detector, output, changed).clipped(width, height)
    except Exception as exc:
        raise AnonymizeError(step, exc) from exc
    return {
        "bytes": out,
        "format": fmt,
        "faces": len(records),
        "residual": len(residual),
        "residual_scores": [round(float(s), 3) for s in residual.scores],
        "verified": bool(p.verify),
        "retried": retried,
        "regions": json.dumps(records, sort_keys=True),
        "review": [
            {**e, "image_width": int(width), "image_height": int(height)}
            for e in _review_entries(regions, near, residual, p)
        ],
        "models": json.dumps(member_records(detector), sort_keys=True),
        "detect_width": int(detect_w),
        "detect_height": int(detect_h),
        "width": int(width),
        "height": int(height),
    }


class AnonymizeStage:
    """Faces redacted, metadata stripped, output verified; see the module docstring."""

    name = NAME

    # ---- plan: reuse cached results, list the rest ----

    def plan(self, ws: Workspace, params: Params) -> list[Shard]:
        p = params.anonymize
        df = storage.read_table(ws.manifest_uri(PREVIOUS))
        todo = _in_sequence_order(manifest.accepted(df).drop_duplicates("item_id"))
        reused = pd.DataFrame()
        cache_uri = ws.uri(NAME, "cache.parquet")
        if len(todo) and storage.exists(cache_uri):
            try:
                fp = fingerprint(p, build_detector(p))
            except Exception as exc:  # process() will quarantine each image with the error
                log.warning("anonymize: detector unavailable, nothing reused: %s", exc)
                fp = None
            cache = storage.read_table(cache_uri)
            objects_dir = ws.uri(NAME, "objects")
            present = {
                f"{NAME}/objects/{storage.relative_to(objects_dir, u)}"
                for u in (storage.walk_files(objects_dir) if storage.exists(objects_dir) else [])
            }
            cache = cache.reindex(columns=_result_columns())
            keep = (
                (cache["fingerprint"] == fp)
                & cache["item_id"].isin(todo["item_id"])
                & (
                    ((cache["outcome"] == PUBLISHED) & cache["anonymize_object_uri"].isin(present))
                    | (cache["outcome"] == RESIDUAL)
                    | ((cache["outcome"] == FAILED) & (cache["failed_step"] == "decode"))
                )
            )
            reused = _whole_sequences(todo, cache[keep].drop_duplicates("item_id"))
        work = todo[~todo["item_id"].isin(reused["item_id"] if len(reused) else [])]
        work = work[WORK_COLUMNS].reset_index(drop=True)
        write_work_list(ws, NAME, work, max(1, len(work)))
        shards = _cut_shards(ws.work_uri(NAME, "input.parquet"), work, params.run.shard_size)
        storage.write_table(ws.work_uri(NAME, "reused.parquet"), reused.reset_index(drop=True))
        log.info(
            "anonymize: %d to process (%d video frame(s) in %d sequence(s)), %d reused",
            len(work),
            int(work[SEQUENCE].notna().sum()),
            work[SEQUENCE].nunique(),
            len(reused),
        )
        return shards

    # ---- process: pixel work for one shard ----

    def process(self, ws: Workspace, params: Params, shard: Shard) -> str:
        p = params.anonymize
        rows = shard.rows()
        detector: Detector | None = None
        load_error: str | None = None
        fp: str | None = None
        try:
            detector = build_detector(p)
            fp = fingerprint(p, detector)
        except Exception as exc:
            load_error = f"{type(exc).__name__}: {exc}"
            log.error("anonymize: detector %r unavailable: %s", p.detector, exc)
        limit = params.collect.max_pixels  # collect enforced it; decode with the same bound
        results: list[dict[str, Any]] = []
        # The work list holds each video's frames together, in frame order (see plan).
        for seq, group in itertools.groupby(rows.itertuples(), key=lambda r: r.sequence):
            if isinstance(seq, str):
                results += self._sequence(ws, p, list(group), detector, fp, load_error, limit)
            else:
                results += [self._one(ws, p, r, detector, fp, load_error, limit) for r in group]
        part = pd.DataFrame(results, columns=_result_columns())
        storage.write_table(shard.part_uri, part)
        log.info("anonymize: shard %d done (%d images)", shard.index, len(part))
        return shard.part_uri

    def _one(
        self,
        ws: Workspace,
        p: AnonymizeParams,
        row: Any,
        detector: Detector | None,
        fp: str | None,
        load_error: str | None,
        max_pixels: int,
    ) -> dict[str, Any]:
        start = time.perf_counter()
        item_id = row.item_id
        result = _base_result(p, item_id, detector, fp)
        try:
            data = _prepare_input(ws, row, result, detector, load_error)
            assert detector is not None  # _prepare_input raised otherwise
            out = anonymize_image(data, row.format, detector, p, max_pixels)
            _record_output(ws, result, out)
        except Exception as exc:
            if storage.is_transient(exc):
                raise  # storage outage: the shard fails and is retried; nothing is quarantined
            # the steps before raise AnonymizeError themselves: anything else is the write
            _record_failure(ws, result, exc, "write")
        result["elapsed_ms"] = (time.perf_counter() - start) * 1000
        return result

    def _sequence(
        self,
        ws: Workspace,
        p: AnonymizeParams,
        rows: list[Any],
        detector: Detector | None,
        fp: str | None,
        load_error: str | None,
        max_pixels: int,
    ) -> list[dict[str, Any]]:
        """One video's accepted frames, in frame order, redacted together: each frame also
        redacts the tracks held from its neighbours (:func:`visionloop.video.redact_sequence`).
        Each frame still fails closed on its own."""
        from visionloop.video import redact_sequence

        start = time.perf_counter()
        results = [_base_result(p, r.item_id, detector, fp, r.sequence) for r in rows]
        readable: list[tuple[dict[str, Any], bytes]] = []
        for row, result in zip(rows, results, strict=True):
            try:
                readable.append((result, _prepare_input(ws, row, result, detector, load_error)))
            except AnonymizeError as exc:
                _record_failure(ws, result, exc, exc.step)
        if readable:
            try:
                outs = redact_sequence([d for _, d in readable], detector, p, max_pixels)
            except Exception as exc:  # the hold itself failed: no frame of this video is safe
                outs = [{"error": AnonymizeError("hold", exc)} for _ in readable]
            for (result, _), out in zip(readable, outs, strict=True):
                step = "write"
                try:
                    if "error" in out:
                        raise out["error"]
                    _record_output(ws, result, out)
                except Exception as exc:
                    if storage.is_transient(exc):
                        raise
                    _record_failure(ws, result, exc, step)
        elapsed = (time.perf_counter() - start) * 1000 / max(1, len(rows))
        for result in results:
            result["elapsed_ms"] = elapsed
        log.info(
            "anonymize: video %s: %d frame(s) redacted as one sequence",
            rows[0].collect_video_uri,
            len(rows),
        )
        return results

    # ---- finalize: one manifest, one audit table, cache, sweep ----

    def finalize(self, ws: Workspace, params: Params, parts: list[str]) -> StageSummary:
        p = params.anonymize
        before = storage.read_table(ws.manifest_uri(PREVIOUS))
        new = read_parts(parts)
        reused_uri = ws.work_uri(NAME, "reused.parquet")
        reused = storage.read_table(reused_uri) if storage.exists(reused_uri) else pd.DataFrame()
        frames = [f.reindex(columns=_result_columns()) for f in (reused, new) if len(f)]
        results = (
            pd.concat(frames, ignore_index=True).drop_duplicates("item_id", keep="last")
            if frames
            else pd.DataFrame(columns=_result_columns())
        ).set_index("item_id", drop=False)

        accepted_mask = before["status"] == Status.ACCEPTED
        missing = set(before.loc[accepted_mask, "item_id"]) - set(results.index)
        if missing:  # a shard lost its result: fail closed
            log.error("anonymize: %d accepted item(s) have no result", len(missing))
            filler = pd.DataFrame(
                [
                    {
                        "item_id": i,
                        "outcome": FAILED,
                        "detail": "no anonymize result was produced",
                        "detector": detector_label(p),
                        "anonymize_metadata_stripped": False,
                    }
                    for i in missing
                ]
            ).reindex(columns=_result_columns())
            results = pd.concat([results, filler.set_index("item_id", drop=False)])

        per_row = results.reindex(before["item_id"].where(accepted_mask)).reset_index(drop=True)
        per_row.index = before.index
        for col in ("outcome", "detail", "anonymize_object_uri", "anonymize_sha256"):
            per_row[col] = per_row[col].astype(object)
        complete = _audit_complete(per_row, p)
        # A published image whose audit is incomplete is not published.
        unaudited = (per_row["outcome"] == PUBLISHED) & ~complete
        per_row.loc[unaudited, "outcome"] = FAILED
        per_row.loc[unaudited, "detail"] = "audit row incomplete"
        for col in ("anonymize_object_uri", "anonymize_sha256"):
            per_row.loc[per_row["outcome"] != PUBLISHED, col] = None

        after = before.copy()
        for field in MANIFEST_FIELDS:
            if field.name != "anonymize_audit_complete":
                after[field.name] = per_row[field.name].where(accepted_mask, None)
        after["anonymize_audit_complete"] = complete.where(accepted_mask, None)
        is_res = accepted_mask & (per_row["outcome"] == RESIDUAL)
        is_fail = accepted_mask & (per_row["outcome"] == FAILED)
        after = manifest.quarantine(
            after, is_res, Reason.RESIDUAL_DETECTION, per_row["detail"], NAME
        )
        after = manifest.quarantine(
            after, is_fail, Reason.ANONYMIZE_FAILED, per_row["detail"], NAME
        )
        manifest.check_transition(before, after, NAME)

        audit = per_row[accepted_mask].copy()
        audit["status"] = after.loc[accepted_mask, "status"]
        audit["reason"] = after.loc[accepted_mask, "reason"]
        audit = audit.drop_duplicates("item_id")
        storage.write_table(
            ws.uri(NAME, "audit.parquet"),
            pa.Table.from_pandas(
                _typed(audit, AUDIT_SCHEMA), schema=AUDIT_SCHEMA, preserve_index=False
            ),
        )
        regions = regions_table(audit)
        storage.write_table(ws.uri(NAME, "regions.parquet"), regions)
        from visionloop.anonymize.review import review_table

        rows = after[accepted_mask | (after["quarantined_by"] == NAME)]
        storage.write_table(ws.uri(NAME, "review.parquet"), review_table(rows, per_row))

        # Cache what a rerun may reuse. Failures are retried (model, storage and memory errors
        # may be transient), except undecodable files: their bytes cannot change under an id.
        cacheable = per_row["outcome"].isin([PUBLISHED, RESIDUAL]) | (
            (per_row["outcome"] == FAILED) & (per_row["failed_step"] == "decode")
        )
        cache = per_row[accepted_mask & cacheable & per_row["fingerprint"].notna()]
        cache = _typed(cache.drop_duplicates("item_id").reset_index(drop=True), _result_schema())
        storage.write_table(ws.uri(NAME, "cache.parquet"), cache, schema=_result_schema())
        # The manifest last (it is what the next stage reads), then withdraw what it does not
        # reference: residual, failed and demoted images, and items no longer accepted.
        storage.write_table(
            ws.manifest_uri(NAME), _manifest_table(after, _input_types(ws.manifest_uri(PREVIOUS)))
        )
        removed = self._sweep(ws, set(after["anonymize_object_uri"].dropna()))
        clear_work(ws, NAME)

        counts = manifest.status_counts(after)
        n_new = len(new)
        summary = StageSummary(
            stage=NAME,
            input=counts["input"],
            accepted=counts["accepted"],
            quarantined=counts["quarantined"],
            reasons=counts["reasons"],
            outputs=[
                ws.manifest_uri(NAME),
                ws.uri(NAME, "audit.parquet"),
                ws.uri(NAME, "regions.parquet"),
                ws.uri(NAME, "review.parquet"),
            ],
            details={
                "processed": n_new,
                "reused": len(reused),
                "published": int((after["anonymize_object_uri"].notna()).sum()),
                "faces_redacted": int(pd.to_numeric(after["anonymize_faces"]).fillna(0).sum()),
                "residual_detection": int(is_res.sum()),
                "anonymize_failed": int(is_fail.sum()),
                "fill_pass_used": int(new["retried"].fillna(False).astype(bool).sum())
                if n_new
                else 0,
                "ms_per_image": round(float(new["elapsed_ms"].mean()), 1) if n_new else None,
                "stale_objects_removed": removed,
                "detector": detector_label(p),
                "detector_version": _first(per_row["detector_version"]),
                "model_sha256": _first(per_row["model_sha256"]),
                "score_threshold": p.score_threshold,
                "video_sequences": int(per_row.loc[accepted_mask, SEQUENCE].nunique()),
                "held_regions": int(pc.sum(regions.column("held")).as_py() or 0),
            },
        )
        log.info("anonymize: %s", summary.details)
        return summary

    @staticmethod
    def _sweep(ws: Workspace, referenced: set[str]) -> int:
        """Delete published objects that no accepted row references (fail closed)."""
        objects_dir = ws.uri(NAME, "objects")
        if not storage.exists(objects_dir):
            return 0
        removed = 0
        for uri in list(storage.walk_files(objects_dir)):
            rel = f"{NAME}/objects/{storage.relative_to(objects_dir, uri)}"
            if rel not in referenced:
                storage.remove(uri)
                removed += 1
        return removed


def _base_result(
    p: AnonymizeParams,
    item_id: str,
    detector: Detector | None,
    fp: str | None,
    sequence: str | None = None,
) -> dict[str, Any]:
    """The audit fields known before an image is touched."""
    return {
        "item_id": item_id,
        "detector": detector_label(p),
        "detector_version": getattr(detector, "version", None),
        "model_sha256": getattr(detector, "model_sha256", None),
        "score_threshold": p.score_threshold,
        "redaction": p.redaction,
        "shape": p.shape,
        "dilation": p.dilation,
        "fingerprint": fp,
        "retried": False,
        "models": json.dumps(member_records(detector), sort_keys=True) if detector else None,
        SEQUENCE: sequence,
    }


def _withdraw(ws: Workspace, item_id: str) -> None:
    for ext in EXTENSIONS:
        storage.remove(ws.resolve(object_rel(item_id, ext)))


def _prepare_input(
    ws: Workspace,
    row: Any,
    result: dict[str, Any],
    detector: Detector | None,
    load_error: str | None,
) -> bytes:
    """Withdraw what an earlier run published for this item (until it passes again), check
    the detector loaded, read the input. Raises AnonymizeError naming the step, or a
    transient storage error as it is (the shard fails and is retried)."""
    step = "withdraw"
    try:
        _withdraw(ws, row.item_id)
        step = "model load"
        if detector is None:
            raise AnonymizeError(step, load_error or "no detector")
        step = "read"
        return _read_input(ws, row, result)
    except AnonymizeError:
        raise
    except Exception as exc:
        if storage.is_transient(exc):
            raise
        raise AnonymizeError(step, exc) from exc


def _read_input(ws: Workspace, row: Any, result: dict[str, Any]) -> bytes:
    """The collect object's bytes, checked against the item id (its sha256)."""
    data = storage.read_bytes(ws.resolve(row.object_uri))
    result["input_sha256"] = hashlib.sha256(data).hexdigest()
    if result["input_sha256"] != row.item_id:
        raise AnonymizeError("read", "object bytes do not match item_id (sha256)")
    return data


def _record_output(ws: Workspace, result: dict[str, Any], out: dict[str, Any]) -> None:
    """Fill ``result`` from an anonymize_image result; publish the bytes unless faces remain."""
    result.update(
        output_sha256=hashlib.sha256(out["bytes"]).hexdigest(),
        detect_width=out["detect_width"],
        detect_height=out["detect_height"],
        regions=out["regions"],
        models=out["models"],
        review=json.dumps(out["review"], sort_keys=True),
        verified=out["verified"],
        residual=out["residual"],
        retried=out["retried"],
        anonymize_faces=out["faces"],
        anonymize_residual=out["residual"],
        anonymize_metadata_stripped=True,
    )
    if out["residual"]:
        result["outcome"] = RESIDUAL
        result["detail"] = (
            f"{out['residual']} face(s) still detected after redaction"
            f"{' and a fill pass' if out['retried'] else ''} "
            f"(scores {out['residual_scores']})"
        )
    else:
        rel = object_rel(result["item_id"], out["format"])
        storage.write_bytes_atomic(ws.resolve(rel), out["bytes"])
        result.update(
            outcome=PUBLISHED,
            anonymize_object_uri=rel,
            anonymize_sha256=result["output_sha256"],
        )


def _record_failure(ws: Workspace, result: dict[str, Any], exc: BaseException, step: str) -> None:
    """Fail closed: nothing stays published for this item, and the audit says why."""
    error = exc if isinstance(exc, AnonymizeError) else AnonymizeError(step, exc)
    _withdraw(ws, result["item_id"])
    log.warning("anonymize: %s failed: %s", result["item_id"][:12], error)
    result.update(
        outcome=FAILED,
        failed_step=error.step,
        detail=str(error),
        output_sha256=None,
        anonymize_object_uri=None,
        anonymize_sha256=None,
        anonymize_faces=None,
        anonymize_residual=None,
        anonymize_metadata_stripped=False,
    )


def _in_sequence_order(todo: pd.DataFrame) -> pd.DataFrame:
    """Accepted items with each video's frames together and in frame order, each frame
    carrying its sequence key: a hash of the video and of its frames' item ids in order (a
    video's redaction depends on all its frames). Images get no key."""
    todo = todo.copy()
    for col in (VIDEO_URI, FRAME_INDEX):
        if col not in todo.columns:  # a manifest written before videos existed
            todo[col] = None
    framed = todo[VIDEO_URI].notna() & todo[FRAME_INDEX].notna()
    todo["_listed"] = todo[VIDEO_URI].where(framed, todo["source_uri"])
    todo["_frame"] = pd.to_numeric(todo[FRAME_INDEX].where(framed)).fillna(-1)
    todo = todo.sort_values(["_listed", "_frame"], kind="stable")
    keys = {
        uri: hashlib.sha256(f"{uri}\n{','.join(ids)}".encode()).hexdigest()[:32]
        for uri, ids in todo[framed.loc[todo.index]].groupby("_listed", sort=False)["item_id"]
    }
    todo[SEQUENCE] = todo["_listed"].map(keys).where(framed.loc[todo.index], None)
    return todo.drop(columns=["_listed", "_frame"])


def _whole_sequences(todo: pd.DataFrame, kept: pd.DataFrame) -> pd.DataFrame:
    """The reusable cache rows, a video's frames only all together: every frame cached under
    the same sequence key (same frames, same order). An image reuses only an image's result."""
    if not len(kept):
        return kept
    want = todo.set_index("item_id")[SEQUENCE]
    cached = kept.set_index("item_id")[SEQUENCE]
    same = want.reindex(cached.index)
    ok = (same.isna() & cached.isna()) | (same == cached)
    ok_ids = set(ok[ok].index)
    seq_rows = todo[todo[SEQUENCE].notna()]
    broken = set(seq_rows.loc[~seq_rows["item_id"].isin(ok_ids), SEQUENCE])
    ok_ids -= set(seq_rows.loc[seq_rows[SEQUENCE].isin(broken), "item_id"])
    return kept[kept["item_id"].isin(ok_ids)]


def _cut_shards(input_uri: str, work: pd.DataFrame, shard_size: int) -> list[Shard]:
    """Shards of about ``shard_size`` rows that never split a video's frames (a longer video
    gets a shard of its own, whatever its length)."""
    units: list[tuple[int, int]] = []
    seqs = work[SEQUENCE].tolist()
    start = 0
    for i in range(1, len(seqs) + 1):
        if i == len(seqs) or seqs[i] is None or seqs[i] != seqs[i - 1]:
            units.append((start, i))
            start = i
    shards: list[Shard] = []
    lo = hi = 0
    for a, b in units:
        if hi > lo and b - lo > shard_size:
            shards.append(Shard(NAME, len(shards), input_uri, lo, hi))
            lo = a
        hi = b
    if hi > lo:
        shards.append(Shard(NAME, len(shards), input_uri, lo, hi))
    return shards


def regions_table(audit: pd.DataFrame) -> pa.Table:
    """One row per redacted region of each audit row (boxes in published-image pixels)."""
    rows = []
    for rec in audit.itertuples():
        if not isinstance(rec.regions, str):
            continue
        for i, r in enumerate(json.loads(rec.regions)):
            x0, y0, x1, y1 = r["box"]
            rows.append(
                {
                    "item_id": rec.item_id,
                    "region": i,
                    "kind": r["kind"],
                    "x0": x0,
                    "y0": y0,
                    "x1": x1,
                    "y1": y1,
                    "score": r["score"],
                    "redaction": r["redaction"],
                    "status": rec.status,
                    "held": bool(r.get("held", False)),
                }
            )
    df = pd.DataFrame(rows, columns=REGIONS_SCHEMA.names)
    return pa.Table.from_pandas(
        _typed(df, REGIONS_SCHEMA), schema=REGIONS_SCHEMA, preserve_index=False
    )


def _first(values: pd.Series) -> Any:
    present = values.dropna()
    return str(present.iloc[0]) if len(present) else None


def _result_schema() -> pa.Schema:
    extra = [
        pa.field("outcome", pa.string()),
        pa.field("detail", pa.string()),
        pa.field("fingerprint", pa.string()),
        pa.field("elapsed_ms", pa.float64()),
        pa.field("retried", pa.bool_()),
        pa.field("failed_step", pa.string()),
        pa.field("review", pa.string()),  # JSON review entries (review.parquet)
        pa.field(SEQUENCE, pa.string()),  # video frames: key of the sequence redacted together
    ]
    audit = [f for f in AUDIT_SCHEMA if f.name not in ("status", "reason")]
    manifest_fields = [f for f in MANIFEST_FIELDS if f.name != "anonymize_audit_complete"]
    return pa.schema(audit + manifest_fields + extra)


def _result_columns() -> list[str]:
    return _result_schema().names


def _typed(df: pd.DataFrame, schema: pa.Schema) -> pd.DataFrame:
    """Columns in schema order with nullable dtypes, so Arrow gets ints and bools with nulls."""
    out = df.reindex(columns=schema.names).copy()
    for f in schema:
        if pa.types.is_integer(f.type):
            out[f.name] = pd.to_numeric(out[f.name]).astype("Int64")
        elif pa.types.is_boolean(f.type):
            out[f.name] = out[f.name].astype("boolean")
        elif pa.types.is_floating(f.type):
            out[f.name] = pd.to_numeric(out[f.name]).astype("float64")
        else:
            out[f.name] = out[f.name].astype(object).where(out[f.name].notna(), None)
    return out


def _input_types(uri: str) -> dict[str, pa.DataType]:
    """Arrow types of the input manifest's columns (collect's int64 frame index would come
    back from pandas as float64 when it holds nulls)."""
    fs, path = storage.filesystem(uri)
    with fs.open(path, "rb") as fh:
        schema = pq.read_schema(fh)
    return {f.name: f.type for f in schema if not pa.types.is_null(f.type)}


def _manifest_table(
    df: pd.DataFrame, input_types: dict[str, pa.DataType] | None = None
) -> pa.Table:
    """The manifest with earlier stages' types kept and anonymize columns typed per the
    contract."""
    known = {
        **(input_types or {}),
        **{f.name: f.type for f in [*MANIFEST_SCHEMA, *MANIFEST_FIELDS]},
    }
    ours = {f.name for f in MANIFEST_FIELDS}
    typed = _typed(df[list(ours)], pa.schema(MANIFEST_FIELDS))
    base = df.drop(columns=list(ours))
    table = pa.Table.from_pandas(base, preserve_index=False)
    fields = [pa.field(n, known.get(n, table.schema.field(n).type)) for n in table.column_names]
    table = table.cast(pa.schema(fields))
    for f in MANIFEST_FIELDS:
        table = table.append_column(f, pa.Array.from_pandas(typed[f.name], type=f.type))
    return table


def _audit_complete(per_row: pd.DataFrame, p: AnonymizeParams) -> pd.Series:
    """Whether each row's audit record holds every field its outcome requires."""
    always = ["item_id", "detector", "outcome"]
    processed = [
        "input_sha256",
        "detector_version",
        "model_sha256",
        "score_threshold",
        "detect_width",
        "detect_height",
        "redaction",
        "shape",
        "dilation",
        "regions",
        "verified",
        "residual",
    ]
    ok = per_row[always].notna().all(axis=1)
    done = per_row[processed].notna().all(axis=1)
    regions_ok = per_row["regions"].map(_valid_regions)
    published = (
        done
        & regions_ok
        & per_row["output_sha256"].notna()
        & (per_row["output_sha256"] == per_row["anonymize_sha256"])
        & (per_row["verified"].fillna(False).astype(bool) == bool(p.verify))
        & (pd.to_numeric(per_row["residual"]).fillna(-1) == 0)
    )
    outcome = per_row["outcome"]
    result = ok & (
        ((outcome == PUBLISHED) & published)
        | ((outcome == RESIDUAL) & done & regions_ok)
        | (outcome == FAILED)
    )
    return result.astype(bool)


def _valid_regions(text: Any) -> bool:
    if not isinstance(text, str):
        return False
    try:
        regions = json.loads(text)
    except ValueError:
        return False
    keys = {"kind", "box", "score", "redaction"}
    return isinstance(regions, list) and all(
        isinstance(r, dict) and keys <= set(r) and len(r["box"]) == 4 for r in regions
    )
