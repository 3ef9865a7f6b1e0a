"""Run a gate: validate a stage's output table with its GX suite and say whether it may pass.

``run_gate`` loads the table a gate checks, runs the suite through a ``ValidationDefinition``
and a ``Checkpoint`` in a file Data Context rooted at ``<context_root>/gx/``, builds Data Docs
and returns a :class:`GateResult` (also written to ``<data>/<stage>/gate.json``). Error-level
failures make ``success`` False and :func:`enforce` raises :class:`GateFailed`; warning-level
failures are only reported.

Great Expectations is imported lazily (4-9 s and ~230 MB here) and its context is created once
per process and root; a warm gate run then takes about a second, most of it GX's metric graph
and the Data Docs rebuild. The persisted part of the context stays quiet in git: the datasource,
assets, validation definitions and checkpoints are created once and reused, and suites get
content-derived ids (see ``suites.build_suite``), so rerunning with the same params rewrites
nothing outside ``gx/uncommitted/``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import shutil
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlparse

import pandas as pd
import pyarrow.parquet as pq

from visionloop import storage
from visionloop.config import Params
from visionloop.expectations.suites import (
    GATE_COMPANIONS,
    GATE_TABLES,
    GATES,
    build_suite,
    companion_asset,
    companion_checks,
    companion_tables,
    gate_checks,
    gate_suite_hash,
    prepare_table,
    suite_name,
)
from visionloop.stages.base import Workspace

log = logging.getLogger(__name__)

DATASOURCE = "visionloop"
BATCH_DEFINITION = "whole_table"
DOCS_SITE = "local_site"
PARTIAL_UNEXPECTED = 10  # examples kept per failed expectation in gate.json
_BOUND_KEYS = ("min_value", "max_value", "value_set", "column_set")

_LOCK = threading.RLock()  # one GX run at a time per process: the context is not thread-safe
_CONTEXTS: dict[str, Any] = {}


@dataclass
class ExpectationOutcome:
    """One expectation's result, flattened for reports and JSON."""

    key: str
    expectation: str  # GX expectation type
    column: str | None
    severity: str  # "error" | "warning"
    success: bool
    unexpected_count: int | None = None
    element_count: int | None = None
    unexpected_percent: float | None = None
    observed_value: Any = None
    row_condition: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    partial_unexpected: list[Any] = field(default_factory=list)
    exception: str | None = None
    details: dict[str, Any] | None = None  # GX's result details (e.g. missing columns)
    why: str = ""
    table: str | None = None  # the companion table it checks (None: the gate's own table)

    def describe(self) -> str:
        """One line naming the expectation and how much of the table failed it."""
        target = f"({self.column})" if self.column else ""
        where = f" where {self.row_condition}" if self.row_condition else ""
        head = f"{self.key}: {self.expectation}{target}{where}"
        if self.exception:
            return f"{head}: raised {self.exception}"
        if self.unexpected_count is not None and self.element_count is not None:
            mostly = self.kwargs.get("mostly")
            bound = f", mostly={mostly}" if mostly is not None else ""
            return f"{head}: {self.unexpected_count} of {self.element_count} rows failed{bound}"
        missing = ((self.details or {}).get("mismatched") or {}).get("missing")
        if missing:
            return f"{head}: missing {_short(missing)}"
        bounds = {k: v for k, v in self.kwargs.items() if k in _BOUND_KEYS}
        return f"{head}: observed {_short(self.observed_value)} (expected {_short(bounds)})"


VOLATILE_FIELDS = ("docs_path", "docs_index", "run_time", "elapsed_s")


@dataclass
class GateResult:
    """The outcome of one gate run (``<data>/<stage>/gate.json``)."""

    gate: str
    suite_name: str
    suite_hash: str  # version of the suite's expectation configs (suites.suite_hash)
    success: bool  # no error-level expectation failed
    table_uri: str
    table_sha256: str  # of the Parquet bytes validated: tells a stale gate.json apart
    row_count: int
    results: list[ExpectationOutcome]  # one per expectation, in suite order
    docs_path: str | None = None  # this validation's Data Docs page (None when docs are off)
    docs_index: str | None = None  # the Data Docs site's index.html
    run_time: str = ""
    elapsed_s: float = 0.0
    # Companion tables validated with the gate (suites.GATE_COMPANIONS): table -> suite_name,
    # row_count, docs_path (e.g. "qa": the label-QA findings of the import_annotations gate).
    companions: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def errors(self) -> list[ExpectationOutcome]:
        return [e for e in self.results if not e.success and e.severity == "error"]

    @property
    def warnings(self) -> list[ExpectationOutcome]:
        return [e for e in self.results if not e.success and e.severity == "warning"]

    def outcome(self, key: str) -> ExpectationOutcome:
        for e in self.results:
            if e.key == key:
                return e
        raise KeyError(f"gate {self.gate!r} has no expectation {key!r}")

    def to_dict(self, stable: bool = True) -> dict[str, Any]:
        """As a dict; ``stable`` leaves out when and where the run happened.

        gate.json and validate's report live inside DVC-tracked outputs: with the timestamps
        and Data Docs paths left out, the same data and suites give byte-identical files, so
        `dvc repro` does not rerun downstream stages and a rerun after a crash reproduces the
        snapshot exactly. Those fields stay on the object, in the logs and in the artifacts.
        """
        data = asdict(self)
        if stable:
            for key in VOLATILE_FIELDS:
                data.pop(key, None)
            for info in data.get("companions", {}).values():
                for key in VOLATILE_FIELDS:
                    info.pop(key, None)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateResult:
        data = dict(data)
        data["results"] = [ExpectationOutcome(**e) for e in data["results"]]
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> GateResult:
        return cls.from_dict(json.loads(text))


def failure_message(results: list[GateResult]) -> str:
    lines = []
    for r in results:
        if r.success:
            continue
        lines.append(
            f"gate {r.gate!r} (suite {r.suite_name}@{r.suite_hash}) failed "
            f"{len(r.errors)} error-level expectation(s) on {r.table_uri}:"
        )
        lines += [f"  - {e.describe()}" for e in r.errors]
        docs = r.docs_path or r.docs_index or "disabled (validate.data_docs is false)"
        lines.append(f"  Data Docs: {docs}")
        for table, info in sorted(r.companions.items()):
            if any(e.table == table for e in r.errors) and info.get("docs_path"):
                lines.append(f"  Data Docs ({table} table): {info['docs_path']}")
            if table == "qa" and any(e.table == table for e in r.errors):
                lines.append("  Every QA finding: `visionloop labels qa` or qa_findings.parquet")
    return "\n".join(lines) if lines else "no gate failed"


class GateFailed(Exception):
    """An error-level expectation failed: the stage's output must not go further."""

    def __init__(self, results: GateResult | list[GateResult]):
        self.results = [results] if isinstance(results, GateResult) else list(results)
        super().__init__(failure_message(self.results))

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across process and Dask workers
        return (GateFailed, (self.results,))


def enforce(result: GateResult) -> GateResult:
    """Raise :class:`GateFailed` when an error-level expectation failed; else pass it on."""
    if not result.success:
        raise GateFailed(result)
    return result


def gate_table_uri(ws: Workspace, gate: str) -> str:
    if gate not in GATE_TABLES:
        raise KeyError(f"unknown gate {gate!r}; known: {', '.join(GATES)}")
    return ws.uri(gate, GATE_TABLES[gate])


def gate_result_uri(ws: Workspace, stage: str) -> str:
    return ws.uri(stage, "gate.json")


def read_gate_result(ws: Workspace, stage: str) -> GateResult | None:
    """The ``gate.json`` in ``<data>/<stage>/`` (None when that stage's gate never ran)."""
    uri = gate_result_uri(ws, stage)
    if not storage.exists(uri):
        return None
    return GateResult.from_json(storage.read_text(uri))


def write_gate_result(ws: Workspace, stage: str, result: GateResult) -> str:
    uri = gate_result_uri(ws, stage)
    storage.write_text_atomic(uri, result.to_json() + "\n")
    return uri


def table_sha256(uri: str) -> str:
    return hashlib.sha256(storage.read_bytes(uri)).hexdigest()


def evaluate_gate(
    gate: str,
    ws: Workspace,
    params: Params,
    context_root: str = ".",
    companions: Mapping[str, pd.DataFrame] | None = None,
) -> GateResult:
    """Validate the table of ``gate`` (read from the workspace); writes no gate.json.

    Companion tables (``suites.GATE_COMPANIONS``) not passed in are built from the workspace
    (for import_annotations: label QA against categories.json and the curate manifest).
    """
    uri = gate_table_uri(ws, gate)
    if not storage.exists(uri):
        raise FileNotFoundError(f"gate {gate!r}: {uri} does not exist; run the stage first")
    data = storage.read_bytes(uri)
    df = pq.read_table(io.BytesIO(data)).to_pandas()
    given = dict(companions or {})
    if any(t not in given for t in GATE_COMPANIONS.get(gate, ())):
        built = companion_tables(gate, df, params, ws)
        given = {**built, **given}
    result = check_table(gate, df, params, context_root=context_root, companions=given)
    result.table_uri = uri
    result.table_sha256 = hashlib.sha256(data).hexdigest()
    level = logging.INFO if result.success else logging.ERROR
    log.log(
        level,
        "gate %s: %s (%d error, %d warning failures of %d); docs %s",
        gate,
        "passed" if result.success else "FAILED",
        len(result.errors),
        len(result.warnings),
        len(result.results),
        result.docs_path,
    )
    return result


def run_gate(
    gate: str,
    ws: Workspace,
    params: Params,
    context_root: str = ".",
    stage: str | None = None,
) -> GateResult:
    """Validate the table of ``gate`` and write ``<data>/<stage>/gate.json``.

    ``stage`` defaults to the gate's own stage. The validate stage passes ``"validate"`` for
    the import_annotations gate it runs, so each stage writes only into its own folder (a DVC
    out). Never raises on failed expectations: call :func:`enforce` for that.
    """
    result = evaluate_gate(gate, ws, params, context_root=context_root)
    write_gate_result(ws, stage or gate, result)
    return result


def check_table(
    gate: str,
    df: pd.DataFrame,
    params: Params,
    context_root: str = ".",
    companions: Mapping[str, pd.DataFrame] | None = None,
) -> GateResult:
    """Run the suite of ``gate`` on an in-memory table (what ``run_gate`` does after loading).

    The gate's companion tables are validated too, each with its own suite; those not given
    are built from ``df`` alone (``suites.companion_tables``). Their outcomes join the gate's
    result (marked with their ``table``), and the gate's version covers all of them.
    """
    started = time.perf_counter()
    checks = gate_checks(gate, params)
    extra_checks = companion_checks(gate, params)
    version = gate_suite_hash(gate, params)
    table = prepare_table(gate, df)
    tables = dict(companions or {})
    if any(t not in tables for t in extra_checks):
        tables = {**companion_tables(gate, df, params), **tables}
    keep = params.validate_.keep_validations - 1
    docs = params.validate_.data_docs
    with _LOCK:
        ctx = _context(context_root)
        extra_runs = {}
        for name in extra_checks:
            asset = companion_asset(gate, name)
            cp = _checkpoint(ctx, asset, build_suite(gate, params, table=name), params, docs=docs)
            _prune_history(ctx, suite_name(asset), keep=keep)
            run = cp.run(batch_parameters={"dataframe": tables[name]})
            extra_runs[name] = next(iter(run.run_results.items()))
        checkpoint = _checkpoint(ctx, gate, build_suite(gate, params), params, docs=docs)
        _prune_history(ctx, suite_name(gate), keep=keep)
        gx_result = checkpoint.run(batch_parameters={"dataframe": table})
        (vr_id, vr), *_ = gx_result.run_results.items()
        docs_index = docs_page = None
        extra_docs: dict[str, str | None] = {name: None for name in extra_runs}
        if docs:
            docs_index = _docs_path(ctx, None)
            docs_page = _docs_path(ctx, vr_id)
            extra_docs = {name: _docs_path(ctx, rid) for name, (rid, _) in extra_runs.items()}
    outcomes = _ordered(gate, checks, [_outcome(r) for r in vr.results])
    info: dict[str, dict[str, Any]] = {}
    for name, (_rid, evr) in extra_runs.items():
        part = _ordered(gate, extra_checks[name], [_outcome(r) for r in evr.results])
        for o in part:
            o.table = name
        outcomes += part
        info[name] = {
            "suite_name": suite_name(companion_asset(gate, name)),
            "row_count": len(tables[name]),
            "docs_path": extra_docs[name],
        }
    return GateResult(
        gate=gate,
        suite_name=suite_name(gate),
        suite_hash=version,
        success=not any(not o.success and o.severity == "error" for o in outcomes),
        table_uri="<in-memory>",
        table_sha256="",
        row_count=len(df),
        results=outcomes,
        docs_path=docs_page,
        docs_index=docs_index,
        run_time=datetime.now(UTC).isoformat(timespec="seconds"),
        elapsed_s=round(time.perf_counter() - started, 3),
        companions=info,
    )


def _ordered(gate: str, checks: list[Any], outcomes: list[ExpectationOutcome]) -> list[Any]:
    """Outcomes in suite order; a check without a result means the stored suite does not match
    the params, which must never pass silently."""
    by_key = {o.key: o for o in outcomes}
    missing = [c.key for c in checks if c.key not in by_key]
    if missing:
        raise RuntimeError(f"gate {gate!r}: suite results lack checks {missing}")
    return [by_key[c.key] for c in checks]


# --- the GX context -------------------------------------------------------------------------


def _context(context_root: str) -> Any:
    """The file Data Context of ``context_root``, created once per process and root."""
    root = os.path.abspath(context_root)
    ctx = _CONTEXTS.get(root)
    if ctx is not None:
        return ctx
    # No network here: keep GX from trying to send usage statistics (read at import time).
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    gx_log = logging.getLogger("great_expectations")
    if gx_log.level == logging.NOTSET:  # GX logs config chatter at INFO; keep its warnings
        gx_log.setLevel(logging.WARNING)
    t0 = time.perf_counter()
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="file", project_root_dir=root)
    # In memory only; written to great_expectations.yml with the first datasource and then
    # stable, so later runs find the same values and write nothing.
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    ctx.config.analytics_enabled = False
    _CONTEXTS[root] = ctx
    log.info("GX context at %s ready in %.1f s", os.path.join(root, "gx"), time.perf_counter() - t0)
    return ctx


def _batch_definition(ctx: Any, asset_name: str) -> Any:
    """Get-or-create the pandas datasource, a dataframe asset (a gate's, or a companion table's)
    and its batch definition."""
    try:
        ds = ctx.data_sources.get(DATASOURCE)
    except KeyError:
        ds = ctx.data_sources.add_pandas(DATASOURCE)
    try:
        asset = ds.get_asset(asset_name)
    except LookupError:
        asset = ds.add_dataframe_asset(asset_name)
    try:
        return asset.get_batch_definition(BATCH_DEFINITION)
    except KeyError:
        return asset.add_batch_definition_whole_dataframe(BATCH_DEFINITION)


def _suite(ctx: Any, want: Any) -> Any:
    """The stored suite named like ``want``, rewritten only when its content changed."""
    from great_expectations.exceptions import DataContextError

    try:
        stored = ctx.suites.get(want.name)
    except DataContextError:
        stored = None
    if stored is not None and stored.to_json_dict() == want.to_json_dict():
        return stored
    ids = (want.id, [e.id for e in want.expectations])
    if stored is None:
        ctx.suites.add(want)  # the store gives new suites random ids ...
    want.id = ids[0]  # ... so put the content-derived ones back and update in place
    for expectation, eid in zip(want.expectations, ids[1], strict=True):
        expectation.id = eid
    store = ctx.expectations_store
    store.update(key=store.get_key(name=want.name, id=want.id), value=want)
    log.info("GX suite %s stored (version %s)", want.name, want.meta.get("visionloop_suite_hash"))
    return ctx.suites.get(want.name)


def _checkpoint(ctx: Any, asset: str, want: Any, params: Params, docs: bool) -> Any:
    """Get-or-create the validation definition and checkpoint of ``asset`` (a gate, or a
    companion table ``<gate>_<table>``) for the suite ``want`` (updated on change)."""
    import great_expectations as gx
    from great_expectations.exceptions import DataContextError

    batch_definition = _batch_definition(ctx, asset)
    suite = _suite(ctx, want)
    name = suite_name(asset)
    try:
        vd = ctx.validation_definitions.get(name)
    except DataContextError:
        vd = None
    if vd is None or vd.suite.id != suite.id or vd.data.id != batch_definition.id:
        vd = ctx.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=name, data=batch_definition, suite=suite)
        )
    actions = (
        [gx.checkpoint.UpdateDataDocsAction(name="update_data_docs", site_names=[DOCS_SITE])]
        if docs
        else []
    )
    want = gx.Checkpoint(
        name=name,
        validation_definitions=[vd],
        actions=actions,
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": PARTIAL_UNEXPECTED},
    )
    try:
        stored = ctx.checkpoints.get(name)
    except DataContextError:
        stored = None
    if stored is not None:
        want.id = stored.id
        if stored == want:
            return stored
    return ctx.checkpoints.add_or_update(want)


def _prune_history(ctx: Any, suite: str, keep: int) -> None:
    """Keep the ``keep`` newest stored results (and Data Docs pages) of ``suite``.

    Every run adds a result under ``gx/uncommitted/`` and the Data Docs index is rebuilt from
    all of them, so without pruning a gate gets slower with each run (measured here: 0.8 s
    warm, 1.7 s after 80 runs). Run folders are named by UTC run time, so names sort by age.
    """
    base = os.path.join(ctx.root_directory, "uncommitted")
    for tree in (
        os.path.join(base, "validations", suite),
        os.path.join(base, "data_docs", DOCS_SITE, "validations", suite),
    ):
        if not os.path.isdir(tree):
            continue
        runs = sorted(
            (run_time, os.path.join(tree, run_name, run_time))
            for run_name in os.listdir(tree)
            if os.path.isdir(os.path.join(tree, run_name))
            for run_time in os.listdir(os.path.join(tree, run_name))
        )
        for _, path in runs[: max(0, len(runs) - keep)]:
            shutil.rmtree(path, ignore_errors=True)


def _docs_path(ctx: Any, resource_identifier: Any) -> str | None:
    urls = ctx.get_docs_sites_urls(
        resource_identifier=resource_identifier, site_names=[DOCS_SITE], only_if_exists=False
    )
    for site in urls:
        url = site.get("site_url")
        if url:
            parsed = urlparse(url)
            return unquote(parsed.path) if parsed.scheme == "file" else url
    return None


# --- results --------------------------------------------------------------------------------


def _outcome(r: Any) -> ExpectationOutcome:
    cfg = r.expectation_config
    meta = cfg.meta or {}
    kwargs = {k: v for k, v in dict(cfg.kwargs).items() if k != "batch_id"}
    condition = kwargs.pop("row_condition", None)
    res = dict(r.result or {})
    column = kwargs.get("column")
    if column is None and kwargs.get("column_list"):
        column = ",".join(kwargs["column_list"])
    return ExpectationOutcome(
        key=str(meta.get("key", cfg.type)),
        expectation=cfg.type,
        column=column,
        severity=str(meta.get("severity", "error")),
        success=bool(r.success),
        unexpected_count=_int(res.get("unexpected_count")),
        element_count=_int(res.get("element_count")),
        unexpected_percent=_jsonable(res.get("unexpected_percent")),
        observed_value=_jsonable(res.get("observed_value")),
        row_condition=_condition_text(condition),
        kwargs=_jsonable(kwargs),
        partial_unexpected=_jsonable(list(res.get("partial_unexpected_list") or []))[
            :PARTIAL_UNEXPECTED
        ],
        exception=_exception_message(r.exception_info),
        details=_jsonable(res.get("details")),
        why=str(meta.get("why", "")),
    )


def _exception_message(info: Any) -> str | None:
    """The first exception message in GX's exception_info (flat, or keyed by metric id)."""
    if not isinstance(info, dict):
        return None
    candidates = [info, *[v for v in info.values() if isinstance(v, dict)]]
    for item in candidates:
        if item.get("raised_exception"):
            return str(item.get("exception_message") or "exception")
    return None


def _condition_text(condition: Any) -> str | None:
    if condition is None:
        return None
    if isinstance(condition, dict):
        from great_expectations.expectations.row_conditions import deserialize_row_condition

        condition = deserialize_row_condition(condition)
    return repr(condition)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _jsonable(value: Any) -> Any:
    """Plain JSON types only (numpy scalars, NaN, sets and enums appear in GX results)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, int | float):
        value = value.item()  # numpy scalar
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, int):
        return value
    return str(value)


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."
