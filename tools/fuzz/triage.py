#!/usr/bin/env python3
"""Groups the crash inputs of fuzz targets by cause and keeps the smallest input of each.

    triage.py BINARY TARGET CRASH_DIR [--keep-all]

Replays every file of CRASH_DIR through BINARY (the libFuzzer build of kdcache-fuzz, one input
per run), reads the cause from its output — the trap or oracle message, and the first stack frame
in Sources/ outside KDFuzz (inside it for an oracle failure) — and deletes all but the smallest input of each cause (unless
--keep-all; `manual-*` inputs are always kept). Prints one line per cause:

    <count> × <message> at <function> (<file:line>)  e.g. crash-… (N bytes)
"""
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

FRAME = re.compile(r"^\s*#\d+ 0x[0-9a-f]+ in (\S+) (\S+)")
MESSAGE = re.compile(r"(Fatal error.*|oracle: .*|ERROR: AddressSanitizer: [\w-]+|ERROR: libFuzzer: [\w -]+|"
                     r"Assertion failed.*|Precondition failed.*|.*: Assertion .* failed.*|out-of-memory \(malloc\(\d+\)\)|"
                     r"requested allocation size .* exceeds .*)")


def demangle(symbol):
    try:
        out = subprocess.run(["swift", "demangle", "--simplified", "--compact", symbol], capture_output=True, text=True, timeout=20)
        name = out.stdout.strip() or symbol
    except (OSError, subprocess.TimeoutExpired):
        name = symbol
    return re.sub(r"\s+", " ", name)[:140]


def cause(binary, target, path):
    env = dict(os.environ, KDFUZZ_TARGET=target, SWIFT_BACKTRACE="enable=no",
               ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=0")
    try:
        r = subprocess.run([binary, "-runs=1", str(path)], capture_output=True, text=True, errors="replace", env=env, timeout=120)
        text, code = r.stdout + r.stderr, r.returncode
    except subprocess.TimeoutExpired:
        return ("timeout (over 120 s)", "?", "?"), None
    if code == 0:
        return None, 0
    message = "crash"
    for line in text.splitlines():
        m = MESSAGE.search(line)
        if m:
            message = re.sub(r"0x[0-9a-f]+", "0x…", m.group(1)).strip()[:160]
            if not message.startswith("ERROR: libFuzzer"):
                break
    where, function = "?", "?"
    oracle = "oracle:" in message
    for line in text.splitlines():
        m = FRAME.match(line)
        if not m:
            continue
        symbol, location = m.groups()
        if "/Sources/" in location and (oracle or "/Sources/KDFuzz/" not in location):
            where, function = location.split("/Sources/")[1], demangle(symbol)
            break
        if "liblmdb" in location and where == "?":
            where, function = "liblmdb", symbol
    return (message, function, where), code


def main():
    binary, target, directory = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    keep_all = "--keep-all" in sys.argv
    groups = defaultdict(list)
    fixed = []
    for path in sorted(p for p in directory.iterdir() if p.is_file()):
        key, code = cause(binary, target, path)
        if key is None:
            fixed.append(path)
        else:
            groups[key].append(path)
    for (message, function, where), paths in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        # Hand-made inputs first, then the smallest; among equals the oldest (already committed).
        paths.sort(key=lambda p: (not p.name.startswith("manual-"), p.stat().st_size, p.stat().st_mtime, p.name))
        keep = paths[0]
        if not keep_all:
            for p in paths[1:]:
                if not p.name.startswith("manual-"):
                    p.unlink()
        print(f"  {len(paths)} × {message} at {function} ({where})  e.g. {keep.name} ({keep.stat().st_size} bytes)")
    for p in fixed:
        print(f"  no longer crashes: {p.name}")
    print(f"  distinct causes: {len(groups)}")


if __name__ == "__main__":
    main()
