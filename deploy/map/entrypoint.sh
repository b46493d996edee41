#!/bin/bash
# Entry point of the CPU MAP. `show`, `env`, `extract` and `help` go to the SDK's /var/holoscan/tools script,
# as in a packager-built MAP. Anything else runs the application command from app.json with the given
# arguments, exec'd, so that the container's exit status is the app's (the SDK script logs the app's exit
# status but then exits 0, and on failure prints advice about NVIDIA's container runtime).
set -euo pipefail
case "${1:-}" in
  show|env|extract|help) exec /var/holoscan/tools "$@" ;;
esac
manifest=${HOLOSCAN_APP_MANIFEST_PATH:-/etc/holoscan/app.json}
mapfile -t command < <(jq -r '.command | fromjson | .[]' "$manifest")
if [ "${#command[@]}" -eq 0 ]; then
  echo "entrypoint: no application command in $manifest" >&2
  exit 4
fi
exec "${command[@]}" "$@"
