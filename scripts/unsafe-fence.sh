#!/usr/bin/env bash
# The unsafe fence (ARCHITECTURE.md, "Invariants"): `unsafe` code appears only in
# agentd/src/sys/, nss/src/abi.rs and nss/src/map.rs. Scans the crates that ship (core, nss,
# agentd) and the fuzz targets; the tests crate, whose probes call glibc through FFI, is outside
# the fence. A line counts when, with any `//` comment cut off, it holds `unsafe {`, `unsafe fn`,
# `unsafe impl`, `unsafe extern`, `unsafe(` (an attribute such as `#[unsafe(no_mangle)]`) or
# `allow(unsafe_code)`: code, not prose that mentions the word. Prints FILE:LINE: TEXT for every
# such line outside the fence and exits 1 if there is one.
set -euo pipefail
cd "$(dirname "$0")/.."

fence='^(agentd/src/sys/.*|nss/src/abi\.rs|nss/src/map\.rs)$'
code='unsafe[[:space:]]*([{(]|fn\b|impl\b|extern\b)|allow\(unsafe_code\)'
outside=0
while IFS= read -r f; do
  [[ $f =~ $fence ]] && continue
  while IFS=: read -r line text; do
    echo "unsafe-fence: $f:$line: unsafe code outside agentd/src/sys/, nss/src/abi.rs, nss/src/map.rs: ${text#"${text%%[![:space:]]*}"}"
    outside=1
  done < <(sed 's://.*$::' "$f" | grep -nE "$code" || true)
done < <(find core nss agentd fuzz -name '*.rs' -not -path '*/target/*' | sort)
((outside == 0)) && echo "unsafe-fence: ok (unsafe code only in agentd/src/sys/, nss/src/abi.rs, nss/src/map.rs)"
exit "$outside"
