#!/usr/bin/env bash
# Every test of the project, as CI runs it: build, lint, then unit, integration and end-to-end
# tests against a real 3-member LXD cluster that this script brings up and removes again (also
# when a step fails). Set KEEP_CLUSTER=1 to leave the cluster running afterwards.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n=== %s\n' "$*"; }

step "tools"
. hack/lib/prerequisites.sh
check_toolchain
python_env

step "format"
cargo fmt --all --check

step "build"
cargo build --workspace --all-targets --locked

step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "LXD test cluster"
if [ "${KEEP_CLUSTER:-}" != 1 ]; then
  trap 'step "LXD test cluster down"; hack/lxd-cluster.sh down' EXIT
fi
# The demo's formed cluster uses the same addresses.
hack/lxd-cluster.sh bare down
hack/lxd-cluster.sh up 3
eval "$(hack/lxd-cluster.sh env)"

step "tests"
cargo test --workspace --locked --no-fail-fast

step "API server figures (short bench in the debug build, no targets)"
hack/bench apiserver --short
