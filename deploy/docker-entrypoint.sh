#!/bin/sh
# The container's entrypoint: `tokenbot "$@"`, after two steps a first start needs.
#
# 1. Started as root (Railway mounts volumes root-owned; its documented way out is
#    RAILWAY_RUN_UID=0): hand the state directory to the tokenbot user, then run as that user.
#    The daemon itself never runs as root.
# 2. `serve` and no vault yet: create it with `tokenbot init`, but only with a real key
#    (ENCRYPTION_KEY, TOKENBOT_PASSPHRASE or TOKENBOT_VAULT__KEY_FILE: never the development key
#    file `init` would otherwise write beside the vault) and only in a mounted directory (a vault in
#    the container's own layer dies with it). TOKENBOT_EPHEMERAL_VAULT=1 allows the latter, for
#    trials. Anything else (`init`, `user list`, `serve --dev`, ...) is passed to tokenbot as is.
set -eu

vault="${TOKENBOT_VAULT__PATH:-/var/lib/tokenbot/vault.redb}"
state_dir="$(dirname "$vault")"

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$state_dir"
    if [ "$(stat -c %U "$state_dir")" != tokenbot ]; then
        chown -R tokenbot:tokenbot "$state_dir"
    fi
    chmod 0700 "$state_dir"
    exec setpriv --reuid=tokenbot --regid=tokenbot --init-groups --inh-caps=-all --no-new-privs \
        -- "$0" "$@"
fi

fail() {
    echo "tokenbot-entrypoint: $*" >&2
    exit 64
}

# The subcommand: the first argument that is neither an option nor --config's value.
command=""
dev=false
after_config=false
for arg in "$@"; do
    if [ "$after_config" = true ]; then
        after_config=false
        continue
    fi
    case "$arg" in
        --config) after_config=true ;;
        --dev) dev=true ;;
        -*) ;;
        *) if [ -z "$command" ]; then command="$arg"; fi ;;
    esac
done

if [ "$command" = serve ] && [ "$dev" = false ] && [ ! -e "$vault" ]; then
    if [ -z "${ENCRYPTION_KEY:-}${TOKENBOT_PASSPHRASE:-}" ] \
        && [ ! -f "${TOKENBOT_VAULT__KEY_FILE:-/nonexistent}" ]; then
        fail "no vault at $vault and no key to create one with: set ENCRYPTION_KEY (64 hex chars, \
e.g. \`openssl rand -hex 32\`), TOKENBOT_PASSPHRASE or TOKENBOT_VAULT__KEY_FILE, or run \
\`tokenbot init\` in this container yourself"
    fi
    if [ "$(stat -c %d "$state_dir")" = "$(stat -c %d /)" ] \
        && [ "${TOKENBOT_EPHEMERAL_VAULT:-0}" != 1 ]; then
        fail "no vault at $vault, and $state_dir is not a mounted volume: a vault created there \
would be lost with the container. Mount one (-v tokenbot-data:$state_dir), or set \
TOKENBOT_EPHEMERAL_VAULT=1 for a throwaway trial"
    fi
    echo "tokenbot-entrypoint: no vault at $vault: creating it (tokenbot init)" >&2
    tokenbot init
fi

exec tokenbot "$@"
