"""The tools of the 10 M-token benchmark (tools/bench/token_scale.py): the table-driven tiny LM teacher
gives the same float64 rows as the per-position loop it replaced, and the Debian corpus script parses
Packages stanzas (continuation lines, one text per package, Section as label)."""
import csv
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tools/teachers"))
sys.path.insert(0, str(ROOT / "tools/fixtures"))
import tiny_lm_teacher as tlm  # noqa: E402
import make_debian_descriptions as mdd  # noqa: E402

V = tlm.V


def loop_logits(texts, tokens):
    """The teacher's model written as a loop over positions (the definition in its docstring)."""
    uni, bi, tri = np.zeros(V), {}, {}
    for text in texts:
        t = tlm.tokenize(text)
        for j, x in enumerate(t):
            uni[x] += 1
            if j >= 1:
                bi.setdefault(t[j - 1], np.zeros(V))[x] += 1
            if j >= 2:
                tri.setdefault((t[j - 2], t[j - 1]), np.zeros(V))[x] += 1
    norm = lambda c: np.zeros(V) if c is None or c.sum() == 0 else c / c.sum()  # noqa: E731
    rows = np.empty((len(tokens), V))
    for j in range(len(tokens)):
        t3 = norm(tri.get((tokens[j - 1], tokens[j]))) if j >= 1 else np.zeros(V)
        rows[j] = np.log(0.6 * t3 + 0.25 * norm(bi.get(tokens[j])) + 0.1 * norm(uni) + 0.05 / V)
    return rows


def test_table_teacher_equals_the_loop_bit_for_bit():
    rng = np.random.default_rng(3)
    words = ["the", "cat", "library", "données", "x", "", "zz\n", "€"]
    texts = [" ".join(rng.choice(words, rng.integers(0, 12))) for _ in range(60)]
    model = tlm.Trigram(texts)
    for probe in texts[:20] + ["", "unseen qqq context", "ab"]:
        tokens = tlm.tokenize(probe)
        assert model.logits(tokens).tobytes() == loop_logits(texts, tokens).tobytes(), probe


def test_table_teacher_with_no_texts_is_the_uniform_floor():
    tokens = tlm.tokenize("abc")
    assert np.array_equal(tlm.Trigram([]).logits(tokens), loop_logits([], tokens))


def test_debian_descriptions_parse_stanzas(tmp_path):
    packages = ("Package: b\nSection: utils\nDescription: second tool\n long text\n .\n more\n\n"
                "Package: a\nDescription: first\nTag: x\n\n"
                "Package: b\nSection: other\nDescription: a duplicate\n")
    (tmp_path / "p.txt").write_text(packages)
    subprocess.run(["lz4", "-q", str(tmp_path / "p.txt"), str(tmp_path / "x_Packages.lz4")], check=True)
    assert mdd.descriptions(str(tmp_path)) == [("a", "unknown", "first"), ("b", "utils", "second tool\nlong text\n\nmore")]
    out = tmp_path / "d.csv"
    subprocess.run([sys.executable, str(ROOT / "tools/fixtures/make_debian_descriptions.py"), str(out), "--repeat", "2",
                    "--lists", str(tmp_path)], check=True, capture_output=True)
    rows = list(csv.reader(out.open(newline="", encoding="utf-8")))
    assert [r[0] for r in rows[1:]] == ["a", "b", "a#1", "b#1"] and rows[4][2] == rows[2][2]
