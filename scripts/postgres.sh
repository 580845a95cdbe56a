# Sourced by scripts/test and scripts/e2e (not run by itself).
# start_postgres: start the local PostgreSQL cluster on 127.0.0.1:5432 if one is installed and down,
# and wait up to 30 s for it to accept connections. Does nothing when it already runs or when no
# cluster is installed; the caller decides what a missing database means.
start_postgres() {
  if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then
    if [ -d /etc/postgresql ] && command -v pg_ctlcluster >/dev/null 2>&1; then
      echo "scripts/$(basename "$0"): starting PostgreSQL"
      pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
      for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
    fi
  fi
}
