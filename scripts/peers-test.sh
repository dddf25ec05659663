#!/usr/bin/env bash
# Debian's syslog peers for tests/test_syslog_peers.py (and the other peer tests): rsyslog and
# util-linux's logger (bsdutils), each run by the tests with their own config file on loopback.
#
# Installs what is missing when this runs as root with apt-get; otherwise it only says which
# tests will be skipped. Never fails the build: the tests report a skip with the reason.
set -uo pipefail

note() { echo "peers-test: $*" >&2; }

missing=()
[ -x /usr/sbin/rsyslogd ] || missing+=(rsyslog)
command -v logger >/dev/null 2>&1 || missing+=(bsdutils)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    note "missing ${missing[*]} and no root apt-get to install them: their peer tests are skipped"
    exit 0
fi
note "installing Debian's ${missing[*]} for the syslog peer tests"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -qq "${missing[@]}" >&2; then
    apt-get update -qq >&2 && apt-get install -y -qq "${missing[@]}" >&2 ||
        note "apt-get could not install ${missing[*]}: their peer tests are skipped"
fi
# rsyslog's package may start the system's daemon; the tests run their own, so leave it be.
exit 0
