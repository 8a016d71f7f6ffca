#!/usr/bin/env bash
# Every benchmark, one report: runs the lookup, cluster (propagation, convergence under loss),
# failover and footprint benchmarks and writes BENCHMARKS.md (figures, the machine, the commit,
# how to rerun). Ratios are to baselines measured in the same run: /etc/hosts and a local dnsmasq
# for lookups. Figures only: nothing here asserts a timing.
#
#   bash scripts/benchmarks.sh [OUT]        # OUT defaults to BENCHMARKS.md at the top level
#
# Needs root (namespaces; everything created is removed). LBFO_SKIP_CROSS=1 leaves the router
# build out of the footprint (it builds lbfo-agentd for mipsel, ~1 min on 2 cores). Takes about
# 5 minutes on 2 cores. Each part is also its own command: scripts/bench.sh,
# scripts/bench-cluster.sh, scripts/bench-failover.sh, size-report/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

# The agent at rest: its memory with a full-size table, the table and counters it maps, its CPU
# when nothing happens. A private mount, IPC and network namespace; /run is a fresh tmpfs.
if [[ ${1:-} == --footprint ]]; then
  bin=$2
  mount -t tmpfs tmpfs /run
  d=$(mktemp -d)
  services=1000 backends=4
  for ((s = 1; s <= services; s++)); do
    for ((b = 1; b <= backends; b++)); do
      echo "add svc$s.lan 10.$((s / 250)).$((s % 250)).$b"
    done
  done >"$d/lbfo.conf"
  printf 'fifo %s/lbfo.sock\ntable /run/lbfo/table\n' "$d" >>"$d/lbfo.conf"
  "$bin/lbfo-agentd" -c "$d/lbfo.conf" 2>"$d/agent.log" &
  pid=$!
  for _ in $(seq 1 500); do [[ -s /run/lbfo/table ]] && break; sleep 0.01; done
  sleep 1
  kb() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$pid/status"; }
  ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
  a=$(ticks)
  sleep 5
  b=$(ticks)
  seg=$(ipcs -m --bytes | awk 'NR > 3 && $5 > 0 {s += $5} END {print s + 0}')
  echo "| measure | value |"
  echo "|---|---:|"
  echo "| agent resident memory, $services services × $backends backends (VmRSS, with the table pages it wrote) | $(kb VmRSS) KiB |"
  echo "| agent peak resident memory (VmHWM) | $(kb VmHWM) KiB |"
  echo "| shared-memory table file (fixed capacity, read-only to lookups) | $(stat -c %s /run/lbfo/table) bytes |"
  echo "| usage counters (SysV segment, the only thing lookups write) | $seg bytes |"
  echo "| agent CPU at rest over 5 s (no cluster, no checks) | $(awk -v t=$((b - a)) 'BEGIN {printf "%.2f%%", t / 100 / 5 * 100}') of one core |"
  echo "| libnss_lbfo.so.2 (x86_64) | $(stat -c %s "$bin/libnss_lbfo.so") bytes |"
  echo "| lbfo-agentd (x86_64 glibc, release) | $(stat -c %s "$bin/lbfo-agentd") bytes |"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  rm -rf "$d"
  exit 0
fi


root=$PWD
out=$(realpath -m "${1:-BENCHMARKS.md}")
bash scripts/setup.sh
[[ -d "$HOME/.cargo/bin" ]] && export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --workspace --locked -q
cargo build --release -p lbfo-tests --bins --locked -q
bin=$(realpath "${CARGO_TARGET_DIR:-target}")/release

work=$(mktemp -d /tmp/lbfo-benchmarks.XXXXXX)
trap 'rm -rf "$work"' EXIT

part() { # NAME COMMAND... : runs one benchmark, its Markdown to $work/NAME.md
  local name=$1 t0=$SECONDS
  shift
  echo "benchmarks: $name ..." >&2
  if "$@" >"$work/$name.md" 2>"$work/$name.log"; then
    echo "benchmarks: $name done in $((SECONDS - t0)) s" >&2
  else
    tail -20 "$work/$name.log" >&2
    printf '**This part failed** (exit status above, in the run'"'"'s stderr).\n' >"$work/$name.md"
  fi
}

footprint() {
  unshare -m -i -n --propagation private bash "$0" --footprint "$bin"
}

t_all=$SECONDS
part lookup bash scripts/bench.sh
part cluster bash scripts/bench-cluster.sh
part clustersim "$bin/lbfo-clustersim" 16 64 256 1000
part failover bash scripts/bench-failover.sh
part footprint footprint
if [[ ${LBFO_SKIP_CROSS:-0} != 1 ]]; then
  # Exit status 1 is the report's verdict (an artefact over budget), shown in its table.
  part sizes bash -c 'bash size-report/run.sh x86_64-unknown-linux-gnu mipsel-unknown-linux-musl || (($? == 1))'
fi

cpu=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
{
  echo "# Benchmarks"
  echo
  echo "Written by \`bash scripts/benchmarks.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC') from commit"
  echo "\`$(git -C "$root" rev-parse --short HEAD)\`$(git -C "$root" diff --quiet HEAD -- . 2>/dev/null || echo ' (with local changes)'),"
  echo "in $(((SECONDS - t_all + 30) / 60)) min. Figures, not assertions: each baseline is measured in the same run,"
  echo "so ratios hold across machines better than absolute times do."
  echo
  echo "## Machine"
  echo
  echo "| | |"
  echo "|---|---|"
  echo "| CPU | ${cpu:-unknown}, $(nproc) cores online |"
  echo "| memory | $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) |"
  echo "| kernel | $(uname -sr) |"
  echo "| glibc | $(ldd --version | awk 'NR == 1 {print $NF}') |"
  echo "| Rust | $(rustc --version) |"
  echo "| load average at the end | $(cut -d' ' -f1-3 /proc/loadavg) |"
  echo
  echo "# Lookups (issue 2)"
  echo
  sed 's/^## /### /' "$work/lookup.md"
  echo
  echo "# Cluster: propagation and convergence under loss (issue 3)"
  echo
  sed 's/^## /### /' "$work/cluster.md"
  echo
  echo "# Cluster at 16 to 1,000 nodes, simulated (issue 18)"
  echo
  echo "The agent's own cluster code (\`cluster::sim\`), N instances over a simulated network"
  echo "with a virtual clock; times are virtual. \`lbfo-clustersim [N...]\` reruns it."
  echo
  sed 's/^## /### /' "$work/clustersim.md"
  echo
  echo "# Failover (issue 4)"
  echo
  echo "Baselines (defaults, not measured here): keepalived ≈ 3.5 s, HAProxy ≈ 6 s,"
  echo "memberlist ≈ 5.5 s. Target ≤ 0.3 s."
  echo
  cat "$work/failover.md"
  echo
  echo "# Footprint (issues 2 and 5)"
  echo
  cat "$work/footprint.md"
  if [[ -f $work/sizes.md ]]; then
    echo
    echo "Release artefacts and their budgets (size-report/run.sh):"
    echo
    cat "$work/sizes.md"
  fi
  echo
  echo "## How to rerun"
  echo
  echo "\`bash scripts/benchmarks.sh\` (root; ~5 minutes on 2 cores; \`LBFO_SKIP_CROSS=1\` skips the"
  echo "router build). One part at a time: \`scripts/bench.sh [CALLS] [ROUNDS]\`,"
  echo "\`scripts/bench-cluster.sh [COMMANDS]\`, \`scripts/bench-failover.sh [TRIALS]\`,"
  echo "\`size-report/run.sh [TARGET...]\`; fuzzing figures: fuzz/README.md."
} >"$out"
echo "benchmarks: wrote $out" >&2
