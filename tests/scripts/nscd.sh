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
# 2. With `enable-cache hosts yes`, glibc's nscd: it calls the module's _nss_lbfo_init, so every
#    hostent answer lists its address twice and nscd keeps none of them: roundrobin and failover
#    hold for Python's gethostbyname, getent hosts and getaddrinfo, also when lbfo joins the
#    hosts: line while nscd runs (a first install); clients see the address twice; status and
#    check stay silent, until the module nscd loaded is replaced on disk (an upgrade), when they
#    say to restart nscd. unscd: it caches gethostbyname's one backend, also after it is down,
#    and status and check warn, naming unscd.
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

# Whole outputs captured: `status` exits 1 when its reader goes away, as `grep -q` may.
silent() { # what
  local text checked prom json
  text=$("$agent" status) checked=$("$agent" check -c "$scratch/lbfo.conf" 2>&1)
  prom=$("$agent" status --prometheus) json=$("$agent" status --json)
  if [[ $text == *warning* || $checked == *warning* || $prom != *$'\nlbfo_nscd_hosts_cache 0' ||
    $json != *'"nscd_hosts_cache":null}' ]]; then
    fail "no nscd warning $1: $text / $checked / ${prom: -200} / ${json: -60}"
  fi
}
warns() { # daemon-name warning-prefix
  "$agent" status >"$scratch/status.txt" || fail "status"
  grep -q "^warning     $2" "$scratch/status.txt" || { cat "$scratch/status.txt"; fail "status warns: $2"; }
  json=$("$agent" status --json) prom=$("$agent" status --prometheus)
  [[ $json == *"\"nscd_hosts_cache\":{\"pid\":$daemon_pid,\"daemon\":\"$1\",\"conf\":\"/etc/nscd.conf\""* ]] \
    || fail "status --json warns of $1: $json"
  [[ $prom == *$'\nlbfo_nscd_hosts_cache 1' ]] || fail "status --prometheus warns of $1"
  "$agent" check -c "$scratch/lbfo.conf" >"$scratch/check.out" 2>"$scratch/check.err" || fail "check"
  if ! grep -q ": ok$" "$scratch/check.out" || ! grep -q "warning: $2" "$scratch/check.err"; then
    cat "$scratch/check.out" "$scratch/check.err"
    fail "check warns of $1"
  fi
}
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
silent "with the hosts cache off"
stop

if [[ $which == unscd ]]; then
  start yes
  first=$(pyghbn web.lan 1 || true)
  [[ $first == 192.0.2.1[12] ]] || fail "gethostbyname through unscd's cache: '$first'"
  got=$(pyghbn web.lan 6 | counts)
  [[ $got == "$first 6 " ]] || fail "the hosts cache holds one backend: $got"
  got=$("$probe" gai4 web.lan 6 | counts)
  [[ $got == "$first 6 " ]] || fail "getaddrinfo(AF_INET) through the hosts cache: $got"
  got=$("$probe" gaiu web.lan 10 | counts)
  [[ $got == 192.0.2.1[12]" 10 " ]] || fail "unscd: getaddrinfo(AF_UNSPEC) is cached: $got"
  echo "down web.lan $first" >/run/lbfo.sock
  wait_for "the agent to take $first down" lbfo_is_not web.lan "$first"
  got=$(pyghbn web.lan 3 | counts)
  [[ $got == "$first 3 " ]] || fail "expected unscd's cache to keep serving the downed backend: $got"
  ok "unscd, hosts cache on: gethostbyname and getaddrinfo get one cached backend, still after it is down (the warning's reason)"
  warns unscd "unscd (pid $daemon_pid) caches hosts (/etc/nscd.conf: enable-cache hosts yes)"
  ok "unscd, hosts cache on: status (text, JSON, Prometheus) and check warn, naming unscd; with it off they did not"
  echo "unscd: all checks passed"
  exit 0
fi

# glibc's nscd, hosts cache on, started before lbfo is on the hosts: line (a first install while
# nscd runs): it loads the module when the line changes, calling its init hook.
printf 'passwd: files\ngroup: files\nhosts: files\n' >/etc/nsswitch.conf
start yes
grep -q libnss_lbfo "/proc/$daemon_pid/maps" && fail "nscd loaded lbfo before it was on the hosts: line"
printf 'passwd: files\ngroup: files\nhosts: lbfo files\n' >/etc/nsswitch.conf
py_is_one_of() { [[ $(pyghbn "$1" 1) == 192.0.2.1[12] ]]; }
wait_for "nscd to answer web.lan" py_is_one_of web.lan
grep -q libnss_lbfo "/proc/$daemon_pid/maps" || fail "nscd answered without loading lbfo"
got=$(pyghbn web.lan 10 | counts)
[[ $got == "192.0.2.11 5 192.0.2.12 5 " ]] || fail "gethostbyname roundrobin through nscd's cache: $got"
# getent hosts: gethostbyname2, one line per listed address.
got=$(for _ in $(seq 1 10); do getent hosts web.lan | awk '{print $1}' | uniq -c | awk '{print $2 "x" $1}'; done | counts)
[[ $got == "192.0.2.11x2 5 192.0.2.12x2 5 " ]] || fail "getent hosts through nscd's cache: $got"
# getaddrinfo(AF_INET) without AI_CANONNAME asks gethostbyname2_r: the same hosts cache.
got=$("$probe" gai4 web.lan 10 | tr ' ' + | counts)
[[ $got == "192.0.2.11+192.0.2.11 5 192.0.2.12+192.0.2.12 5 " ]] || fail "getaddrinfo(AF_INET) through nscd: $got"
# AF_UNSPEC asks the daemon's getaddrinfo cache, which honours the module's TTL 0 (nscd/aicache.c).
got=$("$probe" gaiu web.lan 10 | counts)
[[ $got == "192.0.2.11 5 192.0.2.12 5 " ]] || fail "nscd: getaddrinfo(AF_UNSPEC) rotates: $got"
ok "nscd, hosts cache on: roundrobin holds for gethostbyname, getent hosts and getaddrinfo (AF_INET, AF_UNSPEC), lbfo added to the hosts: line while nscd ran"
# What a client sees: the picked address twice in h_addr_list (getaddrinfo: twice in its list).
got=$(python3 -c 'import socket; print(socket.gethostbyname_ex("db.lan"))')
[[ $got == "('db.lan', [], ['192.0.2.21', '192.0.2.21'])" ]] || fail "gethostbyname_ex through nscd: $got"
echo "down db.lan 192.0.2.21" >/run/lbfo.sock
wait_for "the agent to take 192.0.2.21 down" lbfo_is_not db.lan 192.0.2.21
got=$(pyghbn db.lan 3 | counts)
[[ $got == "192.0.2.22 3 " ]] || fail "gethostbyname after down, through nscd's cache: $got"
[[ $(getent hosts db.lan | awk '{print $1}' | sort -u) == 192.0.2.22 ]] || fail "getent hosts after down"
[[ $("$probe" gai4 db.lan 1) == "192.0.2.22 192.0.2.22" ]] || fail "getaddrinfo(AF_INET) after down"
echo "up db.lan 192.0.2.21" >/run/lbfo.sock
wait_for "192.0.2.21 back" py_is db.lan 192.0.2.21
ok "nscd, hosts cache on: failover holds at once for gethostbyname, getent hosts and getaddrinfo; clients see the address twice"
silent "for glibc's nscd, which keeps no lbfo answer"
# An upgrade replaces the module nscd loaded (dpkg renames the new file over it): nscd keeps the
# old one until it restarts, and status and check say so.
install -m 0644 "$module" "/usr/lib/$multiarch/libnss_lbfo.so.2"
grep -q 'libnss_lbfo.so.2 (deleted)$' "/proc/$daemon_pid/maps" || fail "nscd still maps the replaced module"
warns nscd "nscd (pid $daemon_pid) caches hosts (/etc/nscd.conf: enable-cache hosts yes) with an lbfo module replaced since it loaded it"
stop
start yes
got=$(pyghbn web.lan 4 | counts)
[[ $got == "192.0.2.11 2 192.0.2.12 2 " ]] || fail "gethostbyname roundrobin after nscd's restart: $got"
silent "once nscd restarted"
ok "nscd, hosts cache on: status (text, JSON, Prometheus) and check stay silent, warn while nscd runs a replaced module (restart it), and stop once it restarted"
echo "nscd: all checks passed"
