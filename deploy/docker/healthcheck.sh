#!/bin/bash
# Container health probe for docker-compose (Kubernetes uses its own httpGet probes).
# The runtime image ships no curl/wget, so this speaks HTTP/1.0 over bash's /dev/tcp.
#
#   tollgate-healthcheck [PATH] [PORT]    PATH defaults to /readyz, PORT to $TOLLGATE_HEALTH_PORT
#
# Exits 0 when the service answers 200, 1 otherwise.
set -euo pipefail

path="${1:-/readyz}"
port="${2:-${TOLLGATE_HEALTH_PORT:-8080}}"

exec 3<>"/dev/tcp/127.0.0.1/${port}" || exit 1
printf 'GET %s HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n' "${path}" >&3
IFS= read -r -t 5 status_line <&3 || exit 1
exec 3<&-

case "${status_line}" in
  "HTTP/1."?" 200"*) exit 0 ;;
  *) echo "unhealthy: ${status_line}" >&2; exit 1 ;;
esac
