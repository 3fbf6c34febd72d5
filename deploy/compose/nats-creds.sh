#!/usr/bin/env bash
# Prints a NATS credentials file for a new user of ROLE, issued by the running stack's NATS
# server: `deploy/compose/nats-creds.sh integrator > integrator.creds`. Flags after ROLE go to
# `convergence nats creds` (-expires 720h, -name NAME).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ $# -ge 1 ] || fail "usage: $0 ROLE [-expires DURATION] [-name NAME] (ROLE: integrator, api, provisioner, converger, metering, admin)"
find_compose
export_host_settings
stack_nats creds "$@"
