#!/usr/bin/env bash
# What the test suite needs besides .venv, made ready on a fresh machine: Prometheus, promtool,
# Alertmanager and amtool (Debian packages; the rule and alert tests), Chromium (Debian's
# `chromium`; the evaluation report's browser test) and a Redis on 127.0.0.1:6379 (the Redis
# bus tests). `make test` and .ci/run both call this; it does nothing
# when all is there already.
set -euo pipefail

need_root() {
  if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null; then
    echo "test-services: $1 is missing and installing it needs root (or sudo)" >&2
    exit 2
  fi
  if [ "$(id -u)" != 0 ]; then echo sudo; fi
}

if ! command -v promtool >/dev/null || ! command -v prometheus-alertmanager >/dev/null; then
  as=$(need_root "Prometheus/Alertmanager")
  $as apt-get update -q
  $as env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    prometheus prometheus-alertmanager
fi

if ! command -v chromium >/dev/null; then
  as=$(need_root "chromium")
  $as apt-get update -q
  $as env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium
fi

if ! command -v redis-server >/dev/null; then
  as=$(need_root "redis-server")
  $as env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    redis-server
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  dir=$(mktemp -d)
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir "$dir" --logfile "$dir/redis.log"
  for _ in $(seq 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
