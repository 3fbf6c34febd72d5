#!/usr/bin/env bash
# Removes the compose stack (`make down`): its containers, networks and volumes (the data goes
# with them), then the tenant containers and networks its provisioner started. Tenants are
# found by their labels (convergence.managed=true) and the stack's name prefix
# (TENANT_NAME_PREFIX, "convergence-stack" by default), so tenants of another installation on
# this engine, such as `make run`'s, are left alone. Safe to run when nothing is up. The
# images and .env are kept.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

find_compose
# Compose checks the file's required variables even to take the stack down; their values do
# not matter here.
: "${POSTGRES_PASSWORD:=$(env_value POSTGRES_PASSWORD | grep . || echo unused)}"
: "${CONVERGENCE_ADMIN_TOKEN:=$(env_value CONVERGENCE_ADMIN_TOKEN | grep . || echo unused)}"
: "${DOCKER_GID:=$(env_value DOCKER_GID | grep . || echo 0)}"
export POSTGRES_PASSWORD CONVERGENCE_ADMIN_TOKEN DOCKER_GID

say "removing the stack (project $project) with its volumes and networks"
stack down --volumes --remove-orphans --timeout 30

# The provisioner is gone, so nothing recreates a tenant while they are removed.
prefix="$(env_value TENANT_NAME_PREFIX)"
prefix="${prefix:-convergence-stack}"
# Names are <prefix>-<instance id>-env-<id>, or <prefix>-env-<id> for an installation from
# before instance ids.
names="${prefix}(-[a-z0-9]+)?-env-[0-9]+"
mapfile -t containers < <(docker ps -aq --filter label=convergence.managed=true --filter "name=^/?${names}$")
if [ "${#containers[@]}" -gt 0 ]; then
  say "removing ${#containers[@]} tenant container(s) named ${prefix}-*env-*"
  docker rm -f "${containers[@]}" >/dev/null
fi
mapfile -t networks < <(docker network ls -q --filter label=convergence.managed=true --filter "name=^${names}-net$")
if [ "${#networks[@]}" -gt 0 ]; then
  say "removing ${#networks[@]} tenant network(s) named ${prefix}-*env-*-net"
  docker network rm "${networks[@]}" >/dev/null
fi
mapfile -t volumes < <(docker volume ls -q --filter label=convergence.managed=true --filter "name=^${names}-secrets$")
if [ "${#volumes[@]}" -gt 0 ]; then
  say "removing ${#volumes[@]} tenant volume(s)"
  docker volume rm "${volumes[@]}" >/dev/null
fi
say "done"
