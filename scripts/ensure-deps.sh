#!/usr/bin/env bash
# Checks that what the platform and its tests need is on this machine, and installs what can be
# installed from Debian's packages. It changes nothing that is already in place.
set -euo pipefail

fail() { echo "ensure-deps: $*" >&2; exit 1; }

command -v go >/dev/null || fail "Go is not on PATH: install Go 1.26 or newer (https://go.dev/doc/install)."

have_postgres() {
  command -v initdb >/dev/null && command -v postgres >/dev/null && return 0
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}
if ! have_postgres; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "ensure-deps: installing the PostgreSQL server from Debian's packages"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  have_postgres || fail "PostgreSQL server binaries (initdb, postgres) not found: apt-get install postgresql, or set DATABASE_URL / TEST_DATABASE_URL."
fi

# promtool checks and unit-tests the alert rules (deploy/prometheus). It is unpacked from
# Debian's prometheus package into bin/tools rather than installed: the installed package
# would also run a Prometheus service on this machine.
if ! command -v promtool >/dev/null && [ ! -x bin/tools/promtool ]; then
  command -v apt-get >/dev/null || fail "promtool not found: put Prometheus 2.x's promtool on PATH or in bin/tools."
  echo "ensure-deps: unpacking promtool from Debian's prometheus package into bin/tools"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq >/dev/null
    chown _apt "$work" 2>/dev/null || true # apt downloads as _apt when it can write there
  fi
  (cd "$work" && apt-get download -qq prometheus >/dev/null) ||
    fail "apt-get download prometheus failed: run apt-get update as root, or put promtool on PATH"
  dpkg-deb -x "$work"/prometheus_*.deb "$work/package"
  mkdir -p bin/tools
  cp "$work/package/usr/bin/promtool" bin/tools/promtool
fi

if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
  # initdb refuses to run as root; the local server runs as this user.
  useradd --system --home-dir /var/lib/postgresql --shell /bin/false postgres
fi

if ! docker info >/dev/null 2>&1; then
  fail "the Docker engine does not answer (docker info failed): start it (systemctl start docker, or dockerd &) and make sure this user may use /var/run/docker.sock."
fi
