#!/usr/bin/env bash
# Cross-arch interop: a big-endian MIPS agent (under qemu-mips) and a native x86_64 agent in one
# multicast group converge to the same table.
#
#   bash cross/interop.sh [TARGET]          # TARGET defaults to mips-unknown-linux-musl
#
# The bed (as tests/src/bed.rs, in shell): network namespaces on a bridge in a namespace of its
# own, each host with `eth0` (10.77.0.N/24, fd77::N/64) on the bridge. Run twice, over IPv4
# (groups 239.255.77.x) and IPv6 (ff15::77:x). Hosts:
#   be     the cross-built agent under qemu, cluster A (group .1, port 7331, on eth0)
#   x86    the native agent, cluster A
#   other  a native agent of cluster B (group .2, the same port 7331): a neighbour whose
#          datagrams must not be taken in by cluster A
# On `be` and `x86` a native agent of a third cluster joins group B on another port, so both
# kernels accept group B's datagrams and offer them to every socket on port 7331 that does not
# filter: the native agent filters with IP(V6)_MULTICAST_ALL, the emulated one (qemu-user
# emulates neither IP(V6)_MULTICAST_ALL nor IP(V6)_MULTICAST_IF) with its fallbacks (net.rs),
# which this run is the test of. Every cluster is `insecure`, so nothing but that filter keeps B's entries out.
#
# Commands go into the FIFO of each side; each table is read by its own agent's `status --json`
# (the layout is native-endian) and the two are compared on (service, address, state) and on the
# table digest. Then: no cluster-B service on either side, group-B datagrams counted as
# `other_group` drops on the emulated agent, and one warning per missing socket option in its log.
#
# Needs root (network namespaces); runs in a private IPC namespace. Cleans up whatever happens:
# agents killed by pid, their SysV segments removed, namespaces and the temp directory deleted.
# LBFO_INTEROP=0 skips it.
set -euo pipefail
# shellcheck source=cross/env.sh
source "$(dirname "$0")/env.sh"
cd "$ROOT"

if [[ ${LBFO_INTEROP:-1} == 0 ]]; then
  echo "interop: skipped (LBFO_INTEROP=0)" >&2
  exit 0
fi
t=${1:-mips-unknown-linux-musl}
check_target "$t"
if [[ $(id -u) != 0 ]] || ! command -v ip >/dev/null; then
  echo "interop: FAILED: needs root and iproute2 (network namespaces)" >&2
  exit 1
fi
native="$TARGET_DIR/release/lbfo-agentd"
cross=$(cross_out "$t")/lbfo-agentd
qemu=$(qemu_for "$t")
if [[ ${LBFO_INTEROP_INSIDE:-} != 1 ]]; then
  # Incremental: no-ops when up to date.
  CARGO_TARGET_DIR="$TARGET_DIR" cargo build --locked --release -p lbfo-agentd >&2
  bash cross/build.sh "$t"
  # Once over IPv4, once over IPv6: each in a private IPC namespace.
  for family in 4 6; do
    unshare --ipc env LBFO_INTEROP_INSIDE=1 LBFO_INTEROP_FAMILY=$family bash "$0" "$t"
  done
  exit 0
fi
if [[ ${LBFO_INTEROP_FAMILY:-4} == 6 ]]; then
  group_a='[ff15::77:1]:7331' group_b='[ff15::77:2]:7331' group_c='[ff15::77:2]:7332'
  opts=(IPV6_MULTICAST_ALL IPV6_MULTICAST_IF)
else
  group_a=239.255.77.1:7331 group_b=239.255.77.2:7331 group_c=239.255.77.2:7332
  opts=(IP_MULTICAST_ALL IP_MULTICAST_IF)
fi

start_s=$SECONDS
tag="lbfoi$$"
dir=$(mktemp -d /tmp/lbfo-interop.XXXXXX)
pids=() netns=()
cleanup() {
  local p ns
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  # The counters segments (gone with this IPC namespace anyway; removed by id all the same).
  sed -n 's/^counters: created shm segment \([0-9]*\).*/\1/p' "$dir"/*/agent.log 2>/dev/null |
    while read -r id; do ipcrm -m "$id" 2>/dev/null || true; done
  for ns in "${netns[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' TERM INT HUP
fail() {
  local n
  echo "interop: FAILED: $*" >&2
  for n in be x86 other; do echo "--- $n log:" >&2; cat "$dir/$n/agent.log" >&2 || true; done
  exit 1
}

# The bed.
ip netns add "${tag}b"
netns+=("${tag}b")
ip -n "${tag}b" link add br0 type bridge mcast_snooping 0
ip -n "${tag}b" link set br0 up
host() { # NAME N
  local ns="$tag$1"
  ip netns add "$ns"
  netns+=("$ns")
  ip -n "${tag}b" link add "p$2" type veth peer name eth0 netns "$ns"
  ip -n "${tag}b" link set "p$2" master br0 up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "10.77.0.$2/24" dev eth0
  # No duplicate-address detection: IPv6 sends would fail for about 2 s.
  ip -n "$ns" addr add "fd77::$2/64" dev eth0 nodad
  ip -n "$ns" link set eth0 up
}
host be 1
host x86 2
host other 3

start() { # NAME HOST GROUP RUNNER...
  local name=$1 on=$2 group=$3
  shift 3
  mkdir -p "$dir/$name"
  cat > "$dir/$name/lbfo.conf" <<CONF
table $dir/$name/table
fifo $dir/$name/lbfo.sock
group $group
iface eth0
node $name
insecure
CONF
  ip netns exec "$tag$on" "$@" -c "$dir/$name/lbfo.conf" 2> "$dir/$name/agent.log" &
  pids+=($!)
  for _ in $(seq 200); do grep -qs '^ready:' "$dir/$name/agent.log" && return 0; sleep 0.1; done
  fail "$name agent not ready"
}
start be be "$group_a" "$qemu" "$cross"
start x86 x86 "$group_a" "$native"
start other other "$group_b" "$native"
start listen-be be "$group_c" "$native"
start listen-x86 x86 "$group_c" "$native"

be_status() { "$qemu" "$cross" status --json --table "$dir/be/table"; }
x86_status() { "$native" status --json --table "$dir/x86/table"; }
# The table digest and the sorted "service address state" triples of a status (positions are
# local: each side numbers backends in the order it learnt them).
view() {
  local json
  json=$(cat)
  grep -o '"digest":"[^"]*"' <<< "$json" | head -n 1
  grep -o '"name":"[^"]*"\|"addr":"[^"]*","state":"[^"]*"' <<< "$json" |
    awk -F'"' '$2 == "name" { s = $4 } $2 == "addr" { print s, $4, $8 }' | sort
}
converge() { # EXPECTED-SUBSTRING...
  local a b want ok
  for _ in $(seq 150); do
    # A status that fails or lacks a field this round is a mismatch to retry, not an exit.
    a=$(be_status | view || true) b=$(x86_status | view || true)
    if [[ $a == "$b" ]]; then
      ok=1
      for want in "$@"; do [[ $a == *"$want"* ]] || ok=0; done
      ((ok)) && return 0
    fi
    sleep 0.1
  done
  fail "no convergence: big-endian: ${a//$'\n'/; } / x86_64: ${b//$'\n'/; } (wanted $*)"
}

t0=$SECONDS
echo "add web.lan 10.0.0.1" > "$dir/be/lbfo.sock"
echo "add web.lan 10.0.0.2" > "$dir/x86/lbfo.sock"
echo "add foreign.lan 10.9.9.9" > "$dir/other/lbfo.sock"
converge 'web.lan 10.0.0.1 up' 'web.lan 10.0.0.2 up'
echo "down web.lan 10.0.0.2" > "$dir/be/lbfo.sock"
echo "add db.lan fd00::1 weight=3" > "$dir/x86/lbfo.sock"
converge 'web.lan 10.0.0.2 down' 'db.lan fd00::1 up'
echo "del web.lan 10.0.0.1" > "$dir/x86/lbfo.sock"
echo "up web.lan 10.0.0.2" > "$dir/be/lbfo.sock"
converge 'web.lan 10.0.0.2 up' 'db.lan fd00::1 up'
[[ $(be_status | view) != *10.0.0.1* ]] || fail "the delete on x86_64 did not reach the big-endian table"
converged=$((SECONDS - t0))

# Cluster B was heard (its own table has its service) but taken in by neither side.
[[ $("$native" status --json --table "$dir/other/table") == *foreign.lan* ]] || fail "cluster B has no foreign.lan"
for s in be_status x86_status; do
  [[ $($s) != *foreign.lan* ]] || fail "$s: cluster B's foreign.lan leaked into cluster A: $($s)"
done
# The emulated agent saw group B's datagrams and dropped them itself; the native kernel filtered.
# Each agent rewrites its cluster state for `status` at most once a second, so both are read
# again until a write after the last command shows (the drops may come later still).
written() { grep -o '"written_ms":[0-9]*' | head -n 1 | cut -d: -f2; }
since=$(($(date +%s%3N) + 100))
for _ in $(seq 50); do
  be=$(be_status || true) x86=$(x86_status || true)
  [[ $be =~ \"reason\":\"other_group\",\"count\":([0-9]+) ]] &&
    (($(written <<< "$x86") > since)) && break
  sleep 0.1
done
[[ $be =~ \"reason\":\"other_group\",\"count\":([0-9]+) ]] || fail "big-endian agent: no other_group drops: $be"
drops=${BASH_REMATCH[1]}
(($(written <<< "$x86") > since)) || fail "x86_64 agent: its cluster state was not written again: $x86"
[[ $x86 != *other_group* ]] || fail "x86_64 agent counted other_group drops (the kernel filters there)"
for opt in "${opts[@]}"; do
  [[ $(grep -c "cluster: warning: $opt:" "$dir/be/agent.log") == 1 ]] || fail "big-endian agent: no single warning for $opt"
done
! grep -q 'cluster: warning: IP' "$dir/x86/agent.log" || fail "x86_64 agent: a socket option fallback on a native kernel"
echo "interop: ok (IPv${LBFO_INTEROP_FAMILY:-4}, group $group_a): $t under $qemu and x86_64 converged (3 rounds in ${converged} s, $drops group-B datagrams dropped by the emulated agent; $((SECONDS - start_s)) s in all)" >&2
