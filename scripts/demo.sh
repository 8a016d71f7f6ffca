#!/usr/bin/env bash
# The demo: the whole system on this machine, leaving it as it was.
#
# Builds lbfo, then in a private mount and IPC namespace (the machine's /etc, /run and SysV
# segments are untouched; everything vanishes with the namespace) it starts the agent with
# examples/lbfo.conf at the real default paths, puts `hosts: lbfo files` in that namespace's
# /etc/nsswitch.conf, and shows ordinary programs (getent) getting balanced answers, a failover
# driven through the FIFO, and the agent's status.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${LBFO_DEMO_INNER:-}" != 1 ]]; then
  bash scripts/setup.sh
  [[ -d "$HOME/.cargo/bin" ]] && export PATH="$HOME/.cargo/bin:$PATH"
  echo "== building (cargo build --release)"
  cargo build --release --workspace --locked -q
  ns=(unshare -m -i --propagation private)
  [[ $(id -u) == 0 ]] || ns=(unshare -rmi --propagation private)
  exec env LBFO_DEMO_INNER=1 "${ns[@]}" bash "$0" "$@"
fi

bin=${CARGO_TARGET_DIR:-$PWD/target}/release
work=$(mktemp -d)
agent_pid=
cleanup() {
  [[ -n $agent_pid ]] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# A private /run (so /run/lbfo/table and /var/run/lbfo.sock are the real default paths), the
# module where glibc finds it, and this namespace's own nsswitch.conf.
mount -t tmpfs tmpfs /run
mkdir -p "$work/lib"
ln -s "$bin/libnss_lbfo.so" "$work/lib/libnss_lbfo.so.2"
export LD_LIBRARY_PATH=$work/lib
echo "hosts: lbfo files" >"$work/nsswitch.conf"
mount --bind "$work/nsswitch.conf" /etc/nsswitch.conf

say() { printf '\n== %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
ask() { printf '$ getent %s %s  ->  ' "$1" "$2"; getent "$1" "$2" | awk 'NR==1{print $1}'; }

say "/etc/nsswitch.conf in this namespace"
cat /etc/nsswitch.conf
say "the config: examples/lbfo.conf"
grep -v '^#' examples/lbfo.conf | grep -v '^$'

say "starting lbfo-agentd -c examples/lbfo.conf"
"$bin/lbfo-agentd" -c examples/lbfo.conf 2>"$work/agent.log" &
agent_pid=$!
for _ in $(seq 1 500); do [[ -e /run/lbfo/table && -p /var/run/lbfo.sock ]] && break; sleep 0.01; done
ls -l /run/lbfo/table /var/run/lbfo.sock

say "web.lan rotates (roundrobin), any program asking gets the next backend"
for _ in 1 2 3 4 5 6; do ask ahostsv4 web.lan; done
say "api.lan is weighted 1:3"
for _ in 1 2 3 4 5 6 7 8; do ask ahostsv4 api.lan; done
say "other names fall through to /etc/hosts and DNS untouched"
ask hosts localhost

say "take 10.0.0.12 out of rotation through the FIFO"
run sh -c 'echo "down web.lan 10.0.0.12" > /var/run/lbfo.sock'
sleep 0.2
for _ in 1 2 3 4; do ask ahostsv4 web.lan; done

say "db.lan fails over when its primary goes down, and back when it returns"
ask ahostsv4 db.lan
run sh -c 'echo "down db.lan 10.0.1.1" > /var/run/lbfo.sock'
sleep 0.2
ask ahostsv4 db.lan
run sh -c 'echo "up db.lan 10.0.1.1" > /var/run/lbfo.sock'
sleep 0.2
ask ahostsv4 db.lan

say "a bad line is reported and skipped; the lines around it apply"
run sh -c 'printf "up web.lan 10.0.0.12\nadd web.lan 10.0.0.300\nadd web.lan 10.0.0.14\n" > /var/run/lbfo.sock'
sleep 0.2
run "$bin/lbfo-agentd" status

say "the agent's log"
cat "$work/agent.log"

say "stopping the agent; the last table keeps answering"
kill "$agent_pid"
wait "$agent_pid" || true
agent_pid=
ask ahostsv4 web.lan
say "done: the namespace, its /run and its segments are gone; the machine is as it was"
