#!/usr/bin/env bash
# `make run`: JupyterLab with pipenb's server inside it (SQLite in .pipenb/), and one local agent
# enrolled with a fresh key. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
STATE=.pipenb
PORT=${PIPENB_JUPYTER_PORT:-8888}
mkdir -p "$STATE"
KEY=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
START=notebooks
[ -f notebooks/quickstart.ipynb ] && START=notebooks/quickstart.ipynb

ROOT=()
[ "$(id -u)" = 0 ] && ROOT=(--allow-root)  # containers and CI machines run as root
"$BIN/jupyter" lab "${ROOT[@]}" --no-browser --ServerApp.port="$PORT" --ServerApp.port_retries=0 \
    --PipenbExtension.db_url="sqlite:///$PWD/$STATE/pipenb.db" \
    --PipenbExtension.enroll_key="$KEY" \
    --LabApp.default_url="/lab/tree/$START" &
LAB=$!
AGENT=""
stop() {
    [ -n "$AGENT" ] && kill -TERM "$AGENT" 2>/dev/null || true
    kill -TERM "$LAB" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap stop INT TERM EXIT

for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$PORT/pipenb/api/v1/health" >/dev/null 2>&1 && break
    sleep 0.2
done
"$BIN/pipenb" agent --server "http://127.0.0.1:$PORT" --enroll-key="$KEY" --id local \
    --name local --labels local --data-dir "$STATE/agent" &
AGENT=$!
echo "pipenb: JupyterLab on http://127.0.0.1:$PORT (token in the lines above), agent 'local' enrolled"
wait "$LAB"
