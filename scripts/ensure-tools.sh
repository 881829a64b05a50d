#!/bin/sh
# Install the system tools the tests use, from Debian's packages, only when missing:
#   prometheus (prometheus + promtool) for tests/integration/test_observability.py and promtool check rules;
#   docker-compose (the v1 parser) to check docker-compose.yml without a Docker engine.
# Idempotent: when every tool is present this does nothing and takes milliseconds.
set -eu

missing=""
command -v prometheus >/dev/null 2>&1 || missing="$missing prometheus"
command -v promtool >/dev/null 2>&1 || case "$missing" in *prometheus*) ;; *) missing="$missing prometheus" ;; esac
command -v docker-compose >/dev/null 2>&1 || missing="$missing docker-compose"

if [ -z "$missing" ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
else
    SUDO=
fi
echo "ensure-tools: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# --no-install-recommends: prometheus recommends node-exporter and friends, which the tests never run.
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
