"""The SmolLM2 teacher's protocol code, the sequence harness and the token-cache table, without
llama.cpp: a seeded fake model goes through the teacher's own streaming writer (answer_batch)."""
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT / "tools" / "teachers"), str(ROOT / "tools" / "bench"), str(ROOT / "tools" / "python")]

import smollm2_teacher  # noqa: E402
import token_cache_table as table  # noqa: E402
from kdcache.hashing import _fmix64, fnv1a64  # noqa: E402

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


def test_uniform_is_format_3_7s_hash():
    for s, i, j, n in [(0, 0, 0, 0), (7, 123, 45, 6), (2**63 + 5, 2**40, 3, 63)]:
        expected = (_fmix64(fnv1a64(struct.pack("<4Q", s, i, j, n))) >> 11) / 2**53
        assert table.uniform(s, np.uint64(i), np.uint64(j), np.uint64(n)) == expected


def test_stored_tail_sum_is_exact_and_the_interval_holds():
    rng = np.random.default_rng(3)
    z = -1.2 * np.log(np.arange(1, 2001))[None, :] * 2 + rng.normal(0, 1, (40, 2000))
    logp1, logp2 = table.log_softmax(z), table.log_softmax(z / 2)
    ids, mask = table.top_ids(logp1, 32)
    totals = table.Totals()
    table.tail_mass_figures(totals, logp1, logp2, ids, mask, 32)
    totals.count = len(z)
    true, stored = totals.mean("tail32.true"), totals.mean("tail32.stored")
    assert abs(stored - true) < 2e-3 * true
    assert totals.mean("tail32.packed") <= true <= totals.mean("tail32.even")
    q, tail = table.kdcache_topk(ids, logp1, mask, 0.5)
    assert table.kl_bucket(ids, q, tail, logp2, mask).mean() < 1e-5
    renorm = table.renormalized(np.take_along_axis(logp1, ids, axis=1), 0.5)
    assert table.kl_bucket(ids, renorm, np.zeros(len(z)), logp2, mask).mean() > 0.1
