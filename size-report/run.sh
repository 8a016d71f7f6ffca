#!/usr/bin/env bash
# The size report: builds the release artefacts for each target and prints a Markdown table
# (target, lbfo-agentd bytes stripped and xz-compressed, libnss_lbfo.so.2 bytes, budget,
# verdict) on stdout; build logs go to stderr. Exits 1 when an artefact is over a budget.
#
#   bash size-report/run.sh                  # the host (x86_64 glibc) and every router target
#   bash size-report/run.sh x86_64-unknown-linux-gnu mipsel-unknown-linux-musl   # some
#
# Budgets: lbfo-agentd on mipsel-musl (the smallest routers' flash and RAM) <= 384 KiB stripped,
# which is what it takes in RAM, and <= 144 KiB xz-compressed, which is what an OpenWrt image
# holds on flash; the NSS module <= 24 KiB on x86_64 (it is mapped into every process). Other
# sizes are reported only. Why the agent's budgets are what they are: ARCHITECTURE.md, "Router
# size".
# The xz column compresses as an OpenWrt squashfs does (include/image.mk: `-comp xz -Xpreset 9
# -Xe -Xlc 0 -Xlp 2 -Xpb 2`, no BCJ filter for MIPS), block by block: OpenWrt's squashfs
# compresses each 256 KiB block of a file on its own, and the column is the sum.
# Router artefacts are built as cross/build.sh builds them; the host's with the workspace's
# release profile on stable.
set -euo pipefail
# shellcheck source=cross/env.sh
source "$(dirname "$0")/../cross/env.sh"
cd "$ROOT"

HOST=x86_64-unknown-linux-gnu
AGENT_BUDGET_MIPSEL=$((384 * 1024))
AGENT_XZ_BUDGET_MIPSEL=$((144 * 1024))
NSS_BUDGET_X86_64=$((24 * 1024))

targets=("$@")
((${#targets[@]})) || targets=("$HOST" "${ROUTER_TARGETS[@]}")
command -v xz >/dev/null || cross_setup

rows=()
over=0
kib() { awk -v b="$1" 'BEGIN { printf "%.1f KiB", b / 1024 }'; }
xz_bytes() { # FILE: the bytes of its 256 KiB blocks, each compressed on its own, summed
  local size n total=0 i
  size=$(stat -c %s "$1")
  for ((i = 0; i * 262144 < size; i++)); do
    n=$(dd if="$1" bs=262144 skip="$i" count=1 status=none |
      xz --format=xz --check=crc32 --lzma2=preset=9e,lc=0,lp=2,pb=2 -c | wc -c)
    total=$((total + n))
  done
  echo "$total"
}
verdict() { # SIZE BUDGET -> "ok"/"OVER" (runs in $(...): the caller records the over with `judge`)
  if (($1 <= $2)); then echo "ok ($(kib "$1") of $(kib "$2"))"; else echo "**OVER** by $(($1 - $2)) bytes"; fi
}
judge() { # SIZE BUDGET: sets `over` in this shell (verdict's subshell cannot)
  (($1 <= $2)) || over=1
}

for t in "${targets[@]}"; do
  if [[ $t == "$HOST" ]]; then
    [[ $(uname -m) == x86_64 ]] || { cross_log "the host is not x86_64"; exit 2; }
    CARGO_TARGET_DIR="$TARGET_DIR" cargo build --locked --release -p lbfo-agentd -p lbfo-nss >&2
    bin="$TARGET_DIR/release/lbfo-agentd"
    agent=$(stat -c %s "$bin")
    nss=$(stat -c %s "$TARGET_DIR/release/libnss_lbfo.so")
    rows+=("| $t | $agent | $(xz_bytes "$bin") | $nss | NSS module ≤ $(kib $NSS_BUDGET_X86_64) | $(verdict "$nss" $NSS_BUDGET_X86_64) |")
    judge "$nss" $NSS_BUDGET_X86_64
  else
    check_target "$t"
    bash "$ROOT/cross/build.sh" "$t"
    bin="$(cross_out "$t")/lbfo-agentd"
    agent=$(stat -c %s "$bin")
    xz=$(xz_bytes "$bin")
    if [[ $t == mipsel-unknown-linux-musl ]]; then
      rows+=("| $t | $agent | $xz | — (musl: no NSS) | agent ≤ $(kib $AGENT_BUDGET_MIPSEL), xz ≤ $(kib $AGENT_XZ_BUDGET_MIPSEL) | $(verdict "$agent" $AGENT_BUDGET_MIPSEL); xz $(verdict "$xz" $AGENT_XZ_BUDGET_MIPSEL) |")
      judge "$agent" $AGENT_BUDGET_MIPSEL
      judge "$xz" $AGENT_XZ_BUDGET_MIPSEL
    else
      rows+=("| $t | $agent | $xz | — (musl: no NSS) | — | reported |")
    fi
  fi
done

echo "| target | lbfo-agentd bytes | lbfo-agentd xz bytes | libnss_lbfo.so.2 bytes | budget | verdict |"
echo "|---|---:|---:|---:|---|---|"
printf '%s\n' "${rows[@]}"
exit "$over"
