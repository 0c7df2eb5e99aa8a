#!/usr/bin/env bash
# Make sure `wrk` (Debian package; the C HTTP benchmark that `make perf` compares netbench
# with) is on PATH. Idempotent; a fresh container may lack package lists, so they are only
# refreshed when the first install fails.
set -euo pipefail
command -v wrk >/dev/null 2>&1 && exit 0
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq wrk >/dev/null; }
command -v wrk >/dev/null
