#!/usr/bin/env bash
# Debian's syslog peers for tests/e2e/test_syslog_peers.py (and the other peer tests): rsyslog and
# util-linux's logger (bsdutils), and prometheus (tests/server/test_prometheus.py), each run by the tests
# with their own config file on loopback.
# syslog-ng conflicts with rsyslog as a package, so its .deb (syslog-ng-core, libivykis0) is
# unpacked with dpkg -x into $PIPENB_PEERS_DIR (default ~/.cache/pipenb-peers/syslog-ng) and run
# from there by the tests; its shared libraries that do not conflict are installed normally.
#
# Installs what is missing when this runs as root with apt-get; otherwise it only says which
# tests will be skipped. Never fails the build: the tests report a skip with the reason.
set -uo pipefail

note() { echo "peers-test: $*" >&2; }

SNG_DIR="${PIPENB_PEERS_DIR:-$HOME/.cache/pipenb-peers}/syslog-ng"
missing=()
[ -x /usr/sbin/rsyslogd ] || missing+=(rsyslog)
command -v logger >/dev/null 2>&1 || missing+=(bsdutils)
[ -x /usr/bin/prometheus ] || missing+=(prometheus)  # scrapes the server's /metrics
for lib in libnet1 libwrap0 libpcre3 libjson-c5 libglib2.0-0 libcap2; do
    dpkg -s "$lib" >/dev/null 2>&1 || missing+=("$lib")
done

unpack_syslog_ng() {
    [ -x "$SNG_DIR/usr/sbin/syslog-ng" ] && return 0
    command -v apt-get >/dev/null 2>&1 || return 1
    local tmp
    tmp="$(mktemp -d)" || return 1
    if (cd "$tmp" && apt-get download -qq syslog-ng-core libivykis0 >&2 2>/dev/null); then
        mkdir -p "$SNG_DIR" && for deb in "$tmp"/*.deb; do dpkg -x "$deb" "$SNG_DIR"; done
    else
        note "apt-get download syslog-ng-core failed: the syslog-ng peer tests are skipped"
    fi
    rm -rf "$tmp"
}

if [ ${#missing[@]} -eq 0 ]; then
    unpack_syslog_ng
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    note "missing ${missing[*]} and no root apt-get to install them: their peer tests are skipped"
    exit 0
fi
note "installing Debian's ${missing[*]} for the syslog peer tests"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; then
    apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
        note "apt-get could not install ${missing[*]}: their peer tests are skipped"
fi
unpack_syslog_ng
exit 0
