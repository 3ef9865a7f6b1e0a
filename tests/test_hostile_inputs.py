"""Hostile and broken input (issue 7): each case ends with a clear reason or error, the run goes
on, and nothing else is lost.

Where each item of the issue's list is covered (every one with its exact reason asserted):

=====================================  ==================================================
zero-byte file                         collect folder below (+ tests/stages/test_collect.py)
truncated JPEG (and PNG)               collect folder below
PNG decompression bomb                 collect folder below (never decoded); the limit is
                                       params collect.max_pixels: raising it accepts the
                                       same file in test_collect.py::
                                       test_pixel_limit_comes_from_params
wrong extension                        collect folder below, both ways
CMYK JPEG, 16-bit PNG, grayscale       collect folder below (accepted, decodable) and the
                                       curate grayscale flag in test_grayscale_is_a_flag
animated GIF                           collect folder below (.gif and GIF named .jpg)
huge dimensions (header claims)        collect folder below (PNG and JPEG headers)
non-UTF-8 and Unicode file names       collect folder below (+ a rerun)
symlinks escaping the source root      collect folder below (never read); S3 keys with
                                       ``..``: test_collect.py::test_remote_filesystem_paths
XML entity expansion (billion laughs,  test_xml_entity_declarations_are_refused (VOC, CVAT);
  external entities, external DTD)     Label Studio's XML config: test_label_studio.py::
                                       test_label_config_refuses_entities
``../`` file names in exports          test_escaping_image_names_are_rejected (COCO, VOC,
                                       CVAT, LabelMe); Label Studio: test_label_studio.py::
                                       test_escaping_image_ref_is_a_path_escape_error
malformed JSON (file + line/col)       test_malformed_json_is_located (COCO, LabelMe);
                                       exact positions: test_coco.py::
                                       test_malformed_json_names_the_file_line_and_column
unknown category ids                   test_unknown_category_is_reported_not_imported
                                       (+ the converter case in test_coco.py, YOLO in
                                       test_yolo.py)
all export attacks in one stage run    test_import_stage_goes_on_past_hostile_exports
=====================================  ==================================================
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import threading
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image, PngImagePlugin

from tests.helpers import mock_manifest
from visionloop import imaging, storage
from visionloop.annotations.formats import AnnotationReader, get_reader
from visionloop.config import (
    AnnotationSource,
    CollectParams,
    CurateParams,
    ImportAnnotationsParams,
    Params,
    RunParams,
)
from visionloop.curate import flag_quality
from visionloop.curate.metrics import compute_metrics
from visionloop.schema import Reason
from visionloop.stages.base import Workspace, run_stage
from visionloop.stages.collect import CollectStage
from visionloop.stages.import_annotations import ImportAnnotationsStage

MAX_PIXELS = 4_000_000
SECRET = "TOP-SECRET-XXE-CANARY"

# ------------------------------------------------------------------------------------------
# Builders of hostile files


def jpeg(seed: int, w: int = 96, h: int = 64) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def png(arr: np.ndarray, **kw: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", **kw)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_claiming(width: int, height: int) -> bytes:
    """A well-formed PNG header (valid CRCs) that claims a size its few data bytes never fill."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _chunk(b"IEND", b"")
    )


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real JPEG whose SOF0 marker is patched to claim ``width`` x ``height``."""
    data = bytearray(jpeg(7))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=40, loop=0)
    return buf.getvalue()


def text_chunk_bomb() -> bytes:
    """A tiny PNG whose zTXt chunk inflates to 4 MB (PIL refuses above MAX_TEXT_CHUNK)."""
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "A" * (4 << 20), zip=True)
    return png(np.zeros((8, 8, 3), np.uint8), pnginfo=info)


# ------------------------------------------------------------------------------------------
# Collect: one folder holding every hostile file next to good ones

# Non-UTF-8 names (bytes) and how the manifest shows them: percent-encoded, ``%`` -> ``%25``.
# The first one collides with a real file called ``caf%E9.jpg``: numbered ``#2``.
BAD_NAMES: dict[bytes, str] = {
    b"caf\xe9.jpg": "caf%E9.jpg#2",
    b"latin1_\xff\xfe.jpg": "latin1_%FF%FE.jpg",
    b"100%_\xe9.png": "100%25_%E9.png",
    b"dir_\xff/inner.jpg": "dir_%FF/inner.jpg",
}

# rel_path in the manifest -> (status, reason, a phrase its reason_detail must contain)
EXPECTED: dict[str, tuple[str, Reason | None, str]] = {
    # good files, some of unusual kinds: accepted and decodable
    "good.jpg": ("accepted", None, ""),
    "gray.jpg": ("accepted", None, ""),
    "cmyk.jpg": ("accepted", None, ""),
    "gray16.png": ("accepted", None, ""),
    "rgb16.png": ("accepted", None, ""),
    "unicode/façade_北京_📷.jpg": ("accepted", None, ""),
    "unicode/\u00e9.jpg": ("accepted", None, ""),  # NFC
    "unicode/e\u0301.jpg": ("accepted", None, ""),  # NFD: another name, another file
    "unicode/new\nline \u202egpj.jpg": ("accepted", None, ""),  # newline + RTL override
    "caf%E9.jpg": ("accepted", None, ""),  # a real name that reads like an encoded one
    "link_to_bad_name.jpg": ("accepted", None, ""),  # UTF-8 link to a non-UTF-8 name
    # broken
    "empty.jpg": ("quarantined", Reason.EMPTY_FILE, "file has zero bytes"),
    "truncated.jpg": ("quarantined", Reason.TRUNCATED, "image file is truncated"),
    "truncated.png": ("quarantined", Reason.TRUNCATED, "image file is truncated"),
    "bomb.png": (
        "quarantined",
        Reason.TOO_LARGE,
        "3000x3000 = 9000000 pixels > max_pixels 4000000",
    ),
    "huge_header.png": ("quarantined", Reason.TOO_LARGE, "(10000000000 pixels)"),
    "huge_header.jpg": ("quarantined", Reason.TOO_LARGE, "(4290250000 pixels)"),
    "huge_but_under_pil.jpg": (
        "quarantined",
        Reason.TOO_LARGE,
        "3000x2000 = 6000000 pixels > max_pixels 4000000",
    ),
    "text_bomb.png": ("quarantined", Reason.CORRUPT, "Decompressed data too large"),
    "png_named.jpg": ("quarantined", Reason.EXTENSION_MISMATCH, "content is PNG, name says .jpg"),
    "jpeg_named.png": (
        "quarantined",
        Reason.EXTENSION_MISMATCH,
        "content is JPEG, name says .png",
    ),
    "anim.gif": ("quarantined", Reason.UNSUPPORTED_FORMAT, "extension '.gif' not in"),
    "anim_gif_named.jpg": ("quarantined", Reason.UNSUPPORTED_FORMAT, "content is GIF"),
    **{
        shown: ("quarantined", Reason.BAD_FILE_NAME, "not valid UTF-8")
        for shown in BAD_NAMES.values()
    },
    "escape_abs.jpg": ("quarantined", Reason.PATH_ESCAPE, "outside collect.source"),
    "escape_rel.jpg": ("quarantined", Reason.PATH_ESCAPE, "outside collect.source"),
    "hop": ("quarantined", Reason.PATH_ESCAPE, "outside collect.source"),
    "escape_chain.jpg": ("quarantined", Reason.PATH_ESCAPE, "outside collect.source"),
    "escape_dir": ("quarantined", Reason.PATH_ESCAPE, "outside collect.source"),
    "fifo.jpg": ("quarantined", Reason.UNREADABLE, "a FIFO (named pipe), not a regular file"),
    "loop_a.jpg": ("quarantined", Reason.UNREADABLE, "Too many levels of symbolic links"),
    "loop_b.jpg": ("quarantined", Reason.UNREADABLE, "Too many levels of symbolic links"),
}
NEVER_READ = {
    *BAD_NAMES.values(),
    "escape_abs.jpg",
    "escape_rel.jpg",
    "hop",
    "escape_chain.jpg",
    "escape_dir",
    "fifo.jpg",
}


@pytest.fixture
def hostile_source(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "unicode").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(jpeg(99))

    def put(rel: str | bytes, data: bytes) -> None:
        path = os.path.join(os.fsencode(root), rel if isinstance(rel, bytes) else os.fsencode(rel))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)

    gradient = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (48, 1))
    put("good.jpg", jpeg(1))
    put("gray.jpg", jpeg_gray(gradient))
    buf = io.BytesIO()
    Image.new("CMYK", (32, 24), (10, 200, 30, 0)).save(buf, "JPEG")
    put("cmyk.jpg", buf.getvalue())
    put("gray16.png", png(np.arange(1200, dtype=np.uint16).reshape(30, 40) * 50))
    rgb16 = np.random.default_rng(2).integers(0, 65535, (24, 32, 3), dtype=np.uint16)
    put("rgb16.png", cv2.imencode(".png", rgb16)[1].tobytes())
    put("unicode/façade_北京_📷.jpg", jpeg(3))
    put("unicode/\u00e9.jpg", jpeg(4))
    put("unicode/e\u0301.jpg", jpeg(5))
    put("unicode/new\nline \u202egpj.jpg", jpeg(6))
    put("caf%E9.jpg", jpeg(8))
    for i, raw in enumerate(BAD_NAMES):
        put(raw, jpeg(20 + i))
    os.symlink(b"caf\xe9.jpg", os.path.join(os.fsencode(root), b"link_to_bad_name.jpg"))

    put("empty.jpg", b"")
    full = jpeg(9, 400, 300)
    put("truncated.jpg", full[: len(full) // 2])
    full = png(np.random.default_rng(10).integers(0, 256, (100, 100, 3), dtype=np.uint8))
    put("truncated.png", full[: len(full) // 2])
    put("bomb.png", png(np.zeros((3000, 3000), np.uint8), optimize=True))  # ~9 kB, 9 MP
    put("huge_header.png", png_claiming(100_000, 100_000))
    put("huge_header.jpg", jpeg_claiming(65_500, 65_500))
    put("huge_but_under_pil.jpg", jpeg_claiming(3000, 2000))
    put("text_bomb.png", text_chunk_bomb())
    put("png_named.jpg", png(np.full((8, 8, 3), 90, np.uint8)))
    put("jpeg_named.png", jpeg(11))
    put("anim.gif", animated_gif())
    put("anim_gif_named.jpg", animated_gif())

    os.symlink(outside / "secret.jpg", root / "escape_abs.jpg")
    os.symlink("../outside/secret.jpg", root / "escape_rel.jpg")
    os.symlink(outside / "secret.jpg", root / "hop")
    os.symlink("hop", root / "escape_chain.jpg")  # inside -> inside -> outside
    os.symlink(outside, root / "escape_dir")
    os.mkfifo(root / "fifo.jpg")
    os.symlink("loop_b.jpg", root / "loop_a.jpg")
    os.symlink("loop_a.jpg", root / "loop_b.jpg")
    return root


def jpeg_gray(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, "L").save(buf, "JPEG", quality=95)
    return buf.getvalue()


def collect_params(tmp_path: Path, source: Path) -> Params:
    return Params().with_overrides(
        {
            "run.data_dir": str(tmp_path / "data"),
            "run.shard_size": 4,  # the hostile files spread over many shards
            "run.max_workers": 2,
            "collect.source": str(source),
            "collect.max_pixels": MAX_PIXELS,
        }
    )


class FifoWatchdog:
    """If collect ever opens the FIFO, a writer that closes at once gives it EOF, so a
    regression fails the test (the FIFO shows up as read) instead of hanging it."""

    def __init__(self, fifo: Path, after: float = 20.0) -> None:
        self.fifo = fifo
        self.timer = threading.Timer(after, self._release)
        self.timer.daemon = True

    def _release(self) -> None:
        try:
            os.close(os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass  # no reader waiting: nothing to release

    def __enter__(self) -> FifoWatchdog:
        self.timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.timer.cancel()


def test_collect_runs_through_one_folder_of_hostile_files(
    tmp_path: Path, hostile_source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    read: list[str] = []
    real_read = storage.read_bytes

    def spy_read(uri: str) -> bytes:
        read.append(uri)
        return real_read(uri)

    decoded: list[tuple[int, int]] = []
    real_load = imaging._load

    def spy_load(im: Image.Image) -> None:
        decoded.append(im.size)
        real_load(im)

    monkeypatch.setattr(storage, "read_bytes", spy_read)
    monkeypatch.setattr(imaging, "_load", spy_load)
    params = collect_params(tmp_path, hostile_source)
    ws = Workspace.from_params(params)
    with FifoWatchdog(hostile_source / "fifo.jpg"):
        summary = run_stage(CollectStage(), ws, params)
    df = storage.read_table(ws.manifest_uri("collect")).set_index("rel_path")

    # every file is one row with its reason; the run went on past all of them
    got = {
        rel: (row.status, row.reason if isinstance(row.reason, str) else None)
        for rel, row in df.iterrows()
    }
    assert got == {rel: (s, r.value if r else None) for rel, (s, r, _) in EXPECTED.items()}
    for rel, (_, _, phrase) in EXPECTED.items():
        if phrase:
            assert phrase in df.loc[rel, "reason_detail"], rel
    assert summary.input == len(EXPECTED) == summary.accepted + summary.quarantined
    assert summary.accepted == 11
    assert summary.reasons == {
        "bad_file_name": 4,
        "corrupt": 1,
        "empty_file": 1,
        "extension_mismatch": 2,
        "path_escape": 5,
        "too_large": 4,
        "truncated": 2,
        "unreadable": 3,
        "unsupported_format": 2,
    }

    # escaping links, the FIFO and names we cannot represent were never opened
    read_rel = {storage.relative_to(str(hostile_source), u) for u in read if "/src/" in u}
    assert not read_rel & NEVER_READ
    assert len(read_rel) == len(EXPECTED) - len(NEVER_READ)
    # nothing larger than collect.max_pixels was ever decoded (the bombs only had headers read)
    assert decoded and max(w * h for w, h in decoded) <= MAX_PIXELS

    # non-UTF-8 names: valid UTF-8 in the manifest, and the original bytes are recoverable
    for raw, shown in BAD_NAMES.items():
        row = df.loc[shown]
        assert row.source_uri == f"{hostile_source}/{shown}"
        assert pd.isna(row.object_uri) and row.item_id != hashlib.sha256(b"").hexdigest()
        if "#" not in shown:
            assert unquote_to_bytes(shown) == raw
    # the good link to a non-UTF-8 name got in, with its bytes (the link target is escaped)
    link = df.loc["link_to_bad_name.jpg"]
    assert link.item_id == hashlib.sha256(jpeg(20)).hexdigest()
    assert "link=caf%E9.jpg" in link.collect_source_stamp

    # accepted files are byte-exact in the store and decode to oriented 8-bit RGB
    acc = df[df.status == "accepted"]
    for rel, row in acc.iterrows():
        stored = Path(ws.resolve(row.object_uri)).read_bytes()
        assert stored == (hostile_source / rel).read_bytes(), rel
        pixels = imaging.load_oriented_rgb(stored)
        assert pixels.shape == (row.height, row.width, 3) and pixels.dtype == np.uint8, rel
    modes = acc["mode"].to_dict()
    assert (modes["cmyk.jpg"], modes["gray.jpg"], modes["gray16.png"]) == ("CMYK", "L", "I;16")
    assert acc.loc["rgb16.png", "channels"] == 3

    # a rerun reuses every row (no crash on the encoded names); only unreadable ones are retried
    read.clear()
    with FifoWatchdog(hostile_source / "fifo.jpg"):
        again = run_stage(CollectStage(), ws, params)
    assert again.details["reused"] == len(EXPECTED) - 3
    assert {storage.relative_to(str(hostile_source), u) for u in read if "/src/" in u} == {
        "loop_a.jpg",
        "loop_b.jpg",
    }
    assert again.reasons == summary.reasons


def test_grayscale_is_a_flag(tmp_path: Path) -> None:
    """Grayscale is not broken: collect accepts it (mode L) and curate flags it ``grayscale``
    (recorded, not quarantined unless curate.quarantine lists it)."""
    gradient = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (48, 1))
    images = {
        "gray": imaging.load_oriented_rgb(jpeg_gray(gradient)),
        "colour": imaging.load_oriented_rgb(jpeg(1)),
    }
    metrics = pd.DataFrame(
        {k: compute_metrics(v, color="rgb") for k, v in images.items()}
    ).T.infer_objects()
    flags = flag_quality(metrics, CurateParams())
    assert flags["is_grayscale"].to_dict() == {"gray": True, "colour": False}
    assert "grayscale" not in CurateParams().quarantine


# ------------------------------------------------------------------------------------------
# Annotation exports


def reader(name: str) -> AnnotationReader:
    try:
        return get_reader(name)
    except (KeyError, ImportError) as err:
        pytest.skip(f"the {name} reader is not available yet: {err}")


def voc_xml(filename: str, label: str, head: str = "") -> str:
    return (
        f'<?xml version="1.0"?>{head}\n<annotation><filename>{filename}</filename>'
        "<size><width>64</width><height>48</height><depth>3</depth></size>"
        f"<object><name>{label}</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>11</xmax>"
        "<ymax>12</ymax></bndbox></object></annotation>\n"
    )


def cvat_xml(images: list[tuple[str, str]], head: str = "") -> str:
    body = "".join(
        f'<image id="{i}" name="{name}" width="64" height="48">'
        f'<box label="{label}" xtl="1" ytl="2" xbr="11" ybr="12" occluded="0"/></image>'
        for i, (name, label) in enumerate(images)
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?>{head}\n<annotations><version>1.1</version>'
        "<meta><task><labels><label><name>car</name><attributes/></label></labels></task>"
        f"</meta>{body}</annotations>\n"
    )


LAUGHS = (
    '\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
    '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
)


def xml_attack(kind: str, tmp_path: Path) -> tuple[str, str]:
    """(DOCTYPE to insert, entity reference to use as the label) for one attack."""
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    if kind == "billion_laughs":
        return LAUGHS, "&lol3;"
    if kind == "external_entity":
        return f'\n<!DOCTYPE x [<!ENTITY xxe SYSTEM "file://{secret}">]>', "&xxe;"
    dtd = tmp_path / "evil.dtd"
    dtd.write_text(f'<!ENTITY xxe SYSTEM "file://{secret}">')
    return f'\n<!DOCTYPE x SYSTEM "file://{dtd}">', "&xxe;"


@pytest.mark.parametrize("attack", ["billion_laughs", "external_entity", "external_dtd"])
@pytest.mark.parametrize("fmt", ["voc", "cvat"])
def test_xml_entity_declarations_are_refused(tmp_path: Path, fmt: str, attack: str) -> None:
    rd = reader(fmt)
    head, ref = xml_attack(attack, tmp_path)
    folder = tmp_path / "export"
    if fmt == "voc":
        (folder / "Annotations").mkdir(parents=True)
        (folder / "Annotations/evil.xml").write_text(voc_xml("a.jpg", ref, head))
        (folder / "Annotations/good.xml").write_text(voc_xml("b.jpg", "car"))
        evil = f"{folder}/Annotations/evil.xml"
    else:
        folder.mkdir()
        (folder / "evil.xml").write_text(cvat_xml([("a.jpg", ref)], head))
        (folder / "good.xml").write_text(cvat_xml([("b.jpg", "car")]))
        evil = f"{folder}/evil.xml"
    result = rd.load(str(folder))
    [err] = result.errors
    assert (err.code, err.file) == ("xml_entities_refused", evil)
    assert err.pointer.startswith("line 2, column ")
    assert "entity" in err.message
    # the good file beside it is imported; nothing from the attack is
    assert result.annotations["image_ref"].tolist() == ["b.jpg"]
    assert result.annotations["category"].tolist() == ["car"]
    dump = result.annotations.to_json() + json.dumps([i.to_dict() for i in result.issues])
    assert SECRET not in dump and "lollol" not in dump


ESCAPES = ["../../etc/passwd", "/etc/shadow", "imgs/../../../secret.jpg"]


def write_escaping_export(fmt: str, root: Path) -> tuple[str, list[tuple[str, str]]]:
    """An export naming the ESCAPES and one good image; -> (path, expected (code, pointer))."""
    root.mkdir()
    names = [*ESCAPES, "ok.jpg"]
    if fmt == "coco":
        doc = {
            "categories": [{"id": 1, "name": "car"}],
            "images": [
                {"id": i + 1, "file_name": n, "width": 64, "height": 48}
                for i, n in enumerate(names)
            ],
            "annotations": [
                {"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [1, 2, 10, 10]}
                for i in range(len(names))
            ],
        }
        (root / "instances.json").write_text(json.dumps(doc))
        expected = [("path_escape", f"/images/{i}/file_name") for i in range(3)]
        expected += [("path_escape", f"/annotations/{i}/image_id") for i in range(3)]
        return str(root / "instances.json"), expected
    if fmt == "voc":
        (root / "Annotations").mkdir()
        for i, n in enumerate(names):
            (root / f"Annotations/{i}.xml").write_text(voc_xml(n, "car"))
        return str(root), [("path_escape", "line 2, column 1")] * 3
    if fmt == "cvat":
        (root / "annotations.xml").write_text(cvat_xml([(n, "car") for n in names]))
        return str(root / "annotations.xml"), [("path_escape", "line 2, column ")] * 3
    for i, n in enumerate(names):  # labelme: imagePath is relative to the JSON file
        shape = {"label": "car", "points": [[1, 2], [11, 12]], "shape_type": "rectangle"}
        doc = {"version": "5.4.1", "shapes": [shape], "imagePath": n}
        doc.update(imageHeight=48, imageWidth=64, imageData=None)
        (root / f"{i}.json").write_text(json.dumps(doc))
    return str(root), [("path_escape", "/imagePath")] * 3


@pytest.mark.parametrize("fmt", ["coco", "voc", "cvat", "labelme"])
def test_escaping_image_names_are_rejected(tmp_path: Path, fmt: str) -> None:
    """``../../etc/passwd`` in an export is an error, never a row that matching could pair
    with some ``passwd`` in the dataset (nor a path anything opens)."""
    rd = reader(fmt)
    path, expected = write_escaping_export(fmt, tmp_path / "export")
    opened: list[str] = []
    real_open = open

    def spy_open(file: Any, *args: Any, **kw: Any) -> Any:
        opened.append(str(file))
        return real_open(file, *args, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("builtins.open", spy_open)
        result = rd.load(path)
    got = [(e.code, e.pointer) for e in result.errors]
    assert [c for c, _ in got] == [c for c, _ in expected]
    assert all(p.startswith(want) for (_, p), (_, want) in zip(got, expected, strict=True))
    # each error names the offending file name (COCO: the image, then its annotation)
    names = ESCAPES * (2 if fmt == "coco" else 1)
    assert all(repr(n) in e.message for e, n in zip(result.errors, names, strict=True))
    assert result.annotations["image_ref"].tolist() == ["ok.jpg"]
    assert not any(("passwd" in f or "shadow" in f or "secret" in f) for f in opened)


@pytest.mark.parametrize("fmt", ["coco", "labelme"])
def test_malformed_json_is_located(tmp_path: Path, fmt: str) -> None:
    """A broken file in a folder: error with the file and line/column; its sibling imports."""
    rd = reader(fmt)
    folder = tmp_path / "export"
    folder.mkdir()
    if fmt == "coco":
        good = {
            "categories": [{"id": 1, "name": "car"}],
            "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]}],
        }
        bad = '{\n  "categories": [],\n  "images": [\n    {"id": 1 "file_name": "b.jpg"}\n  ]\n}\n'
        names = ("instances_a.json", "instances_b.json")
    else:
        shape = {"label": "car", "points": [[1, 2], [4, 6]], "shape_type": "rectangle"}
        good = {"version": "5.4.1", "shapes": [shape], "imagePath": "a.jpg"}
        good.update(imageHeight=48, imageWidth=64, imageData=None)
        bad = (
            '{\n  "version": "5.4.1", "imagePath": "b.jpg",\n  "shapes": [\n'
            '    {"label": "car" "points": [[1, 1], [5, 5]]}\n  ]\n}\n'
        )
        names = ("a.json", "b.json")
    (folder / names[0]).write_text(json.dumps(good))
    (folder / names[1]).write_text(bad)
    result = rd.load(str(folder))
    [err] = result.errors
    assert (err.code, err.file) == ("malformed_json", f"{folder}/{names[1]}")
    assert err.pointer == ("line 4, column 14" if fmt == "coco" else "line 4, column 21")
    assert "Expecting ',' delimiter" in err.message
    assert result.annotations["image_ref"].tolist() == ["a.jpg"]


def test_unknown_category_is_reported_not_imported(tmp_path: Path) -> None:
    rd = reader("coco")
    doc = {
        "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "person"}],
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]},
            {"id": 11, "image_id": 1, "category_id": 99, "bbox": [1, 2, 3, 4]},
            {"id": 12, "image_id": 1, "category_id": "2", "bbox": [1, 2, 3, 4]},
            {"id": 13, "image_id": 1, "category_id": 2, "bbox": [1, 2, 3, 4]},
        ],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(doc))
    result = rd.load(str(path))
    assert [(e.code, e.pointer) for e in result.errors] == [
        ("unknown_category", "/annotations/1/category_id"),
        ("unknown_category", "/annotations/2/category_id"),
    ]
    assert "category_id 99 is not declared in /categories" in result.errors[0].message
    assert result.annotations["source_annotation_id"].tolist() == ["10", "13"]
    assert sorted(result.categories.names()) == ["car", "person"]


def test_import_stage_goes_on_past_hostile_exports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every export attack in one import_annotations run: each is an error in report.json, the
    good annotations are matched, and the ``../../etc/passwd`` box is not matched to the
    dataset's own ``etc/passwd``-named image."""
    for fmt in ("coco", "voc", "cvat"):
        reader(fmt)
    monkeypatch.chdir(tmp_path)
    ws = Workspace("data")
    manifest = mock_manifest("curate", n=4)
    rels = ["cam/a.jpg", "cam/b.jpg", "cam/c.jpg", "etc/passwd"]
    manifest["rel_path"] = rels
    manifest["source_uri"] = [f"src/{r}" for r in rels]
    manifest["width"], manifest["height"] = 64, 48
    manifest[["width", "height"]] = manifest[["width", "height"]].astype("Int32")
    storage.write_table(ws.manifest_uri("curate"), manifest)

    coco = tmp_path / "exports/coco"
    coco.mkdir(parents=True)
    doc = {
        "categories": [{"id": 1, "name": "car"}],
        "images": [
            {"id": 1, "file_name": "cam/a.jpg", "width": 64, "height": 48},
            {"id": 2, "file_name": "../../etc/passwd", "width": 64, "height": 48},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 10]},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [1, 2, 10, 10]},
            {"id": 3, "image_id": 1, "category_id": 42, "bbox": [1, 2, 10, 10]},
        ],
    }
    (coco / "instances_train.json").write_text(json.dumps(doc))
    (coco / "instances_val.json").write_text('{"categories": [],\n "images": [{"id": 1,,}]}')
    head, ref = xml_attack("billion_laughs", tmp_path)
    voc = tmp_path / "exports/voc/Annotations"
    voc.mkdir(parents=True)
    (voc / "b.xml").write_text(voc_xml("cam/b.jpg", "car"))
    (voc / "laughs.xml").write_text(voc_xml("cam/c.jpg", ref, head))
    head, ref = xml_attack("external_entity", tmp_path)
    cvat = tmp_path / "exports/cvat"
    cvat.mkdir()
    (cvat / "good.xml").write_text(cvat_xml([("cam/c.jpg", "car")]))
    (cvat / "xxe.xml").write_text(cvat_xml([("cam/a.jpg", ref)], head))

    params = Params(
        run=RunParams(data_dir="data", max_workers=1),
        collect=CollectParams(source="src"),
        import_annotations=ImportAnnotationsParams(
            sources=[
                AnnotationSource(format="coco", path="exports/coco"),
                AnnotationSource(format="voc", path="exports/voc"),
                AnnotationSource(format="cvat", path="exports/cvat"),
            ]
        ),
    )
    run_stage(ImportAnnotationsStage(), ws, params)
    report = json.loads(storage.read_text(ws.uri("import_annotations", "report.json")))
    assert report["errors_by_code"] == {
        "malformed_json": 1,
        "path_escape": 2,  # the image and its annotation
        "unknown_category": 1,
        "xml_entities_refused": 2,
    }
    where = {(e["code"], e["file"]) for e in report["error_examples"]}
    assert ("malformed_json", "exports/coco/instances_val.json") in where
    assert ("xml_entities_refused", "exports/voc/Annotations/laughs.xml") in where
    assert ("xml_entities_refused", "exports/cvat/xxe.xml") in where
    table = storage.read_table(ws.uri("import_annotations", "annotations.parquet"))
    assert sorted(table["image_ref"]) == ["cam/a.jpg", "cam/b.jpg", "cam/c.jpg"]
    assert (table["match_status"] == "matched").all()
    assert report["matched"] == 3 and report["unmatched"] == 0
    assert "etc/passwd" in report["unlabelled_accepted_examples"]
    assert SECRET not in json.dumps(report)
