#!/usr/bin/env bash
# Runs the platform as a Docker Swarm stack (`make swarm-up`, after the images are built): makes
# this engine a single-node swarm when it is in none (advertised on 127.0.0.1; make swarm-down
# leaves it), makes the stack's secrets in deploy/swarm/secrets (mode 0700) on first use, deploys
# deploy/swarm/stack.yml as the stack "convergence" and waits until every service runs all its
# replicas and both API replicas answer /readyz. Running it again updates the stack in place.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
stack="${STACK_NAME:-convergence}"
secrets="$here/secrets"
made="$here/.swarm-made" # written when this script made the swarm
bin="$root/bin/convergence"
ready_timeout="${READY_TIMEOUT:-300}"

fail() { echo "$(basename "$0"): $*" >&2; exit 1; }
say() { echo "$(basename "$0"): $*"; }

for image in convergence/platform:local convergence/postgres:local convergence/prometheus:local; do
  docker image inspect "$image" >/dev/null 2>&1 || fail "image $image is missing: run make images-stack (make swarm-up does)"
done
[ -x "$bin" ] || fail "$bin is missing: run make build (make swarm-up does)"

state="$(docker info --format '{{.Swarm.LocalNodeState}}')"
case "$state" in
  inactive)
    gwbridge=no
    docker network inspect docker_gwbridge >/dev/null 2>&1 && gwbridge=yes
    docker swarm init --advertise-addr 127.0.0.1 >/dev/null || fail "docker swarm init failed"
    echo "gwbridge_before=$gwbridge" >"$made"
    say "made this engine a single-node swarm (make swarm-down leaves it)"
    ;;
  active)
    [ "$(docker info --format '{{.Swarm.ControlAvailable}}')" = true ] ||
      fail "this engine is a worker of a swarm: run make swarm-up on a manager"
    ;;
  *) fail "this engine's swarm is $state: wait until it is active, or leave it" ;;
esac

# The secrets: made once and kept, so that a second run deploys the same ones (swarm secrets
# cannot change in place).
(umask 077 && mkdir -p "$secrets")
chmod 0700 "$secrets"
random() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
keep() { # keep NAME COMMAND...: writes the file NAME from COMMAND unless it is there
  local file="$secrets/$1"
  shift
  [ -s "$file" ] && return
  (umask 077 && "$@" >"$file.new") || fail "could not make $file"
  mv "$file.new" "$file"
}
keep postgres_password random
keep admin_token random
password="$(cat "$secrets/postgres_password")"
keep database_url printf 'postgres://convergence:%s@postgres:5432/convergence?sslmode=disable' "$password"
keep database_url_host printf 'postgres://convergence:%s@127.0.0.1:5432/convergence?sslmode=disable' "$password"
keep secrets.keys sh -c 'echo "# Secrets keyring: the first key seals, every key opens (README.md, Security model)."; "$1" secrets new-key' _ "$bin"
"$bin" nats init -nats.auth-dir "$secrets/nats-auth" >/dev/null
for service in api provisioner converger metering; do
  keep "$service.creds" "$bin" nats creds -nats.auth-dir "$secrets/nats-auth" -name "convergence-$service" "$service"
done

say "deploying the stack $stack"
(cd "$here" && docker stack deploy --resolve-image never --prune -c stack.yml "$stack") ||
  fail "docker stack deploy failed; see above"

# not_running lists the stack's services whose replicas are not all running.
not_running() {
  docker service ls --filter "label=com.docker.stack.namespace=$stack" --format '{{.Name}} {{.Replicas}}' |
    awk '{ split($2, r, "/"); if (r[1] != r[2]) print $1 " (" $2 ")" }'
}
say "waiting up to ${ready_timeout}s for every service and both API replicas"
deadline=$((SECONDS + ready_timeout))
until [ -z "$(not_running)" ] &&
  curl -fsS --max-time 5 http://127.0.0.1:3000/readyz >/dev/null 2>&1 &&
  curl -fsS --max-time 5 http://127.0.0.1:4000/readyz >/dev/null 2>&1; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    docker stack ps --no-trunc "$stack" >&2 || true
    fail "not ready within ${ready_timeout}s: $(not_running | tr '\n' ' ')"
  fi
  sleep 2
done
docker stack services "$stack"
cat <<EOT

The stack "$stack" is up on this swarm:
  API         http://127.0.0.1:3000 and http://127.0.0.1:4000   (admin token: deploy/swarm/secrets/admin_token)
  Prometheus  http://127.0.0.1:9090
  NATS        127.0.0.1:4222, 4223, 4224 (three nodes, three copies of every stream)
make swarm-down removes it, its volumes and secrets, the tenants it started, and the swarm if
make swarm-up made it.
EOT
