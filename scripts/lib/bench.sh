# Shared by the API benchmarks (scripts/bench-api, bench-batch, bench-budget, bench-floor): the
# one-replica stack, its data in memory, API instances on their own ports, and wrk/pgbench runs
# that print one row each. Source it after setting ROOT, BIN, DIR, PRODUCTS, CONC, DURATION and
# LOG.
#
# The method: `loadgen up --replicas 1 --products 0
# --shared-buffers-mb 2048`, the seeder's PRODUCTS x 16, every table and index of the replica read
# into shared buffers (pg_prewarm) and scanned once so the replica sets the hint bits a fresh
# load leaves unset (they are not WAL-logged; otherwise the first minutes of every measurement
# pay for writing them). No password on a command line: `loadgen status` (re)writes the
# topology's 0600 connection files; APIs read their replica list from one, psql and pgbench
# find passwords in the libpq password file, the seeder gets its URL in its environment.

BENCH=$ROOT/api/bench
HZ=$(getconf CLK_TCK)

# bench_stack: starts (or reuses) the stack under $DIR/stack and loads $PRODUCTS products; sets
# REPLICA (URL without password), REPLICA_SU and PRIMARY_SU (the superuser on each), REPLICA_FILE.
bench_stack() {
  if ! "$BIN/loadgen" status --dir "$DIR/stack" >/dev/null 2>&1; then
    "$BIN/loadgen" up --dir "$DIR/stack" --replicas 1 --products 0 --shared-buffers-mb 2048 >>"$LOG"
  fi
  "$BIN/loadgen" status --dir "$DIR/stack" >/dev/null
  export PGPASSFILE=$DIR/stack/pgpass
  local superuser_url_file=$DIR/stack/superuser.url rhostport
  REPLICA_FILE=$DIR/stack/api-replicas.list
  PRIMARY_SU=$(without_password <"$superuser_url_file")
  REPLICA=$(grep -v '^#' "$REPLICA_FILE" | head -1 | without_password)
  rhostport=$(echo "$REPLICA" | sed -E 's#.*@([^/]*)/.*#\1#')
  REPLICA_SU="postgres://postgres@$rhostport/related"
  echo "seeding $PRODUCTS products x 16 (resumable; a finished load is skipped)"
  DATABASE_URL=$(cat "$superuser_url_file") /usr/bin/time -f "seed wall %e s" "$BIN/seeder" --products "$PRODUCTS" --quiet 2>&1 | tail -3
  psql -qAt "$PRIMARY_SU" -c "CREATE EXTENSION IF NOT EXISTS pg_prewarm" >/dev/null
  until [ "$(psql -qAt "$REPLICA_SU" -c "SELECT count(*) FROM products WHERE id = $PRODUCTS")" = 1 ] &&
    [ "$(psql -qAt "$REPLICA_SU" -c "SELECT count(*) FROM pg_extension WHERE extname = 'pg_prewarm'")" = 1 ]; do
    sleep 1
  done
  psql -qAt "$REPLICA_SU" -c "SELECT sum(pg_prewarm(c.oid)) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i')" >/dev/null
  psql -qAt "$REPLICA_SU" -c "SET enable_indexscan = off; SET enable_indexonlyscan = off; SET enable_bitmapscan = off; SELECT count(*) FROM products; SELECT count(*) FROM related_items" >/dev/null
  echo "rows: $(psql -qAt "$REPLICA_SU" -c "SELECT (SELECT count(*) FROM products) || ' products, ' || (SELECT count(*) FROM related_items) || ' related rows'")"
}

without_password() { sed -E 's#(://[^:/@]+):[^@]*@#\1@#'; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
to_ms() { echo "$1" | awk '/us$/ {sub("us",""); print $1/1000; next} /ms$/ {sub("ms",""); print $1+0; next} /s$/ {sub("s",""); print $1*1000}'; }

# Servers by name: pid, port, and (for APIs) the operator port, PORT + 1000.
declare -A API_PIDS API_PORTS
# start_api NAME PORT [api flags...]: an API instance on the stack's replica, warmed with 2 s of
# uniform traffic (the pool and the planner).
start_api() {
  local name=$1 port=$2
  shift 2
  "$BIN/api" --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$((port + 1000))" \
    --replica-file "$REPLICA_FILE" "$@" 2>>"$LOG" &
  API_PIDS[$name]=$!
  API_PORTS[$name]=$port
  wait_ready "$name" "http://127.0.0.1:$port/readyz"
  PRODUCTS=$PRODUCTS wrk -t2 -c "$CONC" -d2s -s "$BENCH/uniform.lua" "http://127.0.0.1:$port" >/dev/null
}
# wait_ready NAME URL: until URL answers; a server NAME (in API_PIDS) that exits first, say
# because it refused a flag, never will: that stops the script with a message instead.
wait_ready() {
  until curl -sf "$2" >/dev/null; do
    if ! kill -0 "${API_PIDS[$1]}" 2>/dev/null; then
      echo "$1 exited before $2 answered; its error is in $LOG" >&2
      exit 1
    fi
    sleep 0.2
  done
}
# stop_api NAME: stops one server and forgets it.
stop_api() {
  kill -TERM "${API_PIDS[$1]}"
  wait "${API_PIDS[$1]}" || true
  unset "API_PIDS[$1]"
}
stop_all() {
  for pid in "${API_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
}

# metric NAME SERIES: the value of one series (summed over its labels) on an API's /metrics.
metric() {
  curl -s "http://127.0.0.1:$((API_PORTS[$1] + 1000))/metrics" | awk -v s="$2" '$1 == s || index($1, s "{") == 1 {v += $2} END {print v + 0}'
}

# wrk_run NAME SCRIPT CONNS: one wrk run of DURATION seconds against server NAME; prints
# "rps p50_ms p99_ms cpu_us_per_request non2xx" (CPU: the server's utime + stime from
# /proc/<pid>/stat over wrk's request count); wrk's output goes to LOG.
wrk_run() {
  local name=$1 script=$2 conns=$3
  local pid=${API_PIDS[$name]} before after out rps p50 p99 requests non2xx
  before=$(ticks "$pid")
  out=$(PRODUCTS=$PRODUCTS wrk -t2 -c "$conns" -d"${DURATION}s" --latency -s "$BENCH/$script" "http://127.0.0.1:${API_PORTS[$name]}")
  after=$(ticks "$pid")
  echo "== $name $script $conns" >>"$LOG"
  echo "$out" >>"$LOG"
  rps=$(echo "$out" | awk '/^Requests\/sec/ {print $2}')
  requests=$(echo "$out" | awk '/requests in/ {print $1}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $5}')
  p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
  p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
  echo "$rps $(to_ms "$p50") $(to_ms "$p99") $(awk -v t=$((after - before)) -v hz="$HZ" -v n="$requests" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}') ${non2xx:-0}"
}

# pgbench_out CLIENTS: one pgbench run of DURATION seconds of the API's single-product SQL on the
# replica, with CLIENTS clients; prints (and logs) its output and a last line "client_cpu USER
# SYSTEM", pgbench's own CPU seconds.
pgbench_out() {
  local out
  out=$( { /usr/bin/time -f "client_cpu %U %S" pgbench -n -M prepared -f "$BENCH/related.sql" \
    -D products="$PRODUCTS" -c "$1" -j 2 -T "$DURATION" "$REPLICA"; } 2>&1)
  echo "== pgbench -c $1" >>"$LOG"
  echo "$out" >>"$LOG"
  echo "$out"
}
# pgbench_run CLIENTS: pgbench_out as a row of wrk_run's columns: "tps latency_avg_ms - - 0"
# (those pgbench has not as "-").
pgbench_run() {
  local out
  out=$(pgbench_out "$1")
  echo "$(echo "$out" | awk '/^tps/ {print $3}') $(echo "$out" | awk '/latency average/ {print $4}') - - 0"
}

# medians LABEL COLUMNS: the median of each of the first COLUMNS columns of the rows on stdin.
medians() {
  local label=$1 n=$2 rows cols=""
  rows=$(cat)
  for c in $(seq "$n"); do
    cols="$cols $(echo "$rows" | awk -v c="$c" '{print $c}' | median)"
  done
  echo "$label$cols"
}

# bench_machine: the line every result is quoted with.
bench_machine() {
  echo "machine: $(nproc) cores; $(free -h | awk '/^Mem/ {print $2 " RAM"}'); load at end: $(cut -d' ' -f1-3 /proc/loadavg); $(psql -qAt "$REPLICA_SU" -c 'SHOW server_version' 2>/dev/null)"
}
