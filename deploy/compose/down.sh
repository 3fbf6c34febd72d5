#!/usr/bin/env bash
# Removes the compose stack (`make down`): the tenant containers, networks and volumes its
# provisioner started, the tenants' egress rules in the host's firewall, then the stack's
# containers, networks and volumes (the data goes with them). Tenants are
# found by their labels (convergence.managed=true) and the stack's name prefix
# (TENANT_NAME_PREFIX, "convergence-stack" by default), so tenants of another installation on
# this engine, such as `make run`'s, are left alone. Safe to run when nothing is up. The
# images and .env are kept. HA=1 (`make down-ha`) removes the HA profile's stack; without it,
# a stack of the HA profile is found and removed as one all the same.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

find_compose
if [ "$ha" != 1 ] && runs_ha; then
  say "project $project runs the HA profile: removing it as make down-ha does"
  ha=1
fi
# Compose checks the file's required variables even to take the stack down; the passwords'
# values do not matter here. The host's settings do, for the one-off provisioner below.
: "${POSTGRES_PASSWORD:=$(env_value POSTGRES_PASSWORD | grep . || echo unused)}"
: "${CONVERGENCE_ADMIN_TOKEN:=$(env_value CONVERGENCE_ADMIN_TOKEN | grep . || echo unused)}"
export POSTGRES_PASSWORD CONVERGENCE_ADMIN_TOKEN
export_host_settings

# The provisioners first, so that nothing recreates a tenant while they are removed.
provisioners=(provisioner)
if [ "$ha" = 1 ]; then
  provisioners+=(provisioner-2)
fi
provisioner_ran="$(stack ps -q "${provisioners[@]}" 2>/dev/null || true)"
if [ -n "$provisioner_ran" ]; then
  stack stop --timeout 30 "${provisioners[@]}" >/dev/null
fi
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
# The provisioner keeps its tenants' egress rules when it stops; with the tenants gone, they go
# too. A one-off provisioner container has what that takes (the host's network, NET_ADMIN,
# the instance id in its volume).
if [ -n "$provisioner_ran" ] && ! stack run --rm --no-deps -T provisioner egress remove; then
  say "the tenants' egress rules were not removed: see above"
fi

say "removing the stack (project $project) with its volumes and networks"
stack down --volumes --remove-orphans --timeout 30
say "done"
