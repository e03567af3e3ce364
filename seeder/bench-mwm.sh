#!/usr/bin/env bash
# The relation primary key's build time against maintenance_work_mem (results/seeder.md):
# seeds PRODUCTS products x 16 without the relation index on one primary (stack crate), then
# builds the key as the seeder does (one session, WORKERS parallel workers) with each MWMS value,
# two rounds. Usage: SKIP_BUILD=1 PRODUCTS=3000000 MWMS="1024 4096" seeder/bench-mwm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${SKIP_BUILD:-}" ]; then cargo build --release -p seeder -p stack; fi
PRODUCTS=${PRODUCTS:-3000000}
DIR=${BENCH_DIR:-$(mktemp -d /tmp/seeder-mwm.XXXXXX)}
mkdir -p "$DIR"
chmod 755 "$DIR"
STACK="target/release/stack --dir $DIR/stack"
$STACK up --replicas 0 >/dev/null
trap '$STACK down >/dev/null' EXIT
URL=$($STACK status | sed -n 's/^primary (superuser): //p')
/usr/bin/time -f "seed %e s" target/release/seeder --database-url "$URL" --quiet --reset --products $PRODUCTS --no-index
psql -q "$URL" -c "CHECKPOINT"
for round in 1 2; do
  for mwm in ${MWMS:-1024 4096}; do
    psql -q "$URL" -c "SET client_min_messages = warning; ALTER TABLE related_items DROP CONSTRAINT IF EXISTS related_items_pkey" -c "CHECKPOINT"
    start=$(date +%s.%N)
    psql -q "$URL" -c "SET maintenance_work_mem = '${mwm}MB'; SET max_parallel_maintenance_workers = ${WORKERS:-1}; SET trace_sort = on; SET client_min_messages = log; ALTER TABLE related_items ADD CONSTRAINT related_items_pkey PRIMARY KEY (product_id, position)" 2>$DIR/trace-$mwm-$round.log
    end=$(date +%s.%N)
    echo "round $round mwm ${mwm}MB: $(echo "$end - $start" | bc) s; load $(cut -d' ' -f1 /proc/loadavg); sorted runs per participant: $(grep -o 'quicksort of run [0-9]*' "$DIR/trace-$mwm-$round.log" | awk '{print $4}' | sort -n | tail -1) (1 = sorted in memory)"
  done
done
