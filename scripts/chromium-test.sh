#!/usr/bin/env bash
# Debian's chromium for the browser test (tests/jupyter/test_browser.py drives it with Playwright).
#
# Installs the `chromium` package when /usr/bin/chromium is missing and this runs as root with
# apt-get; otherwise it only says why the browser test will be skipped. Never fails the build:
# the test itself reports a skip with the reason.
set -uo pipefail

note() { echo "chromium-test: $*" >&2; }

if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    note "no /usr/bin/chromium and no root apt-get to install it: the browser test is skipped"
    exit 0
fi
note "installing Debian's chromium package for the browser test"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -qq chromium >&2; then
    apt-get update -qq >&2 && apt-get install -y -qq chromium >&2 ||
        note "apt-get could not install chromium: the browser test is skipped"
fi
exit 0
