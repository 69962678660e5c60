"""Shared by the interop tests: where the repository and the kdcache binary are, and a runner."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
BIN = os.environ.get("KDCACHE_BIN", str(ROOT / ".build/debug/kdcache"))
sys.path.insert(0, str(ROOT / "tools/python"))

import kdcache  # noqa: E402,F401  (re-exported for the tests)


def run(*args, check=True, env=None):
    """Runs `kdcache ARGS…`; raises with both output streams when it fails and `check` is set."""
    r = subprocess.run([BIN, *map(str, args)], capture_output=True, text=True, env=env)
    if check and r.returncode != 0:
        raise AssertionError(r.stdout + r.stderr)
    return r


def wait_for_committed(cache, teacher, at_least, timeout=60.0, poll=0.05):
    """Polls `kdcache info` until `teacher` has `at_least` committed samples in `cache` (or the
    timeout passes); returns the count last seen. For tests that kill a writer halfway."""
    import json
    import time
    done, deadline = 0, time.time() + timeout
    while done < at_least and time.time() < deadline:
        time.sleep(poll)
        r = run("info", cache, "--json", check=False)
        if r.returncode == 0:
            done = sum(b - a for a, b in json.loads(r.stdout)["soft_labels"]["teachers"][teacher]["completed"])
    return done


def prep_three_classes(d, n):
    """Preps `d/d.lmdb`: n text rows over classes a, b, c (texts that tell them apart), 2^8 buckets."""
    rows = ["id,label,text"] + [f"r{i},{['a', 'b', 'c'][i % 3]},{['red apple', 'blue sky', 'green tree'][i % 3]} n{i % 17}" for i in range(n)]
    (d / "d.csv").write_text("\n".join(rows) + "\n")
    run("prep", d / "d.csv", "--out", d / "d.lmdb", "--text-column", "text", "--label-column", "label", "--hash-bits", "8", "--quiet")
    return d / "d.lmdb"
