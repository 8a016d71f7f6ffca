#!/usr/bin/env bash
# Where the router agent's bytes go: builds lbfo-agentd for TARGET as cross/build.sh does, but
# with line tables and inlining information kept (its own target directory, so the release
# build is untouched), and charges every instruction of .text to the line of our sources that
# LTO inlined it into (size-report/where.py). The place to start when the size report says OVER.
#
#   bash size-report/where.sh                                  # mipsel, by source file
#   bash size-report/where.sh mipsel-unknown-linux-musl agentd/status.rs   # one file, by line
set -euo pipefail
# shellcheck source=cross/env.sh
source "$(dirname "$0")/../cross/env.sh"
cd "$ROOT"

target=${1:-mipsel-unknown-linux-musl}
check_target "$target"
dir="$TARGET_DIR/where"
CARGO_TARGET_DIR="$dir" CARGO_PROFILE_RELEASE_DEBUG=limited CARGO_PROFILE_RELEASE_STRIP=false \
  bash cross/build.sh "$target"
python3 size-report/where.py "$dir/$target/release/lbfo-agentd" "${@:2}"
