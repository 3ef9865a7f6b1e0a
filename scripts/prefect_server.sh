#!/usr/bin/env bash
# Start (or stop) a local Prefect server on SQLite, unless PREFECT_API_URL already answers.
# Usage: scripts/prefect_server.sh start|stop|url     Prints the API URL on success.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${PREFECT_PORT:-4200}"
HOST=127.0.0.1
export PREFECT_HOME="${PREFECT_HOME:-$PWD/.prefect}"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
PIDFILE="$PREFECT_HOME/server.pid"
LOG="$PREFECT_HOME/server.log"

healthy() { curl -fsS -m 5 "$1/health" >/dev/null 2>&1; }

case "${1:-start}" in
  start)
    if [ -n "${PREFECT_API_URL:-}" ] && healthy "$PREFECT_API_URL"; then
      echo "$PREFECT_API_URL"; exit 0
    fi
    URL="http://$HOST:$PORT/api"
    if healthy "$URL"; then echo "$URL"; exit 0; fi
    mkdir -p "$PREFECT_HOME"
    nohup prefect server start --host "$HOST" --port "$PORT" >"$LOG" 2>&1 &
    echo $! >"$PIDFILE"
    for _ in $(seq 1 180); do
      if healthy "$URL"; then echo "$URL"; exit 0; fi
      if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
        echo "Prefect server exited; see $LOG" >&2; tail -20 "$LOG" >&2; exit 1
      fi
      sleep 1
    done
    echo "Prefect server did not answer on $URL within 180 s; see $LOG" >&2; exit 1
    ;;
  stop)
    if [ -f "$PIDFILE" ]; then kill "$(cat "$PIDFILE")" 2>/dev/null || true; rm -f "$PIDFILE"; fi
    ;;
  url)
    echo "http://$HOST:$PORT/api"
    ;;
  *) echo "usage: $0 start|stop|url" >&2; exit 2 ;;
esac
