#!/usr/bin/env bash
# Builds the image, pushes it to Azure Container Registry and deploys it to Azure Container
# Apps, as the original deploy script did: external ingress on port 3000, 1 to 3 replicas,
# 0.5 CPU and 1 GiB each. Creates the app on the first run, updates its image afterwards.
#
# Usage: scripts/deploy-backend.sh
#   Names come from the environment (defaults are the original deployment's):
#     RESOURCE_GROUP=aimcs-rg-eastus2  ACR_NAME=aimcsregistry
#     APP_NAME=aimcs-backend-eastus2   ENVIRONMENT_NAME=aimcs-backend-eastus2-env
#     IMAGE_NAME=aimcs-backend         IMAGE_TAG=<git commit>
#     MIN_REPLICAS=1 MAX_REPLICAS=3    CPU=0.5 MEMORY=1.0Gi
#   DRY_RUN=1 prints the commands instead of running them.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

RESOURCE_GROUP=${RESOURCE_GROUP:-aimcs-rg-eastus2}
ACR_NAME=${ACR_NAME:-aimcsregistry}
APP_NAME=${APP_NAME:-aimcs-backend-eastus2}
ENVIRONMENT_NAME=${ENVIRONMENT_NAME:-aimcs-backend-eastus2-env}
IMAGE_NAME=${IMAGE_NAME:-aimcs-backend}
IMAGE_TAG=${IMAGE_TAG:-$(git rev-parse --short HEAD 2>/dev/null || echo latest)}
MIN_REPLICAS=${MIN_REPLICAS:-1}
MAX_REPLICAS=${MAX_REPLICAS:-3}
CPU=${CPU:-0.5}
MEMORY=${MEMORY:-1.0Gi}
DRY_RUN=${DRY_RUN:-0}

image="$ACR_NAME.azurecr.io/$IMAGE_NAME:$IMAGE_TAG"

run() {
  echo "+ $*"
  if [ "$DRY_RUN" != 1 ]; then
    "$@"
  fi
}

if [ "$DRY_RUN" != 1 ]; then
  need docker "install Docker with a running engine"
  need az "install the Azure CLI and run 'az login'"
fi

run docker build -t "$image" .
run az acr login --name "$ACR_NAME"
run docker push "$image"

if [ "$DRY_RUN" != 1 ] && az containerapp show --name "$APP_NAME" --resource-group "$RESOURCE_GROUP" >/dev/null 2>&1; then
  run az containerapp update \
    --name "$APP_NAME" \
    --resource-group "$RESOURCE_GROUP" \
    --image "$image"
else
  run az containerapp create \
    --name "$APP_NAME" \
    --resource-group "$RESOURCE_GROUP" \
    --environment "$ENVIRONMENT_NAME" \
    --image "$image" \
    --registry-server "$ACR_NAME.azurecr.io" \
    --target-port 3000 \
    --ingress external \
    --min-replicas "$MIN_REPLICAS" \
    --max-replicas "$MAX_REPLICAS" \
    --cpu "$CPU" \
    --memory "$MEMORY" \
    --env-vars APP_ENVIRONMENT=production APP_LOG__FORMAT=json PORT=3000 APP_SERVER__DRAIN_DELAY_SECS=5
fi

# Probes: Container Apps restarts a replica whose /livez fails and routes no traffic to one
# whose /readyz fails (draining on SIGTERM, all WebSocket slots taken, store unreachable).
# The CLI has no probe flags; they go in through the app's YAML, merged into what exists.
probes=$(mktemp)
trap 'rm -f "$probes"' EXIT
cat >"$probes" <<YAML
properties:
  template:
    containers:
      - name: $APP_NAME
        image: $image
        probes:
          - type: Startup
            httpGet: { path: /livez, port: 3000 }
            periodSeconds: 1
            failureThreshold: 30
          - type: Liveness
            httpGet: { path: /livez, port: 3000 }
            periodSeconds: 10
            failureThreshold: 3
          - type: Readiness
            httpGet: { path: /readyz, port: 3000 }
            periodSeconds: 5
            failureThreshold: 1
YAML
if [ "$DRY_RUN" = 1 ]; then
  echo "+ probes applied from:"; sed 's/^/    /' "$probes"
fi
run az containerapp update --name "$APP_NAME" --resource-group "$RESOURCE_GROUP" --yaml "$probes"

if [ "$DRY_RUN" != 1 ]; then
  fqdn=$(az containerapp show --name "$APP_NAME" --resource-group "$RESOURCE_GROUP" \
    --query properties.configuration.ingress.fqdn --output tsv)
  echo "deployed $image to https://$fqdn"
  # The image carries the checker, so no local build is needed for the smoke test.
  run docker run --rm "$image" check "https://$fqdn"
fi
