#!/usr/bin/env bash
# make deploy OVERLAY=dev|production: the migration Job first (the services refuse a database
# behind their schema), then the rollout, waiting for each Deployment. Uses kubectl's current
# context; NAMESPACE comes from the overlay.
set -euo pipefail
overlay="${1:-dev}"
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$root/deploy/overlays/$overlay"
[[ -d "$dir" ]] || { echo "no overlay $overlay (deploy/overlays/: $(ls "$root/deploy/overlays"))" >&2; exit 2; }
command -v kubectl >/dev/null || { echo "kubectl is needed" >&2; exit 2; }

if [[ "$overlay" == dev && ! -f "$dir/secrets.env" ]]; then
  # A new key and admin token for a dev cluster; the token is shown once.
  key="$("$root/.venv/bin/mailintake-keygen")"
  token_lines="$("$root/.venv/bin/mailintake-config-api" hash-token --role admin)"
  entry="$(sed -n 's/^settings entry: *//p' <<<"$token_lines")"
  sed -e "s|^MAILINTAKE_ENCRYPTION_KEYS=.*|MAILINTAKE_ENCRYPTION_KEYS=$key|" \
      -e "s|^MAILINTAKE_API_TOKENS=.*|MAILINTAKE_API_TOKENS=$entry|" \
      "$dir/secrets.env.example" > "$dir/secrets.env"
  chmod 600 "$dir/secrets.env"
  echo "wrote $dir/secrets.env (set MAILINTAKE_DATABASE_URL in it); admin $(grep '^token' <<<"$token_lines")"
fi

manifests="$(mktemp)"
trap 'rm -f "$manifests"' EXIT
kubectl kustomize "$dir" > "$manifests"
namespace="$(sed -n 's/^  namespace: //p' "$manifests" | head -1)"
echo "deploying $overlay to namespace $namespace"
kubectl get namespace "$namespace" >/dev/null 2>&1 || kubectl create namespace "$namespace"

echo "1/3 settings, policies, and the migration"
# Resources without a component label first: the ConfigMap, the Secret, policies, budgets.
kubectl apply -f "$manifests" -l 'app.kubernetes.io/part-of=mailintake,!app.kubernetes.io/component'
kubectl -n "$namespace" delete job mailintake-migrate --ignore-not-found
kubectl apply -f "$manifests" -l 'app.kubernetes.io/component=migrate'
kubectl -n "$namespace" wait --for=condition=complete job/mailintake-migrate --timeout=600s

echo "2/3 the services"
kubectl apply -f "$manifests"

echo "3/3 waiting for the rollout"
for service in config-api scheduler fetcher store; do
  kubectl -n "$namespace" rollout status "deployment/mailintake-$service" --timeout=600s
done
echo "deployed. make status (with MAILINTAKE_API_URL) shows each connection's health"
