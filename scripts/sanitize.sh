#!/usr/bin/env bash
# Concurrency and memory proof: core under Miri and ThreadSanitizer, the NSS module under valgrind
# (memcheck) and AddressSanitizer in a multi-threaded getaddrinfo stress while an agent rewrites the
# table through its FIFO as fast as it can. Prints one summary table; exits 1 if any check failed.
#
#   scripts/sanitize.sh [--ci] [CHECK...]       CHECK: miri tsan valgrind asan (default: all)
#
# Full run: the stress is 8 threads x 10^6 lookups each under ASan; valgrind serialises threads
# and is ~50x slower, so it does 8 x LBFO_VALGRIND_LOOKUPS (default 20,000). --ci: Miri (every
# core test, a few minutes) and a short valgrind stress (8 x 2,000), what scripts/test.sh runs when
# CI=true. Override the counts with LBFO_ASAN_LOOKUPS and LBFO_VALGRIND_LOOKUPS (per thread).
#
# Installs what it needs: the pinned nightly with rust-src and miri, valgrind (apt, as root).
# Builds go to CARGO_TARGET_DIR (default target/), the sanitized ones under
# x86_64-unknown-linux-gnu/ (TSan) and asan/, so their RUSTFLAGS never touch the release
# artefacts. Everything it starts (agent, churn writer) and creates (temp dir, the agent's SysV
# counters segment) is gone when it exits.
#
# The checks are called by name (run_$c), which shellcheck cannot follow.
# shellcheck disable=SC2317
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -d "$HOME/.cargo/bin" ]] && export PATH="$HOME/.cargo/bin:$PATH"

ci=false
if [[ ${1:-} == --ci ]]; then
  ci=true
  shift
fi
checks=("$@")
if ((${#checks[@]} == 0)); then
  if $ci; then checks=(miri valgrind); else checks=(miri tsan valgrind asan); fi
fi
if $ci; then vg_n=${LBFO_VALGRIND_LOOKUPS:-2000}; else vg_n=${LBFO_VALGRIND_LOOKUPS:-20000}; fi
asan_n=${LBFO_ASAN_LOOKUPS:-1000000}
threads=8

tc=nightly-2026-05-20
host=x86_64-unknown-linux-gnu
target=${CARGO_TARGET_DIR:-$PWD/target}
export CARGO_TARGET_DIR=$target

rustup toolchain list | grep -q "^$tc" ||
  rustup toolchain install "$tc" --profile minimal --component rust-src,miri
rustup component list --toolchain "$tc" --installed | grep -q '^miri' ||
  rustup component add --toolchain "$tc" rust-src miri
if ! command -v valgrind >/dev/null; then
  if [[ $(id -u) == 0 ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends valgrind >/dev/null
  else
    echo "sanitize: please install valgrind" >&2
    exit 1
  fi
fi

work=$(mktemp -d /tmp/lbfo-sanitize.XXXXXX)
agent_pid='' churn_pid='' shm_id=''
cleanup() {
  stop_agent
  rm -rf "$work"
}
trap cleanup EXIT

results=()
failed=0
record() { # CHECK SCOPE RESULT FIGURES
  results+=("| $1 | $2 | $3 | $4 |")
  [[ $3 == ok ]] || failed=1
}

# --- Miri: every core test (the shm tests shrink their loops under cfg(miri); the torn-records
# test's readers make a fixed number of reads there instead of spinning until the writer is done).
run_miri() {
  local log=$work/miri.log t0=$SECONDS scope="lbfo-core, every unit test"
  if cargo "+$tc" miri test -p lbfo-core >"$log" 2>&1; then
    record miri "$scope" ok \
      "$(grep -o '[0-9]* passed' "$log" | awk '{n+=$1} END{print n}') tests, 0 UB, $((SECONDS - t0)) s"
  else
    tail -40 "$log" >&2
    record miri "$scope" FAILED "see above"
  fi
}

# --- ThreadSanitizer: the seqlock writer against concurrent readers, counters bumped from threads.
run_tsan() {
  local log=$work/tsan.log t0=$SECONDS
  # Tests unwind (the dev profile aborts, which would build std twice under build-std).
  if CARGO_PROFILE_DEV_PANIC=unwind RUSTFLAGS="-Zsanitizer=thread" RUSTDOCFLAGS="-Zsanitizer=thread" \
    cargo "+$tc" test -Zbuild-std --target "$host" -p lbfo-core --lib shm:: >"$log" 2>&1 &&
    ! grep -q 'WARNING: ThreadSanitizer' "$log"; then
    record tsan "lbfo-core shm:: (seqlock, readers, counters)" ok \
      "$(grep -o '[0-9]* passed' "$log" | awk '{n+=$1} END{print n}') tests, 0 races, $((SECONDS - t0)) s"
  else
    grep -A30 -m1 'WARNING: ThreadSanitizer' "$log" >&2 || tail -40 "$log" >&2
    record tsan "lbfo-core shm::" FAILED "$(grep -c 'WARNING: ThreadSanitizer' "$log") reports"
  fi
}

# An agent with one service, its FIFO rewritten continuously by a churn writer: backends added,
# removed, marked down and up, the service deleted and recreated, the policy changed. Every answer
# must be one of ALLOWED; a torn record would show up as an address outside it.
allowed=10.1.0.1,10.1.0.2,10.1.0.3,10.1.0.4,10.1.0.5
start_agent() { # BIN_DIR
  local d=$work/agent
  rm -rf "$d"
  mkdir -p "$d/lib"
  cat >"$d/lbfo.conf" <<EOF
table $d/run/table
fifo $d/lbfo.sock
add s.lan 10.1.0.1
add s.lan 10.1.0.2
add s.lan 10.1.0.3
policy s.lan roundrobin
EOF
  "$1/lbfo-agentd" -c "$d/lbfo.conf" </dev/null >/dev/null 2>"$d/agent.log" &
  agent_pid=$!
  for _ in $(seq 500); do
    [[ -p $d/lbfo.sock && -s $d/run/table ]] && break
    sleep 0.02
  done
  shm_id=$(od -An -t u8 -j 96 -N 8 "$d/run/table" | tr -d ' ')
  {
    for i in 1 2 3 4 5; do
      printf 'add s.lan 10.1.0.%s weight=%s\ndown s.lan 10.1.0.%s\nup s.lan 10.1.0.%s\n' "$i" "$i" "$i" "$i"
    done
    printf '%s\n' 'policy s.lan weighted' 'del s.lan 10.1.0.2' 'policy s.lan leastused' \
      'add s.lan 10.1.0.2' 'del s.lan 10.1.0.5' 'policy s.lan failover' 'del s.lan' \
      'add s.lan 10.1.0.1' 'add s.lan 10.1.0.3' 'add s.lan 10.1.0.4' 'add s.lan 10.1.0.2' \
      'policy s.lan roundrobin'
  } >"$d/churn"
  (while :; do cat "$d/churn"; done >"$d/lbfo.sock") 2>/dev/null &
  churn_pid=$!
}
stop_agent() {
  if [[ -n $churn_pid ]]; then
    kill "$churn_pid" 2>/dev/null || true
    wait "$churn_pid" 2>/dev/null || true
  fi
  if [[ -n $agent_pid ]]; then
    kill "$agent_pid" 2>/dev/null || true
    wait "$agent_pid" 2>/dev/null || true
  fi
  if [[ -n $shm_id ]]; then ipcrm -m "$shm_id" 2>/dev/null || true; fi
  churn_pid='' agent_pid='' shm_id=''
}
# The module, as glibc loads it: libnss_lbfo.so.2 on LD_LIBRARY_PATH.
stress() { # MODULE N WRAPPER...
  local module=$1 n=$2
  shift 2
  ln -sf "$module" "$work/agent/lib/libnss_lbfo.so.2"
  LBFO_TABLE=$work/agent/run/table LD_LIBRARY_PATH=$work/agent/lib \
    "$@" --nss "lbfo files" stress s.lan "$threads" "$n" "$allowed"
}
answers() { # LOG -> "total T foreign F unresolved U"
  grep -o 'total [0-9]* foreign [0-9]* unresolved [0-9]*' "$1" || echo "no summary"
}
# The stress passed: no foreign answer, and most lookups answered by the module (the churn
# deletes the service now and then, so a few fall through; a module that failed to load would
# make them all fall through).
sound() { # LOG
  awk '/^total [0-9]+ foreign [0-9]+ unresolved [0-9]+$/ { ok = ($4 == 0 && $6 * 2 < $2) }
       END { exit !ok }' "$1"
}

# --- valgrind memcheck: the release module (what ships) and the release-built probe.
run_valgrind() {
  local log=$work/valgrind.log t0=$SECONDS
  cargo build --release --locked -p lbfo-agentd -p lbfo-nss -q
  cargo build --profile release --locked -p lbfo-tests --bin lbfo-resolve -q
  start_agent "$target/release"
  local rc=0
  stress "$target/release/libnss_lbfo.so" "$vg_n" \
    valgrind --tool=memcheck --error-exitcode=99 --leak-check=full \
    --suppressions="$PWD/scripts/valgrind.supp" \
    --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect \
    "$target/release/lbfo-resolve" >"$log" 2>&1 || rc=$?
  stop_agent
  local errors definite indirect
  errors=$(awk '/ERROR SUMMARY:/{print $4}' "$log" | tail -1)
  definite=$(awk '/definitely lost:/{print $4}' "$log" | tail -1)
  indirect=$(awk '/indirectly lost:/{print $4}' "$log" | tail -1)
  local figures
  figures="$(answers "$log"), ${errors:-?} errors, lost ${definite:-0}+${indirect:-0} B, $((SECONDS - t0)) s"
  if [[ $rc == 0 && ${errors:-x} == 0 && ${definite:-0} == 0 && ${indirect:-0} == 0 ]] &&
    sound "$log"; then
    record valgrind "getaddrinfo x$threads threads x$vg_n, churning agent" ok "$figures"
  else
    tail -60 "$log" >&2
    record valgrind "getaddrinfo x$threads threads x$vg_n, churning agent" FAILED "$figures"
  fi
}

# --- AddressSanitizer (+ LeakSanitizer): an instrumented probe loading an instrumented module.
# The module is a dev build (overflow checks on) with LBFO_NSS_SANITIZER=1: see nss/build.rs.
run_asan() {
  local log=$work/asan.log t0=$SECONDS
  cargo build --release --locked -p lbfo-agentd -q
  # Its own target directory, so this build and the TSan one do not rebuild each other. The
  # sanitizer runtime is linked into the probe; --export-dynamic lets the module glibc dlopens
  # resolve its __asan_* calls there.
  local flags="-Zsanitizer=address -Clink-arg=-Wl,--export-dynamic"
  LBFO_NSS_SANITIZER=1 RUSTFLAGS=$flags CARGO_TARGET_DIR=$target/asan \
    cargo "+$tc" build --target "$host" --locked -p lbfo-nss --lib -q
  LBFO_NSS_SANITIZER=1 RUSTFLAGS=$flags CARGO_TARGET_DIR=$target/asan \
    cargo "+$tc" build --target "$host" --locked -p lbfo-tests --bin lbfo-resolve -q
  local dir=$target/asan/$host/debug
  start_agent "$target/release"
  local rc=0
  ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:exitcode=98 \
    stress "$dir/libnss_lbfo.so" "$asan_n" "$dir/lbfo-resolve" >"$log" 2>&1 || rc=$?
  stop_agent
  local reports figures
  reports=$(grep -c 'ERROR: \(Address\|Leak\)Sanitizer' "$log" || true)
  figures="$(answers "$log"), $reports reports, $((SECONDS - t0)) s"
  if [[ $rc == 0 && $reports == 0 ]] && sound "$log"; then
    record asan "getaddrinfo x$threads threads x$asan_n, churning agent" ok "$figures"
  else
    tail -60 "$log" >&2
    record asan "getaddrinfo x$threads threads x$asan_n, churning agent" FAILED "$figures"
  fi
}

for c in "${checks[@]}"; do
  case $c in
    miri | tsan | valgrind | asan) "run_$c" ;;
    *)
      echo "sanitize: unknown check $c (miri tsan valgrind asan)" >&2
      exit 2
      ;;
  esac
done

printf '| check | scope | result | figures |\n|---|---|---|---|\n'
printf '%s\n' "${results[@]}"
exit "$failed"
