#!/usr/bin/env bash
# The agent smoke test of cross/test.sh: smoke.sh QEMU AGENT DIR. Runs inside a private IPC
# namespace (cross/test.sh sees to it); kills the agent it started, by pid, whatever happens.
set -euo pipefail
qemu=$1 bin=$2 dir=$3
fail() { echo "smoke: $*" >&2; exit 1; }
agent=
trap '[[ -n $agent ]] && kill -9 "$agent" 2>/dev/null; wait 2>/dev/null || true' EXIT

# A bad config: exit 2 and file:line:column.
printf 'add web.lan 10.0.0.1\nadd web.lan 10.0.0.300\n' > "$dir/bad.conf"
set +e
"$qemu" "$bin" -c "$dir/bad.conf" 2> "$dir/bad.log"
rc=$?
set -e
[[ $rc == 2 ]] || fail "bad config: exit $rc, expected 2"
grep -q "bad.conf:2:13: not an IPv4 or IPv6 address" "$dir/bad.log" || fail "bad config: $(cat "$dir/bad.log")"

cat > "$dir/lbfo.conf" <<CONF
table $dir/run/table
fifo $dir/lbfo.sock
hosts-file $dir/hosts
dnsmasq-pid $dir/no-dnsmasq.pid
policy web.lan roundrobin
add web.lan 10.0.0.1
add web.lan 10.0.0.2
add web.lan fd00::3 weight=2
CONF
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

kill -TERM "$agent"
set +e
wait "$agent"
rc=$?
set -e
agent=
[[ $rc == 0 ]] || fail "agent exit $rc after SIGTERM"
grep -q 'SIGTERM: exiting' "$dir/agent.log" || fail "no exit line in the log"
echo "smoke: ok ($(basename "$qemu"))" >&2
