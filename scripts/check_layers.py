#!/usr/bin/env python3
"""The layering rule of docs/ARCHITECTURE.md, checked: every `#include "layer/..."` in src/
points down (or within its own layer), the public headers include only the public API and the
standard library, and util includes nothing of larder's. Prints each violation and exits 1 if
there is one. Usage: scripts/check_layers.py [SOURCE_ROOT]"""
import pathlib
import re
import sys

# Lowest first. A layer may include its own headers and those of lower layers only; layers of one
# rank (kv, stats) are independent of each other.
RANK = {"util": 0, "kv": 1, "stats": 1, "remote": 1, "engine": 2, "core": 3, "shared": 4, "api": 5,
        "trace": 6}
INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.M)


def violations(root):
    found = []
    src = root / "src"
    for path in sorted(src.rglob("*")):
        if path.suffix not in (".hpp", ".cpp", ".h", ".cc"):
            continue
        layer = path.relative_to(src).parts[0]
        if layer not in RANK:
            found.append(f"{path.relative_to(root)}: folder '{layer}' is not a known layer")
            continue
        for target in INCLUDE.findall(path.read_text()):
            top = target.split("/")[0]
            where = f"{path.relative_to(root)}: includes \"{target}\""
            if top == "larder":
                if layer == "util":
                    found.append(f"{where}: util must not depend on the public API")
            elif top not in RANK:
                found.append(f"{where}: not a layer's header")
            elif top != layer and RANK[top] >= RANK[layer]:
                found.append(f"{where}: {layer} (rank {RANK[layer]}) may not include "
                             f"{top} (rank {RANK[top]})")
    for path in sorted((root / "include" / "larder").glob("*.hpp")):
        for target in INCLUDE.findall(path.read_text()):
            if not target.startswith("larder/"):
                found.append(f"{path.relative_to(root)}: includes \"{target}\": the public "
                             "headers include only the public API")
    return found


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    found = violations(root)
    for line in found:
        print(line)
    print(f"layers: {len(found)} violation(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
