"""Shared by the sequence tests: a toy tokenizer, Zipf-like logits, a prepped dataset and a written cache."""
import struct
import zlib

import numpy as np

from _support import prep_three_classes

import kdcache

V = 50


def toy_tokenizer(vocab=V, merges=("t0 t1",), name="toy"):
    """A tokenizer object (FORMAT.md §3.6) over tokens t0 … t{V−1}."""
    return kdcache.tokenizer_fingerprint([f"t{i}" for i in range(vocab)], list(merges), name=name)


def zipf_logits(rng, length, vocab=V, exponent=1.1, scale=1.0):
    """[length, vocab] logits whose softmax is Zipf-like (p ∝ rank^−s) over a random permutation of
    the ids per position, with a little noise: heavy head, long tail, like a language model's."""
    ranks = np.arange(1, vocab + 1, dtype=np.float64)
    base = -exponent * np.log(ranks)
    out = np.empty((length, vocab))
    for j in range(length):
        out[j, rng.permutation(vocab)] = base + 0.3 * rng.normal(size=vocab)
    return out * scale


def sequences(seed=0, n=6, vocab=V, lengths=(9, 17)):
    """n (tokens, logits [L, V]) pairs of random lengths, tokens drawn from the teacher itself."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        L = int(rng.integers(*lengths))
        z = zipf_logits(rng, L, vocab)
        tokens = [int(rng.integers(vocab))]
        for j in range(L - 1):
            p = np.exp(z[j] - z[j].max())
            tokens.append(int(rng.choice(vocab, p=p / p.sum())))
        out.append((np.array(tokens), z))
    return out


def dataset(tmp_path, n=6):
    """A prepped dataset store with n samples (one text each), prepped once per directory."""
    d = tmp_path / "data"
    if (d / "d.lmdb").exists():
        return d / "d.lmdb"
    d.mkdir(exist_ok=True)
    return prep_three_classes(d, n)


def write_cache(path, data, seqs, **kw):
    """A sequence cache of `seqs` (all samples) written by the Python writer; kw go to SequenceWriter."""
    options = dict(name="lm", tokenizer=toy_tokenizer(), mode="top-k", top_k=8, retemper_at=[0.5, 2.0], write_temperature=1.0, dtype="f16")
    options.update(kw)
    with kdcache.SequenceWriter(path, data, **options) as w:
        w.write_logits(0, seqs)
    return path


def log_softmax(z):
    z = np.asarray(z, dtype=np.float64)
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def recrc(buf: bytes, sample: int) -> bytes:
    """`buf` with its CRC recomputed over key ‖ record (FORMAT.md §1), so that only the edit is wrong."""
    b = bytearray(buf)
    key = struct.pack(">II", sample, 0)
    struct.pack_into("<I", b, 4, zlib.crc32(bytes(b[8:]), zlib.crc32(bytes(b[:4]), zlib.crc32(key))))
    return bytes(b)
