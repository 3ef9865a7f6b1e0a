"""What a run from the Prefect UI may choose, and how it is recorded truthfully.

``RunRequest`` is the flows' parameter model (the form Prefect shows for a custom run): the
source to collect from, the labelling budget and the reference snapshot. ``dvc.lock`` records
``params.yaml``, so a value that only lived in one run would make the lock (and the snapshot)
lie about what produced the data. A requested value that differs from ``params.yaml`` is
therefore *written into* ``params.yaml`` before the run (``apply_request``): the snapshot
commit then records it, and it stays until changed again.

``params.yaml`` is edited as text, line by line (``set_scalar``, ``add_list_item``), so its
comments and layout survive; every edit is verified by parsing the result and comparing it
with the intended document, and refused (``ParamsEditError``) when they differ.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)


class ParamsEditError(ValueError):
    """params.yaml could not be edited safely: edit it by hand as the message says."""


class RunRequest(BaseModel):
    """A run's choices (left empty: as in params.yaml)."""

    model_config = ConfigDict(extra="forbid")

    source: str | None = Field(
        None,
        description="Folder or s3:// prefix of incoming images (empty: collect.source)",
    )
    budget: int | None = Field(
        None, ge=0, description="Images to propose for labelling (empty: refresh.annotate_budget)"
    )
    reference: str | None = Field(
        None,
        description="Snapshot to compare with: dataset-vN, latest or none "
        "(empty: refresh.reference)",
    )

    def settings(self) -> dict[str, Any]:
        """Dotted params keys -> requested values (only those given)."""
        keys = {
            "collect.source": self.source,
            "refresh.annotate_budget": self.budget,
            "refresh.reference": self.reference,
        }
        return {k: v for k, v in keys.items() if v is not None}


_PLAIN = re.compile(r"^[A-Za-z0-9_./:@+-][A-Za-z0-9_./:@+ -]*$")


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    if _PLAIN.match(text) and yaml.safe_load(text) == text and not text.endswith(" "):
        return text
    return json.dumps(text)


def _section_span(lines: list[str], section: str) -> tuple[int, int] | None:
    """[start, end) line range of a top-level ``section:`` block."""
    head = re.compile(rf"^{re.escape(section)}:\s*(#.*)?$")
    start = next((i for i, ln in enumerate(lines) if head.match(ln)), None)
    if start is None:
        return None
    end = len(lines)
    for j in range(start + 1, len(lines)):
        ln = lines[j]
        if ln.strip() and not ln.startswith((" ", "\t", "#")):
            end = j
            break
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    return start, end


def _parse(text: str) -> Any:
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ParamsEditError(f"the edited params.yaml would not parse: {exc}") from exc


def _verify(before: str, after: str, expect: dict[str, Any]) -> None:
    want = yaml.safe_load(before) or {}
    for section, values in expect.items():
        want.setdefault(section, {}).update(values)
    if _parse(after) != want:
        raise ParamsEditError("the edited params.yaml does not parse to the intended values")


def set_scalar(text: str, dotted: str, value: Any) -> str:
    """``text`` with ``section.key`` set to the scalar ``value`` (comment on the line kept)."""
    section, key = dotted.split(".", 1)
    if "." in key:
        raise ParamsEditError(f"{dotted}: only top-level keys of a section can be set")
    lines = text.splitlines()
    span = _section_span(lines, section)
    rendered = _scalar(value)
    if span is None:
        out = [*lines, "", f"{section}:", f"  {key}: {rendered}"]
    else:
        start, end = span
        pat = re.compile(rf"^(\s+){re.escape(key)}:(\s*)(.*?)(\s+#.*)?$")
        hit = None
        for i in range(start + 1, end):
            m = pat.match(lines[i])
            if m and len(m.group(1)) == _indent(lines, start, end):
                hit = (i, m)
                break
        out = list(lines)
        if hit is None:
            out.insert(end, f"{' ' * _indent(lines, start, end)}{key}: {rendered}")
        else:
            i, m = hit
            if m.group(3).strip() in ("", "|", ">"):
                raise ParamsEditError(f"{dotted} is not a scalar in params.yaml")
            line = f"{m.group(1)}{key}: {rendered}"
            if m.group(4):  # keep the comment in its column where the value leaves room
                hash_col = m.start(4) + len(m.group(4)) - len(m.group(4).lstrip())
                line += " " * max(1, hash_col - len(line)) + m.group(4).lstrip()
            out[i] = line
    result = "\n".join(out) + "\n"
    _verify(text, result, {section: {key: value}})
    return result


def _indent(lines: list[str], start: int, end: int) -> int:
    for i in range(start + 1, end):
        ln = lines[i]
        if ln.strip() and not ln.lstrip().startswith("#"):
            return len(ln) - len(ln.lstrip(" "))
    return 2


def add_list_item(text: str, dotted: str, item: dict[str, Any]) -> str:
    """``text`` with the mapping ``item`` appended to the list ``section.key``."""
    section, key = dotted.split(".", 1)
    doc = yaml.safe_load(text) or {}
    current = list((doc.get(section) or {}).get(key) or [])
    lines = text.splitlines()
    span = _section_span(lines, section)
    entries = [f"{k}: {_scalar(v)}" for k, v in item.items()]
    if span is None:
        lines += ["", f"{section}:", f"  {key}:", *_list_lines(entries, 4)]
        result = "\n".join(lines).lstrip("\n") + "\n"
        _verify(text, result, {section: {**(doc.get(section) or {}), key: [*current, item]}})
        return result
    start, end = span
    ind = _indent(lines, start, end)
    pat = re.compile(rf"^ {{{ind}}}{re.escape(key)}:(\s*)(.*?)(\s+#.*)?$")
    at = next((i for i in range(start + 1, end) if pat.match(lines[i])), None)
    out = list(lines)
    if at is None:
        block = [f"{' ' * ind}{key}:", *_list_lines(entries, ind + 2)]
        out[end:end] = block
    else:
        m = pat.match(lines[at])
        assert m is not None
        inline = m.group(2).strip()
        if inline == "[]":
            out[at] = f"{' ' * ind}{key}:{m.group(3) or ''}"
            out[at + 1 : at + 1] = _list_lines(entries, ind + 2)
        elif inline:
            raise ParamsEditError(f"{dotted} is written inline in params.yaml; add {item} by hand")
        else:
            last = at
            item_ind = None
            for j in range(at + 1, end):
                ln = lines[j]
                if not ln.strip() or ln.lstrip().startswith("#"):
                    continue
                width = len(ln) - len(ln.lstrip(" "))
                is_item = ln.lstrip().startswith("- ") or ln.strip() == "-"
                # items may sit at the key's own indent (PyYAML's default dump style)
                if width < ind or (width == ind and not is_item):
                    break
                if item_ind is None and is_item:
                    item_ind = width
                last = j
            out[last + 1 : last + 1] = _list_lines(entries, item_ind or ind + 2)
    result = "\n".join(out) + "\n"
    want = yaml.safe_load(text) or {}
    want.setdefault(section, {})[key] = [*current, item]
    if _parse(result) != want:
        raise ParamsEditError(f"could not add {item} to {dotted} safely; add it by hand")
    return result


def _list_lines(entries: list[str], indent: int) -> list[str]:
    pad = " " * indent
    return [f"{pad}- {entries[0]}", *(f"{pad}  {e}" for e in entries[1:])]


def apply_request(params_path: str | Path, request: RunRequest) -> list[str]:
    """Write the request's values that differ from ``params.yaml`` into it; returns what
    changed (``"refresh.annotate_budget: 50 -> 80"``), empty when nothing did."""
    path = Path(params_path)
    text = path.read_text() if path.exists() else ""
    doc = yaml.safe_load(text) or {}
    changes = []
    for dotted, value in request.settings().items():
        section, key = dotted.split(".", 1)
        old = (doc.get(section) or {}).get(key)
        if old == value:
            continue
        text = set_scalar(text, dotted, value)
        changes.append(f"{dotted}: {old} -> {value}")
    if changes:
        path.write_text(text)
        log.info("params.yaml set by the run request: %s", "; ".join(changes))
    return changes


def ensure_returned_source(params_path: str | Path, returned_dir: str) -> bool:
    """Make the returned-labels folder one of ``import_annotations.sources`` (True if added)."""
    path = Path(params_path)
    text = path.read_text()
    doc = yaml.safe_load(text) or {}
    sources = (doc.get("import_annotations") or {}).get("sources") or []
    if any(str(s.get("path", "")).rstrip("/") == returned_dir.rstrip("/") for s in sources):
        return False
    item = {"format": "label_studio", "path": returned_dir}
    path.write_text(add_list_item(text, "import_annotations.sources", item))
    log.info("params.yaml: returned labels in %s added to import_annotations.sources", returned_dir)
    return True


__all__ = [
    "ParamsEditError",
    "RunRequest",
    "add_list_item",
    "apply_request",
    "ensure_returned_source",
    "set_scalar",
]
