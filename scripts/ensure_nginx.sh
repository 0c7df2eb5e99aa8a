#!/usr/bin/env bash
# Make sure an `nginx` binary is on PATH (Debian package); the test fixtures start
# their own nginx master from a temporary config, so the system service is never used.
set -euo pipefail

if command -v nginx >/dev/null 2>&1; then
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# A fresh container often has no package lists: only refresh when the first try fails.
if ! apt-get install -y -qq nginx >/dev/null 2>&1; then
    apt-get update -qq >/dev/null
    apt-get install -y -qq nginx >/dev/null
fi

# The package's postinst may start the system service; it is not ours to run.
if command -v service >/dev/null 2>&1; then
    service nginx stop >/dev/null 2>&1 || true
fi

command -v nginx >/dev/null
