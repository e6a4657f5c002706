#!/bin/sh
# Entrypoint of the Debian PostgreSQL test image: on an empty PGDATA, initdb with
# POSTGRES_USER as the superuser (password POSTGRES_PASSWORD, scram-sha-256 over TCP) and
# create POSTGRES_DB; then exec postgres with the arguments given. A data folder that
# already holds a cluster is used as it is (a restarted pod keeps its data).
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
# `args: [-c, x=y]` in a pod spec replaces CMD: options alone mean "postgres with these".
case "${1:-}" in
  -*) set -- postgres "$@" ;;
  "") set -- postgres ;;
esac
if [ "$1" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "postgres-entrypoint: POSTGRES_PASSWORD is required for a new cluster" >&2
    exit 1
  fi
  mkdir -p "$PGDATA"
  chmod 700 "$PGDATA"
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb --pgdata="$PGDATA" --username="$POSTGRES_USER" --pwfile="$pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >&2
  rm -f "$pwfile"
  printf "listen_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
  printf 'host all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
  # The database, on a server that listens on its socket only, so nobody sees it half-made.
  pg_ctl --pgdata="$PGDATA" --wait --silent -o "-c listen_addresses=''" start
  if [ "$POSTGRES_DB" != postgres ]; then
    createdb --username="$POSTGRES_USER" --owner="$POSTGRES_USER" "$POSTGRES_DB"
  fi
  pg_ctl --pgdata="$PGDATA" --wait --silent --mode=fast stop
  echo "postgres-entrypoint: initialised $PGDATA (database $POSTGRES_DB, owner $POSTGRES_USER)" >&2
fi
exec "$@"
