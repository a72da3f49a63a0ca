#!/usr/bin/env bash
# Start Redis, PostgreSQL and RabbitMQ if they are down, and wait until each answers.
set -euo pipefail

wait_for() { # what, seconds, command...
  local what=$1 seconds=$2; shift 2
  for _ in $(seq 1 "$seconds"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  echo "ensure-services: $what did not come up within ${seconds}s" >&2
  return 1
}

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "ensure-services: starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
wait_for Redis 30 redis-cli -h 127.0.0.1 -p 6379 ping

if ! pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1; then
  echo "ensure-services: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
fi
wait_for PostgreSQL 60 pg_isready -h 127.0.0.1 -p 5432

if ! rabbitmq-diagnostics -q check_port_connectivity >/dev/null 2>&1; then
  echo "ensure-services: starting RabbitMQ"
  rabbitmq-server -detached || true
  wait_for RabbitMQ 120 rabbitmq-diagnostics -q check_port_connectivity
fi
