#!/bin/bash
# Checks the Dockerfile's runtime stage without its builder stage: builds the stage, as written in
# ../Dockerfile, on BASE_IMAGE with a tokenbot binary built outside Docker (a debug build will do),
# then runs the image: the refusals of a first start without a key or a volume, `init` on the
# first start, the HEALTHCHECK turning healthy, /health from the host, the daemon's user, and a
# root start on a root-owned directory. For machines where the builder's Rust image cannot be
# pulled (no registry) or a release build is too slow.
#
#   deploy/check-runtime-image.sh target/debug/tokenbot debian:bookworm-slim
#
# Changes the stage in two places only: its FROM (BASE_IMAGE) and the binary's COPY (from the
# context instead of the builder stage). Needs docker (classic builder or BuildKit), curl, openssl.
set -euo pipefail

binary=${1:?usage: $0 TOKENBOT_BINARY BASE_IMAGE}
base=${2:?usage: $0 TOKENBOT_BINARY BASE_IMAGE}
repo=$(cd "$(dirname "$0")/.." && pwd)
tag=tokenbot:runtime-check
port=${CHECK_PORT:-13000}
work=$(mktemp -d)
name=tokenbot-check-$$
volume=tokenbot-check-$$
cleanup() {
    docker rm -f "$name" "$name-root" >/dev/null 2>&1 || true
    docker volume rm "$volume" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# The runtime stage, from its FROM line to the end of the file.
awk '/^FROM .* AS runtime$/ { on = 1 } on' "$repo/Dockerfile" >"$work/stage"
grep -q '^COPY --from=builder /out/tokenbot /usr/local/bin/tokenbot$' "$work/stage"
sed -e "1s|.*|FROM $base AS runtime|" \
    -e 's|^COPY --from=builder /out/tokenbot |COPY tokenbot |' "$work/stage" >"$work/Dockerfile"
echo "== the stage checked (diff against the shipped Dockerfile's runtime stage)"
diff "$work/stage" "$work/Dockerfile" || true
mkdir -p "$work/deploy"
cp "$binary" "$work/tokenbot"
cp "$repo/tokenbot.toml" "$work/"
cp "$repo/deploy/docker-entrypoint.sh" "$repo/deploy/healthcheck.sh" "$work/deploy/"

echo "== docker build"
docker build -q -t "$tag" "$work"
docker image inspect "$tag" --format 'user={{.Config.User}} healthcheck={{.Config.Healthcheck.Test}} entrypoint={{.Config.Entrypoint}} cmd={{.Config.Cmd}} size={{.Size}}'

key=$(openssl rand -hex 32)
jwt=$(openssl rand -hex 32)
api_key=$(openssl rand -hex 32)

echo "== first start without a key: refused"
set +e
docker run --rm -v "$volume:/var/lib/tokenbot" "$tag"
echo "exit status $?"
echo "== first start without a volume: refused"
docker run --rm -e ENCRYPTION_KEY="$key" "$tag"
echo "exit status $?"
set -e

echo "== first start with a key and a volume: init, then serve"
docker run -d --name "$name" -p "127.0.0.1:$port:3000" -v "$volume:/var/lib/tokenbot" \
    -e ENCRYPTION_KEY="$key" -e JWT_SECRET="$jwt" -e TOKENBOT_API_KEY="$api_key" "$tag" >/dev/null
start=$SECONDS
status=starting
while [ "$status" != healthy ] && [ $((SECONDS - start)) -lt 120 ]; do
    sleep 1
    status=$(docker inspect -f '{{.State.Health.Status}}' "$name")
    [ "$status" = unhealthy ] && break
done
echo "health: $status after $((SECONDS - start)) s"
docker inspect -f '{{range .State.Health.Log}}{{.ExitCode}} {{end}}' "$name"
echo "GET /health from the host: $(curl -s -w ' (%{http_code})' "http://127.0.0.1:$port/health")"
echo "GET /health/detailed with the key: $(curl -s -o /dev/null -w '%{http_code}' -H "X-API-Key: $api_key" "http://127.0.0.1:$port/health/detailed")"
echo "GET /health/detailed without: $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health/detailed")"
echo "processes (user, pid, command):"
docker top "$name" -eo user,pid,args
docker exec "$name" ls -lna /var/lib/tokenbot /usr/local/lib/tokenbot/plugins
echo "token get through the daemon's API (no such account: exit 1):"
docker exec "$name" tokenbot token get nobody 2>&1 || true
echo "logs:"
docker logs "$name" 2>&1 | head -n 20
[ "$status" = healthy ]

echo "== restart: the vault exists, no init"
docker restart "$name" >/dev/null
sleep 3
docker logs --since 5s "$name" 2>&1 | grep -c 'creating it' || true
echo "== stop (SIGTERM)"
start=$SECONDS
docker stop "$name" >/dev/null
echo "stopped in $((SECONDS - start)) s, exit code $(docker inspect -f '{{.State.ExitCode}}' "$name")"
echo "== a one-off command on the stopped daemon's vault: vault verify"
docker run --rm -v "$volume:/var/lib/tokenbot" -e ENCRYPTION_KEY="$key" "$tag" vault verify

echo "== started as root on a root-owned directory (Railway's RAILWAY_RUN_UID=0)"
mkdir -p "$work/rootowned" && chmod 0755 "$work/rootowned"
docker run -d --name "$name-root" --user 0 -v "$work/rootowned:/var/lib/tokenbot" \
    -e ENCRYPTION_KEY="$key" -e JWT_SECRET="$jwt" "$tag" >/dev/null
sleep 5
docker top "$name-root" -eo user,pid,args
ls -lna "$work/rootowned"
docker logs "$name-root" 2>&1 | head -n 3
docker rm -f "$name-root" >/dev/null
echo "== ok"
