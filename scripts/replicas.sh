#!/usr/bin/env bash
# A PostgreSQL primary with a streaming replica, and a MariaDB primary with a replica, on this
# machine, for tests/test_replica_lag.py (`make replicas`, and a section of .ci/run):
#
#   scripts/replicas.sh start|stop|status
#
#   postgres://postgres@127.0.0.1:5440/test  ->  replica postgres://postgres@127.0.0.1:5441/test
#   mysql://root@127.0.0.1:3340/test         ->  replica mysql://root@127.0.0.1:3341/test
#
# Throwaway servers: trust / password-less root on 127.0.0.1 only, data under
# $BACKFILLS_REPLICAS_DIR (/tmp/backfills-replicas), their own ports, sockets and pid files, so
# the machine's own servers (5432, 3306) are left alone. `start` creates what is missing, starts
# what is stopped, resumes replay if a test left it paused, and returns once a row written on
# each primary has appeared on its replica. `stop` stops the four servers and removes nothing.
# Idempotent, no stdin; one line per server on stdout, the servers' own logs under the directory.
set -euo pipefail

DIR=${BACKFILLS_REPLICAS_DIR:-/tmp/backfills-replicas}
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
PG_PRIMARY_PORT=${PG_PRIMARY_PORT:-5440}
PG_REPLICA_PORT=${PG_REPLICA_PORT:-5441}
MARIADB_PRIMARY_PORT=${MARIADB_PRIMARY_PORT:-3340}
MARIADB_REPLICA_PORT=${MARIADB_REPLICA_PORT:-3341}
MARIADBD=${MARIADBD:-$(command -v mariadbd || echo /usr/sbin/mariadbd)}

PG=$DIR/postgresql
MARIADB=$DIR/mariadb

die() { echo "replicas.sh: $*" >&2; exit 1; }

# initdb refuses to run as root and mariadbd runs as root only when told to: as root the
# servers run as the postgres and mysql users, otherwise as whoever runs this.
is_root() { [ "$(id -u)" = 0 ]; }
as_postgres() { if is_root; then runuser -u postgres -- "$@"; else "$@"; fi; }
own() { if is_root; then chown "$1" "${@:2}"; fi; }

wait_until() {  # wait_until SECONDS DESCRIPTION COMMAND...
  local seconds=$1 what=$2
  shift 2
  for _ in $(seq $((seconds * 10))); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "$what: not ready after ${seconds}s (logs in $DIR)"
}

# -- PostgreSQL ---------------------------------------------------------------------------

psql_at() { PGOPTIONS="-c client_min_messages=warning" psql -h 127.0.0.1 -p "$1" -U postgres -X -q -tA -v ON_ERROR_STOP=1 -d "${2:-postgres}" -c "$3"; }
pg_replica_has() { [ "$(psql_at "$PG_REPLICA_PORT" postgres "SELECT token FROM replicas_check")" = "$1" ]; }
pg_running() { as_postgres "$PG_BIN/pg_ctl" -D "$PG/$1" status >/dev/null 2>&1; }

pg_start() {  # pg_start primary|replica
  if ! pg_running "$1"; then
    as_postgres "$PG_BIN/pg_ctl" -D "$PG/$1" -l "$PG/$1.log" -w -t 60 start >/dev/null
  fi
}

pg_setup() {
  [ -x "$PG_BIN/initdb" ] || die "no PostgreSQL server binaries (set PG_BIN)"
  mkdir -p "$PG"
  own postgres "$PG"
  if [ ! -f "$PG/primary/PG_VERSION" ]; then
    rm -rf "$PG/primary"
    as_postgres "$PG_BIN/initdb" -D "$PG/primary" -U postgres --auth=trust >"$PG/initdb.log"
    # initdb's pg_hba.conf already lets 127.0.0.1 connect and replicate with trust.
    cat >>"$PG/primary/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PRIMARY_PORT
unix_socket_directories = '$PG'
wal_level = replica
max_wal_senders = 4
hot_standby = on
fsync = off
EOF
  fi
  pg_start primary
  if [ ! -f "$PG/replica/PG_VERSION" ]; then
    rm -rf "$PG/replica"
    # -R: standby.signal and primary_conninfo; a streaming standby of the primary.
    as_postgres "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$PG_PRIMARY_PORT" -U postgres \
      -D "$PG/replica" -R -X stream -c fast
    echo "port = $PG_REPLICA_PORT" >>"$PG/replica/postgresql.conf"
  fi
  pg_start replica
  # The primary's database for the tests (pytest's is test_test, made by the test run).
  if [ -z "$(psql_at "$PG_PRIMARY_PORT" postgres "SELECT 1 FROM pg_database WHERE datname = 'test'")" ]; then
    psql_at "$PG_PRIMARY_PORT" postgres "CREATE DATABASE test"
  fi
  # A test that failed half-way may have left replay paused.
  psql_at "$PG_REPLICA_PORT" postgres "SELECT pg_wal_replay_resume()" >/dev/null
  local token
  token="$(date +%s%N)"
  psql_at "$PG_PRIMARY_PORT" postgres "CREATE TABLE IF NOT EXISTS replicas_check (token text);
    TRUNCATE replicas_check; INSERT INTO replicas_check VALUES ('$token')"
  wait_until 30 "PostgreSQL replica on $PG_REPLICA_PORT" pg_replica_has "$token"
}

pg_stop() {
  local server
  for server in replica primary; do
    if [ -f "$PG/$server/PG_VERSION" ] && pg_running "$server"; then
      as_postgres "$PG_BIN/pg_ctl" -D "$PG/$server" -m fast -w -t 60 stop >/dev/null
    fi
  done
}

pg_status() {
  local server port state
  for server in primary replica; do
    port=$PG_PRIMARY_PORT
    [ "$server" = replica ] && port=$PG_REPLICA_PORT
    if [ -f "$PG/$server/PG_VERSION" ] && pg_running "$server"; then
      state="running"
      if [ "$server" = replica ]; then
        state="$state, $(psql_at "$port" postgres "SELECT CASE WHEN pg_is_wal_replay_paused() THEN 'replay PAUSED' ELSE 'replaying' END || ', ' || coalesce((SELECT status FROM pg_stat_wal_receiver), 'no WAL receiver') || ' from $PG_PRIMARY_PORT'" 2>/dev/null || echo '?')"
      fi
    else
      state="stopped"
    fi
    printf 'postgresql %-8s postgres://postgres@127.0.0.1:%s/test  %s\n' "$server" "$port" "$state"
  done
}

# -- MariaDB ------------------------------------------------------------------------------

mariadb_at() { mariadb --no-defaults -uroot -h127.0.0.1 -P"$1" --protocol=tcp -N -B -e "$2"; }
mariadb_replica_has() {
  [ "$(mariadb_at "$MARIADB_REPLICA_PORT" "SELECT token FROM replicas_check.token WHERE id = 1")" = "$1" ]
}
mariadb_running() { mariadb-admin --no-defaults -uroot -h127.0.0.1 -P"$1" --protocol=tcp ping >/dev/null 2>&1; }

mariadb_start() {  # mariadb_start primary|replica PORT SERVER_ID
  local server=$1 port=$2 id=$3
  mariadb_running "$port" && return 0
  local user=()
  is_root && user=(--user=mysql)
  if [ ! -d "$MARIADB/$server/mysql" ]; then
    rm -rf "$MARIADB/$server"
    # normal: a password-less root on localhost and 127.0.0.1, not only the unix socket's.
    mariadb-install-db --no-defaults "${user[@]}" --datadir="$MARIADB/$server" \
      --auth-root-authentication-method=normal --skip-test-db >"$MARIADB/$server-install.log" 2>&1 \
      || die "mariadb-install-db failed for the $server (see $MARIADB/$server-install.log)"
  fi
  # Detached from this shell and its output, so that a caller reading our stdout (CI) is not
  # kept waiting on the server.
  setsid "$MARIADBD" --no-defaults "${user[@]}" --datadir="$MARIADB/$server" \
    --port="$port" --bind-address=127.0.0.1 --skip-name-resolve \
    --socket="$MARIADB/$server.sock" --pid-file="$MARIADB/$server.pid" \
    --log-error="$MARIADB/$server.err" --server-id="$id" \
    --log-bin=mariadb-bin --binlog-format=ROW --relay-log=relay-bin \
    --innodb-buffer-pool-size=64M --innodb-flush-log-at-trx-commit=2 \
    </dev/null >/dev/null 2>&1 &
  wait_until 60 "MariaDB $server on $port" mariadb_running "$port"
}

mariadb_setup() {
  [ -x "$MARIADBD" ] || die "no mariadbd (set MARIADBD)"
  mkdir -p "$MARIADB"
  own mysql "$MARIADB"
  mariadb_start primary "$MARIADB_PRIMARY_PORT" 1
  mariadb_start replica "$MARIADB_REPLICA_PORT" 2
  # Whatever the primary logs from its first binlog on (databases, tables, rows) replays on
  # the replica; the system tables both got from mariadb-install-db are not replicated.
  if [ -z "$(mariadb_at "$MARIADB_REPLICA_PORT" "SHOW SLAVE STATUS")" ]; then
    mariadb_at "$MARIADB_REPLICA_PORT" "CHANGE MASTER TO MASTER_HOST = '127.0.0.1',
      MASTER_PORT = $MARIADB_PRIMARY_PORT, MASTER_USER = 'root', MASTER_PASSWORD = '',
      MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1"
  fi
  # Also restarts an SQL thread a test stopped (a no-op, with a note, for running threads).
  mariadb_at "$MARIADB_REPLICA_PORT" "START SLAVE" 2>/dev/null
  local token
  token="$(date +%s%N)"
  mariadb_at "$MARIADB_PRIMARY_PORT" "CREATE DATABASE IF NOT EXISTS test;
    CREATE DATABASE IF NOT EXISTS replicas_check;
    CREATE TABLE IF NOT EXISTS replicas_check.token (id INT PRIMARY KEY, token VARCHAR(40));
    REPLACE INTO replicas_check.token VALUES (1, '$token')"
  wait_until 30 "MariaDB replica on $MARIADB_REPLICA_PORT" mariadb_replica_has "$token"
}

mariadb_stop() {
  local server pid
  for server in replica primary; do
    [ -f "$MARIADB/$server.pid" ] || continue
    pid=$(cat "$MARIADB/$server.pid")
    # Only that server: a stale pid file's number may belong to another process by now.
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = mariadbd ]; then
      kill -TERM "$pid"  # mariadbd shuts down cleanly on SIGTERM
      wait_until 60 "MariaDB $server shutdown" bash -c "! kill -0 $pid"
    fi
  done
}

mariadb_status() {
  local server port state
  for server in primary replica; do
    port=$MARIADB_PRIMARY_PORT
    [ "$server" = replica ] && port=$MARIADB_REPLICA_PORT
    if mariadb_running "$port"; then
      state="running"
      if [ "$server" = replica ]; then
        state="$state, $(mariadb --no-defaults -uroot -h127.0.0.1 -P"$port" --protocol=tcp \
          -e "SHOW SLAVE STATUS\G" 2>/dev/null \
          | awk -F': ' '/Slave_IO_Running|Slave_SQL_Running:|Seconds_Behind_Master/ {gsub(/^ +/, "", $1); printf "%s%s=%s", sep, $1, $2; sep=", "}') from $MARIADB_PRIMARY_PORT"
      fi
    else
      state="stopped"
    fi
    printf 'mariadb    %-8s mysql://root@127.0.0.1:%s/test  %s\n' "$server" "$port" "$state"
  done
}

case "${1:-}" in
  start)
    mkdir -p "$DIR"
    chmod 755 "$DIR"
    pg_setup
    mariadb_setup
    pg_status
    mariadb_status
    ;;
  stop)
    pg_stop
    mariadb_stop
    pg_status
    mariadb_status
    ;;
  status)
    pg_status
    mariadb_status
    ;;
  *)
    die "usage: scripts/replicas.sh start|stop|status"
    ;;
esac
