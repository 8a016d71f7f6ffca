#!/usr/bin/env bash
# Tests router builds under qemu-user, here, without docker:
#
#   bash cross/test.sh                       # the full matrix
#   bash cross/test.sh mipsel-unknown-linux-musl mips-unknown-linux-musl    # what CI runs
#
# Per target: (1) the core's unit tests, cross-built and run under qemu (the table layout, the
# 64-bit word stand-in, policies, the parser); (2) builds the agent (cross/build.sh) and runs a
# smoke test of it under qemu: start with a config under /tmp, take a backend down through the
# FIFO, check the result with the cross-built agent's own `status --json` (the table is
# native-endian, so a big-endian table is read by a big-endian reader) and in its dnsmasq hosts
# file, then SIGTERM and a clean exit.
# The tests build in a profile of their own, `cross-test`: optimised (the table tests take
# minutes unoptimised under qemu) and unwinding. The dev profile aborts, and a test run in it
# makes -Zbuild-std build std twice into one directory, where the second compile sees two `core`s;
# a profile of its own also keeps the test std apart from the agent's release std. The smoke test
# runs in a private IPC namespace, so the agent's SysV counters segment goes away with it. (3) for mips: cross/interop.sh.
set -euo pipefail
# shellcheck source=cross/env.sh
source "$(dirname "$0")/env.sh"
cd "$ROOT"

cross_targets "$@"

core_tests() {
  local t=$1 start=$SECONDS
  cross_log "$t: core unit tests under $(qemu_for "$t")"
  RUSTUP_TOOLCHAIN=$NIGHTLY CARGO_TARGET_DIR="$TARGET_DIR" \
    cargo-zigbuild test --locked -p lbfo-core --target "$t" -Zbuild-std \
    --profile cross-test --config 'profile.cross-test.inherits="dev"' \
    --config 'profile.cross-test.opt-level=2' --config 'profile.cross-test.panic="unwind"' \
    --config "target.$t.rustflags=[\"-Alinker-messages\"]" >&2
  cross_log "$t: core unit tests passed in $((SECONDS - start)) s"
}

smoke() {
  local t=$1 start=$SECONDS qemu bin dir
  qemu=$(qemu_for "$t")
  bin=$(cross_out "$t")/lbfo-agentd
  bash "$ROOT/cross/build.sh" "$t"   # incremental: a no-op when up to date
  dir=$(mktemp -d /tmp/lbfo-cross-smoke.XXXXXX)
  local ns=(env LBFO_SMOKE_ICMP=1 unshare --ipc)
  [[ $(id -u) == 0 ]] || ns=(unshare -r --ipc)
  cross_log "$t: agent smoke test under $qemu in $dir"
  "${ns[@]}" bash "$ROOT/cross/smoke.sh" "$qemu" "$bin" "$dir" || {
    echo "--- agent log:" >&2; cat "$dir/agent.log" >&2 || true
    rm -rf "$dir"
    return 1
  }
  rm -rf "$dir"
  cross_log "$t: agent smoke test passed in $((SECONDS - start)) s"
}

for t in "${targets[@]}"; do
  core_tests "$t"
  smoke "$t"
done
# Cross-arch interop: the big-endian agent under qemu and an x86_64 agent in one group, in a
# namespace bed (needs root; LBFO_INTEROP=0 skips it).
for t in "${targets[@]}"; do
  [[ $t == mips-unknown-linux-musl ]] && bash "$ROOT/cross/interop.sh" "$t"
done
true
