#!/bin/bash
# The compose deployment's `secrets` service: on the first `docker compose up`, generates the
# passwords into the `secrets` volume (mounted read-only at /run/secrets by the other services),
# and on every start rewrites the two URL files built from them, so that a replica added to
# REPLICAS reaches the API's list. A file that exists is kept: to bring your own password, write
# it into the volume before the first start. Alphanumeric passwords need no escaping in a URL.
#
#   postgres_password, replication_password, api_password  for the postgres image (uid 999)
#   seeder.url, api-replicas.list                          for the project's image (uid 10001)
set -euo pipefail

: "${REPLICAS:?REPLICAS names the replica services}"
dir=${SECRETS_DIR:-/run/secrets}
postgres_uid=999     # the official postgres image's `postgres` user
app_uid=10001        # the project's image's `related` user (Dockerfile)
umask 077

generate() {
    local file=$dir/$1
    if [[ ! -s $file ]]; then
        # 32 characters from [A-Za-z0-9], about 190 bits.
        local chars
        chars=$(head -c 4096 /dev/urandom | tr -dc 'A-Za-z0-9')
        [[ ${#chars} -ge 32 ]] || { echo "make-secrets: short password" >&2; exit 1; }
        printf '%s' "${chars:0:32}" >"$file.tmp"
        mv "$file.tmp" "$file"
        echo "make-secrets: generated $1"
    fi
    chown "$postgres_uid:$postgres_uid" "$file"
    chmod 0400 "$file"
}

generate postgres_password
generate replication_password
generate api_password

{
    printf 'postgres://postgres:%s@primary:5432/related\n' "$(cat "$dir/postgres_password")"
} >"$dir/seeder.url.tmp"
{
    echo "# The read-only role's URL on each replica (written by make-secrets.sh from REPLICAS)."
    for replica in $REPLICAS; do
        printf 'postgres://related_api:%s@%s:5432/related\n' "$(cat "$dir/api_password")" "$replica"
    done
} >"$dir/api-replicas.list.tmp"
for file in seeder.url api-replicas.list; do
    chown "$app_uid:$app_uid" "$dir/$file.tmp"
    chmod 0400 "$dir/$file.tmp"
    mv "$dir/$file.tmp" "$dir/$file"
done
echo "make-secrets: secrets ready for replicas: $REPLICAS"
