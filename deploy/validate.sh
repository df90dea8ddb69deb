#!/usr/bin/env bash
# Validates deploy/ offline: the compose files against the Compose
# specification's JSON schema, and every kustomize overlay rendered with
# `kubectl kustomize` against Kubernetes' schemas, strictly (unknown fields
# fail). Installs check-jsonschema and kubernetes-validate from PyPI into a
# virtualenv under ~/.cache the first time. Part of scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")"

venv="${SPANLAKE_VENV:-$HOME/.cache/spanlake-venv}"
if ! "$venv/bin/check-jsonschema" --version >/dev/null 2>&1 || ! "$venv/bin/kubernetes-validate" --version >/dev/null 2>&1; then
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    # Debian keeps venv in its own package.
    apt-get install -y -qq python3-venv >/dev/null && python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'check-jsonschema>=0.33' 'kubernetes-validate>=1.31'
fi

echo "compose: $(ls compose/*.yaml | grep -v -e spanlake.yaml -e otel-collector.yaml | tr '\n' ' ')"
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec compose/docker-compose.yaml compose/all-in-one.yaml

if ! command -v kubectl >/dev/null 2>&1; then
  echo "kubectl is not installed: cannot render the kustomize overlays" >&2
  exit 1
fi
rendered="$(mktemp -d)"
trap 'rm -rf "$rendered"' EXIT
for overlay in kubernetes/overlays/*/; do
  name="$(basename "$overlay")"
  kubectl kustomize "$overlay" >"$rendered/$name.yaml"
  echo "kubernetes: $name renders $(grep -c '^kind:' "$rendered/$name.yaml") objects"
  "$venv/bin/kubernetes-validate" --strict --quiet --kubernetes-version 1.31.0 "$rendered/$name.yaml"
done
echo "deploy/ is valid"
