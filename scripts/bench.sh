#!/usr/bin/env bash
# Lookup benchmark: one command, one Markdown report, the targets of issue 2 beside the figures.
#
#   Latency: getaddrinfo (AF_UNSPEC) p50/p99 for five cases: an lbfo hit, an /etc/hosts hit and
#   a miss through `hosts: lbfo files`, and the same hosts hit and miss through `hosts: files`.
#   The cases are interleaved over ROUNDS rounds (the starting case rotates), and the report
#   gives the median of the per-round p50s and p99s, and the median of the per-round ratios, so
#   a burst of load from other work on the machine moves one round, not one case.
#   Instructions: callgrind's whole-program count for two run lengths of the same case; the
#   difference divided by the difference in calls is the exact, repeatable cost of one
#   getaddrinfo + freeaddrinfo (start-up, dlopen and the first mapping cancel out).
#   The module's own work: instructions inside `_nss_lbfo_*` (callgrind --toggle-collect, which
#   counts everything called from the entry points: glibc's strlen, memcpy, time) per lookup,
#   and syscalls per lookup (strace), both by the same two-length difference.
#
#   The DNS baseline: the same hit answered by a local dnsmasq (its hosts file, from memory)
#   through `hosts: dns` with /etc/resolv.conf pointing at 127.0.0.1, what a musl client or a
#   LAN host without lbfo's module gets from an OpenWrt gateway.
#
# Runs in a private mount, IPC and network namespace: the machine's /etc, /run, SysV segments and
# network are untouched (dnsmasq listens on the namespace's own loopback) and everything vanishes
# with the namespace.
# Usage: scripts/bench.sh [N calls per case per round, default 20000] [ROUNDS, default 5]
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${LBFO_BENCH_INNER:-}" != 1 ]]; then
  bash scripts/setup.sh
  [[ -d "$HOME/.cargo/bin" ]] && export PATH="$HOME/.cargo/bin:$PATH"
  cargo build --release --workspace --locked -q
  cargo build --release -p lbfo-tests --bin lbfo-resolve --locked -q
  ns=(unshare -m -i -n --propagation private)
  [[ $(id -u) == 0 ]] || ns=(unshare -rmin --propagation private)
  exec env LBFO_BENCH_INNER=1 "${ns[@]}" bash "$0" "$@"
fi

N=${1:-20000}
ROUNDS=${2:-5}
bin=$(realpath "${CARGO_TARGET_DIR:-target}")/release
work=$(mktemp -d)
agent_pid='' dnsmasq_pid='' big_pids=()
cleanup() {
  [[ -n $agent_pid ]] && kill "$agent_pid" 2>/dev/null
  [[ -n $dnsmasq_pid ]] && kill "$dnsmasq_pid" 2>/dev/null
  for p in "${big_pids[@]}"; do kill "$p" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT

# The driver: nothing but getaddrinfo/freeaddrinfo in the loop, so that callgrind's per-call
# difference is glibc's and the module's work, not a harness's string formatting.
cat >"$work/gai.c" <<'C'
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
static int gai(const char *name) {
  struct addrinfo hints, *res = 0;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  int rc = getaddrinfo(name, 0, &hints, &res);
  if (rc == 0) freeaddrinfo(res);
  return rc;
}
static long long ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000000000LL + t.tv_nsec;
}
static int cmp(const void *a, const void *b) {
  long long x = *(const long long *)a, y = *(const long long *)b;
  return (x > y) - (x < y);
}
/* gai loop NAME N: N calls.  gai time NAME N: N timed calls after N/10 warm-up, prints
   "p50_ns p99_ns answered" where answered is 1 if the name resolved.  gai spread SPEC N: N calls
   over names made before the loop and taken in turn; SPEC "big%d.lan,4096,64" is FORMAT,LAST,STEP
   (here every 64th of big1.lan to big4096.lan). */
int main(int argc, char **argv) {
  if (argc != 4) return 2;
  const char *name = argv[2];
  long n = atol(argv[3]);
  if (n < 1) return 2;
  if (!strcmp(argv[1], "loop")) {
    for (long i = 0; i < n; i++) gai(name);
    return 0;
  }
  if (!strcmp(argv[1], "spread")) {
    char fmt[64];
    long last = 0, step = 0;
    if (sscanf(name, "%63[^,],%ld,%ld", fmt, &last, &step) != 3 || step < 1) return 2;
    long k = last / step;
    if (k < 1) return 2;
    char (*names)[64] = malloc(k * sizeof *names);
    if (!names) return 1;
    for (long j = 0; j < k; j++) snprintf(names[j], sizeof names[j], fmt, 1 + j * step);
    for (long i = 0; i < n; i++) gai(names[i % k]);
    return 0;
  }
  long long *t = malloc(n * sizeof *t);
  if (!t) return 1;
  int ok = gai(name) == 0;
  for (long i = 0; i < n / 10; i++) gai(name);
  for (long i = 0; i < n; i++) {
    long long t0 = ns();
    gai(name);
    t[i] = ns() - t0;
  }
  qsort(t, n, sizeof *t, cmp);
  printf("%lld %lld %d\n", t[n / 2], t[(n - 1) * 99 / 100], ok);
  return 0;
}
C
cc -O2 -o "$work/gai" "$work/gai.c"
drv=$work/gai

mount -t tmpfs tmpfs /run
mkdir -p "$work/lib"
ln -s "$bin/libnss_lbfo.so" "$work/lib/libnss_lbfo.so.2"
export LD_LIBRARY_PATH=$work/lib
{
  echo "127.0.0.1 localhost"
  for i in $(seq 1 20); do echo "192.0.2.$i host$i.example host$i"; done
  echo "192.0.2.99 hosthit.test"
} >"$work/hosts"
mount --bind "$work/hosts" /etc/hosts
echo "hosts: lbfo files" >"$work/nss-lbfo"
echo "hosts: files" >"$work/nss-files"
echo "hosts: dns" >"$work/nss-dns"
cp "$work/nss-lbfo" "$work/nsswitch.conf"
mount --bind "$work/nsswitch.conf" /etc/nsswitch.conf

# 201 services: past the default capacity (64), so the table is sized for them.
cat >"$work/lbfo.conf" <<CONF
capacity 256 8
add bench.lan 10.9.0.1
add bench.lan 10.9.0.2
add bench.lan 10.9.0.3
CONF
for i in $(seq 1 200); do echo "add svc$i.lan 10.8.$((i / 250)).$((i % 250 + 1))"; done >>"$work/lbfo.conf"
"$bin/lbfo-agentd" -c "$work/lbfo.conf" 2>"$work/agent.log" &
agent_pid=$!
for _ in $(seq 1 500); do [[ -e /run/lbfo/table ]] && break; sleep 0.01; done

# The DNS baseline: dnsmasq on this namespace's loopback answering from a hosts file, the
# resolver pointed at it (wherever /etc/resolv.conf leads: it may be a link into /run).
ip link set lo up
echo "192.0.2.98 dnshit.test" >"$work/dns-hosts"
printf 'nameserver 127.0.0.1\noptions attempts:1 timeout:1\n' >"$work/resolv.conf"
resolv=$(readlink -f /etc/resolv.conf)
mkdir -p "$(dirname "$resolv")"
[[ -e $resolv ]] || touch "$resolv"
mount --bind "$work/resolv.conf" "$resolv"
dns=0
if command -v dnsmasq >/dev/null || [[ -x /usr/sbin/dnsmasq ]]; then
  PATH=$PATH:/usr/sbin dnsmasq --keep-in-foreground --no-resolv --no-hosts \
    --addn-hosts="$work/dns-hosts" --listen-address=127.0.0.1 --bind-interfaces --port=53 \
    --user=root --pid-file="$work/dnsmasq.pid" --cache-size=150 2>"$work/dnsmasq.log" &
  dnsmasq_pid=$!
  cp "$work/nss-dns" "$work/nsswitch.conf"
  for _ in $(seq 1 200); do
    if "$drv" time dnshit.test 10 2>/dev/null | awk '{exit !$3}'; then dns=1 && break; fi
    sleep 0.02
  done
fi
cp "$work/nss-lbfo" "$work/nsswitch.conf"
((dns)) || echo "bench: no local dnsmasq answering (install dnsmasq-base); DNS baseline left out" >&2

# key | label | nsswitch file | name | expected to resolve (1/0)
cases=(
  "hit|lbfo hit (lbfo files)|nss-lbfo|bench.lan|1"
  "lhosts|/etc/hosts hit (lbfo files)|nss-lbfo|hosthit.test|1"
  "miss|miss (lbfo files)|nss-lbfo|nowhere.test|0"
  "hosts|/etc/hosts hit (files only)|nss-files|hosthit.test|1"
  "fmiss|miss (files only)|nss-files|nowhere.test|0"
)
((dns)) && cases+=("dns|local dnsmasq hit (dns only)|nss-dns|dnshit.test|1")
field() { # case index -> that field
  local IFS='|' f
  read -r -a f <<<"$1"
  echo "${f[$(($2 - 1))]}"
}
use() { cp "$work/$1" "$work/nsswitch.conf"; }
median() { sort -g | awk '{v[NR]=$1} END{if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }

# Latency: ROUNDS rounds, each running every case once, starting one case later each round.
: >"$work/rounds"
for ((r = 0; r < ROUNDS; r++)); do
  for ((j = 0; j < ${#cases[@]}; j++)); do
    c=${cases[$(((j + r) % ${#cases[@]}))]}
    use "$(field "$c" 3)"
    read -r p50 p99 ok < <("$drv" time "$(field "$c" 4)" "$N")
    if [[ $ok != "$(field "$c" 5)" ]]; then
      echo "bench: $(field "$c" 4) resolved=$ok, expected $(field "$c" 5)" >&2
      exit 1
    fi
    echo "$r $(field "$c" 1) $p50 $p99" >>"$work/rounds"
  done
done
col() { awk -v k="$1" -v c="$2" '$2 == k {print $c}' "$work/rounds" | median; }
ratios() { # per-round p50(a)/p50(b), one a line
  awk -v a="$1" -v b="$2" '$2 == a {x[$1]=$3} $2 == b {y[$1]=$3} END{for (r in x) print x[r]/y[r]}' \
    "$work/rounds"
}
ratio() { ratios "$1" "$2" | median; }
spread() { # "min–max" of the per-round ratios, as the time column shows them
  ratios "$1" "$2" | sort -g | awk -v pct="$3" '
    function f(v) { return pct ? sprintf("%+.1f%%", (v - 1) * 100) : sprintf("%.3f", v) }
    NR == 1 {lo = $1} {hi = $1} END {print f(lo) " to " f(hi)}'
}

# Instructions per getaddrinfo call: whole program, (Ir(long) - Ir(short)) / (long - short).
totals() { awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}'; }
ir() { # name calls [callgrind options...] (a name with commas: the driver's spread of names)
  local name=$1 n=$2 mode=loop
  shift 2
  [[ $name == *,* ]] && mode=spread
  valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" "$@" "$drv" "$mode" "$name" "$n" \
    >/dev/null 2>&1
  callgrind_annotate "$work/cg.out" 2>/dev/null | totals
}
per_call() { # name [callgrind options...]
  local name=$1
  shift
  local a b
  a=$(ir "$name" 200 "$@")
  b=$(ir "$name" 2200 "$@")
  echo $(((b - a) / 2000))
}
syscalls() { # command... -> syscalls (strace -c "calls" column of the total line)
  strace -f -c -o "$work/st" "$@" >/dev/null 2>&1
  awk '$NF == "total" {print $4}' "$work/st"
}
sys_per_call() {
  local a b
  a=$(syscalls "$drv" loop "$1" 200)
  b=$(syscalls "$drv" loop "$1" 2200)
  awk -v a="$a" -v b="$b" 'BEGIN{printf "%.2f", (b - a) / 2000}'
}
for c in "${cases[@]}"; do
  use "$(field "$c" 3)"
  k=$(field "$c" 1)
  per_call "$(field "$c" 4)" >"$work/ir.$k"
  sys_per_call "$(field "$c" 4)" >"$work/sys.$k"
done
# The module's share of an lbfo getaddrinfo (gethostbyname4_r for AF_UNSPEC) and of a miss.
use nss-lbfo
mod_hit=$(per_call bench.lan --toggle-collect='_nss_lbfo_*')
mod_miss=$(per_call nowhere.test --toggle-collect='_nss_lbfo_*')

# The module called directly (gethostbyname2_r, AF_INET), no glibc NSS machinery around it.
so=$bin/libnss_lbfo.so
r=$bin/lbfo-resolve
mir() {
  valgrind --tool=callgrind --callgrind-out-file="$work/cgm.$1" --toggle-collect='_nss_lbfo_*' \
    "$r" modbench "$so" bench.lan "$1" >/dev/null 2>&1
  callgrind_annotate "$work/cgm.$1" 2>/dev/null | totals
}
a=$(mir 1000)
b=$(mir 11000)
mod_direct=$(((b - a) / 10000))
a=$(syscalls "$r" modbench "$so" bench.lan 1000)
b=$(syscalls "$r" modbench "$so" bench.lan 11000)
mod_sys=$(awk -v a="$a" -v b="$b" 'BEGIN{printf "%.4f", (b - a) / 10000}')

# Flat at the largest capacity (issue 18): tables of 4,096 × 16 holding 10 names and 4,096, each
# with an agent of its own; a getaddrinfo hit's instructions in each (whole program and the
# module's own), through LBFO_TABLE, averaged over names spread through the table (one name's
# cost depends on its own probe sequence in the index, not on how many names there are).
big() { # NAMES: starts the agent of a full-capacity table holding that many names
  local n=$1 d=$work/big$1 i
  mkdir -p "$d"
  {
    printf 'capacity 4096 16\ntable %s/table\nfifo %s/fifo\n' "$d" "$d"
    for ((i = 1; i <= n; i++)); do echo "add big$i.lan 10.7.$((i / 250)).$((i % 250 + 1))"; done
  } >"$d/lbfo.conf"
  "$bin/lbfo-agentd" -c "$d/lbfo.conf" 2>"$d/agent.log" &
  big_pids+=($!)
  for _ in $(seq 1 1000); do grep -q '^ready' "$d/agent.log" && break; sleep 0.01; done
}
use nss-lbfo
for n in 10 4096; do
  big "$n"
  names="big%d.lan,$n,$((n > 64 ? n / 64 : 1))"
  LBFO_TABLE=$work/big$n/table per_call "$names" >"$work/flat.$n"
  LBFO_TABLE=$work/big$n/table per_call "$names" --toggle-collect='_nss_lbfo_*' >"$work/flatmod.$n"
done

ok() { awk -v v="$1" -v t="$2" 'BEGIN{print (v <= t) ? "met" : "**not met**"}'; }
us() { awk -v v="$1" 'BEGIN{printf "%.2f", v / 1000}'; }

echo "## Lookup benchmark"
echo
echo "getaddrinfo(AF_UNSPEC, SOCK_STREAM) then freeaddrinfo. Time: median over $ROUNDS interleaved"
echo "rounds of each round's p50 / p99 ($N timed calls per case per round). Instructions and"
echo "syscalls: per call, exact (difference between runs of 2,200 and 200 calls)."
echo
echo "| case | p50 µs | p99 µs | instructions | syscalls |"
echo "|---|---:|---:|---:|---:|"
for c in "${cases[@]}"; do
  k=$(field "$c" 1)
  echo "| $(field "$c" 2) | $(us "$(col "$k" 3)") | $(us "$(col "$k" 4)") | $(cat "$work/ir.$k") | $(cat "$work/sys.$k") |"
done
echo
t_hit=$(ratio hit hosts)
i_hit=$(awk -v a="$(cat "$work/ir.hit")" -v b="$(cat "$work/ir.hosts")" 'BEGIN{print a/b}')
t_miss=$(ratio miss fmiss)
t_miss=$(awk -v r="$t_miss" 'BEGIN{print (r-1)*100}')
i_miss=$(awk -v a="$(cat "$work/ir.miss")" -v b="$(cat "$work/ir.fmiss")" 'BEGIN{print (a/b-1)*100}')
echo "| target | by time (p50) | per-round range | by instructions | target value | verdict (time / instructions) |"
echo "|---|---:|---:|---:|---:|---|"
printf "| lbfo hit / hosts hit (files only) | %.3f | %s | %.3f | ≤ 0.25 | %s / %s |\n" \
  "$t_hit" "$(spread hit hosts 0)" "$i_hit" "$(ok "$t_hit" 0.25)" "$(ok "$i_hit" 0.25)"
printf "| miss through lbfo files vs files miss | %+.1f%% | %s | %+.1f%% | ≤ +5%% | %s / %s |\n" \
  "$t_miss" "$(spread miss fmiss 1)" "$i_miss" "$(ok "$t_miss" 5)" "$(ok "$i_miss" 5)"
if ((dns)); then
  t_dns=$(ratio hit dns)
  i_dns=$(awk -v a="$(cat "$work/ir.hit")" -v b="$(cat "$work/ir.dns")" 'BEGIN{print a/b}')
  printf "| lbfo hit / local dnsmasq hit (dns only) | %.3f | %s | %.3f | — (baseline) | — |\n" \
    "$t_dns" "$(spread hit dns 0)" "$i_dns"
fi
echo
echo "## The module's own work per lookup"
echo
echo "Instructions inside \`_nss_lbfo_*\` (callgrind --toggle-collect: includes what the entry"
echo "points call in glibc, such as strlen, memcpy, time; the vDSO is not visible under valgrind)."
echo
echo "| measure | value | target | verdict |"
echo "|---|---:|---:|---|"
echo "| instructions, gethostbyname2_r called directly (hit) | $mod_direct | ≤ 300 | $(ok "$mod_direct" 300) |"
echo "| instructions inside getaddrinfo, lbfo hit (gethostbyname4_r) | $mod_hit | ≤ 300 | $(ok "$mod_hit" 300) |"
echo "| instructions inside getaddrinfo, miss (gethostbyname4_r) | $mod_miss | — | — |"
echo "| syscalls per lookup (strace, direct calls) | $mod_sys | 0 | $(ok "$mod_sys" 0) |"
echo
echo "## Lookup cost at the largest capacity"
echo
echo "Tables of capacity 4,096 × 16 holding 10 names and 4,096 names: instructions per"
echo "getaddrinfo hit (AF_UNSPEC), exact as above, averaged over the 10 names and over 64 names"
echo "spread through the 4,096 (every 64th). Target: flat, the same from 10 to 4,096 names to"
echo "within 1% of a getaddrinfo hit (what a name's probe sequence in the index adds: on average"
echo "half a probe at the index's fill of one half)."
echo
echo "| names in the table | instructions per getaddrinfo hit | of which in the module |"
echo "|---:|---:|---:|"
for n in 10 4096; do
  echo "| $n | $(cat "$work/flat.$n") | $(cat "$work/flatmod.$n") |"
done
flat=$(awk -v a="$(cat "$work/flat.10")" -v b="$(cat "$work/flat.4096")" \
  'BEGIN {d = (b - a) / a * 100; printf "%.1f", (d < 0 ? -d : d)}')
echo
echo "From 10 to 4,096 names: $flat% — $(ok "$flat" 1)."
echo
echo "Sizes: libnss_lbfo.so $(stat -c %s "$so") bytes (limit 24 KiB = 24576);" \
  "lbfo-agentd $(stat -c %s "$bin/lbfo-agentd") bytes."
