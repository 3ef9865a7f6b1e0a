#!/usr/bin/env bash
# The whole pipeline on the bundled sample data: local storage, a local DVC remote and a local
# Prefect server on SQLite. Ends with the snapshot tag, the counts and where to look.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> Prefect server"
PREFECT_API_URL="$(bash scripts/prefect_server.sh start)"
export PREFECT_API_URL

if [ ! -d data/source/images ]; then
  echo "==> Building the sample dataset in data/source"
  visionloop sample data/source >/dev/null
fi

if [ -z "$(dvc remote list)" ]; then
  echo "==> DVC remote: a local directory, .dvc-storage (config.local, not committed)"
  dvc remote add --local -d demo "$PWD/.dvc-storage"
fi

echo "==> Running the pipeline flow"
start=$(date +%s%N)
visionloop run
end=$(date +%s%N)

tag="$(git describe --tags --abbrev=0 --match 'dataset-v*' 2>/dev/null || echo none)"
echo
echo "==> Snapshot: $tag   (pipeline flow: $(( (end - start) / 1000000 )) ms)"
visionloop status
ui="${PREFECT_API_URL%/api}"
echo
echo "Where to look:"
echo "  Prefect UI (flow runs, artifacts): $ui"
echo "  Great Expectations Data Docs:      $PWD/gx/uncommitted/data_docs/local_site/index.html"
echo "  Run report:                        $PWD/data/report/index.html"
echo "  Rebuild without Prefect:           .venv/bin/dvc repro   (then: dvc status)"
echo "  Stop the Prefect server:           make stop-server"
