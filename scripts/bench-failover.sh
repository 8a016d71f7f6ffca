#!/usr/bin/env bash
# Failover benchmark: figures, not assertions. Builds, then runs lbfo-failoverbench on a real
# multi-host bed of network namespaces (needs root; everything it creates is removed when it
# ends). Usage: scripts/bench-failover.sh [TRIALS]   (default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
[[ -d "$HOME/.cargo/bin" ]] && export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --workspace --locked -q
cargo build --release -p lbfo-tests --bins --locked -q
dir=$(realpath "${CARGO_TARGET_DIR:-target}")/release
export LBFO_BIN_DIR=${LBFO_BIN_DIR:-$dir}
exec "$dir/lbfo-failoverbench" "$@"
