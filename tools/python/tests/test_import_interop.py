"""kdcache import from .npy, .safetensors, JSONL and CSV written by Python; Python reads the cache
back (FORMAT.md reader) and gets log_softmax(z / T_w), re-tempered exactly to any T."""
import json
import os
import signal
import struct
import subprocess

import numpy as np
import pytest
from _support import BIN, ROOT, kdcache, run, wait_for_committed


def log_softmax(z, axis=-1):
    z = z - z.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("imp")
    run("prep", ROOT / "fixtures/digits/digits.csv", "--out", d / "d.lmdb", "--feature-columns", "px*", "--label-column", "label",
        "--id-column", "id", "--quiet")
    rng = np.random.default_rng(5)
    logits = rng.normal(0, 3, (1797, 10)).astype(np.float32)
    ids = [kdcache.open(str(d / "d.lmdb")).id(i) for i in range(1797)]
    return d, logits, ids


def write_safetensors(path, array):
    header = {"logits": {"dtype": "F32", "shape": list(array.shape), "data_offsets": [0, array.nbytes]}, "__metadata__": {"by": "test"}}
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + array.astype("<f4").tobytes())


@pytest.mark.parametrize("form", ["npy", "npy-f16", "npy-ids", "safetensors", "jsonl", "csv"])
def test_import_round_trip(setup, tmp_path, form):
    d, logits, ids = setup
    src = tmp_path / "x"
    extra = []
    expected = logits.astype(np.float64)
    if form == "npy":
        src = tmp_path / "x.npy"; np.save(src, logits)
    elif form == "npy-f16":
        src = tmp_path / "x.npy"; np.save(src, logits.astype(np.float16)); expected = logits.astype(np.float16).astype(np.float64)
    elif form == "npy-ids":
        order = np.random.default_rng(1).permutation(1797)
        src = tmp_path / "x.npy"; np.save(src, logits[order])
        (tmp_path / "ids.txt").write_text("\n".join(ids[i] for i in order) + "\n")
        extra = ["--ids", tmp_path / "ids.txt"]
    elif form == "safetensors":
        src = tmp_path / "x.safetensors"; write_safetensors(src, logits)
    elif form == "jsonl":
        src = tmp_path / "x.jsonl"
        src.write_text("".join(json.dumps({"id": ids[i], "logits": logits[i].tolist()}) + "\n" for i in reversed(range(1797))))
    elif form == "csv":
        src = tmp_path / "x.csv"
        src.write_text("id," + ",".join(f"c{c}" for c in range(10)) + "\n" +
                       "".join(ids[i] + "," + ",".join(repr(float(v)) for v in logits[i]) + "\n" for i in range(1797)))
    out = tmp_path / "c.lmdb"
    run("import", src, "--data", d / "d.lmdb", "--out", out, "--dtype", "f32", "--write-temperature", "2", *extra)
    assert run("verify", out, "--data", d / "d.lmdb").returncode == 0
    cache = kdcache.open(str(out))
    stored = np.array([cache.log_probs(i) for i in range(1797)])
    np.testing.assert_allclose(stored, log_softmax(expected / 2), atol=2e-5)
    at4 = np.array([cache.log_probs(i, temperature=4) for i in (0, 77, 1796)])
    np.testing.assert_allclose(at4, log_softmax(expected[[0, 77, 1796]] / 4), atol=2e-5)


def test_probs_at_a_temperature_are_re_tempered_exactly(setup, tmp_path):
    d, logits, _ = setup
    probs = np.exp(log_softmax(logits.astype(np.float64) / 3))
    np.save(tmp_path / "p.npy", probs)
    out = tmp_path / "c.lmdb"
    run("import", tmp_path / "p.npy", "--data", d / "d.lmdb", "--out", out, "--kind", "probs", "--temperature", "3",
        "--dtype", "f32", "--write-temperature", "1")
    cache = kdcache.open(str(out))
    np.testing.assert_allclose(cache.log_probs(5), log_softmax(logits[5].astype(np.float64)), atol=1e-4)


@pytest.mark.parametrize("case,message", [
    ("rows", "x.npy: 1796 rows, the dataset has 1797 samples. Export one row per sample in dataset order, or pass --ids"),
    ("classes", "x.npy: row 0 has 9 values, the dataset has 10 classes"),
    ("nan", "x.npy: sample 3 class 2: nan is not a valid logits value. Fix the teacher's output for this sample"),
    ("id", "x.jsonl: line 2: id 'nope' is not in the dataset"),
    ("missing", "x.jsonl: 1796 samples have no values, the first is sample 1 (id 'd0001')"),
])
def test_bad_imports_name_the_problem_and_write_nothing(setup, tmp_path, case, message):
    d, logits, ids = setup
    if case == "rows":
        np.save(tmp_path / "x.npy", logits[:-1]); src = tmp_path / "x.npy"
    elif case == "classes":
        np.save(tmp_path / "x.npy", logits[:, :9]); src = tmp_path / "x.npy"
    elif case == "nan":
        bad = logits.copy(); bad[3, 2] = np.nan; np.save(tmp_path / "x.npy", bad); src = tmp_path / "x.npy"
    else:
        src = tmp_path / "x.jsonl"
        lines = [json.dumps({"id": ids[0], "logits": logits[0].tolist()})]
        if case == "id":
            lines.append(json.dumps({"id": "nope", "logits": logits[1].tolist()}))
        src.write_text("\n".join(lines) + "\n")
    r = run("import", src, "--data", d / "d.lmdb", "--out", tmp_path / "c.lmdb", check=False)
    assert r.returncode == 1
    assert message in r.stderr, r.stderr
    assert not (tmp_path / "c.lmdb").exists()


def test_kill_9_during_import_then_rerun_equals_an_uninterrupted_import(tmp_path):
    """Issue 3 §4 for import: one commit per sample makes the import slow enough to kill halfway."""

    n = 20_000
    rows = ["id,label,text"] + [f"r{i},{'abc'[i % 3]},w{i % 17} v{i % 5}" for i in range(n)]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    run("prep", tmp_path / "d.csv", "--out", tmp_path / "d.lmdb", "--text-column", "text", "--label-column", "label", "--quiet")
    np.save(tmp_path / "l.npy", np.random.default_rng(3).normal(0, 2, (n, 3)).astype(np.float32))
    args = [str(tmp_path / "l.npy"), "--data", str(tmp_path / "d.lmdb"), "--write-temperature", "2", "--quiet"]
    run("import", *args, "--out", tmp_path / "whole.lmdb")

    out = tmp_path / "killed.lmdb"
    proc = subprocess.Popen([BIN, "import", *args, "--out", str(out), "--commit-every", "1"], stdout=subprocess.DEVNULL)
    done = wait_for_committed(out, "imported", 200, poll=0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 200 <= done < n, f"killed after {done} samples"
    assert run("verify", out).returncode == 0, "what was committed before the kill is intact"
    rerun = run("import", *args, "--out", out)
    already = int(rerun.stdout.split("; ")[1].split()[0])
    assert already >= done, "committed samples are not imported again"
    whole, killed = kdcache.open(str(tmp_path / "whole.lmdb")), kdcache.open(str(out))
    with whole.env.begin(db=whole._dbs["imported"]) as a, killed.env.begin(db=killed._dbs["imported"]) as b:
        assert [(bytes(k), bytes(v)) for k, v in a.cursor()] == [(bytes(k), bytes(v)) for k, v in b.cursor()]


@pytest.mark.parametrize("mistake,warned", [
    (None, False),
    ("rows shuffled", True),
    ("classes reversed", True),
])
def test_outputs_that_do_not_line_up_with_the_dataset_are_flagged(setup, tmp_path, mistake, warned):
    """A good teacher agrees with the labels far above chance; misaligned rows or classes do not."""
    d, _, _ = setup
    ds = kdcache.open(str(d / "d.lmdb"))
    labels = np.array([ds.label(i) for i in range(len(ds))])
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 1, (len(labels), 10)).astype(np.float32)
    logits[np.arange(len(labels)), labels] += 3 * (rng.random(len(labels)) < 0.9)   # right 90 % of the time
    if mistake == "rows shuffled":
        logits = logits[rng.permutation(len(labels))]
    elif mistake == "classes reversed":
        logits = logits[:, ::-1].copy()
    np.save(tmp_path / "x.npy", logits)
    r = run("import", tmp_path / "x.npy", "--data", d / "d.lmdb", "--out", tmp_path / "c.lmdb")
    assert "agreement with the dataset's labels: train " in r.stdout, r.stdout
    assert ("no better than chance" in r.stderr) == warned, r.stderr
    if warned:
        assert "in the dataset's order (0, 1, 2, 3, …" in r.stderr and "or keyed with --ids" in r.stderr, r.stderr
    else:
        test_agreement = float(r.stdout.split(" test ")[1].split()[0].rstrip(","))
        assert test_agreement > 0.8


def test_csv_columns_named_after_labels_are_matched_by_name(setup, tmp_path):
    d, logits, ids = setup
    labels = kdcache.open(str(d / "d.lmdb")).manifest["labels"]
    order = list(reversed(range(10)))                                   # columns in another order
    named = tmp_path / "named.csv"
    named.write_text("id," + ",".join(labels[c] for c in order) + "\n" +
                     "".join(ids[i] + "," + ",".join(repr(float(logits[i][c])) for c in order) + "\n" for i in range(1797)))
    positional = tmp_path / "positional.npy"
    np.save(positional, logits)
    for src, out in ((named, "n.lmdb"), (positional, "p.lmdb")):
        run("import", src, "--data", d / "d.lmdb", "--out", tmp_path / out, "--dtype", "f32")
    a, b = kdcache.open(str(tmp_path / "n.lmdb")), kdcache.open(str(tmp_path / "p.lmdb"))
    np.testing.assert_array_equal(np.array([a.log_probs(i) for i in range(0, 1797, 37)]),
                                  np.array([b.log_probs(i) for i in range(0, 1797, 37)]))

    partly = tmp_path / "partly.csv"
    partly.write_text("id," + ",".join(labels[:9]) + ",other\n" + ids[0] + "," + ",".join(["0"] * 10) + "\n")
    r = run("import", partly, "--data", d / "d.lmdb", "--out", tmp_path / "x.lmdb", check=False)
    assert r.returncode == 1
    assert "column 'other' is not a label of the dataset, but other columns are" in r.stderr, r.stderr
    assert not (tmp_path / "x.lmdb").exists()
