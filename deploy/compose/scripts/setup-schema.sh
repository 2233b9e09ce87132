#!/bin/sh
# Creates Temporal's two PostgreSQL databases (temporal, temporal_visibility) if needed and brings
# their schemas to the admin tools' version: run by the `temporal-schema` service of
# docker-compose.prod.yml (image temporalio/admin-tools) before the server starts, on every `up`
# (it is idempotent: an existing database is kept, setup-schema leaves a versioned schema alone, and
# update-schema applies only the versions it misses). Upgrading the server: bump the admin tools'
# and the server's image together; this runs the new versions' migrations first.
# Environment: POSTGRES_SEEDS (host), DB_PORT, POSTGRES_USER, SQL_PASSWORD (read by
# temporal-sql-tool itself, so the password is on no command line).
set -eu
: "${POSTGRES_SEEDS:?POSTGRES_SEEDS (the PostgreSQL host) is required}"
: "${POSTGRES_USER:?POSTGRES_USER is required}"
: "${SQL_PASSWORD:?SQL_PASSWORD is required}"
port="${DB_PORT:-5432}"
schema=/etc/temporal/schema/postgresql/v12

tries=0
until nc -z -w 5 "$POSTGRES_SEEDS" "$port"; do
  tries=$((tries + 1))
  if [ "$tries" -ge 60 ]; then
    echo "setup-schema: PostgreSQL at $POSTGRES_SEEDS:$port does not answer" >&2
    exit 1
  fi
  sleep 2
done

sql() {
  temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$port" -u "$POSTGRES_USER" "$@"
}

for pair in temporal:temporal temporal_visibility:visibility; do
  db="${pair%%:*}"
  dir="$schema/${pair#*:}/versioned"
  # Fails when the database exists (the normal case after the first start); a real failure shows
  # at the next step, which needs the database.
  if sql --db "$db" create; then
    echo "setup-schema: created database $db"
  else
    echo "setup-schema: database $db not created (it exists, or the next step says why)"
  fi
  sql --db "$db" setup-schema -v 0.0
  sql --db "$db" update-schema -d "$dir"
  echo "setup-schema: $db is at the schema of $dir"
done
