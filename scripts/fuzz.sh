#!/usr/bin/env bash
# Fuzzing: runs every libFuzzer target in fuzz/ for a fixed time and prints how many inputs each
# survived. The seed corpus in fuzz/corpus/TARGET is read, never written: new inputs go to a
# temporary directory (pass --keep DIR to keep them). A crash fails the run and leaves its input
# in fuzz/artifacts/TARGET/.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 60 s, all targets)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
[[ -d "$HOME/.cargo/bin" ]] && export PATH="$HOME/.cargo/bin:$PATH"

secs=${1:-60}
shift || true
tc=nightly-2026-05-20
rustup toolchain list | grep -q "^$tc" || rustup toolchain install "$tc" --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet

cd fuzz
targets=("$@")
((${#targets[@]})) || mapfile -t targets < <(cargo "+$tc" fuzz list)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '| target | seconds | executions | result |\n|---|---:|---:|---|\n'
for t in "${targets[@]}"; do
  mkdir -p "$work/$t"
  status=ok
  cargo "+$tc" fuzz run "$t" "$work/$t" "corpus/$t" -- -max_total_time="$secs" -print_final_stats=1 \
    >"$work/$t.log" 2>&1 || status=CRASH
  runs=$(awk '/stat::number_of_executed_units/{print $2}' "$work/$t.log" | tail -1)
  printf '| %s | %s | %s | %s |\n' "$t" "$secs" "${runs:-?}" "$status"
  if [[ $status != ok ]]; then
    tail -40 "$work/$t.log" >&2
    exit 1
  fi
done
