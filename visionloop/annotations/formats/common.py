"""What the format modules share beyond ``table.py``: file listing and display names, an issue
collector that folds repeated warnings into one line with a count, and image-size lookups.

Kept free of heavy imports (numpy, ijson, yaml): the registry and the CLI import formats lazily,
but this module is small enough to import from any of them.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field

from visionloop import storage
from visionloop.annotations.table import AnnotationImportError, ImportIssue, KnownImages


def display(root: str, uri: str) -> str:
    """A file's name for reports: the source path as configured plus the path below it."""
    rel = storage.relative_to(root, uri)
    if rel == ".":
        return root
    if rel.startswith(".."):
        return uri
    return f"{root.rstrip('/')}/{rel}"


def source_files(path: str, suffixes: tuple[str, ...], what: str) -> tuple[str, list[str], bool]:
    """(root, files, is_folder) of a source: ``path`` itself when it is a file, else every
    file below it whose name ends with one of ``suffixes`` (sorted, so reruns agree)."""
    fs, p = storage.filesystem(path)
    if not fs.exists(p):
        raise AnnotationImportError(f"{what} source {path} does not exist")
    if not fs.isdir(p):
        return storage.dirname(path) or ".", [path], False
    files = sorted(u for u in storage.walk_files(path) if u.lower().endswith(suffixes))
    return path, files, True


def is_dir(path: str) -> bool:
    fs, p = storage.filesystem(path)
    return bool(fs.exists(p) and fs.isdir(p))


def read_head(uri: str, size: int = 1 << 16) -> bytes:
    """The first ``size`` bytes (BOM removed): what sniffers look at."""
    fs, p = storage.filesystem(uri)
    with fs.open(p, "rb") as fh:
        head = fh.read(size)
    return head[3:] if head.startswith(b"\xef\xbb\xbf") else head


@dataclass
class _Folded:
    level: str
    code: str
    file: str
    pointer: str
    message: str
    count: int = 1


@dataclass
class Issues:
    """Collects the issues of one source. ``error``/``warn`` add one issue each; ``once``
    folds every call with the same key into a single issue (the first pointer, a count), so a
    quirk repeated on 100k records is one readable line rather than 100k."""

    issues: list[ImportIssue] = field(default_factory=list)
    _folded: dict[tuple[str, ...], _Folded] = field(default_factory=dict)

    def error(self, code: str, file: str, pointer: str, message: str) -> None:
        self.issues.append(ImportIssue("error", code, file, pointer, message))

    def warn(self, code: str, file: str, pointer: str, message: str) -> None:
        self.issues.append(ImportIssue("warning", code, file, pointer, message))

    def once(
        self, level: str, code: str, file: str, pointer: str, message: str, key: str = ""
    ) -> None:
        k = (level, code, file, key or message)
        if k in self._folded:
            self._folded[k].count += 1
        else:
            self._folded[k] = _Folded(level, code, file, pointer, message)

    def done(self) -> list[ImportIssue]:
        """All issues, folded ones last (with "N times, first at ..." when repeated)."""
        out = list(self.issues)
        for f in self._folded.values():
            msg = f.message if f.count == 1 else f"{f.message} ({f.count} times; first here)"
            out.append(ImportIssue(f.level, f.code, f.file, f.pointer, msg))
        return out


class SizeLookup:
    """Image sizes known outside the export (the curate manifest: rel_path -> (w, h)), found
    by an export's reference: exact path, then path suffix, then a unique file name."""

    def __init__(self, images: KnownImages | None) -> None:
        self.images = dict(images or {})
        self.by_name: dict[str, list[str]] = {}
        for rel in self.images:
            self.by_name.setdefault(posixpath.basename(_norm(rel)), []).append(rel)

    def find(self, ref: str) -> tuple[int, int] | None:
        norm = _norm(ref)
        size = self.images.get(norm) or self.images.get(ref)
        if size is None:
            cands = self.by_name.get(posixpath.basename(norm), [])
            suffix = [c for c in cands if ("/" + _norm(c)).endswith("/" + norm)]
            pick = suffix if len(suffix) == 1 else cands
            if len(pick) != 1:
                return None
            size = self.images[pick[0]]
        w, h = size
        if w is None or h is None or w != w or h != h:  # NaN from pandas
            return None
        return int(w), int(h)


def _norm(ref: str) -> str:
    r = str(ref).strip().replace("\\", "/")
    while r.startswith("./"):
        r = r[2:]
    return r


def unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))
