#!/usr/bin/env bash
# A real `mlflow server` on this machine: PostgreSQL backend store (.ci/postgres.sh), artifacts proxied
# through the server (--serve-artifacts --artifacts-destination: clients need no shared disk), bound to
# 127.0.0.1 only.
#
#   bash .ci/server.sh start    (`make server`)       then: convlab tracking=server
#   bash .ci/server.sh stop     (`make server-stop`)  stops what `start` started, by pid, nothing else
#   bash .ci/server.sh status
#
# Settings (environment): CONVLAB_SERVER_PORT (5000), CONVLAB_SERVER_HOST (127.0.0.1),
# CONVLAB_SERVER_WORKERS (2), CONVLAB_SERVER_HOME (~/.local/state/convlab-server: pid, log, pgpass,
# artifacts), VENV (.venv).
# Another database or artifact store (a managed PostgreSQL, S3/MinIO): CONVLAB_BACKEND_STORE_URI
# (postgresql+psycopg://USER@HOST:PORT/DB; its password in PGPASSFILE, never in the URI) and
# CONVLAB_ARTIFACTS_DESTINATION (s3://BUCKET/PATH, with MLFLOW_S3_ENDPOINT_URL and AWS_* from the environment).
set -euo pipefail
cd "$(dirname "$0")/.."

STATE="${CONVLAB_SERVER_HOME:-${XDG_STATE_HOME:-$HOME/.local/state}/convlab-server}"
export CONVLAB_SERVER_HOME="$STATE"
HOST="${CONVLAB_SERVER_HOST:-127.0.0.1}"
PORT="${CONVLAB_SERVER_PORT:-5000}"
WORKERS="${CONVLAB_SERVER_WORKERS:-2}"
MLFLOW="${VENV:-.venv}/bin/mlflow"
PIDFILE="$STATE/mlflow.pid"
LOG="$STATE/mlflow.log"
URI="http://$HOST:$PORT"

say() { echo "[server] $*" >&2; }
# the pid in our pid file, still alive and still an mlflow server (not a stale pid reused by something else)
running() { [ -s "$PIDFILE" ] && tr '\0' ' ' <"/proc/$(cat "$PIDFILE")/cmdline" 2>/dev/null | grep -q "mlflow server"; }
healthy() { "${VENV:-.venv}/bin/python" - "$URI" <<'PY'
import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen(sys.argv[1] + "/health", timeout=2).status == 200 else 1)
except OSError:
    sys.exit(1)
PY
}

start() {
    if running; then
        say "already running (pid $(cat "$PIDFILE")) on $(cat "$STATE/mlflow.uri" 2>/dev/null || echo "$URI")"
        return
    fi
    local backend="${CONVLAB_BACKEND_STORE_URI:-}"
    if [ -z "$backend" ]; then
        bash .ci/postgres.sh start
        backend=$(cat "$STATE/backend-uri")
    fi
    local artifacts="${CONVLAB_ARTIFACTS_DESTINATION:-$STATE/artifacts}"
    case "$artifacts" in *://*) ;; *) mkdir -p "$artifacts" ;; esac
    : >"$LOG"
    # its own session: `stop` ends the whole process group (mlflow + its uvicorn workers) by that id.
    # MLflow 3's job execution (huey consumers for GenAI scorers, trace archival) is of no use here.
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}" \
    PGPASSFILE="${PGPASSFILE:-$STATE/pgpass}" setsid "$MLFLOW" server \
        --backend-store-uri "$backend" \
        --serve-artifacts --artifacts-destination "$artifacts" \
        --host "$HOST" --port "$PORT" --workers "$WORKERS" \
        >>"$LOG" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    echo "$URI" >"$STATE/mlflow.uri"
    # the first start creates MLflow's tables in PostgreSQL (migrations): allow a minute
    for _ in $(seq 1 120); do
        if healthy; then
            say "MLflow tracking server on $URI (pid $(cat "$PIDFILE"), log $LOG)"
            say "use it: convlab tracking=server   (or MLFLOW_TRACKING_URI=$URI)"
            return
        fi
        if ! running; then
            say "mlflow server exited; the end of $LOG:"
            tail -n 30 "$LOG" >&2
            rm -f "$PIDFILE"
            exit 1
        fi
        sleep 0.5
    done
    say "no answer from $URI after 60 s; see $LOG"
    exit 1
}

stop() {
    if running; then
        local pid
        pid=$(cat "$PIDFILE")
        say "stopping mlflow server (process group $pid)"
        kill -TERM -- "-$pid" 2>/dev/null || true
        for _ in $(seq 1 40); do
            kill -0 -- "-$pid" 2>/dev/null || break
            sleep 0.25
        done
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$PIDFILE" "$STATE/mlflow.uri"
    bash .ci/postgres.sh stop
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    status) if running; then say "running (pid $(cat "$PIDFILE")) on $(cat "$STATE/mlflow.uri")"; else say "not running"; exit 1; fi ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
