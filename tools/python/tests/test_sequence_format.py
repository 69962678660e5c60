"""Sequence records and manifests (FORMAT.md §1.1, §1.2, §3.6, §3.7): every check refuses a crafted
bad input with its own message; tokenizer fingerprints; the writer's resume and layout rules."""
import copy
import json
import struct

import numpy as np
import pytest

from _sequence_support import V, dataset, recrc, sequences, toy_tokenizer, write_cache

import kdcache
from kdcache.manifest import softlabel_manifest_problems
from kdcache.tokens import SequenceLayout, decode_sequence, decode_u24, encode_sampled, encode_top_k, encode_u24

TOPK = SequenceLayout(3, "f16", 2, 1, V, (0.5,))
SAMPLED = SequenceLayout(4, "f32", 4, 1, V, (2.0,))
TOKENS = np.array([1, 7, 3, 9])


def good_top_k(**edit):
    """A valid 4-token top-2 f16 record of sample 5 with one tail sum, some fields replaced."""
    f = dict(tokens=TOKENS, ids=np.array([[4, 2], [0, 1], [9, 8]]), log_p=np.array([[-0.5, -1.5], [-1.0, -1.0], [-0.2, -3.0]]),
             log_tail=np.array([-2.0, -1.5, -2.5]), sums=np.array([[0.5], [0.8], [0.1]]))
    f.update(edit)
    return encode_top_k(f["tokens"], f["ids"], f["log_p"], f["log_tail"], f["sums"], "f16", 5)


def good_sampled(**edit):
    """A valid 4-token N = 4 f32 record of sample 5 with one log-sum, some fields replaced."""
    f = dict(tokens=TOKENS, d=[2, 1, 3], ids=[3, 8, 5, 1, 2, 40], counts=[3, 1, 4, 1, 2, 1],
             log_p=[-0.3, -2.0, -0.1, -2.0, -1.0, -3.0], sums=[[-0.4], [-0.2], [-0.9]])
    f.update(edit)
    return encode_sampled(f["tokens"], f["d"], f["ids"], f["counts"], f["log_p"], f["sums"], 4, "f32", 5)


def test_u24_round_trips_every_byte_position():
    ids = np.array([0, 1, 255, 256, 65535, 65536, (1 << 24) - 1, 0x123456])
    assert decode_u24(encode_u24(ids), 0, len(ids)).tolist() == ids.tolist()


def test_valid_records_decode_to_their_fields():
    r = decode_sequence(good_top_k(), 5, TOPK)
    assert r.tokens.tolist() == TOKENS.tolist() and r.ids.tolist() == [[4, 2], [0, 1], [9, 8]]
    assert r.log_tail.tolist() == [-2.0, -1.5, -2.5] and r.sums[:, 0].tolist() == np.float16([0.5, 0.8, 0.1]).tolist()
    s = decode_sequence(good_sampled(), 5, SAMPLED)
    assert s.distinct.tolist() == [2, 1, 3] and s.ids.tolist() == [3, 8, 5, 1, 2, 40] and s.counts.tolist() == [3, 1, 4, 1, 2, 1]


def _patch(buf, offset, fmt, value):
    b = bytearray(buf)
    struct.pack_into(fmt, b, offset, value)
    return recrc(bytes(b), 5)


TOP_K_CASES = [
    ("version", lambda: _patch(good_top_k(), 0, "<B", 2), "record version 2"),
    ("kind", lambda: _patch(good_top_k(), 1, "<B", 4), "kind 4"),
    ("dtype", lambda: _patch(good_top_k(), 2, "<B", 1), "dtype 1"),
    ("R", lambda: _patch(good_top_k(), 3, "<B", 2), "R 2"),
    ("k", lambda: _patch(good_top_k(), 16, "<H", 3), "k/N 3"),
    ("reserved", lambda: _patch(good_top_k(), 18, "<H", 1), "reserved field is 1"),
    ("L above 2^20", lambda: _patch(good_top_k(), 8, "<I", (1 << 20) + 1), "more than 2^20"),
    ("D above 2^26", lambda: _patch(good_top_k(), 12, "<I", (1 << 26) + 1), "more than 2^26 per record"),
    ("D not P·k", lambda: _patch(good_top_k(), 12, "<I", 5), "expected P·k"),
    ("length", lambda: recrc(good_top_k() + b"\0\0", 5), "record length"),
    ("truncated", lambda: good_top_k()[:12], "truncated"),
    ("crc", lambda: good_top_k()[:-1] + bytes([good_top_k()[-1] ^ 1]), "CRC-32 mismatch"),
    ("token id", lambda: good_top_k(tokens=np.array([1, 7, V, 9])), "token 2 is id 50"),
    ("kept id", lambda: good_top_k(ids=np.array([[4, 2], [0, 77], [9, 8]])), "kept entry 3 is id 77"),
    ("duplicate", lambda: good_top_k(ids=np.array([[4, 2], [1, 1], [9, 8]])), "position 1: an id appears twice"),
    ("rising", lambda: good_top_k(log_p=np.array([[-0.5, -1.5], [-2.0, -1.0], [-0.2, -3.0]])), "position 1: kept log p are not non-increasing"),
    ("NaN", lambda: good_top_k(log_p=np.array([[-0.5, np.nan], [-1.0, -1.0], [-0.2, -3.0]])), "is NaN"),
    ("positive", lambda: good_top_k(log_p=np.array([[0.01, -1.5], [-1.0, -1.0], [-0.2, -3.0]])), "above its bound"),
    ("-inf kept", lambda: good_top_k(log_p=np.array([[-0.5, -np.inf], [-1.0, -1.0], [-0.2, -3.0]])), "is -inf"),
    ("-inf tail", lambda: good_top_k(log_tail=np.array([-2.0, -np.inf, -2.5])), "log tail at position 1: -inf is -inf"),
    ("+inf tail", lambda: good_top_k(log_tail=np.array([-2.0, np.inf, -2.5])), "+inf"),
    ("tail sum", lambda: good_top_k(sums=np.array([[0.5], [2.5], [0.1]])), "tail sum at (position, r) (1, 0): 2.5 is above its bound"),
]


@pytest.mark.parametrize("make,expected", [c[1:] for c in TOP_K_CASES], ids=[c[0] for c in TOP_K_CASES])
def test_every_top_k_record_check_refuses_a_crafted_record(make, expected):
    with pytest.raises(kdcache.FormatError, match=expected.replace("(", r"\(").replace(")", r"\)").replace("^", r"\^").replace("+", r"\+")):
        decode_sequence(make(), 5, TOPK)


def test_a_record_under_another_key_fails_its_crc():
    with pytest.raises(kdcache.FormatError, match="CRC-32 mismatch"):
        decode_sequence(good_top_k(), 6, TOPK)


def test_all_ids_kept_needs_minus_infinity_tails():
    full = SequenceLayout(3, "f16", 2, 0, 2, ())
    ok = encode_top_k([0, 1], [[1, 0]], [[-0.5, -0.9]], [-np.inf], np.zeros((1, 0)), "f16", 5)
    assert decode_sequence(ok, 5, full).log_tail.tolist() == [-np.inf]
    bad = encode_top_k([0, 1], [[1, 0]], [[-0.5, -0.9]], [-3.0], np.zeros((1, 0)), "f16", 5)
    with pytest.raises(kdcache.FormatError, match="all V ids are kept"):
        decode_sequence(bad, 5, full)


SAMPLED_CASES = [
    ("d 0", lambda: good_sampled(d=[0, 3, 3]), "position 0: d = 0"),
    ("d > N", lambda: good_sampled(d=[5, 0, 1], ids=[1, 2, 3, 4, 5, 6], counts=[1, 1, 1, 1, 0, 4]), "position 0: d = 5"),
    ("sum d", lambda: _patch(good_sampled(), 20 + 12, "<B", 1), "the d_j sum to"),
    ("ascending", lambda: good_sampled(ids=[8, 3, 5, 1, 2, 40]), "entry 1: ids are not strictly ascending"),
    ("count 0", lambda: good_sampled(counts=[4, 0, 4, 1, 2, 1]), "counts must be ≥ 1"),
    ("counts sum", lambda: good_sampled(counts=[3, 2, 4, 1, 2, 1]), "sum to N = 4"),
    ("drawn id", lambda: good_sampled(ids=[3, 8, 5, 1, 2, 60]), "drawn entry 5 is id 60"),
    ("log p", lambda: good_sampled(log_p=[-0.3, -2.0, -np.inf, -2.0, -1.0, -3.0]), "drawn log p at entry 2"),
    ("log-sum", lambda: good_sampled(sums=[[-0.4], [np.nan], [-0.9]]), r"log-sum at \(position, r\) \(1, 0\): nan is NaN"),
]


@pytest.mark.parametrize("make,expected", [c[1:] for c in SAMPLED_CASES], ids=[c[0] for c in SAMPLED_CASES])
def test_every_sampled_record_check_refuses_a_crafted_record(make, expected):
    with pytest.raises(kdcache.FormatError, match=expected):
        decode_sequence(make(), 5, SAMPLED)


# ---- manifests ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("seqfmt")
    data = dataset(tmp)
    return write_cache(tmp / "c.lmdb", data, sequences(1)), data


def _manifest(path):
    with kdcache.open(str(path)) as c:
        return copy.deepcopy(c.manifest)


def _seq(m):
    return m["teachers"]["lm"]["sequence"]


MANIFEST_CASES = [
    ("mode", lambda m: _seq(m).update(mode="beam"), "teachers.lm.sequence.mode"),
    ("samples", lambda m: _seq(m).update(samples=3), "teachers.lm.sequence.samples: 3 is not 0 for top-k"),
    ("top_k 0", lambda m: m["teachers"]["lm"].update(top_k=0), "teachers.lm.top_k: 0 is not in 1…50"),
    ("dense top_k", lambda m: _seq(m).update(mode="dense"), "teachers.lm.top_k: 8 is not 0 for dense"),
    ("dense samples", lambda m: (_seq(m).update(mode="dense", samples=3), m["teachers"]["lm"].update(top_k=0)), "teachers.lm.sequence.samples: 3 is not 0 for dense"),
    ("top_k > V", lambda m: m["teachers"]["lm"].update(top_k=51), "teachers.lm.top_k: 51 is not in 1…50"),
    ("retemper order", lambda m: _seq(m).update(retemper_at=[2.0, 0.5]), "teachers.lm.sequence.retemper_at: [2.0, 0.5] is not strictly ascending"),
    ("retemper count", lambda m: _seq(m).update(retemper_at=[float(i + 1) for i in range(17)]), "at most 16"),
    ("retemper value", lambda m: _seq(m).update(retemper_at=[0.0]), "teachers.lm.sequence.retemper_at[0]: 0.0"),
    ("vocab", lambda m: _seq(m).update(vocab_size=1), "teachers.lm.sequence.vocab_size: 1"),
    ("tokenizer vocab", lambda m: _seq(m)["tokenizer"].update(vocab_size=49), "teachers.lm.sequence.tokenizer.vocab_size: 49"),
    ("fingerprint", lambda m: _seq(m)["tokenizer"].update(merges_sha256=None), "teachers.lm.sequence.tokenizer.fingerprint"),
    ("views", lambda m: m["teachers"]["lm"].update(views=2), "teachers.lm.views: 2"),
    ("augmentation", lambda m: m["teachers"]["lm"].update(augmentation="token-dropout:p=0.1"), "teachers.lm.augmentation"),
    ("missing key", lambda m: _seq(m).pop("sample_seed"), "teachers.lm.sequence: not an object"),
    ("schema 2", lambda m: m.update(schema_version=2), "teachers.lm: a sequence teacher in a format v2 cache"),
]


@pytest.mark.parametrize("edit,expected", [c[1:] for c in MANIFEST_CASES], ids=[c[0] for c in MANIFEST_CASES])
def test_every_sequence_manifest_check_names_its_field(cache, edit, expected):
    m = _manifest(cache[0])
    assert softlabel_manifest_problems(m) == []
    edit(m)
    problems = softlabel_manifest_problems(m)
    assert any(p.startswith("manifest field ") and expected in p for p in problems), problems


def test_a_class_teacher_in_a_v3_cache_is_refused(cache):
    m = _manifest(cache[0])
    entry = {k: v for k, v in m["teachers"]["lm"].items() if k not in ("sequence",)}
    m["teachers"]["cls"] = dict(entry, identity=dict(entry["identity"], name="cls"), top_k=0)
    assert any("teachers.cls: a class teacher in a format v3 cache" in p for p in softlabel_manifest_problems(m))


# ---- tokenizers ------------------------------------------------------------------------------------

def test_hf_tokenizer_json_fingerprint_orders_by_id_and_takes_pairs(tmp_path):
    spec = {"model": {"type": "BPE", "vocab": {"b": 1, "a": 0, "ab": 2}, "merges": [["a", "b"]]},
            "added_tokens": [{"id": 3, "content": "<eos>"}]}
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    got = kdcache.hf_tokenizer_fingerprint(tmp_path / "tokenizer.json", name="tiny")
    assert got == kdcache.tokenizer_fingerprint(["a", "b", "ab", "<eos>"], ["a b"], name="tiny")
    assert got["fingerprint"] != kdcache.tokenizer_fingerprint(["a", "b", "ab", "<eos>"], ["b a"], name="tiny")["fingerprint"]
    spec["model"]["vocab"] = {"a": 0, "ab": 2}
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="no token has id 1"):
        kdcache.hf_tokenizer_fingerprint(tmp_path / "tokenizer.json")


@pytest.mark.parametrize("other,field", [(toy_tokenizer(vocab=V + 1), "vocab_size"), (toy_tokenizer(merges=("t1 t2",)), "merges_sha256"),
                                         (dict(toy_tokenizer(), vocab_sha256="sha256:" + "0" * 64), "vocab_sha256")])
def test_a_reader_refuses_another_tokenizer_naming_the_first_field(cache, other, field):
    with kdcache.open(str(cache[0])) as c:
        assert len(kdcache.TokenDistillationDataset(c, tokenizer_fingerprint=toy_tokenizer())) == 6
        with pytest.raises(ValueError, match=f"another tokenizer \\({field}: cache"):
            kdcache.TokenDistillationDataset(c, tokenizer_fingerprint=other)


# ---- the writer ----------------------------------------------------------------------------------

def test_the_writer_resumes_from_its_records_and_refuses_another_layout(tmp_path):
    data, seqs = dataset(tmp_path), sequences(2)
    path = tmp_path / "c.lmdb"
    opts = dict(name="lm", tokenizer=toy_tokenizer(), top_k=8, retemper_at=[2.0])
    with kdcache.SequenceWriter(path, data, **opts) as w:
        w.write_logits(0, seqs[:2])
        assert w.pending() == [(2, 6)]
    with kdcache.SequenceWriter(path, data, **opts) as w:
        assert w.pending() == [(2, 6)]
        w.write_logits(2, seqs[2:])
        assert w.pending() == [] and w.manifest["teachers"]["lm"]["completed"] == [[0, 6]]
    with pytest.raises(kdcache.FormatError, match="another layout .*sequence"):
        kdcache.SequenceWriter(path, data, **dict(opts, retemper_at=[4.0]))
    with pytest.raises(kdcache.FormatError, match="format v3 cache; this writer adds records to format v2 caches only"):
        kdcache.SoftLabelWriter(path, data, name="cls")


def test_the_writer_refuses_bad_teacher_output_naming_the_sample(tmp_path):
    data, seqs = dataset(tmp_path), sequences(3)
    with kdcache.SequenceWriter(tmp_path / "c.lmdb", data, name="lm", tokenizer=toy_tokenizer(), top_k=4) as w:
        z = seqs[1][1].copy()
        z[2, 5] = np.nan
        with pytest.raises(ValueError, match="sample 1 position 2: a logit is NaN"):
            w.write_logits(0, [seqs[0], (seqs[1][0], z)])
        with pytest.raises(ValueError, match=f"sample 0: token id {V} is not in"):
            w.write_logits(0, [(np.array([1, V, 2]), np.zeros((3, V)))])
        assert w.pending() == [(0, 6)]


def test_sampled_draws_are_deterministic_for_a_seed(tmp_path):
    data, seqs = dataset(tmp_path), sequences(4)
    raw = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        path = write_cache(tmp_path / f"{name}.lmdb", data, seqs, mode="sampled", samples=16, sample_seed=seed, dtype="f32")
        with kdcache.open(str(path)) as c:
            raw[name] = [c.sequence(i) for i in range(6)]
    same = all(np.array_equal(x.ids, y.ids) and np.array_equal(x.counts, y.counts) for x, y in zip(raw["a"], raw["b"]))
    other = any(not np.array_equal(x.ids, y.ids) or not np.array_equal(x.counts, y.counts) for x, y in zip(raw["a"], raw["c"]))
    assert same and other


@pytest.mark.parametrize("mode", ["top-k", "sampled"])
def test_texts_of_zero_and_one_token_have_no_positions(tmp_path, mode):
    data = dataset(tmp_path)
    seqs = [(np.array([], dtype=int), np.zeros((0, V))), (np.array([3]), np.zeros((1, V)))] + sequences(8, n=4)
    path = write_cache(tmp_path / "c.lmdb", data, seqs, mode=mode, samples=4, sample_seed=1)
    with kdcache.open(str(path)) as c:
        assert [c.sequence(i).positions for i in range(2)] == [0, 0] and c.sequence(1).tokens.tolist() == [3]
        batch = next(iter(kdcache.TokenDistillationDataset(c, batch_size=6, temperature=2.0)))
        assert batch["position_mask"][:2].sum() == 0 and batch["attention_mask"][1].sum() == 1


def test_a_full_vocabulary_top_k_answer_must_hold_the_whole_mass(tmp_path):
    # k = V keeps every id, so there is no tail for missing mass: refused by name, as Swift does.
    data = dataset(tmp_path)
    tokens = np.array([1, 2])
    ids = np.arange(V)[None, :]
    with kdcache.SequenceWriter(tmp_path / "c.lmdb", data, name="lm", tokenizer=toy_tokenizer(), top_k=V) as w:
        half = np.full((1, V), np.log(0.5 / V))
        with pytest.raises(ValueError, match=r"sample 0 position 0: all the vocabulary's ids are kept \(k = V\) but their probabilities sum to 0.500000"):
            w.write_top_k(0, [(tokens, ids, half)])
        whole = np.full((1, V), np.log(1.0 / V))
        w.write_top_k(0, [(tokens, ids, whole)])
        assert w.pending() == [(1, 6)]
    with kdcache.open(str(tmp_path / "c.lmdb")) as c:
        assert np.isneginf(c.sequence(0).log_tail).all()
