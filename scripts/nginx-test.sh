#!/usr/bin/env bash
# Debian's nginx for tests/server/test_multiprocess.py: several `pipenb server` processes behind one
# address on loopback. The tests run it with a config file of their own in a temporary prefix
# (never the system's config, never as a service).
#
# Installs nginx-light when it is missing and this runs as root with apt-get; otherwise it only
# says that those tests will be skipped. Never fails the build.
set -uo pipefail

note() { echo "nginx-test: $*" >&2; }

[ -x /usr/sbin/nginx ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    note "no nginx and no root apt-get to install it: the nginx tests are skipped"
    exit 0
fi
note "installing Debian's nginx-light for the multi-process tests"
export DEBIAN_FRONTEND=noninteractive
# the package's own service must not start (the tests start nginx themselves)
if ! apt-get install -y -qq --no-install-recommends nginx-light >&2; then
    apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends nginx-light >&2 ||
        note "apt-get could not install nginx-light: the nginx tests are skipped"
fi
# a service the package may have started on port 80 is not ours to keep
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet nginx 2>/dev/null; then
    systemctl stop nginx >&2 || true
fi
exit 0
