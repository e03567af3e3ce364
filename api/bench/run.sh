#!/usr/bin/env bash
# The API benchmark of issue 3, section 6 (results in results/api.md).
#
# Builds a primary + 1 streaming replica (stack), seeds PRODUCTS products x 16 related items
# (seeder), then against the replica, in one run:
#   1. pgbench -M prepared -f bench/related.sql: the API's own SQL straight on the database
#      (the ceiling), CONC clients;
#   2. wrk on the API (release build), uniform random ids, CONC connections, cache off;
#   3. the same with --pool-check round-trip (bb8's classic test_on_check_out) for its cost;
#   4. wrk paced at half of the API's maximum rate (wrk's delay(); wrk2 is not installed) for p99;
#   5. wrk on the API with the cache on and Zipf(s=1) ids.
# Each measurement is RUNS runs of DURATION seconds; the report gives medians and the API's CPU
# time per request from /proc/<pid>/stat.
#
# Usage: api/bench/run.sh   (env: PRODUCTS CONC DURATION RUNS BENCH_DIR KEEP=1 SKIP_BUILD=1)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BENCH=$ROOT/api/bench
PRODUCTS=${PRODUCTS:-1000000}
CONC=${CONC:-16}
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
echo "rows: $(psql -qAt "$REPLICA_SU" -c "SELECT (SELECT count(*) FROM products) || ' products, ' || (SELECT count(*) FROM related_items) || ' related rows'")"

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

API_PID=
start_api() {
  "$BIN/api" --listen "127.0.0.1:$PORT" --replica "$REPLICA" --pool-size "$CONC" "$@" 2>>"$LOG" &
  API_PID=$!
  until curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null; do sleep 0.2; done
  # Warm the pool and the planner (and, for the cache runs, the cache: WARM_SCRIPT/WARM_SECS).
  PRODUCTS=$PRODUCTS wrk -t2 -c "$CONC" -d"${WARM_SECS:-2}s" -s "$BENCH/${WARM_SCRIPT:-uniform.lua}" "http://127.0.0.1:$PORT" >/dev/null
}
stop_api() {
  kill -TERM "$API_PID"
  wait "$API_PID" || true
}
trap 'if [ -n "$API_PID" ]; then kill -TERM "$API_PID" 2>/dev/null || true; fi; if [ -z "${KEEP:-}" ]; then "$BIN/stack" down --dir "$DIR/stack" >/dev/null 2>&1 || true; fi' EXIT

# One wrk run: prints "rps p50_ms p99_ms cpu_us_per_request non2xx".
wrk_run() {
  local script=$1 conns=$2
  local before after out rps p50 p99 requests non2xx
  before=$(ticks "$API_PID")
  out=$(PRODUCTS=$PRODUCTS wrk -t2 -c "$conns" -d"${DURATION}s" --latency -s "$BENCH/$script" "http://127.0.0.1:$PORT")
  after=$(ticks "$API_PID")
  echo "$out" >>"$LOG"
  rps=$(echo "$out" | awk '/^Requests\/sec/ {print $2}')
  requests=$(echo "$out" | awk '/requests in/ {print $1}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $5}')
  p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
  p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
  echo "$rps $(to_ms "$p50") $(to_ms "$p99") $(awk -v t=$((after - before)) -v hz="$HZ" -v n="$requests" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}') ${non2xx:-0}"
}
to_ms() { echo "$1" | awk '/us$/ {sub("us",""); print $1/1000; next} /ms$/ {sub("ms",""); print $1+0; next} /s$/ {sub("s",""); print $1*1000}'; }

# Runs a measurement RUNS times and prints the medians of each column.
measure() {
  local label=$1
  shift
  local rows=()
  for i in $(seq "$RUNS"); do
    rows+=("$("$@")")
    echo "  $label run $i: ${rows[-1]}" >&2
  done
  local cols=""
  for c in 1 2 3 4 5; do
    cols="$cols $(printf '%s\n' "${rows[@]}" | awk -v c=$c '{print $c}' | median)"
  done
  echo "$label$cols"
}

pgbench_run() {
  local out
  out=$(pgbench -n -M prepared -f "$BENCH/related.sql" -D products="$PRODUCTS" -c "$CONC" -j 2 -T "$DURATION" -r "$REPLICA" 2>&1)
  echo "$out" >>"$LOG"
  echo "$(echo "$out" | awk '/^tps/ {print $3}') $(echo "$out" | awk '/latency average/ {print $4}') - - 0"
}

RESULTS=$DIR/results.txt
{
  echo "# label rps p50_ms p99_ms cpu_us_per_req non2xx (medians of $RUNS x ${DURATION}s, concurrency $CONC)"
  measure pgbench pgbench_run
  start_api
  measure api_uniform wrk_run uniform.lua "$CONC"
  stop_api
  start_api --pool-check round-trip
  measure api_uniform_roundtrip_check wrk_run uniform.lua "$CONC"
  stop_api
} | tee "$RESULTS"
MAX=$(awk '$1 == "api_uniform" {print $2}' "$RESULTS")
# Half the maximum rate: connections * 1000 / (DELAY_MS + ~1 ms latency) = MAX / 2.
DELAY_MS=10
PACED_CONNS=$(awk -v m="$MAX" -v d=$DELAY_MS 'BEGIN {c = int(m / 2 * (d + 1) / 1000 + 0.5); print (c < 1 ? 1 : c)}')
export DELAY_MS
{
  start_api
  measure "api_paced_half_rate(${PACED_CONNS}conns,${DELAY_MS}ms)" wrk_run paced.lua "$PACED_CONNS"
  stop_api
  WARM_SCRIPT=zipf.lua WARM_SECS=20 start_api --cache-capacity 500000 --cache-ttl-secs 600
  measure api_cache_zipf wrk_run zipf.lua "$CONC"
  curl -s "http://127.0.0.1:$PORT/metrics" | grep -E '^api_cache_(hits|misses)_total' >&2
  stop_api
} | tee -a "$RESULTS"
echo "machine: $(nproc) cores; $(free -h | awk '/^Mem/ {print $2 " RAM"}'); $(psql -qAt "$REPLICA_SU" -c 'SHOW server_version')"
echo "raw outputs in $LOG"
