#!/usr/bin/env bash
# Reproduces results/seeder.md: the seeder against `pgbench -i` at an equal number of rows, on
# one primary started by the stack crate, in one run (same server, same settings, same disk).
#
#   seeder/bench.sh                      # 1M products x 16 = 17M rows vs pgbench -i -s 170
#   PRODUCTS=10000000 seeder/bench.sh    # the full 170M rows vs pgbench -i -s 1700 (~30 GB disk)
#
# Environment: PRODUCTS, PER_PRODUCT, WORKERS (seeder load connections), ROUNDS (default 2,
# alternating which runs first), SKIP_BUILD=1, BENCH_DIR, and
# INDEX_VARIANTS=1 to also compare relation index layouts (build time and the API's join query).
set -euo pipefail
cd "$(dirname "$0")/.."

PRODUCTS=${PRODUCTS:-1000000}
PER_PRODUCT=${PER_PRODUCT:-16}
ROWS=$((PRODUCTS * (PER_PRODUCT + 1)))
# pgbench -i -s N makes N x 100,000 pgbench_accounts rows: round to the nearest scale.
SCALE=$(((ROWS + 50000) / 100000))
DIR=${BENCH_DIR:-$(mktemp -d /tmp/seeder-bench.XXXXXX)}
chmod 755 "$DIR"

if [ -z "${SKIP_BUILD:-}" ]; then cargo build --release -p seeder -p stack; fi
STACK="target/release/stack --dir $DIR/stack"
SEEDER=target/release/seeder

$STACK up --replicas 0 >/dev/null
trap '$STACK down >/dev/null' EXIT
URL=$($STACK status | sed -n 's/^primary (superuser): //p')
PGBENCH_URL=${URL%/*}/pgbench
psql -q "$URL" -c "CREATE DATABASE pgbench"

echo "== machine"
echo "$(nproc) cores, $(free -g | awk '/^Mem:/{print $2}') GiB RAM, $(uname -sr)"
psql -At "$URL" -c "SELECT version()"
echo "seeder: $PRODUCTS products x $PER_PRODUCT = $ROWS rows; pgbench -i -s $SCALE = $((SCALE * 100000)) rows"

WORKERS_ARG=()
if [ -n "${WORKERS:-}" ]; then WORKERS_ARG=(--workers "$WORKERS"); fi

run_seeder() {
    echo "== seeder --products $PRODUCTS --per-product $PER_PRODUCT ${WORKERS_ARG[*]}"
    /usr/bin/time -f "seeder process: %e s wall, %U s user, %S s sys" \
        $SEEDER --database-url "$URL" --quiet --reset \
        --products "$PRODUCTS" --per-product "$PER_PRODUCT" "${WORKERS_ARG[@]}"
    psql -At "$URL" -c "SELECT 'sizes: tables ' || pg_size_pretty(pg_table_size('products') + pg_table_size('related_items'))
        || ', indexes ' || pg_size_pretty(pg_indexes_size('products') + pg_indexes_size('related_items'))"
    psql -q "$URL" -c "CHECKPOINT"
}

run_pgbench() {
    echo "== pgbench -i -s $SCALE"
    /usr/bin/time -f "pgbench process: %e s wall, %U s user, %S s sys" \
        pgbench -i -s "$SCALE" "$PGBENCH_URL" 2>&1 | grep -v -e "of .* tuples (" -e NOTICE
    psql -At "$PGBENCH_URL" -c "SELECT 'sizes: tables ' || pg_size_pretty(pg_table_size('pgbench_accounts'))
        || ', indexes ' || pg_size_pretty(pg_indexes_size('pgbench_accounts'))"
    psql -q "$URL" -c "CHECKPOINT"
}

# The machine is shared and noisy: alternate the order (seeder first, then pgbench first) so
# that drift in background load does not favour one side.
for round in $(seq 1 "${ROUNDS:-2}"); do
    echo "== round $round, load average $(cut -d' ' -f1-3 /proc/loadavg)"
    if [ $((round % 2)) = 1 ]; then run_seeder; run_pgbench; else run_pgbench; run_seeder; fi
done

if [ "${INDEX_VARIANTS:-0}" = 1 ]; then
    echo "== relation index variants (build time; the API's query via pgbench, 8 clients, prepared)"
    cat >"$DIR/related.sql" <<SQL
\\set id random(1, $PRODUCTS)
SELECT p.id, r.id, r.name, r.category, r.price_cents, r.image_url, r.rating::float8, r.review_count
FROM products p
LEFT JOIN LATERAL (
    SELECT q.id, q.name, q.category, q.price_cents, q.image_url, q.rating, q.review_count, ri.position
    FROM related_items ri JOIN products q ON q.id = ri.related_id
    WHERE ri.product_id = p.id ORDER BY ri.position LIMIT 16
) r ON true
WHERE p.id = :id ORDER BY r.position;
SQL
    SETTINGS="SET maintenance_work_mem = '1GB'; SET max_parallel_maintenance_workers = $(($(nproc) - 1));"
    PK="ALTER TABLE related_items ADD CONSTRAINT related_items_pkey PRIMARY KEY (product_id, position)"
    UNIQUE="CREATE UNIQUE INDEX related_items_product_related ON related_items (product_id, related_id)"
    for variant in "pk+unique|$PK; $UNIQUE" \
                   "pk-include+unique|$PK INCLUDE (related_id); $UNIQUE" \
                   "pk-include|$PK INCLUDE (related_id)" \
                   "pk|$PK"; do
        name=${variant%%|*}
        ddl=${variant#*|}
        psql -q "$URL" -c "ALTER TABLE related_items DROP CONSTRAINT IF EXISTS related_items_pkey" \
            -c "DROP INDEX IF EXISTS related_items_product_related"
        start=$(date +%s.%N)
        psql -q "$URL" -c "$SETTINGS $ddl"
        end=$(date +%s.%N)
        psql -q "$URL" -c "VACUUM ANALYZE related_items"
        tps=$(pgbench -n -M prepared -c 8 -j 2 -T "${QUERY_SECONDS:-20}" -f "$DIR/related.sql" "$URL" 2>&1 \
            | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
        plan=$(psql -At "$URL" -c "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF)
            SELECT ri.related_id FROM related_items ri WHERE ri.product_id = 4242 ORDER BY ri.position" \
            | head -1)
        size=$(psql -At "$URL" -c "SELECT pg_size_pretty(pg_indexes_size('related_items'))")
        printf '%-18s build %6.1f s  indexes %8s  %8s TPS  plan: %s\n' \
            "$name" "$(echo "$end - $start" | bc)" "$size" "$tps" "$plan"
    done
fi
