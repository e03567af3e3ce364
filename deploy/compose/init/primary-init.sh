#!/bin/bash
# Run once by the postgres image on the primary's first start (/docker-entrypoint-initdb.d),
# against the `related` database (POSTGRES_DB) as the superuser: the replication role the
# replicas clone and stream with, the API's read-only role (as stack/src/cluster/mod.rs creates
# them for the local topology), and pg_hba lines for both. The seeder then creates the schema
# and grants SELECT on its two tables to related_api (seeder/sql/grants.sql).
# Passwords are read from the secret files by psql's \set with backquotes: they reach neither a
# command line nor the log.
set -euo pipefail
export SECRETS_DIR=${SECRETS_DIR:-/run/secrets}

psql -v ON_ERROR_STOP=1 --quiet --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
\set replication_password `cat "$SECRETS_DIR/replication_password"`
\set api_password `cat "$SECRETS_DIR/api_password"`
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD :'replication_password';
CREATE ROLE related_api LOGIN PASSWORD :'api_password' CONNECTION LIMIT 1000;
ALTER ROLE related_api SET default_transaction_read_only = on;
ALTER ROLE related_api SET statement_timeout = '5s';
REVOKE ALL ON DATABASE related FROM PUBLIC;
GRANT CONNECT ON DATABASE related TO related_api;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO related_api;
SQL

# The image's own line (host all all all scram-sha-256) does not cover replication connections.
cat >>"$PGDATA/pg_hba.conf" <<'HBA'
# related-items: the replicas' streaming connections (deploy/compose/init/primary-init.sh)
host replication replicator all scram-sha-256
HBA
