"""The batch read path (`TokenDistillationDataset.read_batch`, `decode_sequence_batch`) against the
per-record path (`collate([ds[i] …])`, `decode_sequence`): identical tensors at T_w, at a declared T,
at an undeclared T and under max_length, and identical refusals of damaged records."""
import struct
import warnings

import lmdb
import numpy as np
import pytest
import torch

from _sequence_support import dataset, recrc, sequences, write_cache
from test_sequence_format import SAMPLED, SAMPLED_CASES, TOP_K_CASES, TOPK, good_sampled, good_top_k

import kdcache
from kdcache.tokens import decode_sequence, decode_sequence_batch, sequence_key

MODES = {"top-k-f16": dict(mode="top-k", top_k=8, dtype="f16"),
         "sampled-f32": dict(mode="sampled", top_k=0, samples=12, sample_seed=7, dtype="f32")}
ORDER = [3, 0, 5, 5, 1, 4, 2]          # shuffled, one sample twice


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("seqbatch")
    data = dataset(tmp)
    return {name: write_cache(tmp / f"{name}.lmdb", data, sequences(seed=3), **kw) for name, kw in MODES.items()}


def _per_record(ds, indices):
    return ds.collate([ds[i] for i in indices])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("T,max_length", [(1.0, 2048), (2.0, 2048), (0.5, 10), (3.0, 2048), (3.0, 10)])
def test_the_batch_path_gives_the_per_record_tensors(caches, mode, T, max_length):
    with kdcache.open(str(caches[mode])) as c, warnings.catch_warnings():
        warnings.simplefilter("ignore")                    # T = 3 is undeclared: approximate, and says so
        ds = kdcache.TokenDistillationDataset(c, temperature=T, max_length=max_length, allow_approximate=True)
        assert ds.exact == (T != 3.0)
        one, batch = _per_record(ds, ORDER), ds.read_batch(ORDER)
    assert one.keys() == batch.keys()
    for key in one:
        assert one[key].dtype == batch[key].dtype and one[key].shape == batch[key].shape, key
        assert torch.equal(one[key], batch[key]), key
    assert int(batch["attention_mask"].sum()) == sum(min(len(sequences(seed=3)[i][0]), max_length) for i in ORDER)


@pytest.mark.parametrize("mode", MODES)
def test_an_empty_batch_has_the_per_record_shapes(caches, mode):
    with kdcache.open(str(caches[mode])) as c:
        ds = kdcache.TokenDistillationDataset(c)
        one, batch = ds.collate([]), ds.read_batch([])
    assert {k: (v.shape, v.dtype) for k, v in one.items()} == {k: (v.shape, v.dtype) for k, v in batch.items()}


def test_iteration_yields_the_batches_read_batch_gives(caches):
    with kdcache.open(str(caches["top-k-f16"])) as c:
        ds = kdcache.TokenDistillationDataset(c, batch_size=4, indices=ORDER)
        got = list(ds)
        assert [len(b["input_ids"]) for b in got] == [4, 3]
        assert all(torch.equal(a, b) for a, b in zip(got[1].values(), ds.read_batch([4, 5, 6]).values()))
        assert torch.equal(got[0]["input_ids"], _per_record(ds, range(4))["input_ids"])
        ahead = list(kdcache.TokenDistillationDataset(c, batch_size=2, indices=ORDER, prefetch=2))   # 2 threads decode ahead
        assert len(ahead) == 4 and all(torch.equal(ahead[j][key], ds.read_batch(range(2 * j, min(2 * j + 2, 7)))[key])
                                       for j in range(4) for key in ahead[j])


@pytest.mark.parametrize("layout,make,cases", [(TOPK, good_top_k, TOP_K_CASES), (SAMPLED, good_sampled, SAMPLED_CASES)], ids=["top-k", "sampled"])
def test_the_batch_decoder_refuses_every_record_the_per_record_decoder_refuses(layout, make, cases):
    good = make()
    whole = decode_sequence_batch([good, good], [5, 5], layout)
    one = decode_sequence(good, 5, layout)
    assert whole.tokens.tolist() == 2 * one.tokens.tolist() and whole.ids.tolist() == 2 * one.ids.tolist()
    assert whole.log_p.tolist() == 2 * one.log_p.astype(np.float32).tolist()
    for name, bad, _ in cases:
        with pytest.raises(kdcache.FormatError):
            decode_sequence(bad(), 5, layout)
        with pytest.raises(kdcache.FormatError):
            decode_sequence_batch([good, bad(), good], [5, 5, 5], layout)


def _damage(path, sample, edit):
    """Rewrites `sample`'s record of teacher lm in place with `edit(bytes) -> bytes`."""
    env = lmdb.open(str(path), subdir=False, max_dbs=64, lock=False)
    try:
        db = env.open_db(b"teacher/lm", create=False)
        with env.begin(write=True, db=db) as txn:
            txn.put(sequence_key(sample), edit(bytes(txn.get(sequence_key(sample)))))
    finally:
        env.close()


def _L(buf):
    return struct.unpack_from("<I", buf, 8)[0]


def _set(offset_of, fmt, value, sample=3):
    """An edit that packs `value` at `offset_of(L)` and recomputes the CRC (only the edit is wrong)."""
    def edit(buf):
        b = bytearray(buf)
        struct.pack_into(fmt, b, offset_of(_L(buf)), value)
        return recrc(bytes(b), sample)
    return edit


def _kept_id_twice(buf, sample=3):
    """Position 0's second kept id made equal to its first (all three bytes)."""
    o = 20 + 3 * _L(buf)
    return recrc(buf[:o + 3] + buf[o:o + 3] + buf[o + 6:], sample)


DAMAGES = {                                                   # top-k, k = 8, f16
    "crc": lambda buf: buf[:-1] + bytes([buf[-1] ^ 1]),
    "truncated": lambda buf: buf[:-2],
    "kept id twice": _kept_id_twice,
    "NaN log p": _set(lambda L: 20 + 3 * L + 3 * 8 * (L - 1) + 2, "<H", 0x7E00),
    "token id ≥ V": _set(lambda L: 20 + 3, "<H", 0xFFFF),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_record_is_refused_alike_by_both_paths(tmp_path, damage):
    data = dataset(tmp_path)
    path = write_cache(tmp_path / "c.lmdb", data, sequences(seed=3))
    _damage(path, 3, DAMAGES[damage])
    with kdcache.open(str(path)) as c:
        ds = kdcache.TokenDistillationDataset(c, batch_size=6)
        with pytest.raises(kdcache.FormatError) as one:
            _per_record(ds, range(6))
        with pytest.raises(kdcache.FormatError) as batch:
            ds.read_batch(range(6))
        with pytest.raises(kdcache.FormatError) as iterated:
            next(iter(ds))
        with pytest.raises(kdcache.FormatError) as ahead:                       # sample 3 is in the second batch of 2
            list(kdcache.TokenDistillationDataset(c, batch_size=2, prefetch=2))
        assert ds.read_batch([0, 1, 2])["input_ids"].shape[0] == 3            # the good records still read
    assert "sample 3:" in str(one.value) and str(one.value) == str(batch.value) == str(iterated.value) == str(ahead.value)


def test_a_missing_sample_is_refused_alike(caches):
    with kdcache.open(str(caches["top-k-f16"])) as c:
        ds = kdcache.TokenDistillationDataset(c, indices=[0, 6])            # the cache has samples 0 … 5
        for read in (lambda: _per_record(ds, [0, 1]), lambda: ds.read_batch([0, 1])):
            with pytest.raises(KeyError) as e:
                read()
            assert e.value.args == (6,)
