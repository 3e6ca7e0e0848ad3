#!/usr/bin/env bash
# Feast's registry database, beside MLflow's: the role `feast` (password from FEAST_DB_PASSWORD)
# and the database `feast` it owns. The postgres image runs this once, when it initialises an
# empty data volume, as the superuser POSTGRES_USER; psql quotes the password itself (:'...').
set -euo pipefail

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --set=feast_password="${FEAST_DB_PASSWORD:?FEAST_DB_PASSWORD must be set}" <<'SQL'
CREATE ROLE feast LOGIN PASSWORD :'feast_password';
CREATE DATABASE feast OWNER feast;
SQL
