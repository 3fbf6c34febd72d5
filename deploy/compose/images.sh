#!/usr/bin/env bash
# Builds the compose stack's images on this machine, FROM scratch, pulling nothing (`make
# images-stack`; `make up` runs it):
#
#   convergence/platform:local    bin/convergence (static) and the host's CA certificates
#   convergence/postgres:local    the host's PostgreSQL server package, run by `convergence postgres`
#   convergence/prometheus:local    Prometheus (Debian's package), probed by bin/convergence
#   convergence/alertmanager:local  Alertmanager (Debian's package), probed likewise
#
# Prometheus and Alertmanager are taken from PATH, or from bin/tools, where `make deps` unpacks
# them from Debian's packages without installing them.
#
# Each build context is a temporary directory holding only what its image needs. Files that
# did not change hit the build cache, so a second run rebuilds nothing. Every image carries
# the label convergence.stack-image=<name>.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="$root/bin/convergence"

fail() { echo "images.sh: $*" >&2; exit 1; }
say() { echo "images.sh: $*"; }

[ -x "$bin" ] || fail "$bin is missing: run make build"
if ldd "$bin" >/dev/null 2>&1; then
  fail "$bin is dynamically linked; a FROM-scratch image needs it static: build it with CGO_ENABLED=0 (make build does)"
fi
docker info >/dev/null 2>&1 || fail "the Docker engine does not answer (docker info failed)"

work="$(mktemp -d /tmp/convergence-images.XXXXXX)"
trap 'rm -rf "$work"' EXIT

# copy FILE... copies host files into $rootfs at the same paths, following symlinks.
copy() {
  local f
  for f in "$@"; do
    mkdir -p "$rootfs$(dirname "$f")"
    cp -L "$f" "$rootfs$f"
  done
}

# copy_libs FILE... copies the shared libraries and the dynamic loader that ldd lists for
# each FILE into $rootfs. Statically linked files need nothing.
copy_libs() {
  local f out
  for f in "$@"; do
    out="$(ldd "$f" 2>&1)" || continue # "not a dynamic executable"
    if grep -q 'not found' <<<"$out"; then
      fail "ldd $f: $(grep 'not found' <<<"$out" | head -n 3 | tr '\n' ' ')"
    fi
    awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$out"
  done | sort -u | while read -r lib; do copy "$lib"; done
}

# passwd NAME UID writes a minimal /etc/passwd, /etc/group and /etc/nsswitch.conf into $rootfs:
# root and the image's user (initdb and postgres look up their user; others are harmless).
passwd() {
  mkdir -p "$rootfs/etc"
  printf 'root:x:0:0:root:/:/sbin/nologin\n%s:x:%s:%s:%s:/nonexistent:/sbin/nologin\n' "$1" "$2" "$2" "$1" >"$rootfs/etc/passwd"
  printf 'root:x:0:\n%s:x:%s:\n' "$1" "$2" >"$rootfs/etc/group"
  printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
}

# build NAME TAG builds $work/NAME with images/NAME.Dockerfile.
build() {
  local name="$1" tag="$2" id
  # Quiet: the legacy builder's deprecation notice is all it would say on success.
  if ! id="$(docker build --quiet --label "convergence.stack-image=$name" -t "$tag" \
    -f "$here/images/$name.Dockerfile" "$work/$name" 2>"$work/build.log")"; then
    cat "$work/build.log" >&2
    fail "docker build of $tag failed"
  fi
  say "$tag $(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1 / 1e6}') ${id#sha256:}"
}

# --- convergence/platform:local -----------------------------------------------------------
rootfs="$work/platform/rootfs"
mkdir -p "$rootfs" "$work/platform/data"
cp "$bin" "$rootfs/convergence"
passwd nonroot 65532
ca=/etc/ssl/certs/ca-certificates.crt
[ -f "$ca" ] || fail "$ca is missing: apt-get install ca-certificates (the converger needs it for HTTPS to LLM providers)"
copy "$ca"
build platform convergence/platform:local

# --- convergence/postgres:local -----------------------------------------------------------
pg_bin=""
for dir in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -t/ -k5,5nr); do
  if [ -x "$dir/postgres" ] && [ -x "$dir/initdb" ]; then
    pg_bin="$dir"
    break
  fi
done
[ -n "$pg_bin" ] || fail "no PostgreSQL server in /usr/lib/postgresql/*/bin: apt-get install postgresql (make deps does)"
pg_major="$(basename "$(dirname "$pg_bin")")"
pg_lib="$(dirname "$pg_bin")/lib"
pg_share="/usr/share/postgresql/$pg_major"
[ -d "$pg_share" ] || fail "$pg_share is missing: reinstall postgresql-$pg_major"
sh_bin="$(command -v dash || true)"
[ -n "$sh_bin" ] || fail "dash is missing (initdb needs a /bin/sh): apt-get install dash"

rootfs="$work/postgres/rootfs"
mkdir -p "$rootfs$pg_bin" "$rootfs$pg_lib" "$rootfs/usr/share/postgresql" "$rootfs/bin" "$work/postgres/pgdata"
cp "$bin" "$rootfs/convergence"
cp -L "$pg_bin/postgres" "$pg_bin/initdb" "$rootfs$pg_bin/"
# The server's modules, without JIT: llvmjit.so would need libLLVM, and the stack runs jit=off.
tar -C "$pg_lib" --exclude=./bitcode --exclude='./llvmjit*' -chf - . | tar -C "$rootfs$pg_lib" -xf -
cp -a "$pg_share" "$rootfs/usr/share/postgresql/"
# Debian builds PostgreSQL --with-system-tzdata=/usr/share/zoneinfo.
[ -d /usr/share/zoneinfo ] || fail "/usr/share/zoneinfo is missing: apt-get install tzdata"
mkdir -p "$rootfs/usr/share" && cp -a /usr/share/zoneinfo "$rootfs/usr/share/"
cp -L "$sh_bin" "$rootfs/bin/sh"
mapfile -t modules < <(find "$pg_lib" -maxdepth 1 -name '*.so' ! -name 'llvmjit*')
copy_libs "$pg_bin/postgres" "$pg_bin/initdb" "$sh_bin" "${modules[@]}"
passwd postgres 999
build postgres convergence/postgres:local

# --- convergence/prometheus:local, convergence/alertmanager:local --------------------------
# tool NAME prints the path of NAME, on PATH or in bin/tools, where `make deps` unpacks it
# from Debian's package.
tool() {
  command -v "$1" 2>/dev/null && return 0
  [ -x "$root/bin/tools/$1" ] || fail "$1 is neither on PATH nor in bin/tools: run make deps"
  echo "$root/bin/tools/$1"
}
# prometheus_image NAME VERSION-PREFIX lays out the rootfs of convergence/NAME:local as the
# official prom/NAME image is (/bin/NAME, /etc/NAME/NAME.yml, /NAME for data), with
# bin/convergence for the healthcheck; extra files may be added to $rootfs before it is built.
prometheus_image() {
  local name="$1" version="$2" exe
  exe="$(tool "$name")"
  "$exe" --version 2>&1 | grep -q "^$name, version $version" ||
    fail "$exe is not the $name the stack is built for: $("$exe" --version 2>&1 | head -n 1)"
  rootfs="$work/$name/rootfs"
  mkdir -p "$rootfs/bin" "$rootfs/etc/$name" "$work/$name/data"
  cp "$bin" "$rootfs/convergence"
  cp -L "$exe" "$rootfs/bin/$name"
  cp "$here/$name.yml" "$rootfs/etc/$name/$name.yml"
  copy_libs "$exe"
  passwd nobody 65534
}
prometheus_image prometheus '2\.'
build prometheus convergence/prometheus:local

prometheus_image alertmanager '0\.'
# Debian's build reads its default notification templates from here (make deps puts them there).
am_share=/usr/share/prometheus/alertmanager
[ -f "$am_share/default.tmpl" ] || fail "$am_share/default.tmpl is missing: run make deps"
mkdir -p "$rootfs$am_share" && cp -rL "$am_share/." "$rootfs$am_share/"
build alertmanager convergence/alertmanager:local
