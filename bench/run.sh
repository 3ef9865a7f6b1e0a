#!/usr/bin/env bash
# Run every benchmark in bench/. Each prints its figures as ratios against a baseline it
# measures in the same run (plain decode of the same files, or a peer tool on the same files).
set -euo pipefail
cd "$(dirname "$0")/.."
for script in bench/bench_*.py; do
  echo "==> $script"
  python "$script" "$@"
  echo
done
