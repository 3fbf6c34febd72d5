#!/usr/bin/env bash
# Opens a running API's /api-docs in headless Chromium, as a person would, and checks that
# Swagger UI rendered every operation of the OpenAPI document the API serves; saves a
# screenshot. With a tenant key in CONVERGENCE_API_KEY it also authorizes with it and runs
# "Try it out" on GET /api/v1/me (scripts/tryitout), which must answer 200 with the tenant.
# Usage: scripts/check-api-docs.sh [API URL, default http://127.0.0.1:3000] [screenshot file,
# default api-docs.png]. Chromium is Debian's package: installed when missing and run as root.
set -euo pipefail

url="${1:-http://127.0.0.1:3000}"
shot="${2:-api-docs.png}"
fail() { echo "check-api-docs: $*" >&2; exit 1; }

browser="$(command -v chromium || command -v chromium-browser || true)"
if [ -z "$browser" ]; then
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || fail "chromium is not installed: apt-get install chromium"
  echo "check-api-docs: installing Debian's chromium package"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  browser="$(command -v chromium)"
fi
doc="$(curl -fsS "$url/api-docs/openapi.json")" || fail "$url/api-docs/openapi.json does not answer: is the API running there?"
mapfile -t paths < <(grep -oE '"/[^"]*":\{' <<<"$doc" | sed -E 's/^"(.*)":\{$/\1/' | sort -u)
[ "${#paths[@]}" -gt 0 ] || fail "the document lists no paths"

# The root user's Chromium needs --no-sandbox; the page's scripts run for up to 20 s of virtual time.
flags=(--headless --no-sandbox --disable-gpu --hide-scrollbars --virtual-time-budget=20000)
dom="$("$browser" "${flags[@]}" --dump-dom "$url/api-docs" 2>/dev/null)"
missing=0
for p in "${paths[@]}"; do
  if ! grep -qF "data-path=\"$p\"" <<<"$dom"; then
    echo "check-api-docs: the page does not list $p" >&2
    missing=$((missing + 1))
  fi
done
"$browser" "${flags[@]}" --window-size=1280,4000 --screenshot="$shot" "$url/api-docs" >/dev/null 2>&1 ||
  fail "chromium could not take the screenshot"
[ "$missing" = 0 ] || fail "$missing of ${#paths[@]} paths are not on the page; see $shot"
echo "check-api-docs: $url/api-docs lists all ${#paths[@]} paths of the document; screenshot in $shot"
if [ -n "${CONVERGENCE_API_KEY:-}" ]; then
  (cd "$(dirname "${BASH_SOURCE[0]}")/.." && go run ./scripts/tryitout -url "$url" -browser "$browser")
else
  echo "check-api-docs: set CONVERGENCE_API_KEY to a tenant key to run Try it out too"
fi
