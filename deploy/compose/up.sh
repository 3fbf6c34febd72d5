#!/usr/bin/env bash
# Starts the compose stack (`make up`, after the images are built) and waits until the API
# answers /readyz; with HA=1 (`make up-ha`) the HA profile, docker-compose.ha.yml over it. Creates deploy/compose/.env from .env.example on first use, with a fresh
# admin token and database password. Running it again leaves a running stack as it is, and
# recreates only containers whose image or settings changed.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ready_timeout="${READY_TIMEOUT:-180}"

find_compose
for image in convergence/platform:local convergence/postgres:local convergence/prometheus:local; do
  docker image inspect "$image" >/dev/null 2>&1 || fail "image $image is missing: run make images-stack (make up does)"
done

if [ ! -f "$env_file" ]; then
  random() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
  (umask 077 && sed -e "s/^CONVERGENCE_ADMIN_TOKEN=generate$/CONVERGENCE_ADMIN_TOKEN=$(random)/" \
    -e "s/^POSTGRES_PASSWORD=generate$/POSTGRES_PASSWORD=$(random)/" \
    "$compose_dir/.env.example" >"$env_file")
  say "wrote $env_file with a new admin token and database password (mode 0600)"
fi
for name in CONVERGENCE_ADMIN_TOKEN POSTGRES_PASSWORD; do
  value="$(env_value "$name")"
  if [ -z "$value" ] || [ "$value" = generate ]; then
    fail "$name is not set in $env_file: set it, or remove the file to have one generated"
  fi
done
[[ "$(env_value POSTGRES_PASSWORD)" =~ ^[A-Za-z0-9._~-]+$ ]] ||
  fail "POSTGRES_PASSWORD may hold only letters, digits and - . _ ~ (it is part of DATABASE_URL)"
export_host_settings

# One profile at a time on a project: the other's containers and volumes would be mixed in
# (a JetStream store made alone does not join a cluster).
if [ "$ha" != 1 ] && runs_ha; then
  fail "project $project runs the HA profile: make up-ha, or make down-ha first"
fi
if [ "$ha" = 1 ] && ! runs_ha && [ -n "$(docker ps -aq --filter "label=com.docker.compose.project=$project")" ]; then
  fail "project $project runs without the HA profile: make up, or make down first"
fi

# not_ready lists the stack's containers that are neither healthy nor (without a
# healthcheck) running, with their state.
not_ready() {
  local ids
  mapfile -t ids < <(stack ps -q 2>/dev/null)
  [ "${#ids[@]}" -gt 0 ] || { echo "no-containers"; return; }
  docker inspect -f '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}healthy{{end}}' "${ids[@]}" |
    awk '$2 != "running" || $3 != "healthy" { sub(/^\//, "", $1); print $1, "(" $2 ", " $3 ")" }'
}

# NATS first: it makes its authority on first start, and issues each service its user. The
# credentials go to ./secrets (mode 0700: only this user reads them here), each file mounted
# into its one service; inside the container, the non-root service user must read it, hence 0644.
say "starting NATS and issuing each service its NATS user"
stack up -d nats || fail "compose up nats failed; see '${COMPOSE[*]} -p $project logs nats' in $compose_dir"
secrets="$compose_dir/secrets"
(umask 077 && mkdir -p "$secrets")
chmod 0700 "$secrets"
nats_deadline=$((SECONDS + ready_timeout))
nodes=(nats)
if [ "$ha" = 1 ]; then
  # nats-2 and nats-3 read the authority nats-1 makes on its first start, so they start once
  # it is there (`nats creds` only reads one); nats-1 is healthy only once another node joined.
  until stack exec -T nats /convergence nats creds api >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$nats_deadline" ] || { stack logs --tail 30 nats >&2 || true; fail "nats-1 made no NATS authority within ${ready_timeout}s"; }
    sleep 1
  done
  stack up -d nats-2 nats-3 || fail "compose up nats-2 nats-3 failed; see '${COMPOSE[*]} -p $project logs nats-2 nats-3' in $compose_dir"
  nodes=(nats nats-2 nats-3)
fi
for node in "${nodes[@]}"; do
  until [ "$(docker inspect -f '{{.State.Health.Status}}' "$(stack ps -q "$node")" 2>/dev/null)" = healthy ]; do
    [ "$SECONDS" -lt "$nats_deadline" ] || { stack logs --tail 30 "${nodes[@]}" >&2 || true; fail "$node was not healthy within ${ready_timeout}s"; }
    sleep 1
  done
done
for service in api provisioner converger metering; do
  stack_nats creds "$service" -name "convergence-$service" >"$secrets/$service.creds.new" ||
    fail "the NATS container did not issue the $service user; see '${COMPOSE[*]} -p $project logs nats'"
  chmod 0644 "$secrets/$service.creds.new"
  mv "$secrets/$service.creds.new" "$secrets/$service.creds"
done

# The keyring that seals webhook secrets in the database: made once, and kept (without it the
# sealed secrets do not open). Rotate it as README.md says.
if [ ! -s "$secrets/secrets.keys" ]; then
  { echo "# Secrets keyring: the first key seals, every key opens (README.md, Security model)."
    stack exec -T nats /convergence secrets new-key; } >"$secrets/secrets.keys.new" ||
    fail "could not make the secrets keyring"
  chmod 0644 "$secrets/secrets.keys.new"
  mv "$secrets/secrets.keys.new" "$secrets/secrets.keys"
  say "wrote $secrets/secrets.keys (keep it: the webhook secrets in the database open only with it)"
fi

say "starting the stack with '${COMPOSE[*]}' (project $project)"
if ! stack up -d --remove-orphans; then
  stack ps >&2 || true
  fail "compose up failed; see above, and '${COMPOSE[*]} -p $project logs' in $compose_dir. A port in use? make run holds 3000 and 4222; the ports are set in $env_file"
fi

api_port="$(env_value API_PORT)"
urls=("http://127.0.0.1:${api_port:-3000}/readyz")
if [ "$ha" = 1 ]; then
  urls+=("http://127.0.0.1:$(env_value API_2_PORT | grep . || echo 4000)/readyz")
fi
deadline=$((SECONDS + ready_timeout))
for url in "${urls[@]}"; do
  say "waiting up to ${ready_timeout}s for $url"
  until curl -fsS --max-time 5 "$url" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      stack ps >&2 || true
      stack logs --tail 30 api >&2 || true
      fail "the API did not answer $url within ${ready_timeout}s"
    fi
    sleep 2
  done
done
# Then every container: healthy, or running when it has no healthcheck.
until [ -z "$(not_ready)" ]; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    stack ps >&2 || true
    for name in $(not_ready | awk '{print $1}'); do
      echo "--- last log lines of $name" >&2
      docker logs --tail 15 "$name" 2>&1 | cut -c1-400 >&2 || true
    done
    fail "not healthy within ${ready_timeout}s: $(not_ready | tr '\n' ' ')"
  fi
  sleep 2
done
stack ps
cat <<EOF

The stack is up (compose project "$project"):
  API         http://127.0.0.1:${api_port:-3000}   (admin token: CONVERGENCE_ADMIN_TOKEN in $env_file)
  Prometheus  http://127.0.0.1:$(env_value PROMETHEUS_PORT | grep . || echo 9090)   Alertmanager http://127.0.0.1:$(env_value ALERTMANAGER_PORT | grep . || echo 9093)
  PostgreSQL  127.0.0.1:$(env_value POSTGRES_PORT | grep . || echo 5432), NATS 127.0.0.1:$(env_value NATS_PORT | grep . || echo 4222)
  NATS user   deploy/compose/nats-creds.sh integrator > integrator.creds   (read-only: lifecycle, results)
EOF
if [ "$ha" = 1 ]; then
  cat <<EOF
  HA profile  second API http://127.0.0.1:$(env_value API_2_PORT | grep . || echo 4000); NATS nodes 127.0.0.1:$(env_value NATS_PORT | grep . || echo 4222), :$(env_value NATS_2_PORT | grep . || echo 4223), :$(env_value NATS_3_PORT | grep . || echo 4224); monitors :$(env_value NATS_MONITOR_PORT | grep . || echo 8222), :$(env_value NATS_2_MONITOR_PORT | grep . || echo 8223), :$(env_value NATS_3_MONITOR_PORT | grep . || echo 8224)
make down-ha removes it, its volumes and networks, and the tenants it started.
EOF
else
  echo "make down removes it, its volumes and networks, and the tenants it started."
fi
