#!/usr/bin/env bash
# Deploy FAMA with kustomize in the right order: settings and secrets, then each service's
# migration Job (waited for), then everything else. Usage: deploy/k8s/apply.sh deploy/k8s/overlays/example
set -euo pipefail
overlay=${1:?usage: $0 <overlay folder, e.g. deploy/k8s/overlays/example>}
first='app.kubernetes.io/component in (config,migration)'
# A Job's pod template cannot change: remove the previous release's migration Jobs first.
kubectl kustomize "$overlay" | kubectl delete --ignore-not-found -l app.kubernetes.io/component=migration -f -
kubectl apply -k "$overlay" -l "$first"
kubectl kustomize "$overlay" | kubectl wait --for=condition=complete --timeout=15m \
  -l app.kubernetes.io/component=migration -f -
kubectl apply -k "$overlay"
