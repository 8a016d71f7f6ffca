# shellcheck shell=bash
# Sourced by cross/build.sh, cross/test.sh and size-report/run.sh: installs what a router build
# needs (once; each step is skipped when already there) and sets the shared variables.
#
#   ROOT      the workspace        TARGET_DIR  cargo's target directory
#   NIGHTLY   the pinned nightly   ROUTER_TARGETS  the full matrix
#   cross_out TARGET  -> where the finished (stripped, .pdr-free) lbfo-agentd of TARGET goes

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NIGHTLY=nightly-2026-05-20
ZIGLANG=0.17.1
ZIGBUILD=0.24.1
ROUTER_TARGETS=(mipsel-unknown-linux-musl mips-unknown-linux-musl armv7-unknown-linux-musleabihf aarch64-unknown-linux-musl)
# Built as a router build is, but for this machine, so it runs natively: the benchmarks measure
# the router build's memory with it (scripts/benchmarks.sh). Not in the matrix.
HOST_MUSL=x86_64-unknown-linux-musl
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
[[ -d "$HOME/.cargo/bin" ]] && export PATH="$HOME/.cargo/bin:$PATH"

# 32-bit musl: a 64-bit time_t (musl >= 1.2.3 symbols, which zig's musl has). Without it a time
# after 2038 reads back negative. Covers std's own libc under -Zbuild-std.
export RUST_LIBC_UNSTABLE_MUSL_V1_2_3=1

cross_log() { echo "cross: $*" >&2; }

cross_setup() {
  local need=()
  if ! rustup toolchain list 2>/dev/null | grep -q "^$NIGHTLY"; then
    cross_log "installing $NIGHTLY (minimal + rust-src)"
    rustup toolchain install "$NIGHTLY" --profile minimal --component rust-src >&2
  elif ! rustup component list --toolchain "$NIGHTLY" --installed 2>/dev/null | grep -q '^rust-src'; then
    rustup component add --toolchain "$NIGHTLY" rust-src >&2
  fi
  if ! command -v cargo-zigbuild >/dev/null 2>&1 || ! python3 -c 'import ziglang' 2>/dev/null; then
    cross_log "installing ziglang==$ZIGLANG cargo-zigbuild==$ZIGBUILD from PyPI"
    python3 -m pip install -q "ziglang==$ZIGLANG" "cargo-zigbuild==$ZIGBUILD" >&2
    hash -r
  fi
  command -v qemu-mips >/dev/null 2>&1 || need+=(qemu-user)
  command -v xz >/dev/null 2>&1 || need+=(xz-utils)
  command -v llvm-objcopy >/dev/null 2>&1 || ls /usr/bin/llvm-objcopy-* >/dev/null 2>&1 || need+=(llvm)
  if ((${#need[@]})); then
    if [[ $(id -u) == 0 ]]; then
      cross_log "installing ${need[*]}"
      DEBIAN_FRONTEND=noninteractive apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    else
      cross_log "please install: ${need[*]}"
      return 1
    fi
  fi
}

objcopy_bin() {
  command -v llvm-objcopy 2>/dev/null || printf '%s\n' /usr/bin/llvm-objcopy-* | sort -V | tail -n 1
}

cross_out() { echo "$TARGET_DIR/routers/$1"; }

# qemu-user for a target triple.
qemu_for() {
  case "$1" in
    armv7-*) echo qemu-arm ;;
    aarch64-*) echo qemu-aarch64 ;;
    mipsel-*) echo qemu-mipsel ;;
    mips-*) echo qemu-mips ;;
    *) return 1 ;;
  esac
}

check_target() {
  local t
  for t in "${ROUTER_TARGETS[@]}" "$HOST_MUSL"; do [[ $t == "$1" ]] && return 0; done
  cross_log "unknown target $1 (known: ${ROUTER_TARGETS[*]})"
  return 2
}

# The scripts' common start: TARGET... (default: every router target) checked into the array
# `targets`, then the toolchain and tools installed.
cross_targets() {
  targets=("$@")
  ((${#targets[@]})) || targets=("${ROUTER_TARGETS[@]}")
  local t
  for t in "${targets[@]}"; do check_target "$t"; done
  cross_setup
}
