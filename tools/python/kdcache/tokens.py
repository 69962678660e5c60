"""Sequence records (FORMAT.md §3.7): encoding, decoding with every check of §1.2, and the math of
§3.8 (exact re-tempering at T_w and at declared temperatures, the interval elsewhere, sampled-record
weights, dense rows at any T). numpy only; every routine is vectorised over positions (no Python loop per token).

Decoding takes any buffer (`bytes`, a `memoryview`, py-lmdb's `txn.get(key, buffers=True)`) and
returns numpy views on it: copy them (`SequenceRecord.copy()`) before the transaction ends."""
from __future__ import annotations

import dataclasses
import functools
import math
import struct
import zlib

import numpy as np

from .format import LOG_PROB_TOLERANCE, FormatError, soft_label_key

KIND_TOP_K, KIND_SAMPLED, KIND_DENSE = 3, 4, 5
RECORD_VERSION = 3
MAX_TOKENS = 1 << 20
MAX_ENTRIES = 1 << 26   # D per record (FORMAT.md §1.2)
MAX_VOCAB = 1 << 24
MAX_SEQUENCE_TOP_K = 1024
MAX_SAMPLES = 255
MAX_RETEMPER = 16
_HEAD = struct.Struct("<BBBBIIIHH")   # version, kind, dtype, R, crc, L, D, k|N, reserved
_DTYPE_CODE = {"f32": 1, "f16": 2}
_MODE_KIND = {"top-k": KIND_TOP_K, "sampled": KIND_SAMPLED, "dense": KIND_DENSE}


def sum_tolerance(dtype: str) -> float:
    """The largest |log Σ_v p(v)| of a dense row (FORMAT.md §1.2): 0.02 for f16, 1e-3 for f32."""
    return 0.02 if dtype == "f16" else 1e-3


def sequence_key(sample: int) -> bytes:
    """A sequence record's key: `u32be(sample) ‖ u32be(0)` (FORMAT.md §3.1; one view)."""
    return soft_label_key(sample, 0)


def decode_u24(buf, offset: int, n: int) -> np.ndarray:
    """n little-endian u24 at `offset` as uint32. When a byte follows them (always true but for a
    record's last field), one pass: u32 loads 3 bytes apart, masked to 24 bits; else the uint8
    [n, 3] view widened to [n, 4] in one copy and viewed as u32."""
    if n and offset + 3 * n < len(buf):
        return np.ndarray((n,), dtype="<u4", buffer=buf, offset=offset, strides=(3,)) & np.uint32(0xFFFFFF)
    b = np.frombuffer(buf, dtype=np.uint8, count=3 * n, offset=offset).reshape(n, 3)
    wide = np.zeros((n, 4), dtype=np.uint8)
    wide[:, :3] = b                      # one copy: the u24 bytes widened to u32 (little-endian)
    return wide.view("<u4").reshape(n)


def encode_u24(ids) -> bytes:
    """ids (< 2^24) as little-endian u24 bytes."""
    ids = np.asarray(ids, dtype="<u4").reshape(-1)
    return ids.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()


@dataclasses.dataclass
class SequenceRecord:
    """A decoded sequence record (FORMAT.md §3.7). top-k: `ids`/`log_p` [P, k], `log_tail` [P],
    `sums` [P, R] = `log Σ_tail p^{a_r}`. sampled: `ids`/`counts`/`log_p` flat [D], `distinct` [P]
    (d_j), `sums` [P, R] = `log Σ_v p^{a_r}`; `log_tail` None. dense: `log_p` [P, V] in id order,
    `sums` [P, R] = `log Σ_v p^{a_r}`; `ids`, `log_tail` None."""
    kind: int
    tokens: np.ndarray
    ids: np.ndarray | None
    log_p: np.ndarray
    sums: np.ndarray
    log_tail: np.ndarray | None = None
    counts: np.ndarray | None = None
    distinct: np.ndarray | None = None

    @property
    def positions(self) -> int:
        """P = max(L − 1, 0)."""
        return max(len(self.tokens) - 1, 0)

    def copy(self) -> "SequenceRecord":
        """The same record with its arrays copied out of the buffer they view."""
        arrays = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "kind"}
        return SequenceRecord(self.kind, **{n: None if a is None else np.array(a) for n, a in arrays.items()})


@dataclasses.dataclass(frozen=True)
class SequenceLayout:
    """What a teacher's manifest entry says its records hold (FORMAT.md §3.6)."""
    kind: int
    dtype: str
    width: int        # k (top-k) or N (sampled); 0 (dense)
    retemper: int     # R
    vocab: int        # V
    alphas: tuple = ()   # a_r = T_w / T_r

    def sum_bounds(self) -> np.ndarray:
        """The largest tail sum / log-sum allowed at each r: `Σ p^a ≤ V^{1−a}` when a < 1 (Hölder), ≤ 1
        when a ≥ 1, so `max(0, (1 − a_r)·log V)`, plus rounding room (relative and absolute 2^-10)."""
        bound = np.maximum(0.0, (1.0 - np.asarray(self.alphas, dtype=np.float64)) * math.log(self.vocab))
        return bound * (1 + LOG_PROB_TOLERANCE) + LOG_PROB_TOLERANCE

    @staticmethod
    def of(entry: dict) -> "SequenceLayout":
        """The layout of a checked teacher entry with a `sequence` object."""
        s = entry["sequence"]
        kind = _MODE_KIND[s["mode"]]
        width = {KIND_TOP_K: entry["top_k"], KIND_SAMPLED: s["samples"], KIND_DENSE: 0}[kind]
        return SequenceLayout(kind, entry["dtype"], width, len(s["retemper_at"]), s["vocab_size"],
                              tuple(entry["write_temperature"] / t for t in s["retemper_at"]))


def record_length(kind: int, w: int, L: int, D: int, R: int) -> int:
    """FORMAT.md §3.7's exact length: top-k `20 + 3L + D(3 + w) + P·w + P·R·w`, sampled
    `20 + 3L + P + D(4 + w) + P·R·w`, dense `20 + 3L + D·w + P·R·w` (D = P·V)."""
    P = max(L - 1, 0)
    if kind == KIND_TOP_K:
        return 20 + 3 * L + D * (3 + w) + P * w + P * R * w
    if kind == KIND_DENSE:
        return 20 + 3 * L + D * w + P * R * w
    return 20 + 3 * L + P + D * (4 + w) + P * R * w


def _crc(buf, key: bytes) -> int:
    return zlib.crc32(buf[8:], zlib.crc32(buf[:4], zlib.crc32(key)))


def _header(buf, key: bytes, layout: SequenceLayout) -> tuple[int, int, int]:
    """(w, L, D) of a record whose header, length and CRC are checked against `layout`."""
    if len(buf) < 20:
        raise FormatError(f"sequence record of {len(buf)} bytes is truncated (the header is 20)")
    version, kind, code, R, crc, L, D, kn, reserved = _HEAD.unpack_from(buf, 0)
    if version != RECORD_VERSION:
        raise FormatError(f"record version {version} in a format v3 cache, which holds version 3 records")
    if (kind, code, R, kn) != (layout.kind, _DTYPE_CODE[layout.dtype], layout.retemper, layout.width):
        raise FormatError(f"kind {kind}, dtype {code}, R {R}, k/N {kn}: the teacher's are kind {layout.kind}, "
                          f"dtype {_DTYPE_CODE[layout.dtype]} ({layout.dtype}), R {layout.retemper}, k/N {layout.width}")
    if reserved != 0:
        raise FormatError(f"reserved field is {reserved}, not 0")
    if L > MAX_TOKENS:
        raise FormatError(f"L = {L} tokens, more than 2^20")
    if D > MAX_ENTRIES:
        raise FormatError(f"D = {D} entries, more than 2^26 per record")
    P, w = max(L - 1, 0), 4 if code == 1 else 2
    if kind == KIND_TOP_K and D != P * kn:
        raise FormatError(f"D = {D} entries, expected P·k = {P}·{kn}")
    if kind == KIND_DENSE and D != P * layout.vocab:   # Python ints: no overflow
        raise FormatError(f"D = {D} entries, expected P·V = {P}·{layout.vocab} (a dense record stores every id at every position)")
    expected = record_length(kind, w, L, D, R)
    if len(buf) != expected:
        raise FormatError(f"record length {len(buf)}, expected {expected} for L = {L}, D = {D}")
    if _crc(buf, key) != crc:
        raise FormatError("CRC-32 mismatch")
    return w, L, D


def _check_ids(ids: np.ndarray, vocab: int, what: str) -> None:
    bad = np.flatnonzero(ids >= vocab)
    if len(bad):
        raise FormatError(f"{what} {int(bad[0])} is id {int(ids[bad[0]])}, not below the vocabulary size {vocab}")


def _bad_floats(x32: np.ndarray, allow_neg_inf: bool, upper=LOG_PROB_TOLERANCE) -> np.ndarray:
    """True where a float32 value is NaN, +inf, above `upper` (2^-10, or per column) or, unless
    `allow_neg_inf`, −inf (§1.2)."""
    bad = ~(x32 <= upper)                # NaN compares false: caught here with +inf and too large values
    if not allow_neg_inf:
        bad |= x32 == -np.inf
    return bad


def _check_floats(x: np.ndarray, what: str, allow_neg_inf: bool, upper=LOG_PROB_TOLERANCE) -> None:
    """No NaN, +inf or value above `upper` (2^-10, or per column); −inf only where `allow_neg_inf`."""
    bad = _bad_floats(x.astype(np.float32), allow_neg_inf, upper)   # numpy's f16 comparisons are emulated and slow
    if bad.any():
        j = int(np.argmax(bad.reshape(-1)))
        v = float(x.reshape(-1)[j])
        bound = np.broadcast_to(np.asarray(upper, dtype=np.float64), x.shape).reshape(-1)[j]
        reason = ("NaN" if math.isnan(v) else "+inf" if v == math.inf else "-inf" if v == -math.inf
                  else f"above its bound {bound:.6g} (2^-10 for a log p; max(0, (1 − a_r)·ln V) and rounding for a sum at T_r)")
        raise FormatError(f"{what} {tuple(int(i) for i in np.unravel_index(j, x.shape)) if x.ndim > 1 else j}: {v} is {reason}")


def _floats(buf, offset: int, n: int, w: int) -> tuple[np.ndarray, int]:
    """n floats of width w at `offset` (a view) and the offset after them."""
    return np.frombuffer(buf, dtype="<f4" if w == 4 else "<f2", count=n, offset=offset), offset + n * w


def _decode_top_k(buf, layout: SequenceLayout, w: int, L: int, D: int, tokens: np.ndarray) -> SequenceRecord:
    P, k, R = max(L - 1, 0), layout.width, layout.retemper
    off = 20 + 3 * L
    ids = decode_u24(buf, off, D).reshape(P, k)
    lp, off = _floats(buf, off + 3 * D, D, w)
    tail, off = _floats(buf, off, P, w)
    sums, _ = _floats(buf, off, P * R, w)
    lp, sums = lp.reshape(P, k), sums.reshape(P, R)
    _check_ids(ids.reshape(-1), layout.vocab, "kept entry")
    ordered = np.sort(ids, axis=1)
    dup = np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))
    if len(dup):
        raise FormatError(f"position {int(dup[0])}: an id appears twice among its {k} kept entries")
    _check_floats(lp, "kept log p at (position, entry)", False)
    lp32 = lp.astype(np.float32)
    rising = np.flatnonzero((lp32[:, 1:] > lp32[:, :-1]).any(axis=1))
    if len(rising):
        raise FormatError(f"position {int(rising[0])}: kept log p are not non-increasing")
    full = k == layout.vocab
    _check_floats(tail, "log tail at position", full)
    _check_floats(sums, "tail sum at (position, r)", full, layout.sum_bounds())
    if full and P and not (np.isneginf(tail).all() and np.isneginf(sums).all()):
        raise FormatError("all V ids are kept but a log tail or tail sum is not -inf")
    return SequenceRecord(KIND_TOP_K, tokens, ids, lp, sums, log_tail=tail)


def _decode_sampled(buf, layout: SequenceLayout, w: int, L: int, D: int, tokens: np.ndarray) -> SequenceRecord:
    P, N, R = max(L - 1, 0), layout.width, layout.retemper
    off = 20 + 3 * L
    d = np.frombuffer(buf, dtype=np.uint8, count=P, offset=off)
    ids = decode_u24(buf, off + P, D)
    counts = np.frombuffer(buf, dtype=np.uint8, count=D, offset=off + P + 3 * D)
    lp, off = _floats(buf, off + P + 4 * D, D, w)
    sums, _ = _floats(buf, off, P * R, w)
    bad = np.flatnonzero((d < 1) | (d > N))
    if len(bad):
        raise FormatError(f"position {int(bad[0])}: d = {int(d[bad[0]])} distinct ids, not in 1…{N}")
    if int(d.sum(dtype=np.int64)) != D:
        raise FormatError(f"the d_j sum to {int(d.sum(dtype=np.int64))}, D is {D}")
    _check_ids(ids, layout.vocab, "drawn entry")
    starts = np.concatenate(([0], np.cumsum(d[:-1], dtype=np.int64))) if P else np.zeros(0, np.int64)
    not_first = np.ones(D, dtype=bool)
    not_first[starts] = False
    rising = np.flatnonzero(not_first[1:] & (ids[1:] <= ids[:-1]))
    if len(rising):
        raise FormatError(f"entry {int(rising[0]) + 1}: ids are not strictly ascending within its position")
    if (counts < 1).any() or P and (np.add.reduceat(counts.astype(np.int64), starts) != N).any():
        raise FormatError(f"counts must be ≥ 1 and sum to N = {N} at every position")
    _check_floats(lp, "drawn log p at entry", False)
    _check_floats(sums.reshape(P, R), "log-sum at (position, r)", False, layout.sum_bounds())
    return SequenceRecord(KIND_SAMPLED, tokens, ids, lp, sums.reshape(P, R), counts=counts, distinct=d)


def _check_dense_rows(lp32: np.ndarray, dtype: str, first_position: int = 0) -> None:
    """Every row of a dense [P, V] float32 array sums to 1 within the dtype's tolerance:
    |log Σ_v exp(log p(v))| ≤ `sum_tolerance(dtype)` (values already checked ≤ 2^-10 and finite)."""
    if not lp32.size:
        return
    lse = np.log(np.exp(lp32.astype(np.float64)).sum(axis=1))
    bad = np.flatnonzero(~(np.abs(lse) <= sum_tolerance(dtype)))
    if len(bad):
        j = int(bad[0])
        raise FormatError(f"position {first_position + j}: the probabilities sum to exp({lse[j]:.6g}), not 1 "
                          f"(|log Σ p| must be at most {sum_tolerance(dtype)})")


def _decode_dense(buf, layout: SequenceLayout, w: int, L: int, D: int, tokens: np.ndarray) -> SequenceRecord:
    P, V, R = max(L - 1, 0), layout.vocab, layout.retemper
    lp, off = _floats(buf, 20 + 3 * L, D, w)
    sums, _ = _floats(buf, off, P * R, w)
    lp, sums = lp.reshape(P, V), sums.reshape(P, R)
    lp32 = lp.astype(np.float32)
    _check_floats(lp32, "dense log p at (position, id)", False)
    _check_dense_rows(lp32, layout.dtype)
    _check_floats(sums, "log-sum at (position, r)", False, layout.sum_bounds())
    return SequenceRecord(KIND_DENSE, tokens, None, lp, sums)


def decode_sequence(buf, sample: int, layout: SequenceLayout) -> SequenceRecord:
    """Decode and check sample `sample`'s record (FORMAT.md §3.7, every check of §1.2) as numpy
    views on `buf`: header against the teacher's layout, exact length, CRC over key ‖ record, ids
    < V, top-k ids distinct and log p non-increasing per position, sampled d_j / ascending ids /
    counts, dense D = P·V and every row summing to 1, and no NaN, +inf or value above 2^-10 (−inf
    only in tails and tail sums when k = V)."""
    w, L, D = _header(buf, sequence_key(sample), layout)
    tokens = decode_u24(buf, 20, L)
    _check_ids(tokens, layout.vocab, "token")
    if layout.kind == KIND_TOP_K:
        return _decode_top_k(buf, layout, w, L, D, tokens)
    if layout.kind == KIND_DENSE:
        return _decode_dense(buf, layout, w, L, D, tokens)
    return _decode_sampled(buf, layout, w, L, D, tokens)


# ---- batches: B records decoded together ---------------------------------------------------------

@dataclasses.dataclass
class SequenceBatch:
    """B checked records decoded together (`decode_sequence_batch`): each array is the records'
    arrays concatenated in batch order, floats as float32 (exact for f16). `lengths` [B] = L_b,
    positions P_b = max(L_b − 1, 0). top-k: `ids` / `log_p` [ΣP, k], `log_tail` [ΣP], `sums`
    [ΣP, R]; sampled: `distinct` [ΣP] (d_j), `ids` / `counts` / `log_p` [ΣD], `sums` [ΣP, R];
    dense: `log_p` [ΣP, V], `sums` [ΣP, R], `ids` None."""
    kind: int
    lengths: np.ndarray
    tokens: np.ndarray
    ids: np.ndarray | None
    log_p: np.ndarray
    sums: np.ndarray
    log_tail: np.ndarray | None = None
    counts: np.ndarray | None = None
    distinct: np.ndarray | None = None

    @property
    def positions(self) -> np.ndarray:
        """P_b per record."""
        return np.maximum(self.lengths - 1, 0)


def _section_sizes(layout: SequenceLayout, w: int, L: np.ndarray, D: np.ndarray) -> list:
    """Byte lengths [B] of each field after the 20-byte header, in record order (FORMAT.md §3.7)."""
    P, R = np.maximum(L - 1, 0), layout.retemper
    if layout.kind == KIND_TOP_K:
        return [3 * L, 3 * D, w * D, w * P, w * P * R]
    if layout.kind == KIND_DENSE:
        return [3 * L, w * D, w * P * R]
    return [3 * L, P, 3 * D, D, w * D, w * P * R]


def _join_sections(bufs, sizes: list) -> list:
    """Each field of every record concatenated in batch order, one `bytes` per field (one copy out
    of the map), plus a zero byte so that u24 fields decode in one pass (`decode_u24`)."""
    ends = np.cumsum(np.stack(sizes), axis=0) + 20
    starts = (ends - np.stack(sizes)).tolist()
    ends = ends.tolist()
    return [b"".join([buf[a:b] for buf, a, b in zip(bufs, s, e)] + [b"\0"]) for s, e in zip(starts, ends)]


@functools.cache
def _f16_table() -> np.ndarray:
    """float32 of every f16 bit pattern (256 KiB): a gather from it is 2× numpy's f16 → f32 cast here."""
    return np.arange(1 << 16, dtype=np.uint16).view("<f2").astype(np.float32)


def _batch_floats(raw: bytes, n: int, w: int) -> np.ndarray:
    """n stored floats of width w as float32 (f16: exact, NaN and ±inf kept)."""
    if w == 4:
        return np.frombuffer(raw, dtype="<f4", count=n).copy()
    return np.take(_f16_table(), np.frombuffer(raw, dtype="<u2", count=n))


def _refuse_if(bad, what: str) -> None:
    """Raises the batch's refusal; the caller decodes record by record for the exact message."""
    if bad:
        raise FormatError(f"a record of the batch fails a §1.2 check: {what}")


def _floats_fail(x32: np.ndarray, allow_neg_inf: bool, upper=LOG_PROB_TOLERANCE) -> bool:
    """`_bad_floats(…).any()` in two reductions and no temporary: the max is NaN when any value is,
    and fails `<= upper` then, as +inf and too large values do; the min is −inf when any value is."""
    if not x32.size:
        return False
    high = x32.max(axis=0) if np.ndim(upper) else x32.max()
    return not (high <= upper).all() or (not allow_neg_inf and x32.min() == -np.inf)


def _any_within_rows(x: np.ndarray, op) -> bool:
    """`op(x[:, j + 1], x[:, j])` anywhere, as one contiguous pass over the flat rows (the pairs that
    straddle two rows masked out): 2–3× the strided [:, 1:] / [:, :-1] comparison for short rows."""
    flat = np.ascontiguousarray(x).reshape(-1)
    hit = op(flat[1:], flat[:-1])
    hit[x.shape[1] - 1::x.shape[1]] = False
    return bool(hit.any())


def _check_top_k_batch(layout: SequenceLayout, ids, lp, tail, sums) -> None:
    """§1.2's top-k checks over a whole batch: the same as `_decode_top_k`'s, one pass per kind
    (ids < V read off the sorted rows' last column)."""
    ordered = np.sort(ids, axis=1)
    _refuse_if(ids.size and int(ordered[:, -1].max()) >= layout.vocab, "kept id not below V")
    _refuse_if(_any_within_rows(ordered, np.equal), "kept ids not distinct")
    _refuse_if(_floats_fail(lp, False), "kept log p")
    _refuse_if(_any_within_rows(lp, np.greater), "kept log p not non-increasing")
    full = layout.width == layout.vocab
    _refuse_if(_floats_fail(tail, full) or _floats_fail(sums, full, layout.sum_bounds()), "log tail or tail sum")
    _refuse_if(full and len(tail) and not (np.isneginf(tail).all() and np.isneginf(sums).all()), "tails not -inf at k = V")


def _check_sampled_batch(layout: SequenceLayout, P, D, d, ids, counts, lp, sums) -> None:
    """§1.2's sampled checks over a whole batch: the same as `_decode_sampled`'s."""
    N = layout.width
    _refuse_if(((d < 1) | (d > N)).any(), "d_j not in 1…N")
    csum, bounds = np.concatenate(([0], np.cumsum(d, dtype=np.int64))), np.concatenate(([0], np.cumsum(P)))
    _refuse_if((csum[bounds[1:]] - csum[bounds[:-1]] != D).any(), "d_j do not sum to D")
    _refuse_if(ids.size and int(ids.max()) >= layout.vocab, "drawn id not below V")
    starts = np.cumsum(d, dtype=np.int64) - d
    not_first = np.ones(len(ids), dtype=bool)
    not_first[starts] = False
    _refuse_if((not_first[1:] & (ids[1:] <= ids[:-1])).any(), "ids not strictly ascending")
    _refuse_if((counts < 1).any() or len(d) and (np.add.reduceat(counts.astype(np.int64), starts) != N).any(), "counts")
    _refuse_if(_floats_fail(lp, False) or _floats_fail(sums, False, layout.sum_bounds()), "log p or log-sum")


def decode_sequence_batch(bufs, samples, layout: SequenceLayout) -> SequenceBatch:
    """Decode and check the records `bufs` of `samples` together: each header, length and CRC as
    `decode_sequence` does (zlib, per record), then every array check of §1.2 vectorised over the
    batch. Refuses with a FormatError naming the check; `decode_sequence` on each record names the
    sample and position. The arrays are copies: they outlive the transaction."""
    heads = [_header(buf, sequence_key(s), layout) for buf, s in zip(bufs, samples)]
    w = 4 if layout.dtype == "f32" else 2
    L, D = (np.array([h[i] for h in heads], dtype=np.int64).reshape(-1) for i in (1, 2))
    P, R = np.maximum(L - 1, 0), layout.retemper
    raw = _join_sections(bufs, _section_sizes(layout, w, L, D))
    nL, nP, nD = int(L.sum()), int(P.sum()), int(D.sum())
    tokens = decode_u24(raw[0], 0, nL)
    _refuse_if(nL and int(tokens.max()) >= layout.vocab, "token id not below V")
    if layout.kind == KIND_TOP_K:
        ids = decode_u24(raw[1], 0, nD).reshape(nP, layout.width)
        lp = _batch_floats(raw[2], nD, w).reshape(nP, layout.width)
        tail, sums = _batch_floats(raw[3], nP, w), _batch_floats(raw[4], nP * R, w).reshape(nP, R)
        _check_top_k_batch(layout, ids, lp, tail, sums)
        return SequenceBatch(KIND_TOP_K, L, tokens, ids, lp, sums, log_tail=tail)
    if layout.kind == KIND_DENSE:
        lp = _batch_floats(raw[1], nD, w).reshape(nP, layout.vocab)
        sums = _batch_floats(raw[2], nP * R, w).reshape(nP, R)
        _refuse_if(_floats_fail(lp, False) or _floats_fail(sums, False, layout.sum_bounds()), "dense log p or log-sum")
        try:
            _check_dense_rows(lp, layout.dtype)
        except FormatError:
            _refuse_if(True, "a dense row does not sum to 1")
        return SequenceBatch(KIND_DENSE, L, tokens, None, lp, sums)
    d = np.frombuffer(raw[1], dtype=np.uint8, count=nP)
    ids, counts = decode_u24(raw[2], 0, nD), np.frombuffer(raw[3], dtype=np.uint8, count=nD)
    lp, sums = _batch_floats(raw[4], nD, w), _batch_floats(raw[5], nP * R, w).reshape(nP, R)
    _check_sampled_batch(layout, P, D, d, ids, counts, lp, sums)
    return SequenceBatch(KIND_SAMPLED, L, tokens, ids, lp, sums, counts=counts, distinct=d)


def _pack(kind: int, dtype: str, R: int, L: int, D: int, kn: int, sample: int, body: bytes) -> bytes:
    head = _HEAD.pack(RECORD_VERSION, kind, _DTYPE_CODE[dtype], R, 0, L, D, kn, 0)
    crc = zlib.crc32(body, zlib.crc32(head[8:], zlib.crc32(head[:4], zlib.crc32(sequence_key(sample)))))
    return head[:4] + struct.pack("<I", crc) + head[8:] + body


def _float_bytes(x, dtype: str) -> bytes:
    return np.asarray(x, dtype="<f2" if dtype == "f16" else "<f4").reshape(-1).tobytes()


def _rows(sums, P: int) -> np.ndarray:
    """Tail sums / log-sums as a [P, R] float64 array (a 2-D input keeps its R even when P = 0)."""
    sums = np.asarray(sums, dtype=np.float64)
    return sums if sums.ndim == 2 else sums.reshape(P, -1)


def encode_top_k(tokens, ids, log_p, log_tail, sums, dtype: str, sample: int) -> bytes:
    """The kind-3 record of `sample` (FORMAT.md §3.7): header, L × u24 tokens, P·k × u24 ids,
    P·k log p, P log tails, P·R tail sums (position-major), in `dtype`."""
    tokens, ids = np.asarray(tokens), np.asarray(ids)
    P, k = ids.shape
    sums = _rows(sums, P)
    body = encode_u24(tokens) + encode_u24(ids) + b"".join(_float_bytes(x, dtype) for x in (log_p, log_tail, sums))
    return _pack(KIND_TOP_K, dtype, sums.shape[1], len(tokens), P * k, k, sample, body)


def encode_sampled(tokens, distinct, ids, counts, log_p, sums, samples: int, dtype: str, sample: int) -> bytes:
    """The kind-4 record of `sample` (FORMAT.md §3.7): header, L × u24 tokens, P × u8 d_j, D × u24
    ids, D × u8 counts, D log p, P·R log-sums, in `dtype`."""
    tokens, ids = np.asarray(tokens), np.asarray(ids)
    P = max(len(tokens) - 1, 0)
    sums = _rows(sums, P)
    body = (encode_u24(tokens) + np.asarray(distinct, np.uint8).tobytes() + encode_u24(ids) + np.asarray(counts, np.uint8).tobytes()
            + _float_bytes(log_p, dtype) + _float_bytes(sums, dtype))
    return _pack(KIND_SAMPLED, dtype, sums.shape[1], len(tokens), len(ids), samples, sample, body)


def encode_dense(tokens, log_p, sums, dtype: str, sample: int) -> bytes:
    """The kind-5 record of `sample` (FORMAT.md §3.7): header (k field 0, D = P·V), L × u24 tokens,
    P·V log p in id order (`log_p` [P, V]), P·R log-sums `log Σ_v p^{a_r}`, in `dtype`."""
    tokens, log_p = np.asarray(tokens), np.asarray(log_p)
    P = max(len(tokens) - 1, 0)
    log_p = log_p if log_p.ndim == 2 else log_p.reshape(P, -1)
    if log_p.shape[0] != P:
        raise ValueError(f"{log_p.shape[0]} rows of log p for {len(tokens)} tokens (P = {P})")
    sums = _rows(sums, P)
    body = encode_u24(tokens) + _float_bytes(log_p, dtype) + _float_bytes(sums, dtype)
    return _pack(KIND_DENSE, dtype, sums.shape[1], len(tokens), log_p.size, 0, sample, body)


def dense_from_logits(logits, write_temperature: float, retemper_at, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """A dense record's values from logits [P, V] (FORMAT.md §3.7): one log-softmax at T_w in float64,
    `log p(v) = (z_v − M)/T_w − log Σ exp((z − M)/T_w)`, values below the dtype's range stored as its
    most negative finite value; and `log Σ_v p^{a_r}` [P, R]."""
    z = np.asarray(logits, dtype=np.float64)
    lp = z / write_temperature
    lp = lp - _logsumexp(lp)[:, None]
    floor = -65504.0 if dtype == "f16" else -float(np.finfo(np.float32).max)
    sums = np.stack([_logsumexp((write_temperature / t) * lp) for t in retemper_at], axis=1) if len(retemper_at) else np.zeros((len(z), 0))
    return np.maximum(np.minimum(lp, 0.0), floor), sums


# ---- §3.8: re-tempering -------------------------------------------------------------------------

def retemper_dense(log_p: np.ndarray, a: float) -> np.ndarray:
    """A dense record's rows [P, V] at any T, exact (FORMAT.md §3.8), a = T_w / T:
    `log p_T(v) = a·log p(v) − log Σ_u p(u)^a` (the normalizer a max-shifted log-sum-exp of the row)."""
    lp = np.asarray(log_p, dtype=np.float64) * a
    return lp - _logsumexp(lp)[..., None]


def _logsumexp(x: np.ndarray, axis=-1) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return (np.log(np.exp(x - m).sum(axis=axis, keepdims=True)) + m).squeeze(axis)


def declared_index(temperature: float, write_temperature: float, retemper_at) -> int | None:
    """r such that `retemper_at[r]` is `temperature` (relative 1e-9), −1 for T_w, None otherwise."""
    if math.isclose(temperature, write_temperature, rel_tol=1e-9):
        return -1
    return next((r for r, t in enumerate(retemper_at) if math.isclose(temperature, t, rel_tol=1e-9)), None)


def retemper_exact(log_p: np.ndarray, log_tail_sum: np.ndarray, a: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact §3.8 re-tempering of kept `log_p` [P, k] given `log s_tail` [P] (the stored tail sum
    at a declared T, or log r at T_w with a = 1): `log p_T = a·log p − log Z`, `log Z =
    logaddexp(log Σ_S p^a, log s_tail)`; returns (log p_T [P, k], log tail mass at T [P])."""
    lp = np.asarray(log_p, dtype=np.float64) * a
    log_z = np.logaddexp(_logsumexp(lp), np.asarray(log_tail_sum, dtype=np.float64))
    return lp - log_z[:, None], np.asarray(log_tail_sum, dtype=np.float64) - log_z


def tail_sum_interval(log_p: np.ndarray, log_tail: np.ndarray, vocab: int, a: float) -> tuple[np.ndarray, np.ndarray]:
    """§3.8's bounds [lo, hi] on `s_tail = Σ_{i∉S} p(i)^a` over every tail allowed, per position:
    E = m·(r/m)^a (flat), C = n·p*^a + ρ^a (packed) with p* = min(min_S p, r), n = ⌊r/p*⌋,
    ρ = r − n·p*; [E, C] for a > 1, [C, E] for a < 1 (a = 1: both r). Zero when m = 0 or r = 0."""
    p = np.exp(np.asarray(log_p, dtype=np.float64))
    r = np.exp(np.asarray(log_tail, dtype=np.float64))
    m = vocab - p.shape[1]
    if m == 0:
        zero = np.zeros(len(r))
        return zero, zero
    p_star = np.minimum(p.min(axis=1), r)
    with np.errstate(divide="ignore", invalid="ignore"):
        # At most m ids can be packed; when rounding makes r > m·p*, all m are full and nothing is left.
        n = np.minimum(np.where(p_star > 0, np.floor(r / p_star), 0.0), m)
        rho = np.where(n >= m, 0.0, np.clip(r - n * p_star, 0.0, None))
        packed = n * p_star ** a + rho ** a
    flat = m * (r / m) ** a
    lo, hi = (flat, packed) if a >= 1 else (packed, flat)
    return np.minimum(lo, hi), np.maximum(lo, hi)


def retemper_interval(log_p: np.ndarray, log_tail: np.ndarray, vocab: int, a: float):
    """At an undeclared T (a = T_w / T): per position the interval of the tail mass at T and of each
    kept p_T(i) (§3.8): `tail ∈ [lo/(s_S+lo), hi/(s_S+hi)]`, `p_T(i) ∈ [p^a/(s_S+hi), p^a/(s_S+lo)]`.
    Returns ((tail_lo, tail_hi) [P], (p_lo, p_hi) [P, k])."""
    lo, hi = tail_sum_interval(log_p, log_tail, vocab, a)
    pa = np.exp(np.asarray(log_p, dtype=np.float64) * a)
    s_S = pa.sum(axis=1)
    return (lo / (s_S + lo), hi / (s_S + hi)), (pa / (s_S + hi)[:, None], pa / (s_S + lo)[:, None])


def sampled_weights(log_p: np.ndarray, log_sum: np.ndarray, a: float) -> np.ndarray:
    """§3.8's importance weights `w = p_T(x)/p(x) = exp((a − 1)·log p(x) − log-sum)` of drawn
    entries (`log_sum` per entry: the stored normalizer at the declared T); 1 at T_w."""
    return np.exp((a - 1.0) * np.asarray(log_p, dtype=np.float64) - np.asarray(log_sum, dtype=np.float64))
