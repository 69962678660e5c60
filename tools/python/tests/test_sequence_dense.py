"""Dense sequence records (FORMAT.md §3.7 kind 5): the Python codec and its checks, a cache written by
`kdcache teach --sequence dense` read equal to Swift's JSONL export, the torch dataset's dense
targets at any T, and `dense_kl` against a numpy reference and its gradient."""
import json
import struct

import numpy as np
import pytest

from _sequence_support import log_softmax, recrc, zipf_logits
from _support import ROOT, kdcache, prep_three_classes, run

from kdcache import tokens as T
from kdcache.format import FormatError

V, R = 40, 2
LAYOUT = T.SequenceLayout(T.KIND_DENSE, "f16", 0, R, V, (2.0, 0.5))   # T_w = 2, declared T = 1 and 4


def good_dense(L=6, seed=0, dtype="f16"):
    """(tokens, log p [P, V], sums [P, R], encoded record of sample 3)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, V, size=L)
    lp, sums = T.dense_from_logits(zipf_logits(rng, max(L - 1, 0), V), 2.0, [1.0, 4.0], dtype)
    return tokens, lp, sums, T.encode_dense(tokens, lp, sums, dtype, 3)


@pytest.mark.parametrize("dtype", ["f16", "f32"])
def test_a_dense_record_round_trips(dtype):
    layout = T.SequenceLayout(T.KIND_DENSE, dtype, 0, R, V, (2.0, 0.5))
    for L in (0, 1, 2, 7):
        tokens, lp, sums, buf = good_dense(L, seed=L, dtype=dtype)
        P, w = max(L - 1, 0), 2 if dtype == "f16" else 4
        assert len(buf) == 20 + 3 * L + P * V * w + P * R * w == T.record_length(T.KIND_DENSE, w, L, P * V, R)
        assert struct.unpack_from("<BBBBIIIHH", buf)[1::4] == (T.KIND_DENSE, L) and struct.unpack_from("<IH", buf, 12) == (P * V, 0)
        rec = T.decode_sequence(buf, 3, layout)
        cast = np.float16 if dtype == "f16" else np.float32
        assert rec.kind == T.KIND_DENSE and rec.ids is None and rec.log_tail is None
        assert rec.tokens.tolist() == tokens.tolist()
        assert np.array_equal(rec.log_p, lp.astype(cast)) and np.array_equal(rec.sums, sums.astype(cast))
        batch = T.decode_sequence_batch([buf, buf], [3, 3], layout)
        assert np.array_equal(batch.log_p, np.concatenate([rec.log_p, rec.log_p]).astype(np.float32))


def _edit_floats(buf, index, value, L=6, dtype="f16"):
    b = bytearray(buf)
    w = 2 if dtype == "f16" else 4
    struct.pack_into("<e" if w == 2 else "<f", b, 20 + 3 * L + w * index, value)
    return recrc(bytes(b), 3)


def _row_times(buf, j, factor, L=6):
    b = bytearray(buf)
    off = 20 + 3 * L + 2 * j * V
    row = np.frombuffer(bytes(b[off:off + 2 * V]), dtype="<f2").astype(np.float64) + np.log(factor)
    b[off:off + 2 * V] = row.astype("<f2").tobytes()
    return recrc(bytes(b), 3)


@pytest.mark.parametrize("damage,expected", [
    (lambda b: b[:-3], "record length"),
    (lambda b: recrc(b[:12] + struct.pack("<I", 4 * V - 1) + b[16:], 3), "D = 159 entries, expected P·V = 5·40"),
    (lambda b: recrc(b[:16] + struct.pack("<H", V) + b[18:], 3), "k/N 40"),
    (lambda b: b[:30] + bytes([b[30] ^ 1]) + b[31:], "CRC-32 mismatch"),
    (lambda b: _edit_floats(b, 45, float("nan")), r"dense log p at \(position, id\) \(1, 5\): nan is NaN"),
    (lambda b: _edit_floats(b, 80, float("-inf")), r"\(2, 0\): -inf is -inf"),
    (lambda b: _edit_floats(b, 3, 0.01), r"\(0, 3\): 0.01.* is above"),
    (lambda b: _row_times(b, 1, 2.0), "position 1: the probabilities sum to exp"),
    (lambda b: _row_times(b, 3, 0.9), "position 3: the probabilities sum to exp"),
    (lambda b: _edit_floats(b, 5 * V + 2, float("nan")), r"log-sum at \(position, r\) \(1, 0\)"),
])
def test_every_dense_check_refuses_a_crafted_record(damage, expected):
    buf = good_dense()[3]
    T.decode_sequence(buf, 3, LAYOUT)
    with pytest.raises(FormatError, match=expected):
        T.decode_sequence(damage(buf), 3, LAYOUT)
    if expected != "CRC-32 mismatch":
        with pytest.raises(FormatError):
            T.decode_sequence_batch([buf, damage(buf)], [3, 3], LAYOUT)


def test_a_dense_record_of_another_vocabulary_is_refused():
    buf = good_dense()[3]
    with pytest.raises(FormatError, match="expected P·V = 5·41"):
        T.decode_sequence(buf, 3, T.SequenceLayout(T.KIND_DENSE, "f16", 0, R, 41, (2.0, 0.5)))


def test_retempering_a_dense_row_is_exact_at_any_temperature():
    rng = np.random.default_rng(4)
    z = zipf_logits(rng, 5, V, scale=3.0)
    lp, _ = T.dense_from_logits(z, 2.0, [], "f32")
    for t in (0.3, 1.0, 2.0, 7.5):
        assert np.allclose(T.retemper_dense(lp, 2.0 / t), log_softmax(z / t), atol=1e-9)


# ---- a cache written by kdcache teach --sequence dense ------------------------------------------

TEACHER = f"{ROOT}/.build-venv/bin/python {ROOT}/tools/teachers/tiny_lm_teacher.py --train {ROOT}/tools/teachers/TEACHERS.md"


@pytest.fixture(scope="module")
def swift_dense(tmp_path_factory):
    d = tmp_path_factory.mktemp("dense")
    data = prep_three_classes(d, 12)
    run("teach", "--data", data, "--out", d / "dense.lmdb", "--exec", TEACHER, "--sequence", "dense", "--retemper-at", "0.5,1,2",
        "--temperature", "1", "--quiet")
    run("export", d / "dense.lmdb", "--jsonl", "--out", d / "dense.jsonl")
    return d


def test_python_reads_swifts_dense_cache_equal_to_its_export(swift_dense):
    lines = [json.loads(x) for x in (swift_dense / "dense.jsonl").read_text().splitlines()]
    assert len(lines) == 12
    with kdcache.open(str(swift_dense / "dense.lmdb")) as c:
        entry = c.manifest["teachers"]["tiny-lm"]
        assert entry["sequence"]["mode"] == "dense" and entry["top_k"] == 0 and entry["sequence"]["samples"] == 0
        vocab = entry["sequence"]["vocab_size"]
        assert vocab == 260
        for line in lines:
            rec = c.sequence(line["index"])
            assert rec.kind == T.KIND_DENSE and rec.tokens.tolist() == line["tokens"]
            assert rec.log_p.shape == (len(line["tokens"]) - 1, vocab)
            for j, pos in enumerate(line["positions"]):
                assert "ids" not in pos
                assert np.array_equal(rec.log_p[j].astype(np.float32), np.array(pos["logprobs"], dtype=np.float32))
                assert np.array_equal(rec.sums[j].astype(np.float32), np.array(pos["log_sums"], dtype=np.float32))
            assert np.allclose(rec.sums[:, 1].astype(float), 0, atol=0.02), "the log-sum at the declared T = T_w is 0"
        batch = c.sequence_batch([x["index"] for x in lines], "tiny-lm")
        assert np.array_equal(batch.log_p, np.concatenate([c.sequence(x["index"]).log_p for x in lines]).astype(np.float32))


@pytest.mark.parametrize("temperature", [1.0, 2.0, 3.3])
def test_the_torch_dataset_yields_dense_targets(swift_dense, temperature):
    pytest.importorskip("torch")
    with kdcache.open(str(swift_dense / "dense.lmdb")) as c:
        ds = kdcache.TokenDistillationDataset(c, temperature=temperature, batch_size=4, as_torch=False)
        assert ds.exact and ds.dense and ds.width == 260, "a dense row is exact at any T, declared (1, 2) or not (3.3)"
        batch = ds.read_batch(range(4))
        assert batch["target_logprobs"].shape == batch["position_mask"].shape + (260,)
        assert np.array_equal(batch["target_logprobs"], ds.collate([ds[k] for k in range(4)])["target_logprobs"])
        for b in range(4):
            rec = c.sequence(b)
            P = rec.log_p.shape[0]
            got = batch["target_logprobs"][b, :P].astype(np.float64)
            # T_w = 1: the stored rows themselves; elsewhere log_softmax(a·log p), a = T_w / T.
            expected = rec.log_p.astype(np.float64) if temperature == 1.0 else log_softmax(rec.log_p.astype(np.float64) / temperature)
            assert np.allclose(got, expected, atol=1e-6)
            assert np.isneginf(batch["target_logprobs"][b, P:]).all()


def test_dense_kl_is_the_full_kl_and_its_gradient():
    torch = pytest.importorskip("torch")
    from kdcache.torch import dense_kl
    rng = np.random.default_rng(7)
    B, P, t = 2, 5, 2.0
    teacher = log_softmax(zipf_logits(rng, B * P, V).reshape(B, P, V) / t)
    teacher[1, 3:] = -np.inf                               # padding of the shorter sample
    teacher[0, 0, 7] = -65504.0                            # an underflow as a writer stores it
    mask = np.ones((B, P), bool)
    mask[1, 3:] = False
    logits = rng.normal(size=(B, P, V)) * 2
    s = torch.tensor(logits, requires_grad=True)
    loss = dense_kl(s, torch.tensor(teacher, dtype=torch.float32), torch.tensor(mask), temperature=t)
    loss.backward()
    logq = log_softmax(logits / t)
    p = np.where(mask[..., None], np.exp(teacher), 0.0)
    with np.errstate(invalid="ignore"):
        per = np.where(p > 0, p * (teacher - logq), 0.0).sum(-1)
    assert abs(loss.item() - per[mask].mean()) < 1e-5
    q = np.exp(logq)
    expected = np.where(mask[..., None], (p.sum(-1, keepdims=True) * q - p) / t, 0.0) / mask.sum()   # (q − p)/T where Σp = 1
    assert np.allclose(s.grad.numpy(), expected, atol=1e-6)
