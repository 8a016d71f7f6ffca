#!/usr/bin/env bash
# Installs, uses, removes and purges the lbfo .deb in a throwaway root, as tests/tests/deb.rs
# runs it: `unshare -m -i -p -f --mount-proc --propagation private bash deb-roundtrip.sh DEB SCRATCH
# NSCD_ROOT UNSCD_ROOT`, NSCD_ROOT and UNSCD_ROOT being Debian's nscd and unscd packages unpacked
# (for their binaries and their nscd.conf).
#
# Private mount, IPC and PID namespaces: overlays (upper layers on a tmpfs) over /etc, /usr and
# /var (so dpkg's database, nsswitch.conf, /etc/hosts, the installed files and man-db's cache),
# a tmpfs on /run (no systemd here, as in a chroot). Nothing reaches the machine; every process
# started here dies with the PID namespace. Prints one `ok:` line per check; any failed check
# prints `FAIL:` and exits 1.
set -euo pipefail
deb=$1
scratch=$2
nscd_root=$3
unscd_root=$4
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)

mount -t tmpfs tmpfs "$scratch"
for d in etc usr var; do
  mkdir -p "$scratch/$d.up" "$scratch/$d.work"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$scratch/$d.up,workdir=$scratch/$d.work" "/$d"
done
mount -t tmpfs tmpfs /run
unset LD_LIBRARY_PATH LBFO_TABLE
export DEBIAN_FRONTEND=noninteractive

fail() { echo "FAIL: $*"; exit 1; }
ok() { echo "ok: $*"; }
same() { # file expected-text what
  local want
  want=$(printf '%s' "$2")
  [[ $(cat "$1") == "$want" ]] || { diff <(printf '%s\n' "$want") "$1" || true; fail "$3"; }
  ok "$3"
}
# getent exits 2 for a name no source knows (conf.test before the reload lands): under pipefail
# that status would end the script silently, so a miss is an empty answer to retry.
answer() { { getent hosts "$1" || true; } | awk '{print $1; exit}'; }
expect_answer() { # name addr what
  local got=
  for _ in $(seq 1 200); do
    got=$(answer "$1")
    [[ $got == "$2" ]] && { ok "$3 ($1 -> $got)"; return; }
    sleep 0.02
  done
  fail "$3: $1 answered '${got}', want $2"
}

# A known starting point: the hosts: line of a machine with libnss-mdns, blanks as tabs, and a
# name that /etc/hosts answers differently from lbfo, to see which source answered.
nss_before=$'# test nsswitch.conf\npasswd:\t\tfiles\nhosts:\t\tfiles mdns4_minimal [NOTFOUND=return] dns # comment\nnetworks:\tfiles'
nss_with=$'# test nsswitch.conf\npasswd:\t\tfiles\nhosts:\t\tlbfo files mdns4_minimal [NOTFOUND=return] dns # comment\nnetworks:\tfiles'
printf '%s\n' "$nss_before" >/etc/nsswitch.conf
printf '127.0.0.1 localhost\n192.0.2.80 web.test\n' >/etc/hosts
expect_answer web.test 192.0.2.80 "before install, /etc/hosts answers"

dpkg -i "$deb" >"$scratch/dpkg-i.log" 2>&1 || { cat "$scratch/dpkg-i.log"; fail "dpkg -i"; }
same /etc/nsswitch.conf "$nss_with" "install put lbfo just before files, tabs and comment kept"
[[ $(dpkg-query -W -f='${db:Status-Abbrev}' lbfo) == "ii " ]] || fail "dpkg says installed"
ok "dpkg says installed"
for want in "755 root:root /usr/sbin/lbfo-agentd" \
  "644 root:root /usr/lib/$multiarch/libnss_lbfo.so.2" \
  "644 root:root /etc/lbfo.conf" \
  "644 root:root /lib/systemd/system/lbfo-agentd.service" \
  "644 root:root /usr/share/man/man8/lbfo-agentd.8.gz" \
  "644 root:root /usr/share/man/man5/lbfo.conf.5.gz" \
  "644 root:root /usr/share/man/man8/nss-lbfo.8.gz" \
  "644 root:root /etc/apparmor.d/abstractions/nameservice.d/lbfo" \
  "755 root:root /usr/share/lbfo/contrib/lbfo-mark" \
  "644 root:root /usr/share/doc/lbfo/copyright"; do
  f=${want##* }
  got=$(stat -c '%a %U:%G %n' "$f" 2>/dev/null) || fail "$f installed"
  [[ $got == "$want" ]] || fail "mode: got '$got', want '$want'"
done
ok "files installed with their modes"
grep -qx /etc/lbfo.conf /var/lib/dpkg/info/lbfo.conffiles || fail "/etc/lbfo.conf is a conffile"
grep -qx /etc/apparmor.d/abstractions/nameservice.d/lbfo /var/lib/dpkg/info/lbfo.conffiles \
  || fail "the AppArmor snippet is a conffile"
ok "/etc/lbfo.conf and the AppArmor snippet are conffiles"
[[ -L /etc/systemd/system/multi-user.target.wants/lbfo-agentd.service ]] \
  || fail "the unit is enabled (deb-systemd-helper)"
ok "unit enabled by deb-systemd-helper; no systemd running, so nothing started"
[[ ! -e /run/lbfo/table ]] || fail "no agent was started without systemd"
if command -v systemd-analyze >/dev/null; then
  out=$(systemd-analyze verify --man=no /lib/systemd/system/lbfo-agentd.service 2>&1) \
    || { echo "$out"; fail "systemd-analyze verify"; }
  [[ -z $out ]] || { echo "$out"; fail "systemd-analyze verify is silent"; }
  ok "systemd-analyze verify accepts the installed unit"
  c=/usr/share/lbfo/contrib
  if ! out=$(systemd-analyze verify --man=no "$c/lbfo-prom-textfile.service" \
    "$c/lbfo-prom-textfile.timer" 2>&1) || [[ -n $out ]]; then
    echo "$out"
    fail "systemd-analyze verify on the contrib timer"
  fi
  ok "systemd-analyze verify accepts the contrib timer and its service"
fi

# The agent as the installed unit runs it, with the packaged default config: no services, so
# nothing changes. No systemd runs here, so the unit's own lines say how (read from the installed
# file, so this follows the unit): ExecStart= is the command; ProtectSystem=strict makes every
# mount read-only but the API file systems, ReadWritePaths= and StateDirectory= (created as
# systemd creates it); PrivateTmp= gives a fresh /tmp and /var/tmp; CapabilityBoundingSet= and
# NoNewPrivileges= confine it; UMask= applies; LimitNOFILE= sets both open-files limits (room
# for the health checks' sockets).
unit=/lib/systemd/system/lbfo-agentd.service
unit_value() { sed -n "s/^$1=//p" "$unit" | tail -n 1; }
read -r -a exec_start <<<"$(unit_value ExecStart)"
[[ $(unit_value ProtectSystem) == strict ]] || fail "the unit has ProtectSystem=strict"
writable=()
read -r -a writable <<<"$(unit_value ReadWritePaths)"
for d in $(unit_value StateDirectory); do
  install -d -m "$(unit_value StateDirectoryMode | grep . || echo 0755)" "/var/lib/$d"
  writable+=("/var/lib/$d")
done
caps=$(unit_value CapabilityBoundingSet | tr '[:upper:]' '[:lower:]' | sed 's/cap_//g; s/ /,+/g')
[[ $(unit_value NoNewPrivileges) == yes ]] || fail "the unit has NoNewPrivileges=yes"
nofile=$(unit_value LimitNOFILE)
[[ $nofile =~ ^[0-9]+$ ]] || fail "the unit has LimitNOFILE= (a number): '$nofile'"
# Raising the hard limit takes CAP_SYS_RESOURCE, which systemd has; a test run without it
# applies its own hard limit where the unit's is higher.
hard=$(ulimit -Hn)
[[ $hard == unlimited ]] || ((nofile <= hard)) || nofile=$hard
start_agent() {
  # shellcheck disable=SC2016 # the inner shell expands its own arguments
  unshare -m sh -c 'set -e
    for w in $WRITABLE; do mount --bind "$w" "$w"; done
    for m in $(awk "{print \$5}" /proc/self/mountinfo | sort -u); do
      case "$m" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*) continue ;; esac
      case " $WRITABLE " in *" $m "*) continue ;; esac
      # (Mounts hidden under the tmpfs on /run, such as /run/netns, cannot be reached.)
      [ -e "$m" ] || continue
      mount -o remount,bind,ro "$m"
    done
    if [ "$PRIVATE_TMP" = yes ]; then mount -t tmpfs tmpfs /tmp; mount -t tmpfs tmpfs /var/tmp; fi
    umask "$UMASK"
    exec prlimit --nofile="$NOFILE:$NOFILE" setpriv --no-new-privs --bounding-set=-all,+"$CAPS" --inh-caps=-all "$@"' \
    sh "${exec_start[@]}" 2>>"$scratch/agent.log" &
  agent=$!
}
WRITABLE="${writable[*]}" PRIVATE_TMP=$(unit_value PrivateTmp) CAPS=$caps UMASK=$(unit_value UMask) NOFILE=$nofile
export WRITABLE PRIVATE_TMP CAPS UMASK NOFILE
# Starts the agent and waits for its "ready" line.
start_until_ready() {
  local n
  n=$(grep -c '^ready: ' "$scratch/agent.log" || true)
  start_agent
  for _ in $(seq 1 500); do
    (($(grep -c '^ready: ' "$scratch/agent.log" || true) > n)) && return
    sleep 0.01
  done
  cat "$scratch/agent.log"
  fail "the agent started"
}
: >"$scratch/agent.log"
start_until_ready
[[ -p /var/run/lbfo.sock ]] || { cat "$scratch/agent.log"; fail "agent started with the default config"; }
# CAP_NET_BIND_SERVICE (bit 10) and CAP_NET_RAW (bit 13, for icmp checks), as the unit keeps.
[[ $(awk '/^CapEff:/{print $2}' "/proc/$agent/status") == 0000000000002400 &&
  $(awk '/^NoNewPrivs:/{print $2}' "/proc/$agent/status") == 1 ]] \
  || { grep -E 'Cap|NoNew' "/proc/$agent/status"; fail "the agent is confined"; }
[[ $(awk '/^Max open files/ {print $4, $5}' "/proc/$agent/limits") == "$nofile $nofile" ]] \
  || { grep 'open files' "/proc/$agent/limits"; fail "the agent runs with the unit's LimitNOFILE=$nofile"; }
ok "agent runs the unit's ExecStart (${exec_start[*]}) confined as the unit says, writable: ${writable[*]}"
expect_answer web.test 192.0.2.80 "default config defines nothing: /etc/hosts still answers"
printf 'add web.test 10.1.2.3\n' >"$scratch/cmds"
/usr/share/lbfo/contrib/lbfo-cron-feed "$scratch/cmds" || fail "lbfo-cron-feed"
expect_answer web.test 10.1.2.3 "installed module answers through the system nsswitch.conf"
/usr/share/lbfo/contrib/lbfo-mark down web.test 10.1.2.3 || fail "lbfo-mark down"
expect_answer web.test 192.0.2.80 "all backends down: falls through to files"
/usr/share/lbfo/contrib/lbfo-mark up web.test 10.1.2.3 || fail "lbfo-mark up"
expect_answer web.test 10.1.2.3 "back up"
# ExecReload: the admin edits the conffile and sends SIGHUP.
echo "add conf.test 10.1.2.9" >>/etc/lbfo.conf
kill -HUP "$agent"
expect_answer conf.test 10.1.2.9 "SIGHUP reloads the edited /etc/lbfo.conf"
/usr/sbin/lbfo-agentd status --prometheus | grep -qx 'lbfo_backend_up{service="web.test",address="10.1.2.3"} 1' \
  || fail "status --prometheus"
ok "status --prometheus sees the backend up"

# Durability under the unit: the packaged config keeps its state in /var/lib/lbfo, which the
# unit lets it write. A FIFO change survives `systemctl kill -s KILL lbfo-agentd` and the
# restart (Restart=on-failure), and then a reboot too (/run cleared, the counters segment gone),
# from the state file alone.
printf 'add state.test 10.1.2.7\n' >"$scratch/cmds"
/usr/share/lbfo/contrib/lbfo-cron-feed "$scratch/cmds" || fail "lbfo-cron-feed state.test"
expect_answer state.test 10.1.2.7 "a FIFO change"
[[ $(stat -c '%a %U' /var/lib/lbfo/state 2>/dev/null) == "600 root" ]] \
  || { cat "$scratch/agent.log"; fail "the state file is written under the unit's paths"; }
! grep -q 'state: cannot write' "$scratch/agent.log" || { cat "$scratch/agent.log"; fail "no failed save"; }
ok "the state file /var/lib/lbfo/state is written under the unit's confinement (root, 0600)"
kill -KILL "$agent"
wait "$agent" 2>/dev/null || true
start_until_ready
expect_answer state.test 10.1.2.7 "the FIFO change survives kill -9 and a restart"
kill -KILL "$agent"
wait "$agent" 2>/dev/null || true
ipcrm -m "$(od -An -t u8 -j 96 -N 8 /run/lbfo/table | tr -d ' ')"
rm -rf /run/lbfo
start_until_ready
expect_answer state.test 10.1.2.7 "the FIFO change survives kill -9 and a reboot, from the state file"
expect_answer web.test 10.1.2.3 "and so does the first one"
grep -q 'start: restored 3 services from the state file' "$scratch/agent.log" \
  || { cat "$scratch/agent.log"; fail "restored from the state file"; }
ok "the agent says it restored the services from the state file"

# An admin takes lbfo off the line; reinstalling (as an upgrade would) leaves it off.
printf '%s\n' "$nss_before" >/etc/nsswitch.conf
dpkg -i "$deb" >"$scratch/dpkg-i2.log" 2>&1 || { cat "$scratch/dpkg-i2.log"; fail "dpkg -i again"; }
same /etc/nsswitch.conf "$nss_before" "reinstall respects an admin who took lbfo off"
printf '%s\n' "$nss_with" >/etc/nsswitch.conf

kill "$agent"
wait "$agent" || true
[[ -e /run/lbfo/table ]] || fail "the table outlives the agent"
expect_answer web.test 10.1.2.3 "agent stopped: the last table keeps answering"

# Remove (not purge): nsswitch.conf restored, the conffile kept; installing again re-adds lbfo.
dpkg -r lbfo >"$scratch/dpkg-r.log" 2>&1 || { cat "$scratch/dpkg-r.log"; fail "dpkg -r"; }
same /etc/nsswitch.conf "$nss_before" "remove restored nsswitch.conf byte for byte"
[[ -f /etc/lbfo.conf && ! -e /usr/sbin/lbfo-agentd && ! -e /usr/lib/$multiarch/libnss_lbfo.so.2 ]] \
  || fail "remove keeps only the conffile"
ok "remove keeps only the conffile"
[[ ! -e /run/lbfo/table && ! -e /run/lbfo.sock ]] || fail "remove cleared /run"
[[ -z $(ipcs -m | awk '$1 ~ /^0x/') ]] || { ipcs -m; fail "remove removed the counters segment"; }
ok "remove cleared the table, the FIFO and the counters segment"
expect_answer web.test 192.0.2.80 "after remove, /etc/hosts answers"
dpkg -i "$deb" >"$scratch/dpkg-i3.log" 2>&1 || { cat "$scratch/dpkg-i3.log"; fail "dpkg -i after -r"; }
same /etc/nsswitch.conf "$nss_with" "install after remove puts lbfo back"

# Purge: everything gone, nsswitch.conf as it was.
dpkg --purge lbfo >"$scratch/dpkg-p.log" 2>&1 || { cat "$scratch/dpkg-p.log"; fail "dpkg --purge"; }
same /etc/nsswitch.conf "$nss_before" "purge restored nsswitch.conf byte for byte"
for f in /etc/lbfo.conf /etc/apparmor.d/abstractions/nameservice.d/lbfo /usr/sbin/lbfo-agentd \
  "/usr/lib/$multiarch/libnss_lbfo.so.2" \
  /lib/systemd/system/lbfo-agentd.service /usr/share/lbfo /usr/share/doc/lbfo /var/lib/lbfo \
  /etc/systemd/system/multi-user.target.wants/lbfo-agentd.service; do
  [[ ! -e $f && ! -L $f ]] || fail "purge removed $f"
done
ok "purge removed every file, the conffile and the unit's enablement"
dpkg-query -W lbfo >/dev/null 2>&1 && fail "dpkg forgot the package"
ok "dpkg forgot the package"
expect_answer web.test 192.0.2.80 "after purge, /etc/hosts answers"

# The hosts: lines of the wild (tests/tests/nsswitch.rs says where each comes from): install puts
# lbfo first, remove and purge give the file back byte for byte.
lines=(
  $'hosts:          files dns'
  $'hosts:          files myhostname mdns4_minimal [NOTFOUND=return] mymachines resolve [!UNAVAIL=return] dns'
  $'hosts:          files mdns4_minimal [NOTFOUND=return] dns'
  $'hosts:          files mdns4_minimal [NOTFOUND=return] dns myhostname'
  $'hosts:      files myhostname resolve [!UNAVAIL=return] dns'
  $'hosts:      files myhostname mdns4_minimal [NOTFOUND=return] resolve [!UNAVAIL=return] dns'
  $'hosts: mymachines resolve [!UNAVAIL=return] files myhostname dns'
  $'hosts:      sss files dns'
  $'hosts: sss [NOTFOUND=return] files dns'
  $'hosts: ldap [NOTFOUND=return] files dns'
  $'hosts:\tfiles [NOTFOUND=return]\tdns  # no DNS for names in /etc/hosts'
)
n=0
for line in "${lines[@]}"; do
  before=$'passwd:\t\tfiles\n'"$line"$'\nnetworks:\tfiles'
  with=$'passwd:\t\tfiles\n'"$(sed -E 's/^(hosts:[[:blank:]]*)/\1lbfo /' <<<"$line")"$'\nnetworks:\tfiles'
  printf '%s\n' "$before" >/etc/nsswitch.conf
  dpkg -i "$deb" >"$scratch/dpkg-l.log" 2>&1 || { cat "$scratch/dpkg-l.log"; fail "dpkg -i on $line"; }
  grep -q 'warning' "$scratch/dpkg-l.log" && { cat "$scratch/dpkg-l.log"; fail "no warning on $line"; }
  same /etc/nsswitch.conf "$with" "install puts lbfo first: $line"
  dpkg -r lbfo >"$scratch/dpkg-l.log" 2>&1 || { cat "$scratch/dpkg-l.log"; fail "dpkg -r on $line"; }
  same /etc/nsswitch.conf "$before" "remove gives it back: $line" >/dev/null
  dpkg -i "$deb" >"$scratch/dpkg-l.log" 2>&1 || { cat "$scratch/dpkg-l.log"; fail "dpkg -i again on $line"; }
  same /etc/nsswitch.conf "$with" "install after remove: $line" >/dev/null
  dpkg --purge lbfo >"$scratch/dpkg-l.log" 2>&1 || { cat "$scratch/dpkg-l.log"; fail "dpkg --purge on $line"; }
  same /etc/nsswitch.conf "$before" "purge gives it back: $line" >/dev/null
  n=$((n + 1))
done
ok "remove and purge gave each of the $n lines back byte for byte"

# An image whose /etc/nsswitch.conf is a symlink: the file it points to is edited, the link stays.
mkdir -p /etc/lbfo-image
printf '%s\n' "$nss_before" >/etc/lbfo-image/nsswitch.conf
rm -f /etc/nsswitch.conf
ln -s /etc/lbfo-image/nsswitch.conf /etc/nsswitch.conf
dpkg -i "$deb" >"$scratch/dpkg-sl.log" 2>&1 || { cat "$scratch/dpkg-sl.log"; fail "dpkg -i, symlink"; }
[[ -L /etc/nsswitch.conf && $(readlink /etc/nsswitch.conf) == /etc/lbfo-image/nsswitch.conf ]] \
  || fail "install keeps the symlink"
same /etc/lbfo-image/nsswitch.conf "$nss_with" "install edits the symlink's target"
dpkg --purge lbfo >"$scratch/dpkg-sl.log" 2>&1 || { cat "$scratch/dpkg-sl.log"; fail "dpkg --purge, symlink"; }
[[ -L /etc/nsswitch.conf && $(readlink /etc/nsswitch.conf) == /etc/lbfo-image/nsswitch.conf ]] \
  || fail "purge keeps the symlink"
same /etc/lbfo-image/nsswitch.conf "$nss_before" "purge gives the symlink's target back byte for byte"
rm /etc/nsswitch.conf
printf '%s\n' "$nss_before" >/etc/nsswitch.conf

# A line where lbfo comes after a source that ends lookups (an admin's, or an older lbfo's
# placement): the package leaves it alone and says what is wrong.
misplaced='hosts: mymachines resolve [!UNAVAIL=return] lbfo files myhostname dns'
printf 'passwd: files\n%s\n' "$misplaced" >/etc/nsswitch.conf
dpkg -i "$deb" >"$scratch/dpkg-w.log" 2>&1 || { cat "$scratch/dpkg-w.log"; fail "dpkg -i, misplaced"; }
same /etc/nsswitch.conf $'passwd: files\n'"$misplaced" "an admin's line naming lbfo is left alone" >/dev/null
if ! { grep -q 'warning: on the hosts: line of /etc/nsswitch.conf, lbfo comes after' "$scratch/dpkg-w.log" &&
  grep -q 'lbfo:     resolve \[!UNAVAIL=return\]' "$scratch/dpkg-w.log"; }; then
  cat "$scratch/dpkg-w.log"
  fail "postinst warns about resolve before lbfo"
fi
ok "postinst warns when lbfo comes after resolve [!UNAVAIL=return], and leaves the line alone"
dpkg --purge lbfo >/dev/null 2>&1 || fail "dpkg --purge, misplaced"
printf '%s\n' "$nss_before" >/etc/nsswitch.conf

# The name service cache daemons installed (binary and own conffile, from Debian's packages),
# their conffiles never edited. glibc's nscd with the hosts cache on, as Debian ships it: no note,
# it keeps none of lbfo's answers; but when it runs the module it loaded before an upgrade, the
# upgrade's postinst says to restart it. unscd with its hosts cache turned on (Debian ships it
# off): a note saying what to change. Off: nothing.
install -D -m 0755 "$nscd_root/usr/sbin/nscd" /usr/sbin/nscd
install -D -m 0644 "$nscd_root/etc/nscd.conf" /etc/nscd.conf
grep -Eq '^[[:blank:]]*enable-cache[[:blank:]]+hosts[[:blank:]]+yes' /etc/nscd.conf \
  || fail "Debian's nscd.conf has the hosts cache on"
cp /etc/nscd.conf "$scratch/nscd.conf.orig"
dpkg -i "$deb" >"$scratch/dpkg-n.log" 2>&1 || { cat "$scratch/dpkg-n.log"; fail "dpkg -i with nscd"; }
grep -q nscd "$scratch/dpkg-n.log" && { cat "$scratch/dpkg-n.log"; fail "no note for glibc's nscd"; }
cmp -s /etc/nscd.conf "$scratch/nscd.conf.orig" || fail "nscd.conf untouched"
mkdir -p /run/nscd /var/cache/nscd
/usr/sbin/nscd -F >"$scratch/nscd.log" 2>&1 &
nscd=$!
for _ in $(seq 1 500); do grep -qs libnss_lbfo "/proc/$nscd/maps" && break; sleep 0.01; done
grep -qs libnss_lbfo "/proc/$nscd/maps" || { cat "$scratch/nscd.log"; fail "nscd loaded the module"; }
dpkg -i "$deb" >"$scratch/dpkg-n2.log" 2>&1 || { cat "$scratch/dpkg-n2.log"; fail "dpkg -i, nscd running"; }
kill "$nscd"
wait "$nscd" || true
if ! grep -q "nscd (pid $nscd) still runs the lbfo module it loaded before this" "$scratch/dpkg-n2.log" ||
  ! grep -q "restart nscd" "$scratch/dpkg-n2.log"; then
  cat "$scratch/dpkg-n2.log"
  fail "the upgrade's postinst says to restart nscd"
fi
ok "postinst: no note for glibc's nscd, restart it after an upgrade it runs the old module through"
install -m 0755 "$unscd_root/usr/sbin/nscd" /usr/sbin/nscd
install -m 0644 "$unscd_root/etc/nscd.conf" /etc/nscd.conf
sed -E 's/^([[:blank:]]*enable-cache[[:blank:]]+hosts[[:blank:]]+)no/\1yes/' "$unscd_root/etc/nscd.conf" >/etc/nscd.conf
grep -Eq '^[[:blank:]]*enable-cache[[:blank:]]+hosts[[:blank:]]+yes' /etc/nscd.conf || fail "unscd's hosts cache on"
cp /etc/nscd.conf "$scratch/nscd.conf.orig"
dpkg -i "$deb" >"$scratch/dpkg-u.log" 2>&1 || { cat "$scratch/dpkg-u.log"; fail "dpkg -i with unscd"; }
if ! { grep -q 'unscd is installed with its hosts cache on' "$scratch/dpkg-u.log" &&
  grep -q 'enable-cache hosts no' "$scratch/dpkg-u.log"; }; then
  cat "$scratch/dpkg-u.log"
  fail "postinst notes unscd's hosts cache"
fi
cmp -s /etc/nscd.conf "$scratch/nscd.conf.orig" || fail "unscd's nscd.conf untouched"
install -m 0644 "$unscd_root/etc/nscd.conf" /etc/nscd.conf
dpkg -i "$deb" >"$scratch/dpkg-u2.log" 2>&1 || { cat "$scratch/dpkg-u2.log"; fail "dpkg -i with unscd, hosts cache off"; }
grep -q nscd "$scratch/dpkg-u2.log" && { cat "$scratch/dpkg-u2.log"; fail "no note with unscd's hosts cache off"; }
ok "postinst notes unscd with its hosts cache on (and not off), its nscd.conf untouched"
dpkg --purge lbfo >/dev/null 2>&1 || fail "dpkg --purge, nscd"
rm -f /usr/sbin/nscd /etc/nscd.conf
same /etc/nsswitch.conf "$nss_before" "purge restored nsswitch.conf after the nscd checks" >/dev/null
# Where systemd runs (here a stub systemctl that logs its calls, and /run/systemd/system): the
# maintainer scripts reload systemd, start the unit on install, restart it on upgrade, stop it
# on remove; deb-systemd-invoke decides through `systemctl is-enabled`.
mkdir -p /run/systemd/system
# A container image's policy-rc.d forbids starting services; a real host has none.
rm -f /usr/sbin/policy-rc.d
cat >/usr/bin/systemctl <<STUB
#!/bin/sh
echo "\$*" >>$scratch/systemctl.log
case "\$*" in
*--version*) echo "systemd 252 (252.39-1~deb12u1)" ;;
*is-enabled*) echo enabled ;;
esac
exit 0
STUB
chmod 0755 /usr/bin/systemctl
dpkg -i "$deb" >"$scratch/dpkg-s1.log" 2>&1 || { cat "$scratch/dpkg-s1.log"; fail "dpkg -i under systemd"; }
dpkg -i "$deb" >"$scratch/dpkg-s2.log" 2>&1 || { cat "$scratch/dpkg-s2.log"; fail "dpkg -i again under systemd"; }
dpkg --purge lbfo >"$scratch/dpkg-s3.log" 2>&1 || { cat "$scratch/dpkg-s3.log"; fail "dpkg --purge under systemd"; }
# (grep finding nothing must reach the checks below, which print the log, not end the script.)
calls=$({ grep -E '(start|restart|stop) lbfo' "$scratch/systemctl.log" || true; } | tr '\n' ';')
want='--quiet --system start lbfo-agentd.service;--quiet --system restart lbfo-agentd.service;stop lbfo-agentd.service;'
[[ $calls == "$want" ]] || { cat "$scratch/systemctl.log"; fail "systemctl calls: got '$calls', want '$want'"; }
reloads=$(grep -cx -- '--system daemon-reload' "$scratch/systemctl.log" || true)
((reloads >= 3)) || { cat "$scratch/systemctl.log"; fail "daemon-reload by postinst (twice) and postrm"; }
ok "under systemd: daemon-reload, start on install, restart on upgrade, stop on remove"
same /etc/nsswitch.conf "$nss_before" "purge under systemd restored nsswitch.conf too"
echo "roundtrip: all checks passed"
