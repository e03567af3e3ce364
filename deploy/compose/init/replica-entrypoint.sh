#!/bin/bash
# Entrypoint of a replica service: on the first start (an empty data volume), clone the primary
# with pg_basebackup into the data directory, with a replication slot named after the replica,
# and configure it as a hot standby streaming from the primary; then run the postgres image's
# own entrypoint, which finds the data directory initialised and starts the server.
#
# REPLICA_NAME (the slot and application_name) and PRIMARY_HOST (and PRIMARY_PORT, 5432) come
# from compose.yaml; the replication password from /run/secrets/replication_password
# (SECRETS_DIR), through a password file in the data directory (never on a command line or in
# postgresql.auto.conf).
set -euo pipefail

: "${REPLICA_NAME:?}" "${PRIMARY_HOST:?}"
PRIMARY_PORT=${PRIMARY_PORT:-5432}
SECRETS_DIR=${SECRETS_DIR:-/run/secrets}
PGDATA=${PGDATA:-/var/lib/postgresql/data}
slot=${REPLICA_NAME//[^a-z0-9_]/_}

if [[ $(id -u) == 0 ]]; then
    mkdir -p "$PGDATA"
    chown postgres:postgres "$PGDATA"
    chmod 0700 "$PGDATA"
    exec gosu postgres bash "${BASH_SOURCE[0]}" "$@"
fi

passfile=$PGDATA/replication.pgpass
write_passfile() {
    (umask 077 && printf '%s:%s:*:replicator:%s\n' "$PRIMARY_HOST" "$PRIMARY_PORT" \
        "$(cat "$SECRETS_DIR/replication_password")" >"$1")
}

if [[ ! -s $PGDATA/PG_VERSION ]]; then
    echo "replica-entrypoint: cloning $PRIMARY_HOST into $PGDATA (slot $slot)"
    tmp_pass=$(mktemp)
    write_passfile "$tmp_pass"
    export PGPASSFILE=$tmp_pass
    until pg_isready -q -h "$PRIMARY_HOST" -p "$PRIMARY_PORT"; do sleep 1; done
    # A slot left by an earlier replica of this name whose volume was deleted: drop it, so
    # that --create-slot below succeeds. The replication role may drop slots.
    psql -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U replicator -d postgres -v ON_ERROR_STOP=1 -Atq -c \
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
         WHERE slot_name = '$slot' AND NOT active" >/dev/null
    rm -rf "${PGDATA:?}"/* 2>/dev/null || true
    pg_basebackup -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U replicator -D "$PGDATA" \
        --wal-method=stream --checkpoint=fast --create-slot --slot="$slot" --no-password
    rm -f "$tmp_pass"
    touch "$PGDATA/standby.signal"
    cat >>"$PGDATA/postgresql.auto.conf" <<CONF
# deploy/compose/init/replica-entrypoint.sh
primary_conninfo = 'host=$PRIMARY_HOST port=$PRIMARY_PORT user=replicator passfile=$passfile application_name=$REPLICA_NAME'
primary_slot_name = '$slot'
CONF
fi
# Rewritten on every start, so that the file follows the secret.
write_passfile "$passfile"

exec docker-entrypoint.sh "$@"
