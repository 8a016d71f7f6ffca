#!/usr/bin/env bash
# The test command: builds the release artefacts the end-to-end tests drive and the Debian
# package, then runs every test (unit tests beside the code, end-to-end tests in tests/), then
# the lints, then the router part: the core's tests and an agent smoke test under qemu for one
# little-endian and one big-endian MIPS target, the interop run (the big-endian agent and the
# native one in one group, cross/interop.sh, via cross/test.sh), and the size report with its budgets
# (LBFO_SKIP_CROSS=1 skips the router part for a quick local run; CI runs it). The full router
# matrix: bash cross/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
[[ -d "$HOME/.cargo/bin" ]] && export PATH="$HOME/.cargo/bin:$PATH"

cargo build --release --workspace --locked
bash scripts/deb.sh --no-build
# No segment left behind: the tests run in an IPC namespace of their own, so every SysV segment
# in it is one they made, whatever else runs on this machine; one still there when they end was
# left behind, and fails the run. (The namespace ends with them: the machine's `ipcs -m` is as
# it was either way.) Without the privilege to make one, the tests run unchecked for that.
if unshare --ipc true 2>/dev/null; then
  # shellcheck disable=SC2016
  unshare --ipc bash -c 'cargo test --workspace --locked || exit
    left=$(awk "NR > 1" /proc/sysvipc/shm)
    if [[ -n $left ]]; then
      printf "test.sh: SysV segments the tests left behind:\n%s\n" "$left" >&2
      exit 1
    fi'
else
  echo "test.sh: no IPC namespace (not root): not checked for SysV segments left behind" >&2
  cargo test --workspace --locked
fi
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
bash scripts/unsafe-fence.sh
# The shell that ships: contrib scripts, the package's maintainer scripts as built, their builder.
target=${CARGO_TARGET_DIR:-target}
shellcheck scripts/deb.sh scripts/sanitize.sh scripts/unsafe-fence.sh tests/scripts/*.sh contrib/lbfo-mark contrib/lbfo-check \
  contrib/lbfo-cron-feed contrib/lbfo-prom-textfile
shellcheck -x cross/*.sh size-report/*.sh
shellcheck -s sh openwrt/lbfo/files/lbfo.init
shellcheck -s sh "$target"/debian/lbfo_*/DEBIAN/{postinst,prerm,postrm}
# Debian's package checker, where installed (apt-get install lintian; not needed for the tests).
if command -v lintian >/dev/null; then
  lintian --fail-on error,warning "$target"/debian/lbfo_*.deb
else
  echo "test.sh: lintian not installed; the package was not linted"
fi

# A short fuzzing pass in CI (scripts/fuzz.sh SECONDS for a longer one).
if [[ ${CI:-} == true || -n ${LBFO_FUZZ_SECONDS:-} ]]; then
  bash scripts/fuzz.sh "${LBFO_FUZZ_SECONDS:-15}"
fi

if [[ ${LBFO_SKIP_CROSS:-0} == 1 ]]; then
  echo "test: LBFO_SKIP_CROSS=1: router builds, qemu tests and the size report skipped" >&2
else
  bash cross/test.sh mipsel-unknown-linux-musl mips-unknown-linux-musl
  # The budgets (the mipsel agent <= 384 KiB stripped and <= 144 KiB xz, the NSS module <= 24 KiB):
  # over any fails the run.
  bash size-report/run.sh x86_64-unknown-linux-gnu mipsel-unknown-linux-musl mips-unknown-linux-musl
fi

# Concurrency and memory in CI: core under Miri and the NSS module under valgrind in a short
# multi-threaded stress against a churning agent (scripts/sanitize.sh for the full set: adds
# ThreadSanitizer and the 8 x 10^6 AddressSanitizer stress).
if [[ ${CI:-} == true || -n ${LBFO_SANITIZE:-} ]]; then
  bash scripts/sanitize.sh --ci
fi
