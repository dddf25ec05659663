#!/bin/sh
# Installs a pipenb agent on this host. A pipenb server serves this script
# (GET /pipenb/api/v1/agent/install.sh) and its own wheel (GET .../agent/wheel);
# `pipenb agents install-command` prints the line that runs it. The script holds no
# secret: the server's URL, the enrollment token and the pins arrive as arguments.
#
# What it does: downloads the server's wheel (over TLS with the server's key pinned
# when the URL is https), checks its SHA-256, makes a venv in --prefix, installs the
# wheel (its dependencies come from this host's configured package index), writes
# PREFIX/agent.env (0600) and PREFIX/run-agent, then either writes and starts the
# systemd unit pipenb-agent.service (user pipenb-agent, hardened), or, with
# --no-service, runs the agent in the foreground as the current user.
set -eu

VERSION='@@VERSION@@'
WHEEL_FILE='@@WHEEL_FILE@@'
API=/pipenb/api/v1
UNIT=pipenb-agent.service

SERVER=
TOKEN=
NAME=
PREFIX=/opt/pipenb-agent
DATA_DIR=
SERVICE=yes
START=yes
PRINT_UNIT=no
WHEEL_SHA256=
PIN=
CA_FINGERPRINT=
INSECURE_HTTP=no
AGENT_USER=pipenb-agent
RW_PATHS=
PYTHON=python3
PIP_ARGS=

usage() {
    cat <<'EOF'
usage: sh install.sh --server URL --wheel-sha256 HEX [options]

  --server URL          the pipenb server (http://127.0.0.1:8765, https://pipenb.example:8765)
  --wheel-sha256 HEX    the SHA-256 the downloaded wheel must have
  --token T             the enrollment token (or the server's --enroll-key)
  --name NAME           the agent's display name (default: the server's choice)
  --prefix DIR          the venv and the agent's settings (default /opt/pipenb-agent)
  --data-dir DIR        identity, checkpoints, logs (default /var/lib/pipenb-agent,
                        or PREFIX/data with --no-service)
  --pin sha256//B64     the server's TLS public key (curl --pinnedpubkey) for the downloads
  --ca-fingerprint HEX  passed to the agent: the SHA-256 of the server's CA certificate
  --insecure-http       allow an http:// server that is not on this host (not recommended)
  --no-service          no systemd unit, no user: run the agent in the foreground here
  --no-start            install and configure only; start nothing
  --user NAME           the service's user (default pipenb-agent)
  --rw-path DIR         another directory the service may write (pipe outputs); repeatable
  --python PY           the Python that makes the venv (default python3; 3.10 or newer)
  --pip-args "ARGS"     extra arguments for pip, e.g. "--index-url https://mirror/simple"
  --print-unit          print the systemd unit this would write, and stop
EOF
}

die() { echo "pipenb install: $*" >&2; exit 1; }
say() { echo "pipenb install: $*" >&2; }

# Every value lands in an environment file and a unit file: only characters that need no
# quoting in either are accepted, so nothing given here can add a line or a setting.
check() { # WHAT VALUE ALLOWED-CHARACTERS
    case "$2" in
        *[!$3]*) die "$1: '$2' has a character outside [$3]" ;;
    esac
}

need() { [ $# -ge 2 ] || die "$1 needs a value (see --help)"; }

unit() {
    cat <<EOF
# pipenb agent, written by pipenb's install.sh (pipenb $VERSION)
[Unit]
Description=pipenb agent: runs the pipes its server assigns
After=network-online.target
Wants=network-online.target

[Service]
Type=exec
User=$AGENT_USER
Group=$AGENT_USER
EnvironmentFile=$PREFIX/agent.env
ExecStart=$PREFIX/bin/pipenb agent
Restart=on-failure
RestartSec=5
# exit 3: the server removed this agent or refuses its key; restarting would not help
RestartPreventExitStatus=3
# SIGTERM to the agent only: it drains its workers and saves their checkpoints
KillMode=mixed
TimeoutStopSec=60
UMask=0077
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths=$DATA_DIR$RW_PATHS
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
CapabilityBoundingSet=
AmbientCapabilities=
SystemCallArchitectures=native
SystemCallFilter=@system-service

[Install]
WantedBy=multi-user.target
EOF
}

write_env() { # with-token: yes|no
    umask 077
    {
        echo "# pipenb agent settings (pipenb agent reads PIPENB_* variables)"
        echo "PIPENB_SERVER=$SERVER"
        echo "PIPENB_DATA_DIR=$DATA_DIR"
        if [ "$1" = yes ] && [ -n "$TOKEN" ]; then echo "PIPENB_ENROLL_KEY=$TOKEN"; fi
        if [ -n "$NAME" ]; then echo "PIPENB_NAME=$NAME"; fi
        if [ -n "$CA_FINGERPRINT" ]; then echo "PIPENB_CA_FINGERPRINT=$CA_FINGERPRINT"; fi
        if [ "$INSECURE_HTTP" = yes ]; then echo "PIPENB_INSECURE_HTTP=1"; fi
    } >"$PREFIX/agent.env.tmp"
    mv "$PREFIX/agent.env.tmp" "$PREFIX/agent.env"
}

# Everything runs from main, called on the last line: a download cut short runs nothing.
main() {
    while [ $# -gt 0 ]; do
        case "$1" in
            --server) need "$@"; SERVER=$2; shift 2 ;;
            --token) need "$@"; TOKEN=$2; shift 2 ;;
            --name) need "$@"; NAME=$2; shift 2 ;;
            --prefix) need "$@"; PREFIX=$2; shift 2 ;;
            --data-dir) need "$@"; DATA_DIR=$2; shift 2 ;;
            --wheel-sha256) need "$@"; WHEEL_SHA256=$2; shift 2 ;;
            --pin) need "$@"; PIN=$2; shift 2 ;;
            --ca-fingerprint) need "$@"; CA_FINGERPRINT=$2; shift 2 ;;
            --insecure-http) INSECURE_HTTP=yes; shift ;;
            --no-service) SERVICE=no; shift ;;
            --no-start) START=no; shift ;;
            --user) need "$@"; AGENT_USER=$2; shift 2 ;;
            --rw-path) need "$@"; RW_PATHS="$RW_PATHS $2"; shift 2 ;;
            --python) need "$@"; PYTHON=$2; shift 2 ;;
            --pip-args) need "$@"; PIP_ARGS=$2; shift 2 ;;
            --print-unit) PRINT_UNIT=yes; shift ;;
            -h|--help) usage; exit 0 ;;
            *) die "unknown option $1 (see --help)" ;;
        esac
    done

    ALNUM=A-Za-z0-9
    [ -n "$SERVER" ] || die "--server URL is required"
    check --server "$SERVER" "$ALNUM._:/%-"
    SERVER=${SERVER%/}
    case "$SERVER" in
        https://*) ;;
        http://127.*|http://localhost|http://localhost:*) ;;
        http://*)
            [ "$INSECURE_HTTP" = yes ] || die "--server $SERVER: plain http to another host sends the enrollment token and the agent's key in clear; use https (or add --insecure-http)" ;;
        *) die "--server $SERVER: give an http:// or https:// URL" ;;
    esac
    check --token "$TOKEN" "$ALNUM._~+/=-"
    check --name "$NAME" "$ALNUM._-"
    check --prefix "$PREFIX" "$ALNUM._/-"
    check --user "$AGENT_USER" "$ALNUM._-"
    check --rw-path "$RW_PATHS" "$ALNUM._/ -"
    check --pin "$PIN" "$ALNUM+/=:"
    check --ca-fingerprint "$CA_FINGERPRINT" "${ALNUM}:"
    case "$PREFIX" in /*) ;; *) die "--prefix $PREFIX: give an absolute path" ;; esac
    if [ -z "$DATA_DIR" ]; then
        if [ "$SERVICE" = yes ]; then DATA_DIR=/var/lib/pipenb-agent; else DATA_DIR=$PREFIX/data; fi
    fi
    check --data-dir "$DATA_DIR" "$ALNUM._/-"
    case "$DATA_DIR" in /*) ;; *) die "--data-dir $DATA_DIR: give an absolute path" ;; esac
    case "$PIN" in ""|sha256//*) ;; *) die "--pin: give sha256//BASE64 (curl --pinnedpubkey)" ;; esac

    if [ "$PRINT_UNIT" = yes ]; then
        unit
        exit 0
    fi

    # ------------------------------------------------------------------ checks before any change
    [ -n "$WHEEL_SHA256" ] || die "--wheel-sha256 is required (the line that \`pipenb agents install-command\` prints carries it)"
    check --wheel-sha256 "$WHEEL_SHA256" "0-9a-f"
    [ ${#WHEEL_SHA256} -eq 64 ] || die "--wheel-sha256: give 64 hex digits"
    command -v curl >/dev/null || die "curl is needed"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null \
        || die "$PYTHON: Python 3.10 or newer is needed (--python PY)"
    if [ "$SERVICE" = yes ]; then
        [ "$(id -u)" = 0 ] || die "installing the service needs root: pipe the line into 'sudo sh -s -- ...', or add --no-service"
        command -v systemctl >/dev/null || die "no systemctl on this host: add --no-service and run $PREFIX/run-agent under your own supervisor"
    fi

    # ------------------------------------------------------------------ the wheel
    TMP=$(mktemp -d)
    trap 'rm -rf "$TMP"' EXIT
    set -- -fsS --retry 3 --connect-timeout 10
    case "$SERVER" in
        https://*)
            set -- "$@" --proto =https
            # a private CA is not in this host's trust store yet: pin the server's key instead
            [ -z "$PIN" ] || set -- "$@" --insecure --pinnedpubkey "$PIN" ;;
    esac
    say "downloading pipenb $VERSION from $SERVER"
    curl "$@" -o "$TMP/$WHEEL_FILE" "$SERVER$API/agent/wheel" || die "cannot download the wheel from $SERVER$API/agent/wheel"
    GOT=$("$PYTHON" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$TMP/$WHEEL_FILE")
    [ "$GOT" = "$WHEEL_SHA256" ] || die "the wheel's SHA-256 is $GOT, not $WHEEL_SHA256: not installing it (was it replaced on the way, or the server's wheel since?)"

    # ------------------------------------------------------------------ the venv
    if [ ! -x "$PREFIX/bin/python" ]; then
        say "making a venv in $PREFIX"
        "$PYTHON" -m venv "$PREFIX" || die "cannot make a venv in $PREFIX (Debian and Ubuntu: apt-get install python3-venv)"
    fi
    say "installing $WHEEL_FILE (its dependencies from this host's package index)"
    # shellcheck disable=SC2086 # PIP_ARGS are words for pip
    "$PREFIX/bin/python" -m pip install --quiet --disable-pip-version-check $PIP_ARGS \
        "$TMP/$WHEEL_FILE" || die "pip could not install the wheel or its dependencies"
    # the same version again (a reinstall): the downloaded wheel wins over what is installed
    "$PREFIX/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
        --force-reinstall "$TMP/$WHEEL_FILE" >/dev/null

    # ------------------------------------------------------------------ settings
    write_env yes
    cat >"$PREFIX/run-agent" <<EOF
#!/bin/sh
# Runs the pipenb agent with the settings in agent.env (written by pipenb's install.sh).
set -a
. "$PREFIX/agent.env"
set +a
exec "$PREFIX/bin/pipenb" agent "\$@"
EOF
    chmod 0755 "$PREFIX/run-agent"

    # ------------------------------------------------------------------ run it
    if [ "$SERVICE" = no ]; then
        mkdir -p "$DATA_DIR"
        chmod 0700 "$DATA_DIR"
        if [ "$START" = no ]; then
            say "installed in $PREFIX; start the agent with $PREFIX/run-agent"
            exit 0
        fi
        say "installed in $PREFIX; running the agent in the foreground (Ctrl-C stops it)"
        rm -rf "$TMP"
        trap - EXIT
        exec "$PREFIX/run-agent"
    fi

    getent passwd "$AGENT_USER" >/dev/null || useradd --system --user-group --no-create-home \
        --home-dir "$DATA_DIR" --shell /usr/sbin/nologin "$AGENT_USER"
    install -d -m 0700 -o "$AGENT_USER" -g "$AGENT_USER" "$DATA_DIR"
    unit >"/etc/systemd/system/$UNIT.tmp"
    chmod 0644 "/etc/systemd/system/$UNIT.tmp"
    mv "/etc/systemd/system/$UNIT.tmp" "/etc/systemd/system/$UNIT"
    systemctl daemon-reload
    if [ "$START" = no ]; then
        say "installed; start it with: systemctl enable --now $UNIT"
        exit 0
    fi
    systemctl enable --quiet "$UNIT"
    systemctl restart "$UNIT"
    if [ -n "$TOKEN" ] && [ ! -f "$DATA_DIR/identity.json" ]; then
        say "waiting for the agent to enroll"
        i=0
        while [ ! -f "$DATA_DIR/identity.json" ]; do
            i=$((i + 1))
            [ $i -le 60 ] || die "the agent has not enrolled within 60 s: journalctl -u $UNIT"
            sleep 1
        done
    fi
    # enrolled: the token is not needed any more, keep it out of the host's files
    write_env no
    say "pipenb agent $VERSION is running: systemctl status $UNIT; journalctl -u $UNIT"
}

main "$@"
