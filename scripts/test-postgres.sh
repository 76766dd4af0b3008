#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on a loopback port for the service tests.
#   source <(bash scripts/test-postgres.sh start)   # prints: export DISTILL_TEST_POSTGRES_URL=...
#   bash scripts/test-postgres.sh stop
#   bash scripts/test-postgres.sh where                # prints this checkout's folder and port
# Needs Debian's `postgresql` package (initdb, pg_ctl). The cluster runs as an unprivileged user
# (`postgres` when started as root, else the caller) and trusts local connections: tests only.
# Each checkout gets its own cluster: the folder and the port derive from the checkout's path, so two
# checkouts on one machine never share a cluster and `stop` removes only this checkout's folder.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd -P)
KEY=$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)
DIR=${DISTILL_PG_DIR:-/tmp/distill-test-pg-$KEY}
PORT=${DISTILL_PG_PORT:-$((20000 + 0x${KEY:0:6} % 30000))}
[ "${1:-}" = where ] && { echo "$DIR $PORT"; exit 0; }
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$BIN" ] || { echo "PostgreSQL is not installed (apt-get install -y postgresql)" >&2; exit 1; }
if [ "$(id -u)" = 0 ]; then AS=(runuser -u postgres --); OWNER=postgres; else AS=(); OWNER=$(id -un); fi
case "${1:-}" in
  start)
    if [ ! -f "$DIR/PG_VERSION" ]; then
      mkdir -p "$DIR" && chown "$OWNER" "$DIR"
      "${AS[@]}" "$BIN/initdb" -D "$DIR" -U distill --auth=trust >/dev/null
    fi
    "${AS[@]}" "$BIN/pg_ctl" -D "$DIR" -o "-p $PORT -k /tmp -c listen_addresses=127.0.0.1" -l "$DIR/server.log" -w start >/dev/null 2>&1 \
      || "${AS[@]}" "$BIN/pg_ctl" -D "$DIR" status >/dev/null
    echo "export DISTILL_TEST_POSTGRES_URL=postgresql+psycopg://distill@127.0.0.1:$PORT/postgres"
    ;;
  stop)
    "${AS[@]}" "$BIN/pg_ctl" -D "$DIR" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$DIR"
    ;;
  *) echo "usage: $0 start|stop|where" >&2; exit 2 ;;
esac
