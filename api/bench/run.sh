#!/usr/bin/env bash
# The API benchmark of issue 3, section 6 (results in results/api.md).
#
# Builds a primary + 1 streaming replica (stack), seeds PRODUCTS products x 16 related items
# (seeder), then against the replica, in one run:
#   1. RUNS interleaved rounds of: pgbench -M prepared -f bench/related.sql (the API's own SQL
#      straight on the database: the ceiling) with CONC clients, the same with SMALL_POOL
#      clients, and wrk on the API (release build, uniform random ids, cache off, CONC
#      connections) with --pool-size CONC and with --pool-size SMALL_POOL. Interleaving puts the
#      same background noise on every side.
#   2. the API with --pool-check round-trip (bb8's classic test_on_check_out) for its cost;
#   3. wrk paced at half of the small-pool API's maximum rate (wrk's delay(); wrk2 is not
#      installed) for p99;
#   4. the small-pool API with the cache on and Zipf(s=1) ids, after a warm-up that requests the
#      WARM_RANKS hottest ids once (zipf_warm.lua): the cache's steady state, not its cold
#      start. The hit ratio of the measured runs alone is printed.
# Before any of it, the replica's tables are read into shared buffers (pg_prewarm) and scanned
# once, so the replica sets the hint bits a fresh load leaves unset (they are not WAL-logged):
# otherwise the first minutes of every measurement pay for writing them.
# Each measurement is RUNS runs of DURATION seconds; the report gives medians and the API's CPU
# time per request from /proc/<pid>/stat.
#
# Usage: api/bench/run.sh
#   (env: PRODUCTS CONC SMALL_POOL DURATION RUNS WARM_RANKS WARM_SECS BENCH_DIR KEEP=1 SKIP_BUILD=1)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BENCH=$ROOT/api/bench
PRODUCTS=${PRODUCTS:-1000000}
CONC=${CONC:-16}
SMALL_POOL=${SMALL_POOL:-4}
DURATION=${DURATION:-10}
RUNS=${RUNS:-3}
DIR=${BENCH_DIR:-/tmp/api-bench}
PORT=${API_BENCH_PORT:-18080}
mkdir -p "$DIR"
chmod 755 "$DIR"
LOG=$DIR/log
: >"$LOG"

cd "$ROOT"
# SKIP_BUILD=1 uses the binaries already in target/release (the cargo lock is shared).
if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release -p api -p seeder -p stack 2>&1 | tail -1
fi
BIN=$ROOT/target/release

if ! "$BIN/stack" status --dir "$DIR/stack" >/dev/null 2>&1; then
  "$BIN/stack" up --dir "$DIR/stack" --replicas 1 --shared-buffers-mb 2048 >>"$LOG"
fi
STATUS=$("$BIN/stack" status --dir "$DIR/stack")
PRIMARY=$(echo "$STATUS" | sed -n 's/^primary (superuser): //p')
REPLICA=$(echo "$STATUS" | sed -n 's/^replicas (API role): //p' | cut -d, -f1)
# The superuser on the replica: the primary's credentials, the replica's address.
CREDS=$(echo "$PRIMARY" | sed -E 's#postgres://([^@]*)@.*#\1#')
RHOSTPORT=$(echo "$REPLICA" | sed -E 's#.*@([^/]*)/.*#\1#')
REPLICA_SU="postgres://$CREDS@$RHOSTPORT/related"

echo "seeding $PRODUCTS products x 16 (resumable; a finished load is skipped)"
/usr/bin/time -f "seed wall %e s" "$BIN/seeder" --database-url "$PRIMARY" --products "$PRODUCTS" --quiet 2>&1 | tail -3
psql -qAt "$PRIMARY" -c "CREATE EXTENSION IF NOT EXISTS pg_prewarm" >/dev/null
until [ "$(psql -qAt "$REPLICA_SU" -c "SELECT count(*) FROM products WHERE id = $PRODUCTS")" = 1 ] &&
  [ "$(psql -qAt "$REPLICA_SU" -c "SELECT count(*) FROM pg_extension WHERE extname = 'pg_prewarm'")" = 1 ]; do
  sleep 1
done
# All in memory: read every table and index of the schema into shared buffers.
psql -qAt "$REPLICA_SU" -c "SELECT sum(pg_prewarm(c.oid)) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i')" >/dev/null
# Set every row's hint bits on the replica now (sequential scans touch every tuple).
psql -qAt "$REPLICA_SU" -c "SET enable_indexscan = off; SET enable_indexonlyscan = off; SET enable_bitmapscan = off; SELECT count(*) FROM products; SELECT count(*) FROM related_items" >/dev/null
echo "rows: $(psql -qAt "$REPLICA_SU" -c "SELECT (SELECT count(*) FROM products) || ' products, ' || (SELECT count(*) FROM related_items) || ' related rows'")"

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

# API processes by name: pid and port. The measurement blocks below run in this shell (their
# output goes to files, not through a pipe), so the EXIT trap sees every API still running.
declare -A API_PIDS API_PORTS
# start_api NAME PORT [api flags...]
start_api() {
  local name=$1 port=$2
  shift 2
  "$BIN/api" --listen "127.0.0.1:$port" --replica "$REPLICA" "$@" 2>>"$LOG" &
  API_PIDS[$name]=$!
  API_PORTS[$name]=$port
  until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do sleep 0.2; done
  # Warm the pool and the planner.
  PRODUCTS=$PRODUCTS wrk -t2 -c "$CONC" -d2s -s "$BENCH/uniform.lua" "http://127.0.0.1:$port" >/dev/null
}
stop_api() {
  kill -TERM "${API_PIDS[$1]}"
  wait "${API_PIDS[$1]}" || true
  unset "API_PIDS[$1]"
}
stop_all() {
  for pid in "${API_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
}
trap 'stop_all; if [ -z "${KEEP:-}" ]; then "$BIN/stack" down --dir "$DIR/stack" >/dev/null 2>&1 || true; fi' EXIT

# wrk_run NAME SCRIPT CONNS: prints "rps p50_ms p99_ms cpu_us_per_request non2xx".
wrk_run() {
  local name=$1 script=$2 conns=$3
  local pid=${API_PIDS[$name]} before after out rps p50 p99 requests non2xx
  before=$(ticks "$pid")
  out=$(PRODUCTS=$PRODUCTS wrk -t2 -c "$conns" -d"${DURATION}s" --latency -s "$BENCH/$script" "http://127.0.0.1:${API_PORTS[$name]}")
  after=$(ticks "$pid")
  echo "$out" >>"$LOG"
  rps=$(echo "$out" | awk '/^Requests\/sec/ {print $2}')
  requests=$(echo "$out" | awk '/requests in/ {print $1}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $5}')
  p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
  p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
  echo "$rps $(to_ms "$p50") $(to_ms "$p99") $(awk -v t=$((after - before)) -v hz="$HZ" -v n="$requests" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}') ${non2xx:-0}"
}
to_ms() { echo "$1" | awk '/us$/ {sub("us",""); print $1/1000; next} /ms$/ {sub("ms",""); print $1+0; next} /s$/ {sub("s",""); print $1*1000}'; }

# Medians of each column of the rows on stdin, after LABEL.
medians() {
  local label=$1 rows
  rows=$(cat)
  local cols=""
  for c in 1 2 3 4 5; do
    cols="$cols $(echo "$rows" | awk -v c=$c '{print $c}' | median)"
  done
  echo "$label$cols"
}

# record NAME COMMAND...: one run, its row appended to ROUNDS_DIR/NAME and echoed to stderr.
record() {
  local name=$1 row
  shift
  row=$("$@")
  echo "$row" >>"$ROUNDS_DIR/$name"
  echo "  $name: $row" >&2
}

# Runs a measurement RUNS times and prints the medians of each column.
measure() {
  local label=$1 row
  shift
  : >"$ROUNDS_DIR/$label"
  for i in $(seq "$RUNS"); do
    row=$("$@")
    echo "  $label run $i: $row" >&2
    echo "$row" >>"$ROUNDS_DIR/$label"
  done
  medians "$label" <"$ROUNDS_DIR/$label"
}

# pgbench_run CLIENTS
pgbench_run() {
  local out
  out=$(pgbench -n -M prepared -f "$BENCH/related.sql" -D products="$PRODUCTS" -c "$1" -j 2 -T "$DURATION" -r "$REPLICA" 2>&1)
  echo "$out" >>"$LOG"
  echo "$(echo "$out" | awk '/^tps/ {print $3}') $(echo "$out" | awk '/latency average/ {print $4}') - - 0"
}

cache_counts() {
  curl -s "http://127.0.0.1:${API_PORTS[$1]}/metrics" | awk '/^api_cache_hits_total/ {h=$2} /^api_cache_misses_total/ {m=$2} END {print h+0, m+0}'
}

RESULTS=$DIR/results.txt
ROUNDS_DIR=$DIR/rounds
rm -rf "$ROUNDS_DIR"
mkdir -p "$ROUNDS_DIR"
{
  echo "# label rps p50_ms p99_ms cpu_us_per_req non2xx (medians of $RUNS x ${DURATION}s, concurrency $CONC)"
  start_api pool "$PORT" --pool-size "$CONC"
  start_api small_pool $((PORT + 1)) --pool-size "$SMALL_POOL"
  for i in $(seq "$RUNS"); do
    record pgbench pgbench_run "$CONC"
    record pgbench_small pgbench_run "$SMALL_POOL"
    record api_uniform wrk_run pool uniform.lua "$CONC"
    record api_uniform_small_pool wrk_run small_pool uniform.lua "$CONC"
  done
  medians "pgbench(${CONC}clients)" <"$ROUNDS_DIR/pgbench"
  medians "pgbench(${SMALL_POOL}clients)" <"$ROUNDS_DIR/pgbench_small"
  medians "api_uniform(pool${CONC})" <"$ROUNDS_DIR/api_uniform"
  medians "api_uniform(pool${SMALL_POOL})" <"$ROUNDS_DIR/api_uniform_small_pool"
  stop_api small_pool
  stop_api pool
  start_api roundtrip "$PORT" --pool-size "$CONC" --pool-check round-trip
  measure "api_uniform_roundtrip_check(pool${CONC})" wrk_run roundtrip uniform.lua "$CONC"
  stop_api roundtrip
} >"$RESULTS"
cat "$RESULTS"
MAX=$(awk -v l="api_uniform(pool${SMALL_POOL})" '$1 == l {print $2}' "$RESULTS")
# Half the maximum rate: connections * 1000 / (DELAY_MS + ~1 ms latency) = MAX / 2.
DELAY_MS=10
PACED_CONNS=$(awk -v m="$MAX" -v d=$DELAY_MS 'BEGIN {c = int(m / 2 * (d + 1) / 1000 + 0.5); print (c < 1 ? 1 : c)}')
export DELAY_MS
WARM_RANKS=${WARM_RANKS:-300000}
WARM_SECS=${WARM_SECS:-90}
export WARM_RANKS
PART2=$DIR/results-part2.txt
{
  start_api paced "$PORT" --pool-size "$SMALL_POOL"
  measure "api_paced_half_rate(${PACED_CONNS}conns,${DELAY_MS}ms)" wrk_run paced paced.lua "$PACED_CONNS"
  stop_api paced
  start_api cache "$PORT" --pool-size "$SMALL_POOL" --cache-capacity 500000 --cache-ttl-secs 600
  PRODUCTS=$PRODUCTS wrk -t1 -c "$CONC" -d"${WARM_SECS}s" -s "$BENCH/zipf_warm.lua" "http://127.0.0.1:$PORT" >>"$LOG"
  read -r h0 m0 < <(cache_counts cache)
  measure api_cache_zipf wrk_run cache zipf.lua "$CONC"
  read -r h1 m1 < <(cache_counts cache)
  echo "cache after warming $WARM_RANKS ranks for ${WARM_SECS}s (total hits $h0, misses $m0): measured runs $((h1 - h0)) hits, $((m1 - m0)) misses, hit ratio $(awk -v h=$((h1 - h0)) -v m=$((m1 - m0)) 'BEGIN {printf "%.3f", h / (h + m)}')" >&2
  stop_api cache
} >"$PART2"
tee -a "$RESULTS" <"$PART2"
echo "machine: $(nproc) cores; $(free -h | awk '/^Mem/ {print $2 " RAM"}'); $(psql -qAt "$REPLICA_SU" -c 'SHOW server_version')"
echo "raw outputs in $LOG"
