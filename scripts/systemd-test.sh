#!/usr/bin/env bash
# Debian's systemd package for `systemd-analyze verify`, which checks the agent's unit file
# (tests/e2e/test_install.py). No systemd needs to run: only the analyzer is used.
#
# Installs `systemd` when systemd-analyze is missing and this runs as root with apt-get;
# otherwise it only says why the unit test will be skipped. Never fails the build: the test
# itself reports a skip with the reason.
set -uo pipefail

note() { echo "systemd-test: $*" >&2; }

if command -v systemd-analyze >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    note "no systemd-analyze and no root apt-get to install it: the unit-file test is skipped"
    exit 0
fi
note "installing Debian's systemd package for the unit-file test"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends systemd >&2 ||
    note "apt-get could not install systemd: the unit-file test is skipped"
exit 0
