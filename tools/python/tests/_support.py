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
