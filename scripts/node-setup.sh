#!/usr/bin/env bash
# Node.js for building the JupyterLab extension (make build-lab). Build time only: the wheel
# carries the built extension, so users never need Node.js.
#
# Installs Debian's `nodejs` package when `node` is missing and this runs as root with apt-get;
# otherwise says what to install and fails, since the frontend cannot be built without it.
set -uo pipefail

note() { echo "node-setup: $*" >&2; }

if command -v node >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    note "no node on PATH: install Node.js 20 or newer (e.g. apt-get install nodejs) to build the JupyterLab extension"
    exit 1
fi
note "installing Debian's nodejs package to build the JupyterLab extension"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -qq nodejs >&2; then
    apt-get update -qq >&2 && apt-get install -y -qq nodejs >&2 || {
        note "apt-get could not install nodejs"
        exit 1
    }
fi
command -v node >/dev/null 2>&1
