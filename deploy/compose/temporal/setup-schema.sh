#!/bin/sh
# One-shot (docker-compose.yml, service temporal-schema, image temporalio/admin-tools): creates
# Temporal's two databases in temporal-postgresql and brings their schemas to the versions this
# admin-tools release ships. Safe to run at every `docker compose up`: update-schema applies only
# what is missing.
set -eu
: "${POSTGRES_SEEDS:?}" "${POSTGRES_USER:?}" "${SQL_PASSWORD:?}"
port=${DB_PORT:-5432}
schema_root=/etc/temporal/schema/postgresql/v12

echo "temporal-schema: waiting for ${POSTGRES_SEEDS}:${port}"
until nc -z -w 5 "${POSTGRES_SEEDS}" "${port}"; do sleep 1; done

for db in temporal temporal_visibility; do
  case $db in
    temporal) dir=$schema_root/temporal/versioned ;;
    *) dir=$schema_root/visibility/versioned ;;
  esac
  sql() { temporal-sql-tool --plugin postgres12 --ep "${POSTGRES_SEEDS}" -p "${port}" -u "${POSTGRES_USER}" --db "$db" "$@"; }
  # `create` fails when the database exists (a second `up`); a real failure (wrong password,
  # server gone) fails setup-schema right after, which stops the script.
  sql create || echo "temporal-schema: database $db exists"
  sql setup-schema -v 0.0
  sql update-schema -d "$dir"
done
echo "temporal-schema: done"
