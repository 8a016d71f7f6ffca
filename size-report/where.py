#!/usr/bin/env python3
"""Where the bytes of a binary's .text go, by the workspace's own source lines.

    where.py BINARY [FILE]

BINARY must carry line tables with inlining information (`debug = "limited"`). Every 4-byte
slot of .text is symbolized with its inline chain (llvm-symbolizer --inlining) and charged to
the innermost frame in the workspace's own sources (agentd/, core/, nss/): so the std and
library code that LTO inlined into our functions (Result plumbing, drop glue, Vec growth,
formatting) counts against the line of ours that asked for it. Slots with no frame of ours are
charged to the outermost function (std, libraries, the C library).

Prints a Markdown summary: bytes per source file of ours and the largest other functions; with
FILE (e.g. `agentd/status.rs`) the costliest lines of that file instead. Fixed-width
instructions are assumed (MIPS, AArch64, ARM; not Thumb or x86).
"""
import collections
import os
import re
import subprocess
import sys

# The workspace this script belongs to: only its sources count as ours (std's own `core/src/`
# must not).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS = re.compile(re.escape(ROOT) + r"/(agentd|core|nss)/src/(.*)$")


def text_range(binary):
    out = subprocess.run(["readelf", "-SW", binary], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        m = re.search(r"\] \.text\s+\S+\s+([0-9a-f]+) [0-9a-f]+ ([0-9a-f]+)", line)
        if m:
            start = int(m.group(1), 16)
            return start, start + int(m.group(2), 16)
    sys.exit(f"{binary}: no .text section")


def symbolizer():
    for name in ["llvm-symbolizer"] + [f"llvm-symbolizer-{v}" for v in range(30, 10, -1)]:
        if subprocess.run(["sh", "-c", f"command -v {name}"], capture_output=True).returncode == 0:
            return name
    sys.exit("where.py: llvm-symbolizer not found (apt-get install llvm)")


def chains(binary, start, end):
    """The inline chain (innermost first) of every slot of .text, as (function, location) pairs."""
    addrs = "".join(f"{a:#x}\n" for a in range(start, end, 4))
    out = subprocess.run(
        [symbolizer(), f"--obj={binary}", "--inlining", "--functions=linkage", "--demangle"],
        input=addrs, capture_output=True, text=True, check=True,
    ).stdout
    for block in out.split("\n\n"):
        lines = block.strip().split("\n")
        if len(lines) >= 2:
            yield list(zip(lines[0::2], lines[1::2]))


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    binary = sys.argv[1]
    only = sys.argv[2] if len(sys.argv) == 3 else None
    start, end = text_range(binary)
    by_file, by_line, other = collections.Counter(), collections.Counter(), collections.Counter()
    for chain in chains(binary, start, end):
        for _, loc in chain:
            m = OURS.search(loc)
            if m:
                path = f"{m.group(1)}/{m.group(2).split(':')[0]}"
                line = m.group(2).split(":")[1] if ":" in m.group(2) else "?"
                by_file[path] += 4
                by_line[(path, line)] += 4
                break
        else:
            other[chain[-1][0][:100]] += 4
    total = end - start
    if only:
        print(f"| {only} line | bytes |\n|---|---:|")
        for (path, line), n in by_line.most_common():
            if path == only:
                print(f"| {line} | {n} |")
        return
    ours = sum(by_file.values())
    print(f".text {total} bytes: {ours} charged to our sources, {total - ours} to others.\n")
    print("| our source | bytes |\n|---|---:|")
    for path, n in by_file.most_common():
        print(f"| {path} | {n} |")
    print("\n| other (outermost function) | bytes |\n|---|---:|")
    for func, n in other.most_common(40):
        print(f"| `{func}` | {n} |")


if __name__ == "__main__":
    main()
