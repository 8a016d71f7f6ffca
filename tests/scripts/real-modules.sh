#!/usr/bin/env bash
# lbfo on the distributions' hosts: lines, through real glibc and the real NSS modules, with a
# real systemd-resolved answering. tests/tests/resolvers.rs runs it as
#   unshare -m -n -i -p -f --mount-proc --propagation private \
#     bash real-modules.sh AGENT LBFO_LIBDIR PKGS AWK LBFO_RESOLVE SCRATCH
# PKGS holds Debian's systemd-resolved, libsystemd-shared, libnss-resolve, libnss-mdns,
# libnss-myhostname and libnss-mymachines unpacked (tests/scripts/debian-pkgs.sh), never
# installed. In private mount, network, IPC and PID namespaces: an overlay over /etc (nsswitch.conf,
# hosts, resolv.conf, passwd), a tmpfs on /run (resolved's varlink socket in
# /run/systemd/resolve), a veth with a default route (resolved answers "network down" without
# one) and dnsmasq on 127.0.0.1 as resolved's upstream, saying NXDOMAIN for *.lan except
# dnsonly.lan. Every process started here dies with the PID namespace. Prints one `ok:` line per
# check; a failed check prints `FAIL:` and exits 1.
set -euo pipefail
agent=$1 lbfolib=$2 pkgs=$3 awkf=$4 probe=$5 scratch=$6
multiarch=x86_64-linux-gnu

fail() { echo "FAIL: $*"; [[ -f $scratch/resolved.log ]] && tail -20 "$scratch/resolved.log"; exit 1; }
ok() { echo "ok: $*"; }
wait_for() { # what test...
  local what=$1
  shift
  for _ in $(seq 1 1000); do "$@" && return 0; sleep 0.01; done
  fail "timed out waiting for $what"
}

mount -t tmpfs tmpfs "$scratch"
mkdir -p "$scratch/etc.up" "$scratch/etc.work"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$scratch/etc.up,workdir=$scratch/etc.work" /etc
mount -t tmpfs tmpfs /run
ip link set lo up
ip link add d0 type veth peer name d1
ip addr add 10.99.0.1/24 dev d0
ip link set d0 up
ip link set d1 up
ip route add default via 10.99.0.2 dev d0

# resolved drops root to this user; its runtime directory is what its unit would create.
echo 'systemd-resolve:x:991:991:systemd Resolver:/:/usr/sbin/nologin' >>/etc/passwd
echo 'systemd-resolve:x:991:' >>/etc/group
mkdir -p /run/systemd/resolve /run/systemd/resolved.conf.d
chown 991:991 /run/systemd/resolve
printf '[Resolve]\nDNS=127.0.0.1\nDomains=\nLLMNR=no\nMulticastDNS=no\nDNSSEC=no\nDNSStubListener=no\n' \
  >/run/systemd/resolved.conf.d/lbfo-test.conf
printf 'nameserver 127.0.0.1\n' >/etc/resolv.conf
printf '127.0.0.1 localhost\n192.0.2.80 fromfiles.lan\n' >/etc/hosts

dnsmasq --keep-in-foreground --no-resolv --no-hosts --listen-address=127.0.0.1 --bind-interfaces \
  --local=/lan/ --address=/dnsonly.lan/192.0.2.53 --pid-file="$scratch/dnsmasq.pid" \
  --log-facility="$scratch/dnsmasq.log" --log-queries &
LD_LIBRARY_PATH=$pkgs/libsystemd-shared/root/usr/lib/$multiarch/systemd \
  "$pkgs/systemd-resolved/root/lib/systemd/systemd-resolved" >"$scratch/resolved.log" 2>&1 &
resolved=$!
wait_for "resolved's varlink socket" test -S /run/systemd/resolve/io.systemd.Resolve
ok "systemd-resolved $(tr -d '\n' <"$pkgs/systemd-resolved/.done" 2>/dev/null || true) runs (pid $resolved)"

cat >"$scratch/lbfo.conf" <<CONF
table $scratch/table
fifo $scratch/fifo
policy web.lan roundrobin
add web.lan 192.0.2.11
add web.lan 192.0.2.12
policy db.lan failover
add db.lan 192.0.2.21 prio=1
add db.lan 192.0.2.22 prio=2
CONF
"$agent" -c "$scratch/lbfo.conf" 2>"$scratch/agent.log" &
export LBFO_TABLE=$scratch/table
# Ready when the module answers from the agent's table (the FIFO comes before the table).
answering() { [[ $(LD_LIBRARY_PATH=$lbfolib "$probe" --nss lbfo gai4 web.lan 1) == 192.0.2.1[12] ]]; }
wait_for "the agent's table" answering

libs=$lbfolib
for p in libnss-resolve libnss-myhostname libnss-mymachines; do
  libs=$libs:$pkgs/$p/root/usr/lib/$multiarch
done
libs=$libs:$pkgs/libnss-mdns/root/lib/$multiarch
export LD_LIBRARY_PATH=$libs

use() { printf 'passwd: files\ngroup: files\n%s\n' "$1" >/etc/nsswitch.conf; }
first() { { getent hosts "$1" || true; } | awk '{print $1; exit}'; }
answers() { [[ $(first "$1") == "$2" ]]; }
expect() { # name want what
  local got
  got=$(first "$1")
  [[ $got == "$2" ]] || fail "$3: $1 answered '$got', want '$2' ($(grep hosts: /etc/nsswitch.conf))"
}
# Which NSS modules a lookup of NAME loaded: glibc loads a module when it first asks it, so
# every module asked was loaded from the unpacked packages (a missing one would read as UNAVAIL
# and prove nothing), and one never asked was not loaded at all.
loaded_by() { # name
  local log=$scratch/ld.log
  LD_DEBUG=files LD_DEBUG_OUTPUT=$log getent hosts "$1" >/dev/null || true
  sed -n 's/.*file=libnss_\([a-z0-9_]*\)\.so\.2 \[0\];  dynamically loaded.*/\1/p' "$log".* | sort -u | tr '\n' ' '
  rm -f "$log".*
}
loaded() { # name: a name nobody knows asks every module on the line up to `resolve`, whose
  # NOTFOUND then ends the lookup (mDNS says UNAVAIL for names outside .local); files, dns and
  # sss are glibc's own or not ours to vouch for (libnss-sss may or may not be installed)
  local m words got want=
  got=$(loaded_by "$1")
  got=${got/sss /}
  read -ra words < <(grep '^hosts:' /etc/nsswitch.conf | sed 's/\[[^]]*\]//g; s/^hosts://')
  for m in "${words[@]}"; do
    [[ $m == files || $m == dns || $m == sss ]] || want="$want$m "
    [[ $m == resolve ]] && break
  done
  want=$(tr ' ' '\n' <<<"$want" | sort -u | tr '\n' ' ')
  [[ " $got" == " ${want# }" ]] || fail "modules asked for $1: '$got', want '${want# }'"
}

# The proof that resolve really answers NOTFOUND and [!UNAVAIL=return] really ends the lookup:
# /etc/hosts knows fromfiles.lan, but resolve is asked first and its return action stops there.
use 'hosts: resolve [!UNAVAIL=return] dns'
expect dnsonly.lan 192.0.2.53 "resolve answers through resolved"
expect nosuch.lan "" "resolve says NOTFOUND for a name DNS does not know"
grep -q 'query\[A\] nosuch.lan from 127.0.0.1' "$scratch/dnsmasq.log" \
  || fail "resolved asked DNS about nosuch.lan"
use 'hosts: resolve [NOTFOUND=return] files'
expect fromfiles.lan 192.0.2.80 "resolved answers /etc/hosts names itself"
ok "resolve answers through systemd-resolved: DNS names, /etc/hosts names, NOTFOUND otherwise"
use 'hosts: myhostname'
expect _gateway 10.99.0.2 "myhostname answers _gateway"
loaded _gateway
ok "myhostname is loaded and answers"

# systemd's recommended line (Arch): where the old rule put lbfo (just before files), resolve's
# NOTFOUND ends every lookup of a service; lbfo is never asked.
arch='hosts: mymachines resolve [!UNAVAIL=return] files myhostname dns'
use 'hosts: mymachines resolve [!UNAVAIL=return] lbfo files myhostname dns'
got=$(loaded_by web.lan)
[[ $got == "mymachines resolve " ]] || fail "old placement: modules asked for web.lan: $got"
expect web.lan "" "old placement on systemd's line"
expect dnsonly.lan 192.0.2.53 "old placement: DNS names still resolve"
[[ $(awk -v action=check -f "$awkf" /etc/nsswitch.conf) == 'resolve [!UNAVAIL=return]' ]] \
  || fail "check names resolve on the old placement"
ok "old placement on systemd's line: mymachines and resolve are asked, lbfo never (not even loaded), web.lan not found; check says why"

lines=(
  "$arch"
  'hosts:      files myhostname resolve [!UNAVAIL=return] dns'
  'hosts:      files myhostname mdns4_minimal [NOTFOUND=return] resolve [!UNAVAIL=return] dns'
  'hosts:          files myhostname mdns4_minimal [NOTFOUND=return] mymachines resolve [!UNAVAIL=return] dns'
  'hosts:          files mdns4_minimal [NOTFOUND=return] dns myhostname'
  'hosts: sss [NOTFOUND=return] files dns'
)
for line in "${lines[@]}"; do
  printf '%s\n' "$line" | awk -v action=add -f "$awkf" >"$scratch/line"
  use "$(cat "$scratch/line")"
  [[ $(awk -v action=check -f "$awkf" /etc/nsswitch.conf) == "" ]] || fail "check on $(cat "$scratch/line")"
  loaded nosuch.lan
  # Roundrobin through getaddrinfo and gethostbyname, as every program resolves.
  tally=$("$probe" --tally gai4 web.lan 10 | tr '\n' ' ')
  [[ $tally == "count 192.0.2.11 5 count 192.0.2.12 5 " ]] || fail "getaddrinfo roundrobin: $tally ($line)"
  tally=$("$probe" --tally ghbn web.lan 10 | tr '\n' ' ')
  [[ $tally == "count 192.0.2.11 5 count 192.0.2.12 5 " ]] || fail "gethostbyname roundrobin: $tally ($line)"
  expect db.lan 192.0.2.21 "failover, first choice"
  echo "down db.lan 192.0.2.21" >"$scratch/fifo"
  wait_for "db.lan to fail over" answers db.lan 192.0.2.22
  echo "up db.lan 192.0.2.21" >"$scratch/fifo"
  wait_for "db.lan to come back" answers db.lan 192.0.2.21
  expect dnsonly.lan 192.0.2.53 "other names still reach resolve or dns"
  expect fromfiles.lan 192.0.2.80 "/etc/hosts names still resolve"
  ok "lbfo first: $(cat "$scratch/line"): roundrobin (getaddrinfo, gethostbyname) and failover hold; other names unchanged"
done
echo "real-modules: all checks passed"
