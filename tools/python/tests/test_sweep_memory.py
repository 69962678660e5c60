"""`sweep --memory`: the sweep's peak resident set (VmHWM of /proc/PID/status) stays under a small
budget that its whole groups would exceed, with the same results; and `plan` prints the same budget
and cut before anything runs.

VmHWM is read two ways: polled by the test every 5 ms while the child runs, and as the child's own
last word (`memory: peak resident …`, read from /proc/self/status after the best student is
saved). Not the child's ru_maxrss: the kernel carries the high-water mark of the forked copy of
this Python process into it, hundreds of MiB late in a test session."""
import json
import os
import random
import re
import subprocess
import time

from _support import BIN, run


def wide_stores(d):
    """A text store whose students are memory-heavy but cheap to train: 400 rows of 10 random words
    from 20,000 (≈ 6k buckets in use of 2^14), three classes; a linear teacher."""
    rng = random.Random(5)
    rows = ["id,label,text"] + [f"r{i},{'abc'[i % 3]},{' '.join(f'w{rng.randrange(20000)}' for _ in range(10))} topic{i % 3}"
                                for i in range(400)]
    (d / "w.csv").write_text("\n".join(rows) + "\n")
    run("prep", d / "w.csv", "--out", d / "w.lmdb", "--text-column", "text", "--label-column", "label", "--id-column", "id",
        "--hash-bits", "14", "--quiet")
    run("teach", "--data", d / "w.lmdb", "--out", d / "t.lmdb", "--teacher", "linear", "--epochs", "2", "--ensemble", "1", "--quiet")


GRID = ["--student", "fasttext:dim=128", "--temperature", "1,2,4", "--alpha", "0,0.5,0.9", "--lr", "0.1,0.3",
        "--epochs", "1", "--seeds", "1", "--batch-size", "32"]


def vmhwm(pid):
    """VmHWM of a live process in bytes (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def sweep_peak(d, out, memory):
    """Runs the sweep as a child; returns (its VmHWM polled while it ran, the VmHWM it reported at
    its end, its stderr), both in bytes."""
    args = [BIN, "sweep", "--data", d / "w.lmdb", "--logits", d / "t.lmdb", *GRID, "--memory", memory, "--workers", "2", "--out", d / out]
    with open(d / f"{out}.err", "w") as err:
        p = subprocess.Popen([str(a) for a in args], stdout=subprocess.DEVNULL, stderr=err)
        polled = 0
        while p.poll() is None:
            polled = max(polled, vmhwm(p.pid))
            time.sleep(0.005)
    text = (d / f"{out}.err").read_text()
    assert p.returncode == 0, text
    said = re.search(r"memory: peak resident ([0-9.]+) MiB", text)
    assert said, text
    return polled, int(float(said.group(1)) * (1 << 20)), text


def timeless(path):
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for r in lines:
        r.pop("wallSeconds"), r.pop("samplesPerSecond")
    return sorted(json.dumps(r, sort_keys=True) for r in lines)


def test_peak_rss_stays_under_a_small_budget_with_the_same_results(tmp_path):
    wide_stores(tmp_path)
    budget = 80 << 20
    polled, small, said = sweep_peak(tmp_path, "small", "80M")
    _, large, _ = sweep_peak(tmp_path, "large", "64G")
    assert "cut into" in said, said
    assert polled > 0 and polled <= small + (1 << 20), f"polled {polled >> 20} MiB, reported {small >> 20} MiB"
    assert small <= budget, f"peak {small >> 20} MiB over the 80 MiB budget; {said}"
    assert large > budget, f"the test needs whole groups over the budget: {large >> 20} MiB"
    assert timeless(tmp_path / "small/results.jsonl") == timeless(tmp_path / "large/results.jsonl")
    plan = run("plan", "--data", tmp_path / "w.lmdb", "--logits", tmp_path / "t.lmdb", *GRID, "--memory", "80M").stdout
    assert "memory budget: 80.0 MiB" in plan and "chunks of at most" in plan, plan
    print(f"peak RSS: {small >> 20} MiB under an 80 MiB budget, {large >> 20} MiB without; {said.strip().splitlines()[-1]}")


def test_a_budget_too_small_for_one_configuration_is_refused(tmp_path):
    wide_stores(tmp_path)
    r = run("sweep", "--data", tmp_path / "w.lmdb", "--logits", tmp_path / "t.lmdb", *GRID, "--memory", "40M", "--out", tmp_path / "o", check=False)
    assert r.returncode != 0
    assert "over the memory budget of 40.0 MiB" in r.stderr and "Raise --memory to at least" in r.stderr, r.stderr
    assert not (tmp_path / "o/results.jsonl").exists()
