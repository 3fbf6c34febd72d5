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

# Prometheus's tools come from Debian's packages, unpacked into bin/tools rather than
# installed: an installed package would also run its service on this machine. promtool checks
# and unit-tests the alert rules (deploy/prometheus); prometheus and alertmanager run in the
# test that follows an alert from a metric to its receiver, and in the compose stack's images.
#
# unpack PACKAGE unpacks Debian's PACKAGE into $work/PACKAGE.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
unpack() {
  [ -d "$work/$1" ] && return 0
  command -v apt-get >/dev/null || fail "Debian's $1 package is needed and there is no apt-get: put its files in place by hand (see scripts/ensure-deps.sh)."
  if [ "$(id -u)" = 0 ]; then
    [ -n "${apt_updated:-}" ] || apt-get update -qq >/dev/null
    apt_updated=1
    chown _apt "$work" 2>/dev/null || true # apt downloads as _apt when it can write there
  fi
  (cd "$work" && apt-get download -qq "$1" >/dev/null) ||
    fail "apt-get download $1 failed: run apt-get update as root, or install it"
  dpkg-deb -x "$work/$1"_*.deb "$work/$1"
}
# tool NAME PACKAGE PATH puts PACKAGE's file PATH at bin/tools/NAME unless NAME is on PATH or
# already there.
tool() {
  if command -v "$1" >/dev/null || [ -x "bin/tools/$1" ]; then
    return 0
  fi
  echo "ensure-deps: unpacking $1 from Debian's $2 package into bin/tools"
  unpack "$2"
  mkdir -p bin/tools
  cp "$work/$2$3" "bin/tools/$1"
}
tool promtool prometheus /usr/bin/promtool
tool prometheus prometheus /usr/bin/prometheus
tool alertmanager prometheus-alertmanager /usr/bin/prometheus-alertmanager
# Debian's Alertmanager reads its default notification templates from this directory, where
# its package puts them, and applies no configuration without them.
am_share=/usr/share/prometheus/alertmanager
if [ ! -f "$am_share/default.tmpl" ]; then
  [ "$(id -u)" = 0 ] || fail "$am_share/default.tmpl is missing: as root, apt-get install prometheus-alertmanager, or run make deps"
  echo "ensure-deps: putting Alertmanager's templates from Debian's package in $am_share"
  unpack prometheus-alertmanager
  mkdir -p "$am_share"
  cp -r "$work/prometheus-alertmanager$am_share/." "$am_share/"
fi

# The JavaScript and Python clients' test suites run against the platform in internal/e2e:
# Node 18 or newer and Python 3.11 or newer, Debian's packages when missing.
need_node() { ! command -v node >/dev/null || [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 18 ]; }
need_python() { ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }
if { need_node || need_python; } && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "ensure-deps: installing Node.js and Python 3 from Debian's packages"
  [ -n "${apt_updated:-}" ] || apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs python3 >/dev/null
fi
need_node && fail "Node.js 18 or newer is needed for the JavaScript client's tests: apt-get install nodejs"
need_python && fail "Python 3.11 or newer is needed for the Python client's tests: apt-get install python3"

# mmdebstrap makes the Node.js and Python tenant images' bases from Debian's packages.
if ! command -v mmdebstrap >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "ensure-deps: installing mmdebstrap from Debian's packages"
  [ -n "${apt_updated:-}" ] || apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null
fi
command -v mmdebstrap >/dev/null || fail "mmdebstrap is needed for the Node.js and Python tenant images: apt-get install mmdebstrap"

if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
  # initdb refuses to run as root; the local server runs as this user.
  useradd --system --home-dir /var/lib/postgresql --shell /bin/false postgres
fi

if ! docker info >/dev/null 2>&1; then
  fail "the Docker engine does not answer (docker info failed): start it (systemctl start docker, or dockerd &) and make sure this user may use /var/run/docker.sock."
fi
