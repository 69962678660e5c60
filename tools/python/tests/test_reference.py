"""The reference numbers the Swift loss and optimizer tests use must be what the numpy script computes."""
import json
import subprocess
import sys
from _support import ROOT


def test_reference_fixture_is_current():
    fresh = subprocess.run([sys.executable, str(ROOT / "tools/reference/kd_reference.py"), "-"],
                           check=True, capture_output=True, text=True).stdout
    assert json.loads(fresh) == json.loads((ROOT / "fixtures/reference/kd_cases.json").read_text())
