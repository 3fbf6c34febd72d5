#!/usr/bin/env bash
# Revokes a NATS user of the running stack, given its credentials file or its public key
# (U...). The stack's NATS server watches the revocations it keeps: within seconds it closes the
# user's connections and refuses it from then on.
#   deploy/compose/nats-revoke.sh integrator.creds
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ $# -eq 1 ] || fail "usage: $0 CREDS_FILE|USER_PUBLIC_KEY"
find_compose
export_host_settings
if [ -f "$1" ]; then
  stack_nats revoke -creds /dev/stdin <"$1"
else
  stack_nats revoke -user "$1"
fi
