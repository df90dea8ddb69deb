#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests need
# (the mold linker, optional: it just makes links faster; Chromium for the
# fan-out page's browser test; psql and openssl for the PostgreSQL tests; the manifest
# validators from PyPI, in a virtualenv under ~/.cache), validates deploy/,
# then the gates (formatting, clippy and rustdoc with warnings denied) and
# every test of the workspace (unit, property, end to end, including the
# in-process S3 server and the chaos test on a cluster of processes).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v mold >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq mold) >/dev/null 2>&1 || echo "note: mold not installed, using the default linker"
fi
# Chromium renders the fan-out page in its browser test.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 || echo "note: could not install chromium; the page test will fail"
fi
# psql (Debian's postgresql-client) and openssl (a test certificate) drive the PostgreSQL protocol tests.
for tool in psql:postgresql-client openssl:openssl; do
  if ! command -v "${tool%%:*}" >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq "${tool##*:}") >/dev/null 2>&1 || echo "note: could not install ${tool##*:}; the PostgreSQL tests will fail"
  fi
done
if command -v mold >/dev/null 2>&1 && [[ "${RUSTFLAGS:-}" != *fuse-ld* ]]; then
  export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C link-arg=-fuse-ld=mold"
fi

# The deployment manifests, validated offline (installs its validators).
./deploy/validate.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
