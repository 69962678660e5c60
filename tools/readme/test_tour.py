"""README.md's tour, run as written, so that it cannot rot.

The commands come from README.md itself (never a second copy): the ```sh block of the "A tour"
section and the ```python block of its "From Python" subsection. The sh block runs under
`bash` with `set -euo pipefail`, then the Python block runs with the venv's Python, both in a fresh
temporary directory that holds what a user has at the repository root: symlinks to fixtures/,
tools/, Makefile, .build-venv and .build/release/kdcache.

One line is not run as written: the build line (BUILD_LINE below) is replaced by
`K=<the release binary>` (KDCACHE_BIN; `make test-readme` builds it just before), so the test does
not build a second copy of kdcache. Every other line runs exactly as a user would paste it.

Run it with `make test-readme` (a few minutes; not part of `make test`).
"""
import csv
import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("KDCACHE_BIN", ROOT / ".build/release/kdcache")).resolve()
BUILD_LINE = "swift build -c release --product kdcache && K=.build/release/kdcache"
MARK = "+ README.md:"


def fenced_blocks(markdown: str):
    """(heading, language, first line number, body) of every fenced code block, where heading is the
    text of the last heading above it. Headings inside code blocks do not count."""
    heading, fence, language, start, body = None, None, None, 0, []
    for number, line in enumerate(markdown.splitlines(), start=1):
        if fence is None:
            opening = re.match(r"^(`{3,}|~{3,})\s*([\w+-]*)", line)
            if opening:
                fence, language, start, body = opening.group(1), opening.group(2), number + 1, []
            elif line.startswith("#"):
                heading = line.lstrip("#").strip()
        elif line.strip().startswith(fence[0] * len(fence)) and line.strip().strip(fence[0]) == "":
            yield heading, language, start, "\n".join(body) + "\n"
            fence = None
        else:
            body.append(line)
    assert fence is None, "README.md: a code block is not closed"


def the_block(heading_prefix: str, language: str):
    """The only block of `language` under the heading starting with `heading_prefix`, with its line."""
    found = [(start, body) for heading, lang, start, body in fenced_blocks((ROOT / "README.md").read_text())
             if heading and heading.startswith(heading_prefix) and lang == language]
    assert len(found) == 1, f"README.md: expected one ```{language} block under '{heading_prefix}', found {len(found)}"
    return found[0]


def segments(log: str):
    """The combined output split at each traced command: [(command, its output)]."""
    out = []
    for line in log.splitlines():
        if line.startswith(MARK):
            out.append([line.split(": ", 1)[1] if ": " in line else line, []])
        elif out:
            out[-1][1].append(line)
    return [(command, "\n".join(lines)) for command, lines in out]


def output_of(tour, needle: str) -> str:
    """The output of the one traced command containing `needle`."""
    found = [output for command, output in segments(tour["log"]) if needle in command]
    assert len(found) == 1, f"expected one command containing {needle!r}, found {len(found)}:\n{tour['log'][-3000:]}"
    return found[0]


@pytest.fixture(scope="module")
def tour(tmp_path_factory):
    assert BIN.is_file(), f"{BIN}: build it first (make test-readme does)"
    d = tmp_path_factory.mktemp("tour")
    for name in ("fixtures", "tools", "Makefile", ".build-venv"):
        (d / name).symlink_to(ROOT / name)
    (d / ".build/release").mkdir(parents=True)
    (d / ".build/release/kdcache").symlink_to(BIN)

    start, sh = the_block("A tour", "sh")
    lines = sh.splitlines()
    assert lines.count(BUILD_LINE) == 1, f"README.md: the tour's build line is no longer {BUILD_LINE!r}; update this test"
    lines[lines.index(BUILD_LINE)] = f"K={shlex.quote(str(BIN))}"
    # One preamble line, so that LINENO - 1 + start is the README line of each traced command.
    script = (f"set -euo pipefail; PS4='{MARK}$((LINENO - 1 + {start - 1})): '; set -x\n" + "\n".join(lines) + "\n")
    (d / "tour.sh").write_text(script)
    env = {k: v for k, v in os.environ.items() if k not in ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX", "MAKEFLAGS", "MAKELEVEL")}
    sh_run = subprocess.run(["bash", "tour.sh"], cwd=d, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, timeout=1200)
    assert sh_run.returncode == 0, f"the tour stopped (exit {sh_run.returncode}) at its last traced command:\n{sh_run.stdout[-4000:]}"

    py_start, py = the_block("From Python", "python")
    (d / "tour.py").write_text("\n" * (py_start - 1) + py)  # tracebacks then give README.md's line numbers
    py_run = subprocess.run([str(d / ".build-venv/bin/python"), "tour.py"], cwd=d, env=env, capture_output=True, text=True,
                            timeout=300)
    assert py_run.returncode == 0, f"README.md's Python block failed:\n{py_run.stdout}\n{py_run.stderr}"
    return {"dir": d, "log": sh_run.stdout}


def kdcache(tour, *args):
    return subprocess.run([str(BIN), *args], cwd=tour["dir"], capture_output=True, text=True)


def labels():
    with open(ROOT / "fixtures/fortunes/fortunes.csv", newline="") as f:
        return {row["label"] for row in csv.DictReader(f)}


def test_every_command_ran_and_was_traced(tour):
    commands = [command for command, _ in segments(tour["log"])]
    for sub in ("prep", "plan", "teach", "import", "sweep", "eval", "predict", "info", "verify", "export", "diff", "fidelity"):
        assert any(re.search(rf"kdcache {sub} ", c) for c in commands), f"no traced `kdcache {sub}` in the tour"


def test_the_cache_verifies(tour):
    out = output_of(tour, "verify teacher.lmdb")
    assert "teacher.lmdb: valid" in out, out
    assert "FAIL" not in out, out


def test_the_logits_it_imports_were_made_by_the_tour(tour):
    import numpy as np
    logits = np.load(tour["dir"] / "logits.npy")
    rows = sum(1 for _ in open(ROOT / "fixtures/fortunes/fortunes.csv")) - 1
    assert logits.shape == (rows, len(labels())), logits.shape
    assert (tour["dir"] / "imported.lmdb").is_file()
    r = kdcache(tour, "verify", "imported.lmdb", "--data", "data.lmdb")
    assert r.returncode == 0 and "imported.lmdb: valid" in r.stdout, r.stdout + r.stderr


def test_the_sweep_wrote_its_report_and_best_student(tour):
    runs = tour["dir"] / "runs/s1"
    assert "<svg" in (runs / "report.html").read_text()
    card = json.loads((runs / "best-student.json").read_text())
    assert card, "best-student.json is empty"
    assert (runs / "best-student.safetensors").stat().st_size > 0


def test_predict_prints_a_label(tour):
    out = output_of(tour, "predict runs/s1/best-student.json")
    line = next((l for l in out.splitlines() if l.endswith("\tthe compiler crashed again")), None)
    assert line is not None, out
    predicted = [part.rsplit(" ", 1)[0] for part in line.split("\t")[0].split(", ")]
    assert len(predicted) == 2 and set(predicted) <= labels(), line


def test_fidelity_finds_the_cache_fresh(tour):
    out = output_of(tour, " fidelity sk.lmdb")
    assert "100 samples rerun" in out and "fresh: the cache matches the teacher" in out, out


def test_the_python_writer_makes_a_cache_verify_accepts(tour):
    r = kdcache(tour, "verify", "mine.lmdb", "--data", "data.lmdb")
    assert r.returncode == 0 and "mine.lmdb: valid" in r.stdout, r.stdout + r.stderr


def test_the_python_writers_cache_trains_students(tour):
    r = kdcache(tour, "sweep", "--data", "data.lmdb", "--logits", "mine.lmdb", "--student", "linear", "--temperature", "2",
                "--alpha", "0.5", "--lr", "0.3", "--epochs", "2", "--seeds", "1", "--out", "runs/mine", "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tour["dir"] / "runs/mine/best-student.json").is_file()


@pytest.fixture(scope="module")
def lm_tour(tour):
    """README.md's "Language models" blocks, run as written after the tour, in the tour's directory."""
    d = tour["dir"]
    start, sh = the_block("Language models", "sh")
    script = (f"set -euo pipefail; K={shlex.quote(str(BIN))}; PY=.build-venv/bin/python; "
              f"PS4='{MARK}$((LINENO - 1 + {start - 1})): '; set -x\n" + sh)
    (d / "lm.sh").write_text(script)
    sh_run = subprocess.run(["bash", "lm.sh"], cwd=d, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1200)
    assert sh_run.returncode == 0, f"the LM block stopped (exit {sh_run.returncode}):\n{sh_run.stdout[-4000:]}"
    py_start, py = the_block("Language models", "python")
    (d / "lm.py").write_text("\n" * (py_start - 1) + py)
    py_run = subprocess.run([str(d / ".build-venv/bin/python"), "lm.py"], cwd=d, capture_output=True, text=True, timeout=300)
    assert py_run.returncode == 0, f"README.md's LM Python block failed:\n{py_run.stdout}\n{py_run.stderr}"
    return {"dir": d, "log": sh_run.stdout}


def test_the_sequence_caches_verify_and_say_what_they_hold(lm_tour):
    out = output_of(lm_tour, "verify lm.lmdb")
    assert "lm.lmdb: valid" in out and "Σ p + tail = 1 at every position" in out, out
    assert "the most probable id is the next token" in out, out
    info = output_of(lm_tour, "info lm.lmdb")
    assert "sequence top-k, k = 16, V = 260" in info and "declared T = 1.0, 2.0, 4.0" in info, info
    r = kdcache(lm_tour, "verify", "lm-sampled.lmdb", "--data", "data.lmdb")
    assert r.returncode == 0 and "lm-sampled.lmdb: valid" in r.stdout, r.stdout + r.stderr
    first = json.loads((lm_tour["dir"] / "lm.jsonl").open().readline())
    assert len(first["positions"]) == len(first["tokens"]) - 1, "one distribution per position with a next token"


def test_the_token_sweep_compares_the_caches_against_dense(lm_tour):
    out = output_of(lm_tour, "sweep --data data.lmdb --logits lm-8.lmdb")
    assert "reference teacher: lm-dense.lmdb" in out, out
    for label in ("top-k:8", "top-k:16", "sampled:32", "dense", "CE only"):
        assert label in out, (label, out)
    assert "undetermined" not in out, out                     # two seeds of dense KD: the bar exists
    runs = [json.loads(line) for line in (lm_tour["dir"] / "runs/lm/results.jsonl").read_text().splitlines()]
    assert len(runs) == 2 + 4 * 2 * 2, len(runs)              # α = 0 once per seed, then 4 caches × 2 T × 2 seeds
    assert {r["record"] for r in runs} == {"none", "top-k", "sampled", "dense"}
    assert (lm_tour["dir"] / "runs/lm/report.html").is_file()
