#!/usr/bin/env python3
"""bench/resident-code.py — which crates' code is resident in a running process.

Reads /proc/PID/pagemap (root) for the executable's code mapping (r-xp), takes
every page that is mapped (what VmRSS/RssFile count, fault-around included)
and splits each page's 4 KiB over the code symbols it holds (nm, grouped by
crate as bench/text-by-crate.py does); bytes between symbols count as
"(padding)".

Usage: sudo bench/resident-code.py PID [--top N]
"""

import bisect
import os
import struct
import subprocess
import sys
from collections import Counter

sys.dont_write_bytecode = True  # no __pycache__ in bench/
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
crate_of = __import__("text-by-crate").crate_of

PAGE = os.sysconf("SC_PAGE_SIZE")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    pid = sys.argv[1]
    top = int(sys.argv[sys.argv.index("--top") + 1]) if "--top" in sys.argv else 20
    exe = os.readlink(f"/proc/{pid}/exe")
    # The code mapping: its start address and file offset.
    for line in open(f"/proc/{pid}/maps"):
        parts = line.split()
        if len(parts) >= 6 and parts[1] == "r-xp" and parts[5] == exe:
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            offset = int(parts[2], 16)
            break
    else:
        sys.exit(f"no code mapping of {exe} in {pid}")
    # ELF virtual address = file offset + (p_vaddr - p_offset) of the code segment.
    shift = None
    for line in subprocess.run(["readelf", "-lW", exe], capture_output=True, text=True).stdout.splitlines():
        f = line.split()
        if f[:1] == ["LOAD"] and "E" in f[6:-1]:
            shift = int(f[2], 16) - int(f[1], 16)
    if shift is None:
        sys.exit("no executable LOAD segment")
    syms = []
    seen = set()
    out = subprocess.run(["nm", "-S", "-C", "--defined-only", exe], capture_output=True, text=True).stdout
    for line in out.splitlines():
        p = line.split(" ", 3)
        if len(p) < 4 or p[2] not in ("t", "T", "W", "w") or p[0] in seen:
            continue
        seen.add(p[0])
        syms.append((int(p[0], 16), int(p[1], 16), crate_of(p[3])))
    syms.sort()
    starts = [s[0] for s in syms]
    resident = Counter()
    pages = 0
    with open(f"/proc/{pid}/pagemap", "rb") as pm:
        pm.seek(lo // PAGE * 8)
        entries = pm.read((hi - lo) // PAGE * 8)
    for i in range((hi - lo) // PAGE):
        (entry,) = struct.unpack_from("<Q", entries, i * 8)
        if not entry >> 63 & 1:
            continue
        pages += 1
        va = offset + i * PAGE + shift
        end = va + PAGE
        covered = 0
        j = max(bisect.bisect_right(starts, va) - 1, 0)
        while j < len(syms) and syms[j][0] < end:
            a, size, crate = syms[j]
            overlap = min(a + size, end) - max(a, va)
            if overlap > 0:
                resident[crate] += overlap
                covered += overlap
            j += 1
        resident["(padding)"] += PAGE - covered
    print(f"{exe}: {pages * PAGE // 1024} KiB of {(hi - lo) // 1024} KiB code mapping resident")
    for crate, size in resident.most_common(top):
        print(f"{size // 1024:>8} KiB  {crate}")


if __name__ == "__main__":
    main()
