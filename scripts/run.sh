#!/usr/bin/env bash
# `make run`: JupyterLab with pipenb's server inside it (SQLite in .pipenb/), and one local agent
# named `local` with the label `local`, opening on notebooks/quickstart.ipynb. Ctrl-C stops both.
# The agent enrolls with a one-use enrollment token carrying the label (agents cannot choose
# their labels), made through the API with Jupyter's token; the next run reuses its identity.
#
# The tests start JupyterLab through this same script; these variables let them (and you) move it:
#   PIPENB_JUPYTER_PORT   port (default 8888)
#   PIPENB_STATE          directory for the SQLite file and the agent's data (default .pipenb)
#   PIPENB_JUPYTER_TOKEN  Jupyter's token (default: a fresh one, printed in Jupyter's URLs)
#   PIPENB_NO_BROWSER=1   don't open a browser (the default where there is no display)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/.venv/bin
STATE=${PIPENB_STATE:-.pipenb}
PORT=${PIPENB_JUPYTER_PORT:-8888}
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
JTOKEN=${PIPENB_JUPYTER_TOKEN:-$("$BIN/python" -c 'import secrets; print(secrets.token_hex(24))')}
# the JupyterLab extension built in this checkout (`make build-lab`), found where it is, so an
# editable install needs no `jupyter labextension develop`; a wheel installs it in share/jupyter
if [ -f pipenb/labextension/package.json ]; then
    mkdir -p "$STATE/jupyter-data/labextensions"
    ln -sfn "$PWD/pipenb/labextension" "$STATE/jupyter-data/labextensions/pipenb"
    export JUPYTER_PATH="$STATE/jupyter-data${JUPYTER_PATH:+:$JUPYTER_PATH}"
fi
START=notebooks
WHEEL=$(ls -t dist/pipenb_fleet-*-py3-none-any.whl 2>/dev/null | head -n 1 || true)
[ -f notebooks/quickstart.ipynb ] && START=notebooks/quickstart.ipynb

ARGS=()
[ "$(id -u)" = 0 ] && ARGS+=(--allow-root)  # containers and CI machines run as root
ARGS+=(--IdentityProvider.token="$JTOKEN")  # the script needs it too, to make the agent's token
[ -n "$WHEEL" ] && ARGS+=(--PipenbExtension.wheel="$PWD/$WHEEL")  # for %pipe add-agent
if [ -n "${PIPENB_NO_BROWSER:-}" ] || { [ -z "${DISPLAY:-}" ] && [ "$(uname)" != Darwin ]; }; then
    ARGS+=(--no-browser)
fi

"$BIN/jupyter" lab "${ARGS[@]}" --ServerApp.ip=127.0.0.1 --ServerApp.port="$PORT" \
    --ServerApp.port_retries=0 \
    --PipenbExtension.db_url="sqlite:///$STATE/pipenb.db" \
    --LabApp.default_url="/lab/tree/$START" &
LAB=$!
AGENT=""
stop() {
    trap - INT TERM EXIT
    [ -n "$AGENT" ] && kill -TERM "$AGENT" 2>/dev/null || true
    kill -TERM "$LAB" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap stop INT TERM EXIT

# wait for the API (60 s at most), then start the agent
"$BIN/python" - "$PORT" "$LAB" <<'PY' || exit 1
import os, sys, time, urllib.request
port, lab = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/pipenb/api/v1/health", timeout=2)
        sys.exit(0)
    except OSError:
        try:
            os.kill(lab, 0)
        except OSError:
            sys.exit("pipenb: JupyterLab did not start (see its messages above)")
        time.sleep(0.2)
sys.exit("pipenb: JupyterLab's pipenb API did not answer within 60 s")
PY
# the local agent's policy, for the tutorials: read logs, the temp dir and the repo's examples,
# write in the temp dir, run previews on its data; exec and scripts stay off (docs/agent.md#policy)
ENROLL=()
if [ ! -f "$STATE/agent/identity.json" ]; then  # first run: a one-use token with the label
    ENROLL_TOKEN=$(PIPENB_TOKEN="$JTOKEN" "$BIN/pipenb" enroll-tokens create --json \
        --url "http://127.0.0.1:$PORT" --labels local --uses 1 --expires 10m --name "make run" |
        "$BIN/python" -c 'import json, sys; print(json.load(sys.stdin)["token"])')
    ENROLL=(--enroll-key="$ENROLL_TOKEN")
fi
"$BIN/pipenb" agent --server "http://127.0.0.1:$PORT" ${ENROLL[@]+"${ENROLL[@]}"} --name local \
    --data-dir "$STATE/agent" --metrics-every 2 \
    --allow-read "/var/log/**,/tmp/**,$PWD/examples/**" --allow-write /tmp --allow-preview &
AGENT=$!
echo "pipenb: JupyterLab on http://127.0.0.1:$PORT/lab?token=$JTOKEN, agent 'local' (label local) started"
wait "$LAB"
