#!/usr/bin/env bash
# Stepline at team scale, on Prefect's own machinery: a Prefect server on loopback, a
# process work pool, the deployments of prefect.yaml, and N workers, all sharing one
# PostgreSQL store and the models' rate limits (held by the server as global
# concurrency limits). README, "Running at team scale", explains each step.
#
#   export STEPLINE_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/stepline
#   uv run bash deploy/team.sh up        # server, pool, deployments, workers
#   uv run bash deploy/team.sh status    # which processes are alive, what is deployed
#   uv run bash deploy/team.sh down      # stop the workers, then the server
#
# Settings, from the environment:
#   STEPLINE_DATABASE_URL   required: the shared store (PostgreSQL; SQLite is per machine)
#   STEPLINE_TEAM_DIR       pid files and logs (default: .team in the project root)
#   STEPLINE_TEAM_WORKERS   how many workers to start (default 2)
#   STEPLINE_TEAM_WORKER_LIMIT  flow runs each worker runs at once (default 2)
#   STEPLINE_TEAM_DEPLOY    deployments of prefect.yaml to deploy: "all" (default) or
#                           their names, e.g. "submitted contract-inbox"
#   PREFECT_PORT            the server's port on 127.0.0.1 (default 4200)
#   PREFECT_API_DATABASE_CONNECTION_URL
#                           the Prefect server's own database (default: SQLite in
#                           PREFECT_HOME); postgresql+asyncpg://... for a busy team
# Everything else (STEPLINE_CONFIG, API keys, PREFECT_*) is passed on to the workers,
# whose flow runs inherit it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TEAM_DIR="${STEPLINE_TEAM_DIR:-$ROOT/.team}"
PORT="${PREFECT_PORT:-4200}"
WORKERS="${STEPLINE_TEAM_WORKERS:-2}"
LIMIT="${STEPLINE_TEAM_WORKER_LIMIT:-2}"
POOL="stepline" # prefect.yaml deploys to this pool (flows/schedules.py: WORK_POOL)
export PREFECT_API_URL="http://127.0.0.1:${PORT}/api"
export STEPLINE_SHARED_LIMITS="${STEPLINE_SHARED_LIMITS:-true}"
export PREFECT_SERVER_ANALYTICS_ENABLED="${PREFECT_SERVER_ANALYTICS_ENABLED:-false}"
export DO_NOT_TRACK="${DO_NOT_TRACK:-1}"

say() { printf 'team: %s\n' "$*" >&2; }
die() {
    printf 'team: error: %s\n' "$*" >&2
    exit 2
}


# Start a command in its own process group, so `down` (or a test) stops it with its children.
start() {
    local name="$1"
    shift
    setsid "$@" >"$TEAM_DIR/$name.log" 2>&1 </dev/null &
    echo $! >"$TEAM_DIR/$name.pid"
    say "$name started (pid $!, log $TEAM_DIR/$name.log)"
}

# Alive, and still the process we started (a pid file outliving a reboot names someone else).
alive() {
    local pid
    [[ -f "$TEAM_DIR/$1.pid" ]] || return 1
    pid="$(cat "$TEAM_DIR/$1.pid")"
    kill -0 "$pid" 2>/dev/null && grep -q prefect "/proc/$pid/cmdline" 2>/dev/null
}

wait_healthy() {
    local deadline=$((SECONDS + 180))
    until python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" \
        "$PREFECT_API_URL/health" 2>/dev/null; do
        alive server || die "the Prefect server exited; see $TEAM_DIR/server.log"
        ((SECONDS < deadline)) || die "the Prefect server did not answer within 180 s; see $TEAM_DIR/server.log"
        sleep 1
    done
}

need_prefect() {
    command -v prefect >/dev/null || die "prefect is not on PATH; run this as \`uv run bash deploy/team.sh ...\`"
}

up() {
    need_prefect
    case "${STEPLINE_DATABASE_URL:-}" in
    postgresql*) ;;
    "") die "set STEPLINE_DATABASE_URL to the shared PostgreSQL store, e.g. postgresql+psycopg://postgres@127.0.0.1:5432/stepline" ;;
    *) die "STEPLINE_DATABASE_URL must be PostgreSQL for workers to share it (got ${STEPLINE_DATABASE_URL%%:*}://...)" ;;
    esac
    mkdir -p "$TEAM_DIR"

    # 1. The Prefect server: the API the workers poll and the limits they share.
    if alive server; then
        say "server already running (pid $(cat "$TEAM_DIR/server.pid"))"
    else
        start server prefect server start --host 127.0.0.1 --port "$PORT"
    fi
    wait_healthy
    say "Prefect API at $PREFECT_API_URL"

    # 2. Stepline's store: migrate once here rather than racing from each first flow run.
    stepline instances --limit 1 >/dev/null

    # 3. The process work pool, and the deployments of prefect.yaml on it; the schedules'
    #    watched folders are created as `stepline serve` creates them (relative to here).
    python - <<'PY'
from steps.settings import load_settings

for config in load_settings().schedules.values():
    if config.input_dir is not None:
        config.input_dir.mkdir(parents=True, exist_ok=True)
PY
    prefect work-pool inspect "$POOL" >/dev/null 2>&1 || prefect work-pool create "$POOL" --type process
    if [[ "${STEPLINE_TEAM_DEPLOY:-all}" == all ]]; then
        prefect --no-prompt deploy --all
    else
        local names=()
        for name in $STEPLINE_TEAM_DEPLOY; do names+=(--name "$name"); done
        prefect --no-prompt deploy "${names[@]}"
    fi

    # 4. The workers: each polls the pool and runs a flow run in a process of its own.
    for i in $(seq 1 "$WORKERS"); do
        if alive "worker-$i"; then
            say "worker-$i already running"
            continue
        fi
        start "worker-$i" prefect worker start --pool "$POOL" --name "$(hostname)-$i" --limit "$LIMIT"
    done
    say "up: submit work with \`stepline submit <workflow> --input <folder|file.jsonl>\`" \
        "(PREFECT_API_URL=$PREFECT_API_URL)"
}

status() {
    local name
    for pidfile in "$TEAM_DIR"/*.pid; do
        [[ -e "$pidfile" ]] || {
            say "nothing started from $TEAM_DIR"
            return
        }
        name="$(basename "$pidfile" .pid)"
        if alive "$name"; then say "$name: running (pid $(cat "$pidfile"))"; else say "$name: stopped"; fi
    done
    if alive server; then
        need_prefect
        prefect deployment ls
        prefect work-pool ls
    fi
}

any_alive() {
    local p
    for p in "$@"; do kill -0 "$p" 2>/dev/null && return 0; done
    return 1
}

stop() {
    local name="$1" pid
    alive "$name" || {
        rm -f "$TEAM_DIR/$name.pid"
        return 0
    }
    pid="$(cat "$TEAM_DIR/$name.pid")"
    # A worker starts each flow run in a session of its own: stop those too, and give them
    # Prefect's 30 s to pause their instances before anything is killed.
    local runs
    runs="$(pgrep -P "$pid" || true)"
    kill -TERM -- "-$pid" $runs 2>/dev/null || true
    for _ in $(seq 1 80); do
        any_alive "$pid" $runs || break
        sleep 0.5
    done
    kill -KILL -- "-$pid" $runs 2>/dev/null || true
    rm -f "$TEAM_DIR/$name.pid"
    say "$name stopped"
}

down() {
    for pidfile in "$TEAM_DIR"/worker-*.pid; do
        [[ -e "$pidfile" ]] && stop "$(basename "$pidfile" .pid)"
    done
    stop server
}

case "${1:-}" in
up) up ;;
status) status ;;
down) down ;;
*)
    echo "usage: bash deploy/team.sh up|status|down   (see the comments at the top)" >&2
    exit 2
    ;;
esac
