#!/usr/bin/env bash
# Runs one of the test bed's benchmark programs (tests/src/bin) after building what it drives:
#   scripts/bench-bed.sh lbfo-clusterbench|lbfo-failoverbench [ARGS...]
# Figures, not assertions. Needs root: the programs build a multi-host bed of network namespaces,
# and everything they create is removed when they end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
[[ -d "$HOME/.cargo/bin" ]] && export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --workspace --locked -q
cargo build --release -p lbfo-tests --bins --locked -q
dir=$(realpath "${CARGO_TARGET_DIR:-target}")/release
export LBFO_BIN_DIR=${LBFO_BIN_DIR:-$dir}
tool=$1
shift
exec "$dir/$tool" "$@"
