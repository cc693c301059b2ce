#!/usr/bin/env bash
# Make `prometheus` and `promtool` available (tests/deploy needs both): install Debian's
# `prometheus` package when either is missing. Idempotent; a no-op when both are there.
# The package does not start a service in containers (policy-rc.d); the tests run their
# own prometheus on 127.0.0.1 with a temporary storage dir.
set -euo pipefail

if command -v prometheus > /dev/null && command -v promtool > /dev/null; then
    exit 0
fi
if ! command -v apt-get > /dev/null; then
    echo "ensure_prometheus: no apt-get here; install Prometheus 2.x (prometheus, promtool) by hand" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo > /dev/null; then
        echo "ensure_prometheus: need root or sudo to apt-get install prometheus" >&2
        exit 1
    fi
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends prometheus > /dev/null
command -v prometheus > /dev/null && command -v promtool > /dev/null
echo "ensure_prometheus: $(prometheus --version 2>&1 | head -n 1)"
