#!/usr/bin/env bash
# Creates (or updates) sleepcycle's Prefect work pools from the base job templates beside this script:
#   PREFECT_API_URL=http://HOST:4200/api infra/prefect/create-pools.sh process
#   PREFECT_API_URL=http://HOST:4200/api SLEEPCYCLE_GPU_IMAGE=REGISTRY/sleepcycle-gpu:TAG \
#     infra/prefect/create-pools.sh kubernetes
# `process` -> pool `sleepcycle` (runs flows as subprocesses of a worker; the compose stack's worker also
# creates it on first start); `kubernetes` -> pool `sleepcycle-k8s` (one GPU Job per flow run; infra/k8s/).
# Re-running overwrites the pool's template, so edit the JSON here rather than in the UI.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
prefect="${PREFECT:-prefect}"
if [[ -z "${PREFECT_API_URL:-}" ]]; then
  echo "error: set PREFECT_API_URL to the Prefect server's API (e.g. http://localhost:4200/api)" >&2
  exit 2
fi

case "${1:-}" in
  process)
    "$prefect" work-pool create sleepcycle --type process --overwrite \
      --base-job-template "$here/process-job-template.json"
    ;;
  kubernetes)
    if [[ -z "${SLEEPCYCLE_GPU_IMAGE:-}" ]]; then
      echo "error: set SLEEPCYCLE_GPU_IMAGE to the pushed docker/Dockerfile.gpu image (REGISTRY/sleepcycle-gpu:TAG)" >&2
      exit 2
    fi
    # The image is deployment-specific, so it is written into the template's default here, not committed.
    template="$(mktemp --suffix=.json)"
    trap 'rm -f "$template"' EXIT
    python3 - "$here/kubernetes-job-template.json" "$template" <<'EOF'
import json, os, sys
template = json.load(open(sys.argv[1]))
template["variables"]["properties"]["image"]["default"] = os.environ["SLEEPCYCLE_GPU_IMAGE"]
json.dump(template, open(sys.argv[2], "w"), indent=2)
EOF
    "$prefect" work-pool create sleepcycle-k8s --type kubernetes --overwrite --base-job-template "$template"
    ;;
  *)
    echo "usage: $0 process|kubernetes" >&2
    exit 2
    ;;
esac
