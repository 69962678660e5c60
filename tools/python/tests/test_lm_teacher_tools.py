"""The SmolLM2 teacher's protocol code, the sequence harness and the token-cache table, without
llama.cpp: a seeded fake model goes through the teacher's own streaming writer (answer_batch)."""
import json
import struct
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT / "tools" / "teachers"), str(ROOT / "tools" / "bench"), str(ROOT / "tools" / "python")]

import smollm2_teacher  # noqa: E402
import token_cache_table as table  # noqa: E402

FAKE_TEACHER = '''
import json, sys
import numpy as np
sys.path.insert(0, {teachers!r})
import smollm2_teacher as t

class Fake:
    vocab_size = 300
    def tokens(self, text, index):
        return [ord(c) % 300 for c in text][:40]
    def logits(self, ids):
        rng = np.random.default_rng(len(ids))
        return (rng.normal(0, 3, (len(ids), 300)) - 2 * np.log(np.arange(1, 301))).astype("<f4")

outputs, k = sys.argv[1], int(sys.argv[2])
sys.stdin.buffer.readline()
tok = {{"vocab_sha256": "sha256:" + "0" * 64, "merges_sha256": None, "model_sha256": None, "name": "fake"}}
t.write_line(sys.stdout.buffer, {{"type": "ready", "task": "sequence", "name": "fake", "content_hash": "sha256:x",
    "outputs": outputs, "temperature": 1.0, "vocab_size": 300, "framing": "binary", "inputs": ["text"], "tokenizer": tok}})
for line in sys.stdin.buffer:
    m = json.loads(line)
    if m["type"] == "end":
        break
    t.answer_batch(Fake(), m["samples"], outputs, k, sys.stdout.buffer)
'''


def run_harness(tmp_path, outputs, k):
    script = tmp_path / "fake_teacher.py"
    script.write_text(FAKE_TEACHER.format(teachers=str(ROOT / "tools" / "teachers")))
    csv_path = tmp_path / "texts.csv"
    csv_path.write_text("text\n" + "".join(f"sample number {i} says {'hi ' * i}\n" for i in range(7)) + '""\n')
    out = tmp_path / f"{outputs}.npz"
    command = f"{sys.executable} {script} {outputs} {k}"
    result = subprocess.run([sys.executable, str(ROOT / "tools/teachers/seq_harness.py"), "--exec", command,
                             "--csv", str(csv_path), "--texts", "0", "--batch-size", "3", "--out", str(out)],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout), np.load(out), out


def test_harness_reads_the_teachers_streamed_logits_and_top_k(tmp_path):
    summary, logits_npz, out = run_harness(tmp_path, "logits", 0)
    lengths = np.diff(logits_npz["offsets"])
    assert lengths[-1] == 0 and summary["positions"] == int(np.maximum(lengths - 1, 0).sum())
    rows = np.load(str(out) + ".logits.npy")[: summary["positions"]]
    _, top_npz, _ = run_harness(tmp_path, "top-k", 5)
    keep = np.ones(len(top_npz["ids"]), bool)
    keep[top_npz["offsets"][1:][lengths > 0] - 1] = False  # row L−1 has no target
    ids, logp = smollm2_teacher.top_k_rows(rows, 5)
    assert np.array_equal(top_npz["ids"][keep], ids)
    z = rows.astype(np.float64)
    expected = np.take_along_axis(table.log_softmax(z), ids.astype(np.int64), axis=1)
    assert np.abs(top_npz["logp"][keep] - expected).max() < 1e-5


def test_tokenizer_fingerprint_follows_format_3_6():
    vocab = [b"a", b"\xc4\xa0b"]
    assert smollm2_teacher.lp_sha256(vocab) == "sha256:" + __import__("hashlib").sha256(
        struct.pack("<I", 1) + b"a" + struct.pack("<I", 3) + b"\xc4\xa0b").hexdigest()
    fields = {"vocab_size": 2, "vocab_sha256": "sha256:v", "merges_sha256": None, "model_sha256": None}
    text = "kdcache-tokenizer-1;2;sha256:v;;"
    assert smollm2_teacher.tokenizer_fingerprint(fields) == "sha256:" + __import__("hashlib").sha256(text.encode()).hexdigest()


def _dense_metrics(Q, d):
    Qn = Q / Q.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.where(Qn > 0, Qn * (np.log(Qn) - d.lp), 0.0).sum(axis=1)
        fwd = np.where(d.p > 0, d.p * (d.lp - np.log(Qn)), 0.0).sum(axis=1)
    return kl, fwd, 0.5 * np.abs(Q - d.p).sum(axis=1)


def test_sparse_metrics_equal_the_dense_sums():
    rng = np.random.default_rng(0)
    P, V, k = 5, 300, 7
    d = table.Dense(rng.normal(size=(P, V)) * 3, 1.0)
    ids = table.top_ids(d.lp, k)
    q = np.exp(np.take_along_axis(d.lp, ids, axis=1)) * 1.001
    tail = 1 - q.sum(axis=1) + 5e-4                          # a target summing to slightly over 1
    got = table.metrics(table.Target.dense_rows(ids, q, tail, V), d)
    Q = np.tile((tail / (V - k))[:, None], (1, V))
    np.put_along_axis(Q, ids, q, axis=1)
    for name, want in zip(("kl", "fwd", "tv"), _dense_metrics(Q, d)):
        assert np.abs(got[name] - want).max() < 1e-9, name
    rows, sid, sq = np.array([0, 0, 1, 2, 2, 2, 3, 4]), np.array([1, 5, 2, 0, 3, 9, 4, 4]), np.array([.5, .5, 1, .2, .3, .5, 1, 1.])
    got = table.metrics(table.Target(rows, sid, sq, np.zeros(P), np.zeros(P), V), d)
    Q = np.zeros((P, V))
    Q[rows, sid] = sq
    kl, _, tv = _dense_metrics(Q, d)
    assert np.abs(got["kl"] - kl).max() < 1e-9 and np.abs(got["tv"] - tv).max() < 1e-9
    assert np.isinf(got["fwd"]).all()                         # zero on ids the teacher does not give zero


def test_tail_figures_of_an_exact_record():
    rng = np.random.default_rng(3)
    z = -1.2 * np.log(np.arange(1, 2001))[None, :] * 2 + rng.normal(0, 1, (40, 2000))
    d1, d2 = table.Dense(z, 1.0), table.Dense(z, 2.0)
    ids = table.top_ids(d1.lp, 32)
    mask = np.ones(z.shape, bool)
    np.put_along_axis(mask, ids, False, axis=1)
    lse = lambda x: np.log(np.where(mask, np.exp(x), 0.0).sum(axis=1))  # noqa: E731
    rec = SimpleNamespace(ids=ids, log_p=np.take_along_axis(d1.lp, ids, axis=1), log_tail=lse(d1.lp),
                          sums=np.stack([lse(d1.lp), lse(0.5 * d1.lp), lse(0.25 * d1.lp)], axis=1))
    totals = table.Totals()
    table.tail_figures(totals, rec, d2, 32, 2000, [1.0, 2.0, 4.0])
    totals.count = len(z)
    true = totals.mean("tail32.true")
    assert abs(totals.mean("tail32.stored") - true) < 1e-9 * true
    assert totals.mean("tail32.lo") <= true <= totals.mean("tail32.hi") == totals.mean("tail32.even")
