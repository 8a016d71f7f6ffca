#!/usr/bin/env bash
# The size report: builds the release artefacts for each target and prints a Markdown table
# (target, lbfo-agentd bytes, libnss_lbfo.so.2 bytes, budget, verdict) on stdout; build logs go
# to stderr. Exits 1 when an artefact is over its budget.
#
#   bash size-report/run.sh                  # the host (x86_64 glibc) and every router target
#   bash size-report/run.sh x86_64-unknown-linux-gnu mipsel-unknown-linux-musl   # some
#
# Budgets: lbfo-agentd <= 200 KiB on mipsel-musl (the smallest routers' flash and RAM), the NSS
# module <= 24 KiB on x86_64 (it is mapped into every process). Other sizes are reported only.
# Router artefacts are built as cross/build.sh builds them; the host's with the workspace's
# release profile on stable.
set -euo pipefail
# shellcheck source=cross/env.sh
source "$(dirname "$0")/../cross/env.sh"
cd "$ROOT"

HOST=x86_64-unknown-linux-gnu
AGENT_BUDGET_MIPSEL=$((200 * 1024))
NSS_BUDGET_X86_64=$((24 * 1024))

targets=("$@")
((${#targets[@]})) || targets=("$HOST" "${ROUTER_TARGETS[@]}")

rows=()
over=0
kib() { awk -v b="$1" 'BEGIN { printf "%.1f KiB", b / 1024 }'; }
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
    agent=$(stat -c %s "$TARGET_DIR/release/lbfo-agentd")
    nss=$(stat -c %s "$TARGET_DIR/release/libnss_lbfo.so")
    rows+=("| $t | $agent | $nss | NSS module ≤ $(kib $NSS_BUDGET_X86_64) | $(verdict "$nss" $NSS_BUDGET_X86_64) |")
    judge "$nss" $NSS_BUDGET_X86_64
  else
    check_target "$t"
    bash "$ROOT/cross/build.sh" "$t"
    agent=$(stat -c %s "$(cross_out "$t")/lbfo-agentd")
    if [[ $t == mipsel-unknown-linux-musl ]]; then
      rows+=("| $t | $agent | — (musl: no NSS) | agent ≤ $(kib $AGENT_BUDGET_MIPSEL) | $(verdict "$agent" $AGENT_BUDGET_MIPSEL) |")
      judge "$agent" $AGENT_BUDGET_MIPSEL
    else
      rows+=("| $t | $agent | — (musl: no NSS) | — | reported |")
    fi
  fi
done

echo "| target | lbfo-agentd bytes | libnss_lbfo.so.2 bytes | budget | verdict |"
echo "|---|---:|---:|---|---|"
printf '%s\n' "${rows[@]}"
exit "$over"
