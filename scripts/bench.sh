#!/usr/bin/env bash
# Lookup benchmark: figures, side by side with baselines measured in the same run.
#
#   getaddrinfo (AF_UNSPEC) p50/p99 for: an lbfo hit, an /etc/hosts hit and a miss through
#   `hosts: lbfo files`, and the same hosts hit and miss through `hosts: files` alone;
#   the module's own instructions per lookup (callgrind, exact and repeatable) and its syscalls
#   per lookup (strace, difference between two run lengths).
#
# Runs in a private mount and IPC namespace: the machine's /etc, /run and SysV segments are
# untouched and everything vanishes with the namespace. Usage: scripts/bench.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${LBFO_BENCH_INNER:-}" != 1 ]]; then
  bash scripts/setup.sh
  [[ -d "$HOME/.cargo/bin" ]] && export PATH="$HOME/.cargo/bin:$PATH"
  cargo build --release --workspace --locked -q
  cargo build --release -p lbfo-tests --bin lbfo-resolve --locked -q
  ns=(unshare -m -i --propagation private)
  [[ $(id -u) == 0 ]] || ns=(unshare -rmi --propagation private)
  exec env LBFO_BENCH_INNER=1 "${ns[@]}" bash "$0" "$@"
fi

N=${1:-20000}
bin=$PWD/target/release
work=$(mktemp -d)
agent_pid=
cleanup() { [[ -n $agent_pid ]] && kill "$agent_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

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
cp "$work/nss-lbfo" "$work/nsswitch.conf"
mount --bind "$work/nsswitch.conf" /etc/nsswitch.conf

cat >"$work/lbfo.conf" <<CONF
add bench.lan 10.9.0.1
add bench.lan 10.9.0.2
add bench.lan 10.9.0.3
CONF
for i in $(seq 1 200); do echo "add svc$i.lan 10.8.$((i / 250)).$((i % 250 + 1))"; done >>"$work/lbfo.conf"
"$bin/lbfo-agentd" -c "$work/lbfo.conf" 2>"$work/agent.log" &
agent_pid=$!
for _ in $(seq 1 500); do [[ -e /run/lbfo/table ]] && break; sleep 0.01; done

r=$bin/lbfo-resolve
row() { # key label nsswitch name
  cp "$work/$3" "$work/nsswitch.conf"
  local out
  out=$("$r" bench gaiu "$4" "$N")
  set -- "$1" "$2" $out
  awk -v l="$2" -v a="$4" -v b="$6" -v ans="$8" 'BEGIN{printf "| %-34s | %8.2f | %8.2f | %s |\n", l, a/1000, b/1000, ans}'
  echo "$4" >"$work/p50.$1"
}
echo "## Lookup latency (getaddrinfo AF_UNSPEC, $N calls each, µs)"
echo
echo "| lookup                             |      p50 |      p99 | answer |"
echo "|------------------------------------|---------:|---------:|--------|"
row hit "lbfo hit (lbfo files)" nss-lbfo bench.lan
row lhosts "/etc/hosts hit (lbfo files)" nss-lbfo hosthit.test
row miss "miss (lbfo files)" nss-lbfo nowhere.test
row hosts "/etc/hosts hit (files only)" nss-files hosthit.test
row fmiss "miss (files only)" nss-files nowhere.test
cp "$work/nss-lbfo" "$work/nsswitch.conf"
hit=$(cat "$work/p50.hit")
hosts=$(cat "$work/p50.hosts")
miss=$(cat "$work/p50.miss")
fmiss=$(cat "$work/p50.fmiss")
echo
awk -v h="$hit" -v f="$hosts" 'BEGIN{printf "lbfo hit p50 / hosts hit p50: %.3f (target <= 0.25)\n", h/f}'
awk -v m="$miss" -v f="$fmiss" 'BEGIN{printf "miss through lbfo, added to a files miss: %+.1f%% (target <= 5%%)\n", (m/f-1)*100}'

echo
echo "## The module's own work per lookup (gethostbyname2_r called directly)"
so=$bin/libnss_lbfo.so
ir() { # instructions inside the module's entry points for $1 calls
  valgrind --tool=callgrind --callgrind-out-file="$work/cg.$1" --toggle-collect='_nss_lbfo_*' \
    "$r" modbench "$so" bench.lan "$1" >/dev/null 2>&1
  callgrind_annotate "$work/cg.$1" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}'
}
a=$(ir 1000)
b=$(ir 11000)
echo "instructions per lookup (callgrind, (Ir(11000) - Ir(1000)) / 10000): $(( (b - a) / 10000 )) (target <= 300)"
sc() { strace -f -c -o "$work/st.$1" "$r" modbench "$so" bench.lan "$1" >/dev/null 2>&1; awk '/total/{print $3}' "$work/st.$1"; }
a=$(sc 1000)
b=$(sc 11000)
echo "syscalls per lookup (strace, (calls(11000) - calls(1000)) / 10000): $(awk -v a="$a" -v b="$b" 'BEGIN{printf "%.4f", (b-a)/10000}') (target 0)"
echo "module size: $(stat -c %s "$so") bytes"
