#!/usr/bin/env bash
# Builds a static, size-tuned `lbfo-agentd` for router targets, here, without docker:
#
#   bash cross/build.sh                      # the full matrix (all four targets), one at a time
#   bash cross/build.sh mipsel-unknown-linux-musl mips-unknown-linux-musl
#
# Toolchain: the pinned nightly with rust-src (-Zbuild-std: no prebuilt std exists for these
# targets), zig as linker and musl through cargo-zigbuild, both from PyPI; installed on first use.
# Size settings on top of the workspace's release profile (opt-level z, LTO, one codegen unit,
# strip): panic = "immediate-abort" (a panic dies with SIGTRAP and prints nothing; lbfo-agentd has
# no panic on purpose, and its supervisor restarts it), no panic locations, 4 KiB page alignment,
# and MIPS's `.pdr` section (debug info for a debugger we don't ship) removed after linking.
# Per-target linker flags and the qemu runner are in .cargo/config.toml.
#
# The finished binary of TARGET is $CARGO_TARGET_DIR/routers/TARGET/lbfo-agentd.
set -euo pipefail
# shellcheck source=cross/env.sh
source "$(dirname "$0")/env.sh"
cd "$ROOT"

cross_targets "$@"

# Size flags for the agent only (the tests in cross/test.sh keep panic messages and Debug):
# no panic locations, no Debug formatting (the agent prints only Display), no unwind tables
# (nothing unwinds under immediate-abort), and quiet about zig's missing library directory.
# Linker: no RELRO (it pads the writable data to a page of its own; a static binary has almost
# nothing to protect there) and no separate read-only segment (its page alignment pads a page).
# (zig refuses lld's --icf.) After linking: .comment goes, and MIPS's .pdr.
# shellcheck disable=SC2054 # the commas belong to the linker argument
SIZE_FLAGS=(-Zlocation-detail=none -Zfmt-debug=none -Cforce-unwind-tables=no -Alinker-messages
  -Clink-arg=-Wl,--no-eh-frame-hdr -Clink-arg=-Wl,-z,norelro -Clink-arg=-Wl,--no-rosegment)
objcopy=$(objcopy_bin)
for t in "${targets[@]}"; do
  start=$SECONDS
  flags=("${SIZE_FLAGS[@]}")
  # No .eh_frame (cross/no-eh-frame.ld): the C runtime's unwind tables, which nothing uses
  # (armv7 unwinds with .ARM.exidx instead, small, kept). The size report has the figures.
  flags+=("-Clink-arg=-Wl,-T,$ROOT/cross/no-eh-frame.ld")
  # MIPS: non-PIC code; PIC on MIPS loads every call and global through the GOT ($gp), and a
  # static binary gains nothing from it.
  case "$t" in mips*) flags+=(-Crelocation-model=static) ;; esac
  cross_log "building lbfo-agentd for $t"
  CARGO_TARGET_DIR="$TARGET_DIR" cargo +"$NIGHTLY" zigbuild --locked --release -p lbfo-agentd \
    --target "$t" -Zbuild-std=std,panic_abort -Zpanic-immediate-abort \
    --config 'profile.release.panic="immediate-abort"' \
    -Zbuild-std-features=optimize_for_size \
    --config "target.$t.rustflags=[$(printf '"%s",' "${flags[@]}")]" >&2
  out=$(cross_out "$t")
  mkdir -p "$out"
  cp "$TARGET_DIR/$t/release/lbfo-agentd" "$out/lbfo-agentd"
  "$objcopy" --remove-section .comment "$out/lbfo-agentd"
  case "$t" in mips*) "$objcopy" --remove-section .pdr "$out/lbfo-agentd" ;; esac
  cross_log "$t: $(stat -c %s "$out/lbfo-agentd") bytes, $((SECONDS - start)) s: $out/lbfo-agentd"
done
