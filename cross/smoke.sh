#!/usr/bin/env bash
# The agent smoke test of cross/test.sh: smoke.sh QEMU AGENT DIR. Runs inside a private IPC
# namespace (cross/test.sh sees to it); kills the agent it started, by pid, whatever happens.
set -euo pipefail
qemu=$1 bin=$2 dir=$3
fail() { echo "smoke: $*" >&2; exit 1; }
agent='' web=''
trap '[[ -n $agent ]] && kill -9 "$agent" 2>/dev/null; [[ -n $web ]] && kill -9 "$web" 2>/dev/null; wait 2>/dev/null || true' EXIT

# A bad config: exit 2 and file:line:column.
printf 'add web.lan 10.0.0.1\nadd web.lan 10.0.0.300\n' > "$dir/bad.conf"
set +e
"$qemu" "$bin" -c "$dir/bad.conf" 2> "$dir/bad.log"
rc=$?
set -e
[[ $rc == 2 ]] || fail "bad config: exit $rc, expected 2"
grep -q "bad.conf:2:13: not an IPv4 or IPv6 address" "$dir/bad.log" || fail "bad config: $(cat "$dir/bad.log")"

# Health checks of every kind against this machine's loopback (an HTTP server of Debian's
# python3), and fastest over the TCP one. ICMP needs a raw socket: only as real root
# (LBFO_SMOKE_ICMP=1 from cross/test.sh), not in a user namespace.
icmp=${LBFO_SMOKE_ICMP:-0}
port=$((20000 + RANDOM % 20000))
mkdir -p "$dir/www"
python3 -m http.server --bind 127.0.0.1 --directory "$dir/www" "$port" >/dev/null 2>&1 &
web=$!
# shellcheck disable=SC2016 # the script's own variables, expanded when it runs
printf '#!/bin/sh\n[ "$LBFO_BACKEND" = 127.0.0.1 ] && [ "$1" = --quiet ]\n' > "$dir/only-1.sh"
chmod 755 "$dir/only-1.sh"
cat > "$dir/lbfo.conf" <<CONF
table $dir/run/table
fifo $dir/lbfo.sock
hosts-file $dir/hosts
dnsmasq-pid $dir/no-dnsmasq.pid
policy web.lan roundrobin
add web.lan 10.0.0.1
add web.lan 10.0.0.2
add web.lan fd00::3 weight=2
add ht.lan 127.0.0.1
down ht.lan 127.0.0.1
check ht.lan http $port path=/ interval=50ms timeout=2s
policy tc.lan fastest
add tc.lan 127.0.0.1
add tc.lan 127.0.0.2
down tc.lan 127.0.0.1
check tc.lan tcp $port interval=50ms timeout=2s
add ex.lan 127.0.0.1
add ex.lan 127.0.0.2
check ex.lan exec $dir/only-1.sh --quiet interval=50ms timeout=2s
CONF
if [[ $icmp == 1 ]]; then
  printf 'add ic.lan 127.0.0.2\ndown ic.lan 127.0.0.2\ncheck ic.lan icmp interval=50ms timeout=2s\n' >> "$dir/lbfo.conf"
fi
"$qemu" "$bin" -c "$dir/lbfo.conf" 2> "$dir/agent.log" &
agent=$!
for _ in $(seq 200); do grep -q '^ready:' "$dir/agent.log" && break; sleep 0.1; done
grep -q '^ready:' "$dir/agent.log" || fail "agent not ready after 20 s"

status() { "$qemu" "$bin" status --json --table "$dir/run/table"; }
json=$(status)
[[ $json == *'"agent_running":true'* ]] || fail "status: agent not running: $json"
[[ $json == *'"addr":"10.0.0.1","state":"up"'* ]] || fail "status: $json"
[[ $json == *'"addr":"fd00::3","state":"up","weight":2'* ]] || fail "status: $json"

echo "down web.lan 10.0.0.1" > "$dir/lbfo.sock"
for _ in $(seq 100); do
  json=$(status)
  [[ $json == *'"addr":"10.0.0.1","state":"down"'* ]] && break
  sleep 0.1
done
[[ $json == *'"addr":"10.0.0.1","state":"down"'* ]] || fail "down not applied: $json"
for _ in $(seq 50); do grep -q '^10.0.0.1 ' "$dir/hosts" || break; sleep 0.1; done
grep -q '^10.0.0.1 ' "$dir/hosts" && fail "hosts file still exports 10.0.0.1: $(cat "$dir/hosts")"
grep -q '^10.0.0.2 web.lan$' "$dir/hosts" || fail "hosts file: $(cat "$dir/hosts")"
grep -q '^fd00::3 web.lan$' "$dir/hosts" || fail "hosts file: $(cat "$dir/hosts")"

# Each kind's verdict: http and tcp bring their backend up, tcp takes the one nothing listens on
# down, exec takes down the one whose LBFO_BACKEND it refuses, icmp brings its backend up; the
# fastest service has a fastest set (the one listening), shown in status. The refused connect's
# text is not compared: qemu-user (7.2) hands the host's SO_ERROR to the guest untranslated, and
# x86_64's ECONNREFUSED is no error number on MIPS (`connect: no error information` there).
seen() {
  local log
  log=$(cat "$dir/agent.log")
  [[ $log == *'check: ht.lan 127.0.0.1 up (2 http checks passed)'* &&
    $log == *'check: tc.lan 127.0.0.1 up (2 tcp checks passed)'* &&
    $log == *'check: tc.lan 127.0.0.2 down (2 tcp checks failed: connect: '* &&
    $log == *'check: ex.lan 127.0.0.2 down (2 exec checks failed: exec: exit 1)'* &&
    $log == *'fastest: tc.lan: 127.0.0.1 ('* ]] || return 1
  [[ $icmp == 0 || $log == *'check: ic.lan 127.0.0.2 up (2 icmp checks passed)'* ]]
}
for _ in $(seq 200); do seen && break; sleep 0.1; done
seen || fail "checks: $(grep -E '^(check|fastest)' "$dir/agent.log")"
# status reads the checks' state from a file the agent rewrites a few times a second: it may
# lag the log by a report.
shown() {
  json=$(status)
  [[ $json == *'"addr":"127.0.0.1","state":"up","weight":1,"prio":1,"limit":0,"lookups":0,"fastest":true,"check":{"kind":"tcp","verdict":"up"'* &&
    $json == *'"error":"exec: exit 1"'* ]]
}
for _ in $(seq 50); do shown && break; sleep 0.1; done
shown || fail "status: $json"

kill -TERM "$agent"
set +e
wait "$agent"
rc=$?
set -e
agent=
[[ $rc == 0 ]] || fail "agent exit $rc after SIGTERM"
grep -q 'SIGTERM: exiting' "$dir/agent.log" || fail "no exit line in the log"
echo "smoke: ok ($(basename "$qemu"))" >&2
