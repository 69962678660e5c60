#!/usr/bin/env python3
"""The longest Swift functions (func / init / computed bodies) under Sources/, by line count from the
declaration to its closing brace: `python3 tools/review/longest_functions.py [ROOT] [-n 10]`."""
import argparse
import re
from pathlib import Path

DECL = re.compile(r"^\s*(?:@\w+(?:\([^)]*\))?\s+)*(?:(?:public|package|internal|private|fileprivate|static|final|override|"
                  r"mutating|nonmutating|convenience|required|@discardableResult|@inlinable|@inline\(__always\))\s+)*"
                  r"(func\s+[^\s(<]+|init[?!]?|deinit)\b")


def body_length(lines, start):
    """Lines from `start` to the brace closing the first `{` at or after it (strings and comments skipped)."""
    depth, opened = 0, False
    for i in range(start, len(lines)):
        line = re.sub(r'"(?:\\.|[^"\\])*"', '""', lines[i].split("//")[0])
        for ch in line:
            if ch == "{":
                depth += 1; opened = True
            elif ch == "}":
                depth -= 1
                if opened and depth == 0:
                    return i - start + 1
        if not opened and i > start and line.strip().endswith(("}", ")")) and "{" not in line and i - start > 6:
            return None   # a protocol requirement or a declaration without a body
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root", nargs="?", default=".")
    ap.add_argument("-n", type=int, default=10)
    args = ap.parse_args()
    found = []
    for path in sorted(Path(args.root, "Sources").rglob("*.swift")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            m = DECL.match(line)
            if m:
                n = body_length(lines, i)
                if n:
                    found.append((n, f"{path.relative_to(args.root)}:{i + 1}", m.group(1).replace("func ", "")))
    for n, where, name in sorted(found, key=lambda t: -t[0])[: args.n]:
        print(f"{n:5d}  {name:32s} {where}")


if __name__ == "__main__":
    main()
