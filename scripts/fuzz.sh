#!/usr/bin/env bash
# Fuzzing: runs every libFuzzer target in fuzz/ for a fixed time (or a fixed number of
# executions) and prints how many inputs each survived. The seed corpus in fuzz/corpus/TARGET is
# read, never written: new inputs go to a temporary directory. A crash fails the run and leaves
# its input in fuzz/artifacts/TARGET/. The fuzz workspace must build with its committed lockfile.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 60 s, all targets)
#   scripts/fuzz.sh --runs N [TARGET...]                 (N executions each: the long pass,
#                                                          recorded in fuzz/README.md)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
[[ -d "$HOME/.cargo/bin" ]] && export PATH="$HOME/.cargo/bin:$PATH"

if [[ ${1:-} == --runs ]]; then
  budget=(-runs="${2:?--runs needs a count}")
  shift 2
else
  secs=${1:-60}
  shift || true
  budget=(-max_total_time="$secs")
fi
tc=nightly-2026-05-20
rustup toolchain list | grep -q "^$tc" || rustup toolchain install "$tc" --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet

cd fuzz
cargo "+$tc" metadata --locked --format-version 1 >/dev/null
targets=("$@")
((${#targets[@]})) || mapfile -t targets < <(cargo "+$tc" fuzz list)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Built first, so the seconds are the fuzzing's own.
cargo "+$tc" fuzz build 2>&1 | tail -1 >&2
printf '| target | seconds | executions | exec/s | result |\n|---|---:|---:|---:|---|\n'
for t in "${targets[@]}"; do
  mkdir -p "$work/$t"
  status=ok t0=$SECONDS
  cargo "+$tc" fuzz run "$t" "$work/$t" "corpus/$t" -- "${budget[@]}" -print_final_stats=1 \
    >"$work/$t.log" 2>&1 || status=CRASH
  done_runs=$(awk '/stat::number_of_executed_units/{print $2}' "$work/$t.log" | tail -1)
  rate=$(awk '/stat::average_exec_per_sec/{print $2}' "$work/$t.log" | tail -1)
  printf '| %s | %s | %s | %s | %s |\n' "$t" "$((SECONDS - t0))" "${done_runs:-?}" "${rate:-?}" "$status"
  if [[ $status != ok ]]; then
    tail -40 "$work/$t.log" >&2
    exit 1
  fi
done
