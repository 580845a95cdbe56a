#!/bin/bash
# The image's HEALTHCHECK: `GET /health` on the daemon's port over loopback, healthy on a 200.
# Bash's /dev/tcp, so the image needs no curl. The port is PORT's, else TOKENBOT_SERVER__LISTEN's.
set -u
listen="${TOKENBOT_SERVER__LISTEN:-0.0.0.0:3000}"
port="${PORT:-${listen##*:}}"
exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
printf 'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
IFS= read -r -t 4 status <&3 || exit 1
case "$status" in
    "HTTP/1.1 200 "*) exit 0 ;;
    *) echo "GET /health: ${status%$'\r'}" >&2; exit 1 ;;
esac
