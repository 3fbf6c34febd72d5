#!/usr/bin/env bash
# Removes the swarm stack (`make swarm-down`): the stack's services, then the tenants its
# provisioners started (Swarm services named convergence-swarm-*, with their secrets and
# networks), the stack's volumes (the data goes with them) and deploy/swarm/secrets, and, when
# make swarm-up made this engine a swarm, the swarm itself and the docker_gwbridge network it
# brought. Safe to run when nothing is up. The images are kept.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
stack="${STACK_NAME:-convergence}"
made="$here/.swarm-made"
prefix="convergence-swarm-" # CONVERGENCE_PROVISIONER_RUNTIME_NAME_PREFIX in stack.yml
timeout="${DOWN_TIMEOUT:-120}"

fail() { echo "$(basename "$0"): $*" >&2; exit 1; }
say() { echo "$(basename "$0"): $*"; }

# wait_until CMD...: runs CMD until it prints nothing, for up to $timeout seconds.
wait_until() {
  local deadline=$((SECONDS + timeout)) left
  while left="$("$@")" && [ -n "$left" ]; do
    [ "$SECONDS" -lt "$deadline" ] || fail "still there after ${timeout}s: $(echo "$left" | tr '\n' ' ')"
    sleep 1
  done
}

if [ "$(docker info --format '{{.Swarm.ControlAvailable}}')" = true ]; then
  if docker stack ls --format '{{.Name}}' | grep -x "$stack" >/dev/null; then
    say "removing the stack $stack"
    docker stack rm "$stack" >/dev/null
  fi
  stack_objects() {
    docker service ls -q --filter "label=com.docker.stack.namespace=$stack"
    docker ps -aq --filter "label=com.docker.stack.namespace=$stack"
    docker network ls -q --filter "label=com.docker.stack.namespace=$stack"
  }
  wait_until stack_objects

  # The tenants: their services first (which takes their tasks off their networks), then
  # their secrets and networks. Only managed objects with this stack's prefix.
  tenant_services() { docker service ls --filter label=convergence.managed=true --format '{{.Name}}' | grep "^$prefix" || true; }
  mapfile -t services < <(tenant_services)
  if [ "${#services[@]}" -gt 0 ]; then
    say "removing ${#services[@]} tenant services"
    docker service rm "${services[@]}" >/dev/null
  fi
  tenant_tasks() { docker ps -aq --filter label=convergence.managed=true --filter "name=^$prefix"; }
  wait_until tenant_tasks
  mapfile -t secrets < <(docker secret ls --filter label=convergence.managed=true --format '{{.Name}}' | grep "^$prefix" || true)
  [ "${#secrets[@]}" -eq 0 ] || docker secret rm "${secrets[@]}" >/dev/null
  tenant_networks() { docker network ls --filter label=convergence.managed=true --format '{{.Name}}' | grep "^$prefix" || true; }
  mapfile -t networks < <(tenant_networks)
  [ "${#networks[@]}" -eq 0 ] || docker network rm "${networks[@]}" >/dev/null || true
  wait_until tenant_networks
fi

mapfile -t volumes < <(docker volume ls -q --filter "label=com.docker.stack.namespace=$stack")
if [ "${#volumes[@]}" -gt 0 ]; then
  say "removing the stack's volumes: ${volumes[*]}"
  docker volume rm "${volumes[@]}" >/dev/null
fi
rm -rf "$here/secrets"

if [ -f "$made" ]; then
  say "leaving the swarm make swarm-up made"
  # Left already (by hand, say): nothing to leave.
  docker swarm leave --force >/dev/null 2>&1 || true
  # shellcheck disable=SC1090
  . "$made"
  if [ "${gwbridge_before:-yes}" = no ]; then
    docker network rm docker_gwbridge >/dev/null 2>&1 || true
  fi
  rm -f "$made"
fi
say "done"
