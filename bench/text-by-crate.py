#!/usr/bin/env python3
"""bench/text-by-crate.py — code size of a binary by crate, and what changed.

Sums the sizes of the code symbols (`nm -S -C`, types t/T/W) of an unstripped
binary by the crate their demangled path starts with (`<A as B>::f` counts for
A's crate; `drop_in_place<T>` for T's crate; ring's C and assembly symbols,
`ring_core_*`, for ring; one address counts once). Generic code
counts for the crate that defines the function, not the one that instantiated it;
symbols the linker folded or inlined count where the surviving one is named.

Usage: bench/text-by-crate.py BINARY [BASE_BINARY] [--top N]
With BASE_BINARY it prints both columns and the difference, largest first.
"""

import re
import subprocess
import sys
from collections import Counter


def by_crate(path):
    out = subprocess.run(
        ["nm", "-S", "-C", "--defined-only", path],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    sizes = Counter()
    seen = set()
    for line in out.splitlines():
        parts = line.split(" ", 3)
        if len(parts) < 4 or parts[2] not in ("t", "T", "W", "w") or parts[0] in seen:
            continue
        seen.add(parts[0])  # aliases of one address count once
        size, name = int(parts[1], 16), parts[3]
        sizes[crate_of(name)] += size
    return sizes


def crate_of(name):
    if name.startswith("ring_core_"):
        return "ring"
    # Drop glue counts for the type it drops.
    for glue in ("core::ptr::drop_in_place<", "<core::ptr::drop_in_place<"):
        if name.startswith(glue):
            return crate_of(name[len(glue):])
    n = name.lstrip("<&*")
    n = re.sub(r"^(dyn |mut |const |impl )+", "", n)
    m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)::", n)
    if m:
        return m.group(1)
    m = re.match(r"(?:_ZN|_R)?([A-Za-z_][A-Za-z0-9_]*)", n)
    return "(C/other: " + (m.group(1)[:12] if m else "?") + ")" if not n[:1].isupper() else "(other)"


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    top = 25
    if "--top" in sys.argv:
        top = int(sys.argv[sys.argv.index("--top") + 1])
        args = [a for a in args if a != str(top)]
    if not args:
        sys.exit(__doc__)
    new = by_crate(args[0])
    if len(args) == 1:
        for crate, size in new.most_common(top):
            print(f"{size:>10}  {crate}")
        print(f"{sum(new.values()):>10}  total")
        return
    old = by_crate(args[1])
    delta = {c: new.get(c, 0) - old.get(c, 0) for c in set(new) | set(old)}
    print(f"{'base':>10} {'new':>10} {'change':>10}  crate")
    for crate, d in sorted(delta.items(), key=lambda kv: -abs(kv[1]))[:top]:
        print(f"{old.get(crate, 0):>10} {new.get(crate, 0):>10} {d:>+10}  {crate}")
    print(f"{sum(old.values()):>10} {sum(new.values()):>10} {sum(delta.values()):>+10}  total")


if __name__ == "__main__":
    main()
