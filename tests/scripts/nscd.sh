#!/usr/bin/env bash
# lbfo through a real nscd or unscd (Debian's packages, unpacked, never installed), as
# tests/tests/nscd.rs runs it:
#   unshare -m -n -i -p -f --mount-proc --propagation private \
#     bash nscd.sh nscd|unscd AGENT MODULE PKGS LBFO_RESOLVE SCRATCH
# In private mount, network, IPC and PID namespaces: overlays over /etc (nsswitch.conf, the daemon's
# own /etc/nscd.conf from its package, passwd), /usr (the module installed where the package
# puts it) and /var (nscd's cache files), a tmpfs on /run (the table at its default path, and
# the daemon's socket directory /var/run/nscd ours alone). Installed, not found through
# LD_LIBRARY_PATH and LBFO_TABLE: unscd starts its workers with an empty environment, as a real
# installation would find it. Every process started here dies with the PID namespace.
#
# 1. The package's nscd.conf with `enable-cache hosts no`: roundrobin and failover hold with the
#    daemon running, for getaddrinfo and for gethostbyname (Python's socket.gethostbyname).
# 2. With `enable-cache hosts yes`: what lbfo's warnings are about, shown. After `down`, the
#    module itself answers the other backend, so the downed one can only come from the cache.
# Prints one `ok:` line per check; a failed check prints `FAIL:` and exits 1.
set -euo pipefail
which=$1 agent=$2 module=$3 pkgs=$4 probe=$5 scratch=$6
root=$pkgs/$which/root
daemon=$root/usr/sbin/nscd

fail() { echo "FAIL: $*"; tail -20 "$scratch/daemon.log" 2>/dev/null; exit 1; }
ok() { echo "ok: $*"; }
wait_for() { # what command...
  local what=$1
  shift
  for _ in $(seq 1 1000); do "$@" && return 0; sleep 0.01; done
  fail "timed out waiting for $what"
}

mount -t tmpfs tmpfs "$scratch"
for d in etc usr var; do
  mkdir -p "$scratch/$d.up" "$scratch/$d.work"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$scratch/$d.up,workdir=$scratch/$d.work" "/$d"
done
mount -t tmpfs tmpfs /run
ip link set lo up
# getaddrinfo's AI_ADDRCONFIG wants a non-loopback IPv4 address.
ip link add d0 type veth peer name d1
ip addr add 10.99.0.1/24 dev d0
ip link set d0 up
ip link set d1 up
mkdir -p /run/nscd /var/cache/nscd
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
install -m 0644 "$module" "/usr/lib/$multiarch/libnss_lbfo.so.2"
unset LD_LIBRARY_PATH LBFO_TABLE
# unscd drops root to the user its package creates.
echo 'unscd:x:992:992:unscd:/var/lib/unscd:/usr/sbin/nologin' >>/etc/passwd
echo 'unscd:x:992:' >>/etc/group
printf 'passwd: files\ngroup: files\nhosts: lbfo files\n' >/etc/nsswitch.conf
printf '127.0.0.1 localhost\n' >/etc/hosts

cat >"$scratch/lbfo.conf" <<CONF
policy web.lan roundrobin
add web.lan 192.0.2.11
add web.lan 192.0.2.12
policy db.lan failover
add db.lan 192.0.2.21 prio=1
add db.lan 192.0.2.22 prio=2
CONF
"$agent" -c "$scratch/lbfo.conf" 2>"$scratch/agent.log" &
# Ready when the module answers from the agent's table (the FIFO comes before the table).
answering() { [[ $("$probe" --nss lbfo gai4 web.lan 1) == 192.0.2.1[12] ]]; }
wait_for "the agent's table" answering

# The daemon with the package's own nscd.conf, its hosts cache switched as asked.
daemon_pid=
start() { # yes|no
  sed -E "s/^([[:blank:]]*enable-cache[[:blank:]]+hosts[[:blank:]]+)(yes|no)/\\1$1/" \
    "$root/etc/nscd.conf" >/etc/nscd.conf
  grep -Eq "^[[:blank:]]*enable-cache[[:blank:]]+hosts[[:blank:]]+$1" /etc/nscd.conf \
    || fail "nscd.conf says enable-cache hosts $1"
  rm -rf /run/nscd/* /var/cache/nscd/*
  if [[ $which == nscd ]]; then flag=-F; else flag=-d; fi
  "$daemon" "$flag" >"$scratch/daemon.log" 2>&1 &
  daemon_pid=$!
  wait_for "$which's socket" test -S /run/nscd/socket
}
stop() {
  kill "$daemon_pid"
  wait "$daemon_pid" || true
}

# Clients: Python's gethostbyname (the hostent path nscd's hosts cache serves) and getaddrinfo.
pyghbn() { # name count
  python3 -c 'import socket, sys
for _ in range(int(sys.argv[2])): print(socket.gethostbyname(sys.argv[1]))' "$1" "$2"
}
counts() { sort | uniq -c | awk '{printf "%s %s ", $2, $1}'; }
py_is() { [[ $(pyghbn "$1" 1) == "$2" ]]; }
# The module itself, bypassing the daemon (__nss_configure_lookup skips nscd).
lbfo_is_not() { [[ $("$probe" --nss lbfo gai4 "$1" 1) != "$2" ]]; }

start no
# With the hosts cache off, clients resolve hosts themselves, with the installed module.
got=$("$probe" gai4 web.lan 10 | counts)
[[ $got == "192.0.2.11 5 192.0.2.12 5 " ]] || fail "getaddrinfo roundrobin through $which: $got"
got=$(pyghbn web.lan 10 | counts)
[[ $got == "192.0.2.11 5 192.0.2.12 5 " ]] || fail "gethostbyname roundrobin through $which: $got"
ok "$which, hosts cache off: roundrobin holds for getaddrinfo and gethostbyname"
[[ $(pyghbn db.lan 1) == 192.0.2.21 ]] || fail "failover first choice"
echo "down db.lan 192.0.2.21" >/run/lbfo.sock
wait_for "db.lan to fail over (gethostbyname)" py_is db.lan 192.0.2.22
[[ $("$probe" gai4 db.lan 1) == 192.0.2.22 ]] || fail "getaddrinfo after down"
echo "up db.lan 192.0.2.21" >/run/lbfo.sock
ok "$which, hosts cache off: failover holds for getaddrinfo and gethostbyname"
# The passwd cache still works meanwhile: the daemon answered, it was not just absent.
getent passwd unscd >/dev/null || fail "passwd lookups with $which running"
# (Whole outputs captured: `status` exits 1 when its reader goes away, as `grep -q` may.)
text=$("$agent" status) checked=$("$agent" check -c "$scratch/lbfo.conf" 2>&1)
prom=$("$agent" status --prometheus) json=$("$agent" status --json)
if [[ $text == *warning* || $checked == *warning* || $prom != *$'\nlbfo_nscd_hosts_cache 0' ||
  $json != *'"nscd_hosts_cache":null}' ]]; then
  fail "no nscd warning with the hosts cache off: $text / $checked / ${prom: -200} / ${json: -60}"
fi
stop

start yes
echo "$daemon_pid" >"$scratch/daemon.pid"
first=$(pyghbn web.lan 1 || true)
[[ $first == 192.0.2.1[12] ]] || fail "gethostbyname through $which's cache: '$first'"
got=$(pyghbn web.lan 6 | counts)
[[ $got == "$first 6 " ]] || fail "the hosts cache holds one backend: $got"
# getaddrinfo(AF_INET) without AI_CANONNAME asks gethostbyname2_r first: the same cache.
got=$("$probe" gai4 web.lan 6 | counts)
[[ $got == "$first 6 " ]] || fail "getaddrinfo(AF_INET) through the hosts cache: $got"
# AF_UNSPEC asks the daemon's getaddrinfo cache (GETAI): glibc's nscd honours the module's TTL 0
# there (nscd/aicache.c), unscd keeps the answer for its configured time like any other.
got=$("$probe" gaiu web.lan 10 | counts)
if [[ $which == nscd ]]; then
  [[ $got == "192.0.2.11 5 192.0.2.12 5 " ]] || fail "nscd: getaddrinfo(AF_UNSPEC) rotates: $got"
else
  [[ $got == 192.0.2.1[12]" 10 " ]] || fail "unscd: getaddrinfo(AF_UNSPEC) is cached: $got"
fi
echo "down web.lan $first" >/run/lbfo.sock
wait_for "the agent to take $first down" lbfo_is_not web.lan "$first"
got=$(pyghbn web.lan 3 | counts)
[[ $got == "$first 3 " ]] || fail "expected $which's cache to keep serving the downed backend: $got"
if [[ $which == nscd ]]; then what="getaddrinfo(AF_UNSPEC) rotates, but"; else what=; fi
ok "$which, hosts cache on: $what gethostbyname and getaddrinfo(AF_INET) get one cached backend, still after it is down (the warning's reason)"
# The agent's status and check name the daemon, in every form.
"$agent" status >"$scratch/status.txt" || fail "status"
grep -q "^warning     nscd (pid $daemon_pid) caches hosts (/etc/nscd.conf: enable-cache hosts yes)" \
  "$scratch/status.txt" || { cat "$scratch/status.txt"; fail "status warns of $which"; }
json=$("$agent" status --json) prom=$("$agent" status --prometheus)
[[ $json == *"\"nscd_hosts_cache\":{\"pid\":$daemon_pid,\"conf\":\"/etc/nscd.conf\""* ]] \
  || fail "status --json warns of $which: $json"
[[ $prom == *$'\nlbfo_nscd_hosts_cache 1' ]] || fail "status --prometheus warns of $which"
"$agent" check -c "$scratch/lbfo.conf" >"$scratch/check.out" 2>"$scratch/check.err" || fail "check"
if ! grep -q ": ok$" "$scratch/check.out" ||
  ! grep -q "warning: nscd (pid $daemon_pid) caches hosts" "$scratch/check.err"; then
  cat "$scratch/check.out" "$scratch/check.err"
  fail "check warns of $which"
fi
ok "$which, hosts cache on: status (text, JSON, Prometheus) and check warn, naming nscd; with it off they did not"
echo "$which: all checks passed"
