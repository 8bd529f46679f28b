#!/usr/bin/env bash
# System packages the test suite needs, from Debian's archive:
#   chromium        — the real browser the browser tests drive (through Playwright)
#   fonts-noto-cjk  — so Chinese renders in screenshots instead of empty boxes
#   gdal-bin        — ogrinfo/ogr2ogr, a real GIS client to open what we export and serve
# With --check-or-install: install what is missing when we are root with apt-get (CI, a
# fresh dev container); otherwise print what is missing and carry on (the tests that need
# it say so). Idempotent: does nothing when everything is there.
set -euo pipefail

need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v ogrinfo >/dev/null 2>&1 || need+=(gdal-bin)
[ -d /usr/share/fonts/opentype/noto ] || dpkg -s fonts-noto-cjk >/dev/null 2>&1 || need+=(fonts-noto-cjk)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q "${need[@]}" >/dev/null
else
  echo "missing system packages: ${need[*]} (sudo apt-get install ${need[*]});" \
       "tests that need them will be skipped" >&2
fi
