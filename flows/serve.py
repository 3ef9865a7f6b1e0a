"""Serve the deployments of prefect.yaml from this process: scheduling on one machine, with no
work pool and no worker (``visionloop serve``).

The schedules, parameters and descriptions are read from prefect.yaml, so the cron lines live in
one place whether the flows run under a worker (``prefect deploy --all``) or served here.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import yaml


def load_deployments(prefect_yaml: str | Path = "prefect.yaml") -> list[dict[str, Any]]:
    doc = yaml.safe_load(Path(prefect_yaml).read_text()) or {}
    return list(doc.get("deployments") or [])


def entrypoint_flow(entrypoint: str) -> Any:
    """``flows/refresh.py:refresh`` -> the flow object (imported as ``flows.refresh``)."""
    path, name = entrypoint.split(":")
    module = path[: -len(".py")] if path.endswith(".py") else path
    return getattr(importlib.import_module(module.replace("/", ".")), name)


def runner_deployments(
    prefect_yaml: str | Path = "prefect.yaml", only: tuple[str, ...] = ()
) -> list[Any]:
    """A ``RunnerDeployment`` per prefect.yaml deployment (``only``: by name), schedules and
    parameters as declared there."""
    from prefect.schedules import Cron, Interval

    out = []
    names = []
    for d in load_deployments(prefect_yaml):
        names.append(d["name"])
        if only and d["name"] not in only:
            continue
        schedules = []
        for s in d.get("schedules") or []:
            if "cron" in s:
                schedules.append(Cron(s["cron"], timezone=s.get("timezone", "UTC")))
            elif "interval" in s:
                schedules.append(Interval(s["interval"], timezone=s.get("timezone", "UTC")))
        flow = entrypoint_flow(d["entrypoint"])
        out.append(
            flow.to_deployment(
                name=d["name"],
                schedules=schedules,
                parameters=d.get("parameters") or {},
                description=d.get("description"),
                tags=d.get("tags"),
            )
        )
    missing = sorted(set(only) - set(names))
    if missing:
        raise KeyError(f"no deployment {missing} in {prefect_yaml}; known: {names}")
    return out


def serve(prefect_yaml: str | Path = "prefect.yaml", only: tuple[str, ...] = ()) -> None:
    """Register the deployments and run their schedules here until interrupted."""
    from prefect import serve as prefect_serve

    prefect_serve(*runner_deployments(prefect_yaml, only))
