#!/usr/bin/env bash
# Every benchmark, one report: runs the lookup, cluster (propagation, convergence under loss),
# failover and footprint benchmarks and writes BENCHMARKS.md (figures, the machine, the commit,
# how to rerun). Ratios are to baselines measured in the same run: /etc/hosts and a local dnsmasq
# for lookups. Figures only: nothing here asserts a timing.
#
#   bash scripts/benchmarks.sh [OUT]        # OUT defaults to BENCHMARKS.md at the top level
#
# Needs root (namespaces; everything created is removed). LBFO_SKIP_CROSS=1 leaves the router
# builds out (the size report's mipsel agent, and the footprint's x86_64 musl agent: a few
# minutes each on 2 cores). Takes about
# 5 minutes on 2 cores. Each part is also its own command: scripts/bench.sh,
# scripts/bench-cluster.sh, scripts/bench-failover.sh, size-report/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

# The agent at rest (issue 18's footprint targets): its memory and the shared memory it makes,
# with the example config at the default capacity (the targets) and with 1,000 services at the
# largest capacity (for comparison), as the glibc build and, when given, the router build (musl,
# static, built by cross/build.sh for x86_64 so it runs here natively); its CPU when nothing
# happens. A private mount, IPC and network namespace; /run is a fresh tmpfs for each run.
if [[ ${1:-} == --footprint ]]; then
  bin=$2 musl=${3:-}
  d=$(mktemp -d)
  # shellcheck disable=SC2317 # called by name, through `run`
  example() { grep -Ev '^[[:space:]]*(table|fifo)[[:space:]]' examples/lbfo.conf; }
  # shellcheck disable=SC2317 # called by name, through `run`
  large() {
    echo "capacity 4096 16"
    for ((s = 1; s <= 1000; s++)); do
      for ((b = 1; b <= 4; b++)); do echo "add svc$s.lan 10.$((s / 250)).$((s % 250)).$b"; done
    done
  }
  # run AGENT CONFIG-FUNCTION LABEL: one agent at rest; its figures as "key value" lines in
  # $d/LABEL, and its resident memory by mapping in $d/LABEL.maps.
  run() {
    local agent=$1 label=$3 pid a b
    umount /run 2>/dev/null || true
    mount -t tmpfs tmpfs /run
    { "$2"; printf 'fifo %s/lbfo.sock\ntable /run/lbfo/table\n' "$d"; } >"$d/lbfo.conf"
    "$agent" -c "$d/lbfo.conf" 2>"$d/agent.log" &
    pid=$!
    for _ in $(seq 1 500); do grep -q '^ready' "$d/agent.log" && break; sleep 0.01; done
    sleep 1
    a=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    sleep 5
    b=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    {
      awk '$1 ~ /^(VmRSS|VmHWM|RssAnon|RssFile|RssShmem):$/ {print $1, $2}' "/proc/$pid/status"
      echo "table: $(stat -c %s /run/lbfo/table)"
      awk 'NR > 1 {s += $4} END {print "segment:", s + 0}' /proc/sysvipc/shm
      echo "cpu: $((b - a))"
    } >"$d/$label"
    awk '/^[0-9a-f]+-[0-9a-f]+ / {name = ($6 == "") ? "(anonymous)" : $6}
         /^Rss:/ {r[name] += $2}
         END {for (n in r) if (r[n] > 0) print r[n], n}' "/proc/$pid/smaps" | sort -rn >"$d/$label.maps"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    ipcrm --all=shm
  }
  v() { awk -v k="$1:" '$1 == k {print $2}' "$d/$2"; }
  ok() { awk -v v="$1" -v t="$2" 'BEGIN {print (v <= t) ? "met" : "**not met**"}'; }
  run "$bin/lbfo-agentd" example glibc
  run "$bin/lbfo-agentd" large glibc-large
  [[ -n $musl ]] && run "$musl" example musl
  shared=$(($(v table glibc) + $(v segment glibc)))
  echo "| measure | value | target | verdict |"
  echo "|---|---:|---:|---|"
  echo "| table file + counters segment, example config, default capacity (64 × 8) | $shared bytes ($(v table glibc) + $(v segment glibc)) | ≤ 128 KiB | $(ok "$shared" 131072) |"
  if [[ -n $musl ]]; then
    echo "| agent VmRSS, example config, default capacity, router build (musl, static) | $(v VmRSS musl) KiB | ≤ 1024 KiB | $(ok "$(v VmRSS musl)" 1024) |"
  fi
  echo "| agent VmRSS, example config, default capacity, glibc build | $(v VmRSS glibc) KiB | ≤ 1024 KiB | $(ok "$(v VmRSS glibc)" 1024) |"
  # The same less the shared C library's pages (libc, the dynamic loader, libgcc_s), which every
  # glibc process on the machine has resident anyway: what running the agent adds.
  libs=$(awk '$2 ~ /\.so(\.[0-9]+)*$/ {s += $1} END {print s + 0}' "$d/glibc.maps")
  echo "| … of which not the shared C library (VmRSS less libc.so, ld.so and libgcc_s: $libs KiB) | $(($(v VmRSS glibc) - libs)) KiB | ≤ 1024 KiB | $(ok "$(($(v VmRSS glibc) - libs))" 1024) |"
  echo "| agent VmRSS, 1,000 services × 4 backends, capacity 4,096 × 16, glibc build | $(v VmRSS glibc-large) KiB | — | — |"
  echo "| table file + counters segment at 4,096 × 16 | $(($(v table glibc-large) + $(v segment glibc-large))) bytes | — | — |"
  echo "| agent CPU at rest over 5 s (no cluster, no checks) | $(awk -v t="$(v cpu glibc)" 'BEGIN {printf "%.2f%%", t / 100 / 5 * 100}') of one core | — | — |"
  echo "| libnss_lbfo.so.2 (x86_64) | $(stat -c %s "$bin/libnss_lbfo.so") bytes | — | — |"
  echo "| lbfo-agentd (x86_64 glibc, release) | $(stat -c %s "$bin/lbfo-agentd") bytes | — | — |"
  echo
  echo "Where the resident memory is, example config (KiB by mapping; a shared library's pages are"
  echo "shared with every process that maps it; the table is the tmpfs file, SYSV the counters):"
  echo
  for label in glibc ${musl:+musl}; do
    echo "- $label build, VmRSS $(v VmRSS "$label") KiB (anonymous $(v RssAnon "$label"), files $(v RssFile "$label"), shared memory $(v RssShmem "$label")):"
    awk '{sub(".*/", "", $2); printf "%s%s %s", (NR > 1 ? ", " : "  "), $2, $1} END {print ""}' "$d/$label.maps"
  done
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
  local musl=''
  if [[ ${LBFO_SKIP_CROSS:-0} != 1 ]]; then
    bash cross/build.sh x86_64-unknown-linux-musl
    musl=$(realpath "${CARGO_TARGET_DIR:-target}")/routers/x86_64-unknown-linux-musl/lbfo-agentd
  fi
  unshare -m -i -n --propagation private bash "$0" --footprint "$bin" "$musl"
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
  echo "# Footprint (issues 2, 5 and 18)"
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
