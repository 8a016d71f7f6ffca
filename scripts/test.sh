#!/usr/bin/env bash
# The test command: builds the release artefacts the end-to-end tests drive, then runs every
# test (unit tests beside the code, end-to-end tests in tests/), then the lints.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
[[ -d "$HOME/.cargo/bin" ]] && export PATH="$HOME/.cargo/bin:$PATH"

cargo build --release --workspace --locked
cargo test --workspace --locked
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
