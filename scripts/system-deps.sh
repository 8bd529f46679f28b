#!/usr/bin/env bash
# System packages the test suite needs, from Debian's archive:
#   chromium        — the real browser the browser tests drive (through Playwright)
#   fonts-noto-cjk  — so Chinese renders in screenshots instead of empty boxes
#   gdal-bin        — ogrinfo/ogr2ogr, a real GIS client to open what we export and serve
#   poppler-utils   — pdftotext/pdftoppm, to read back the monthly report PDF
# With --check-or-install: install what is missing when we are root with apt-get (CI, a
# fresh dev container); otherwise print what is missing and carry on (the tests that need
# it say so). Idempotent: does nothing when everything is there.
#
# With --postgis (CI; needs root): also install PostgreSQL and PostGIS, create and start a
# cluster if there is none running, and make the test role and database (role hemei,
# password hemei, database hemei_test with the postgis extension). Prints the database URL
# for HEMEI_TEST_PG_URL as its only line on stdout. Safe to run twice: it creates only
# what is missing and starts only what is stopped.
set -euo pipefail
# Everything the tools we call print goes to stderr (pg_ctlcluster, for one, prints "Removed
# stale pid file." on stdout); fd 3 keeps the real stdout for the one line we promise.
# The body runs with fd 3 closed (see `main 3>&-` at the end): the PostgreSQL server we
# start would otherwise inherit it, and a caller reading our stdout through `$(...)` would
# wait for end-of-file for as long as the server runs.
exec 3>&1 1>&2
db_url=""

main() {

postgis=0
for arg in "$@"; do
  case "$arg" in
    --check-or-install) ;;
    --postgis) postgis=1 ;;
    *) echo "usage: $0 [--check-or-install] [--postgis]" >&2; exit 2 ;;
  esac
done

is_root_with_apt() { [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; }

apt_updated=0
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if [ "$apt_updated" = 0 ]; then
    apt-get update -q >/dev/null
    apt_updated=1
  fi
  apt-get install -y -q "$@" >/dev/null
}

need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v ogrinfo >/dev/null 2>&1 || need+=(gdal-bin)
command -v pdftotext >/dev/null 2>&1 || need+=(poppler-utils)
[ -d /usr/share/fonts/opentype/noto ] || dpkg -s fonts-noto-cjk >/dev/null 2>&1 || need+=(fonts-noto-cjk)

if [ ${#need[@]} -gt 0 ]; then
  if is_root_with_apt; then
    echo "installing system packages: ${need[*]}" >&2
    apt_install "${need[@]}"
  else
    echo "missing system packages: ${need[*]} (sudo apt-get install ${need[*]});" \
         "tests that need them will be skipped" >&2
  fi
fi

[ "$postgis" = 1 ] || return 0

# ---------------------------------------------------------------- PostgreSQL + PostGIS
if ! is_root_with_apt; then
  echo "--postgis needs root and apt-get (it installs and starts PostgreSQL)" >&2
  exit 1
fi
# From / so that the postgres user is not refused our working directory.
as_postgres() { (cd / && runuser -u postgres -- env PGOPTIONS="-c client_min_messages=warning" "$@"); }

# The server first: its major version names the PostGIS package (postgresql-15-postgis-3
# on Debian 12).
dpkg -s postgresql >/dev/null 2>&1 || { echo "installing postgresql" >&2; apt_install postgresql; }
pgver=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
[ -f "/usr/share/postgresql/$pgver/extension/postgis.control" ] || {
  echo "installing postgresql-$pgver-postgis-3" >&2
  apt_install "postgresql-$pgver-postgis-3"
}

# A cluster of that version: create one if there is none; start it if it is down.
# (pg_lsclusters columns: version cluster port status owner datadir logfile.)
cluster=$(pg_lsclusters -h | awk -v v="$pgver" '$1 == v { print $2; exit }')
if [ -z "$cluster" ]; then
  cluster=main
  echo "creating PostgreSQL cluster $pgver/$cluster" >&2
  pg_createcluster "$pgver" "$cluster" >/dev/null
fi
if ! pg_lsclusters -h | awk -v v="$pgver" -v c="$cluster" \
     '$1 == v && $2 == c && $4 ~ /^online/ { found = 1 } END { exit !found }'; then
  echo "starting PostgreSQL cluster $pgver/$cluster" >&2
  pg_ctlcluster --skip-systemctl-redirect "$pgver" "$cluster" start
fi
port=$(pg_lsclusters -h | awk -v v="$pgver" -v c="$cluster" '$1 == v && $2 == c { print $3 }')
for _ in $(seq 1 30); do
  pg_isready -q -h 127.0.0.1 -p "$port" && break
  sleep 1
done
pg_isready -q -h 127.0.0.1 -p "$port" || { echo "PostgreSQL did not start on $port" >&2; exit 1; }

# The test role (a superuser: tests create databases and the postgis extension in them)
# and the test database with PostGIS.
psql_q() { as_postgres psql -p "$port" -X -q -v ON_ERROR_STOP=1 "$@"; }
if [ "$(psql_q -tAc "SELECT 1 FROM pg_roles WHERE rolname = 'hemei'")" != 1 ]; then
  psql_q -c "CREATE ROLE hemei LOGIN SUPERUSER PASSWORD 'hemei'"
fi
if [ "$(psql_q -tAc "SELECT 1 FROM pg_database WHERE datname = 'hemei_test'")" != 1 ]; then
  psql_q -c "CREATE DATABASE hemei_test OWNER hemei"
fi
psql_q -d hemei_test -c "CREATE EXTENSION IF NOT EXISTS postgis"

db_url="postgresql+psycopg://hemei:hemei@127.0.0.1:$port/hemei_test"
}

main "$@" 3>&-
if [ -n "$db_url" ]; then echo "$db_url" >&3; fi
