"""Annotation formats: one module per format behind one reader interface, keyed by name.

Readers (``READERS``): coco, yolo, label_studio, voc, cvat (images and video 1.1), labelme,
mot, sam (SA-1B). Each format module provides ``load_<fmt>(path, *, images, limits) ->
ImportResult``, pure ``<fmt>_to_annotations`` converters where the format allows, and a
reader class with ``name``, ``sniff(path)`` and ``load(...)``. Writers for coco, yolo,
label_studio and cvat are ``save_<fmt>`` in the same modules, dispatched by
``annotations.export`` (``WRITERS``) with a loss report.

The registry maps names to dotted class paths, so importing it does not import any format (nor
numpy/ijson/yaml with them) until a reader is asked for. ``READERS`` is a read-only view; add a
format with ``register_reader``. ``detect_format`` asks every reader's ``sniff`` and refuses
to guess when none or several fit.
"""

from __future__ import annotations

import importlib
from types import MappingProxyType
from typing import Protocol

from visionloop.annotations.table import (
    DEFAULT_LIMITS,
    AnnotationImportError,
    ImportResult,
    KnownImages,
    Limits,
)


class AnnotationReader(Protocol):
    """What every format module offers the import stage."""

    name: str

    def sniff(self, path: str) -> str | None:
        """Why ``path`` looks like this format (a short reason), or None."""
        ...

    def load(
        self, path: str, *, images: KnownImages | None = None, limits: Limits = DEFAULT_LIMITS
    ) -> ImportResult:
        """Import everything at ``path``; per-record problems go into ``ImportResult.issues``."""
        ...


class FormatDetectionError(AnnotationImportError):
    """``detect_format`` found no format, or more than one, for a path."""


_READERS: dict[str, str] = {
    "coco": "visionloop.annotations.formats.coco:CocoReader",
    "yolo": "visionloop.annotations.formats.yolo:YoloReader",
    "label_studio": "visionloop.annotations.formats.label_studio:LabelStudioReader",
    "voc": "visionloop.annotations.formats.voc:VocReader",
    "cvat": "visionloop.annotations.formats.cvat:CvatReader",
    "labelme": "visionloop.annotations.formats.labelme:LabelmeReader",
    "mot": "visionloop.annotations.formats.mot:MotReader",
    "sam": "visionloop.annotations.formats.sam:SamReader",
}
READERS = MappingProxyType(_READERS)


def register_reader(name: str, target: str, clobber: bool = False) -> None:
    """Register a reader class by dotted path ``"package.module:Class"`` (imported on use)."""
    if ":" not in target:
        raise ValueError(f"reader target must be 'module:Class', got {target!r}")
    if name in _READERS and not clobber and _READERS[name] != target:
        raise ValueError(f"reader {name!r} is already registered as {_READERS[name]}")
    _READERS[name] = target


def get_reader(name: str) -> AnnotationReader:
    if name not in _READERS:
        raise KeyError(f"unknown annotation format {name!r}; known: {', '.join(sorted(_READERS))}")
    module, cls = _READERS[name].split(":")
    reader: AnnotationReader = getattr(importlib.import_module(module), cls)()
    return reader


def detect_format(path: str) -> tuple[str, str]:
    """(format name, why) for ``path``. Refuses to guess: when no format or several fit, it
    raises ``FormatDetectionError`` asking for an explicit ``format``."""
    fits: list[tuple[str, str]] = []
    for name in sorted(_READERS):
        reason = get_reader(name).sniff(path)
        if reason:
            fits.append((name, reason))
    if len(fits) == 1:
        return fits[0]
    if not fits:
        raise FormatDetectionError(
            f"{path}: no known annotation format fits ({', '.join(sorted(_READERS))}); "
            "set the source's format explicitly"
        )
    detail = "; ".join(f"{n} ({why})" for n, why in fits)
    raise FormatDetectionError(
        f"{path}: several formats fit: {detail}; set the source's format explicitly"
    )


__all__ = [
    "READERS",
    "AnnotationReader",
    "FormatDetectionError",
    "detect_format",
    "get_reader",
    "register_reader",
]
