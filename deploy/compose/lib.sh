# shellcheck shell=bash
# Shared by up.sh and down.sh (sourced, not run): where the stack lives, which compose
# command this machine has, and how to call it.

compose_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
env_file="$compose_dir/.env"
project="${COMPOSE_PROJECT_NAME:-convergence}"
# HA=1 (make up-ha, make down-ha) adds docker-compose.ha.yml: three NATS nodes, three copies of
# every stream, two replicas of every service.
ha="${HA:-0}"

fail() { echo "$(basename "$0"): $*" >&2; exit 1; }
say() { echo "$(basename "$0"): $*"; }

# find_compose sets COMPOSE to the compose command that answers here: the v2 plugin
# (docker compose) or the v1 binary (docker-compose). The stack's file works with both.
find_compose() {
  if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
  elif command -v docker-compose >/dev/null 2>&1 && docker-compose version >/dev/null 2>&1; then
    COMPOSE=(docker-compose)
  else
    fail "neither 'docker compose' (v2) nor 'docker-compose' (v1.27 or newer) answers: install one of them"
  fi
}

# stack runs the compose command on the stack's files and project: docker-compose.yml, and with
# HA=1 docker-compose.ha.yml over it.
stack() {
  local args=(--project-name "$project" --project-directory "$compose_dir" -f "$compose_dir/docker-compose.yml")
  if [ "$ha" = 1 ]; then
    args+=(-f "$compose_dir/docker-compose.ha.yml")
  fi
  if [ -f "$env_file" ]; then
    args+=(--env-file "$env_file")
  fi
  "${COMPOSE[@]}" "${args[@]}" "$@"
}

# runs_ha says whether the project has containers of the HA profile, running or not: nats-2 is
# one of them, and only of them.
runs_ha() {
  [ -n "$(docker ps -aq --filter "label=com.docker.compose.project=$project" --filter label=com.docker.compose.service=nats-2)" ]
}

# env_value prints NAME's value: from the shell if set there, else from .env, else nothing.
env_value() {
  local name="$1"
  if [ -n "${!name:-}" ]; then
    printf '%s' "${!name}"
  elif [ -f "$env_file" ]; then
    sed -n "s/^${name}=//p" "$env_file" | tail -n 1
  fi
}

# export_host_settings exports what docker-compose.yml needs from this host unless .env or
# the shell sets it: the Docker socket's group and the uplink's MTU.
export_host_settings() {
  DOCKER_GID="$(env_value DOCKER_GID)"
  if [ -z "$DOCKER_GID" ]; then
    DOCKER_GID="$(stat -c %g /var/run/docker.sock 2>/dev/null)" ||
      fail "/var/run/docker.sock not found: the provisioner needs the Docker engine's socket there"
  fi
  NETWORK_MTU="$(env_value NETWORK_MTU)"
  if [ -z "$NETWORK_MTU" ]; then
    local dev
    dev="$(awk '$2 == "00000000" { print $1; exit }' /proc/net/route 2>/dev/null)"
    NETWORK_MTU="$(cat "/sys/class/net/${dev:-none}/mtu" 2>/dev/null || echo 1500)"
    if [ "$NETWORK_MTU" -gt 1500 ]; then
      NETWORK_MTU=1500
    fi
  fi
  export DOCKER_GID NETWORK_MTU
}

# stack_nats runs `convergence nats ARGS...` in the running stack's NATS container, which holds
# the NATS authority, with this shell's standard input.
stack_nats() {
  [ -n "$(stack ps -q nats 2>/dev/null)" ] || fail "the stack's NATS is not running: make up"
  stack exec -T nats /convergence nats "$@"
}
