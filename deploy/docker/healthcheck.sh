#!/bin/bash
# Docker HEALTHCHECK for the grin image (installed as /usr/local/bin/grin-healthcheck).
#
# The runtime image has no curl or wget; bash's /dev/tcp is enough for one
# HTTP/1.0 GET. When the container's main process is `grin serve`, GET
# $GRIN_HEALTHCHECK_PATH (default /readyz: the database is reachable and
# migrated; /healthz checks only that the process answers) on the port of
# --bind / GRIN_BIND and require a 200. Any other command (`worker`,
# `migrate`, one-off commands) has no HTTP port: it is healthy while it runs.
set -u

mapfile -d '' -t argv < /proc/1/cmdline 2>/dev/null || argv=()
serving=0
bind="${GRIN_BIND:-127.0.0.1:8080}"
for ((i = 0; i < ${#argv[@]}; i++)); do
  case "${argv[$i]}" in
    serve) serving=1 ;;
    --bind) bind="${argv[$((i + 1))]:-$bind}" ;;
    --bind=*) bind="${argv[$i]#--bind=}" ;;
  esac
done
[ "$serving" = 1 ] || exit 0

port="${bind##*:}"
path="${GRIN_HEALTHCHECK_PATH:-/readyz}"
if ! { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null; then
  echo "no listener on 127.0.0.1:$port"
  exit 1
fi
printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$path" >&3
status=""
IFS= read -r -t 4 status <&3 || true
exec 3<&-
status="${status%$'\r'}"
case "$status" in
  "HTTP/1."?" 200"*) exit 0 ;;
  *)
    echo "GET $path on port $port: ${status:-no answer}"
    exit 1
    ;;
esac
