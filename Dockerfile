# tokenbot's container image (README, "Deployment"; decisions in docs/decisions.md, "Deployment").
#
#   docker build -t tokenbot .
#   docker run -d --name tokenbot -p 3000:3000 -v tokenbot-data:/var/lib/tokenbot \
#     -e ENCRYPTION_KEY=... -e JWT_SECRET=... -e TOKENBOT_API_KEY=... tokenbot
#
# Two stages: `builder` compiles the release binary (every strategy bundled, so no plugin `.so` is
# shipped), `runtime` is Debian slim with the binary, an empty plugins directory and a non-root
# user. The syntax is the classic builder's too (no `RUN --mount`, no `COPY --chmod`).

ARG DEBIAN_RELEASE=bookworm
# The toolchain the tests run on; the workspace's minimum is in Cargo.toml (`rust-version`).
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder
# jemalloc (tikv-jemalloc-sys) is built from source with `make`; the image has `cc` already.
RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# `postgres-tls`: the mirror can reach a managed PostgreSQL with `sslmode=require`. Set it to ""
# for the default build (plain TCP only).
ARG TOKENBOT_FEATURES=postgres-tls
# The release profile is fat LTO with one codegen unit: expect a long link.
RUN cargo build --release --locked -p tokenbot --features "${TOKENBOT_FEATURES}" \
    && install -D -m 0755 target/release/tokenbot /out/tokenbot

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# ca-certificates: the system roots the brokers' HTTPS (and the mirror's TLS) verify against.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# A fixed uid/gid, so a bind-mounted state directory can be chowned to it: 10001.
RUN groupadd --system --gid 10001 tokenbot \
    && useradd --system --uid 10001 --gid tokenbot --home-dir /var/lib/tokenbot \
        --shell /usr/sbin/nologin tokenbot \
    && install -d -m 0700 -o tokenbot -g tokenbot /var/lib/tokenbot \
    && install -d -m 0755 /etc/tokenbot /usr/local/lib/tokenbot/plugins
COPY --from=builder /out/tokenbot /usr/local/bin/tokenbot
COPY tokenbot.toml /etc/tokenbot/tokenbot.toml
COPY deploy/docker-entrypoint.sh /usr/local/bin/tokenbot-entrypoint
COPY deploy/healthcheck.sh /usr/local/bin/tokenbot-healthcheck
RUN chmod 0755 /usr/local/bin/tokenbot-entrypoint /usr/local/bin/tokenbot-healthcheck \
    && chmod 0644 /etc/tokenbot/tokenbot.toml

# Configuration: /etc/tokenbot/tokenbot.toml (the repository's, every key at its default; mount
# your own over it), then these, then the Node service's names given at run time: PORT,
# DATABASE_URL, ENCRYPTION_KEY, JWT_SECRET, TOKENBOT_API_KEY, TOKENBOT_PASSPHRASE,
# TOKENBOT_TELEGRAM_BOT_TOKEN, LOG_LEVEL. Env variables win over the file, so the vault and plugin
# paths below are changed here (-e), not in a mounted file.
ENV TOKENBOT_CONFIG=/etc/tokenbot/tokenbot.toml \
    TOKENBOT_SERVER__LISTEN=0.0.0.0:3000 \
    TOKENBOT_VAULT__PATH=/var/lib/tokenbot/vault.redb \
    TOKENBOT_PLUGINS__DIR=/usr/local/lib/tokenbot/plugins \
    TOKENBOT_LOG__FORMAT=json

# The vault lives in /var/lib/tokenbot: mount a volume there (-v, compose, a Railway volume).
# No VOLUME instruction: Railway refuses Dockerfiles that have one, and an anonymous volume would
# hide a forgotten mount. The entrypoint refuses to create a vault in an unmounted directory.
WORKDIR /var/lib/tokenbot
USER tokenbot:tokenbot
EXPOSE 3000
# /health needs no credentials: 200 while the vault is usable, 503 after an I/O failure.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/tokenbot-healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/tokenbot-entrypoint"]
CMD ["serve"]
