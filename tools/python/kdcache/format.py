"""Byte layouts of FORMAT.md: keys (§2.1, §3.1), sample and soft-label records (§2.2, §3.2), their
CRC-32 (§1), the manifest checksum (§1) and stored texts (§2.1). numpy and the standard library only."""
from __future__ import annotations

import math
import struct
import zlib

import numpy as np

SPLITS = ("train", "valid", "test")
LOG_PROB_TOLERANCE = 1.0 / 1024  # the largest positive log-probability a record may hold
_U64 = struct.Struct(">Q")
_SOFT_LABEL_KEY = struct.Struct(">II")


class FormatError(Exception):
    """A store or record that does not follow FORMAT.md."""


def sample_key(i: int) -> bytes:
    """The key of sample `i` in `samples`, `texts` and `index_to_id`: `u64be(i)` (FORMAT.md §2.1)."""
    return _U64.pack(i)


def parse_sample_key(key) -> int:
    """The sample index of a `u64be` key (FORMAT.md §2.1)."""
    return _U64.unpack(key)[0]


def soft_label_key(sample: int, view: int) -> bytes:
    """The key of (sample, view) in `teacher/NAME`: `u32be(sample) ‖ u32be(view)` (FORMAT.md §3.1)."""
    return _SOFT_LABEL_KEY.pack(sample, view)


def parse_soft_label_key(key) -> tuple[int, int]:
    """(sample, view) of an 8-byte soft-label key (FORMAT.md §3.1)."""
    return _SOFT_LABEL_KEY.unpack(key)


def record_crc(record: bytes, offset: int, key: bytes | None) -> int:
    """CRC-32 of `key ‖ record` with the record's four CRC bytes at `offset` left out (FORMAT.md §1);
    format v1 (`key` None) leaves the key out."""
    crc = zlib.crc32(key) if key is not None else 0
    return zlib.crc32(record[offset + 4:], zlib.crc32(record[:offset], crc))


def _crc_ok(record: bytes, offset: int, key: bytes | None) -> bool:
    (stored,) = struct.unpack_from("<I", record, offset)
    return record_crc(record, offset, key) == stored


def manifest_checksum(manifest_bytes: bytes) -> bytes:
    """The value of `meta`/`manifest_crc32` for these exact manifest bytes: u32 LE CRC-32 (FORMAT.md §1)."""
    return struct.pack("<I", zlib.crc32(manifest_bytes))


def decompress_text(data: bytes, limit: int = 256 << 20) -> bytes:
    """A stored text: exactly one complete zlib stream, at most `limit` bytes out (FORMAT.md §1.2)."""
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, limit)
    except zlib.error as e:
        raise FormatError(f"corrupt compressed text: {e}") from e
    if not d.eof or d.unconsumed_tail or d.unused_data:
        raise FormatError("corrupt, truncated or oversized compressed text")
    return out


def _record_version(record: bytes, version: int) -> None:
    if record[0] != version:
        if record[0] in (1, 2):
            raise FormatError(f"record version {record[0]} in a format v{version} store, which holds version {version} records")
        raise FormatError(f"unknown record version {record[0]}")


def sample_record_v1(record: bytes, version: int) -> bytes:
    """A stored sample record as format v1 encodes it (FORMAT.md §2.6): in a v2 store, version byte
    1 and the CRC at offset 12 recomputed without the key; a v1 record as it is."""
    out = bytearray(record)
    if version >= 2 and len(out) >= 16:
        out[0] = 1
        struct.pack_into("<I", out, 12, record_crc(bytes(out), 12, None))
    return bytes(out)


def decode_sample(record: bytes, class_count: int | None = None, *, index: int, version: int = 2, features=None) -> dict:
    """Decode and check the record of sample `index` (FORMAT.md §2.2) in a store of format `version`
    (its key enters the v2 CRC). `features` = (kind, dimension) bounds the features: the kind, a
    dense count equal to the dimension, sparse buckets strictly ascending and below it, sparse
    counts finite and > 0, dense values finite."""
    if len(record) < 16:
        raise FormatError(f"sample record of {len(record)} bytes is truncated")
    _record_version(record, version)
    _, kind, split, reserved, label, n = struct.unpack_from("<BBBBII", record, 0)
    if kind not in (0, 1) or split not in (0, 1, 2) or reserved != 0:
        raise FormatError(f"unknown feature kind {kind}, split {split} or reserved byte {reserved}")
    expected = 16 + n * (8 if kind == 0 else 4)
    if len(record) != expected:
        raise FormatError(f"record length {len(record)}, expected {expected}")
    if not _crc_ok(record, 12, sample_key(index) if version >= 2 else None):
        raise FormatError("CRC-32 mismatch")
    if class_count is not None and label >= class_count:
        raise FormatError(f"label {label} out of range 0..<{class_count}")
    out = {"kind": "sparse" if kind == 0 else "dense", "split": SPLITS[split], "label": label}
    if features is not None and features[0] != out["kind"]:
        raise FormatError(f"a {out['kind']} record in a store of {features[0]} features")
    if kind == 0:
        out["indices"], out["values"] = _sparse_features(record, n, features[1] if features is not None else 1 << 32)
    else:
        out["values"] = _dense_features(record, n, features)
    return out


def _sparse_features(record: bytes, n: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """The n bucket indices and counts of a sparse record, checked (FORMAT.md §1.2)."""
    indices = np.frombuffer(record, dtype="<u4", count=n, offset=16).copy()
    values = np.frombuffer(record, dtype="<f4", count=n, offset=16 + 4 * n).copy()
    beyond = np.flatnonzero(indices >= limit)
    if len(beyond):
        raise FormatError(f"bucket index {int(indices[beyond[0]])} at position {int(beyond[0])} is not below the dimension {limit}")
    unsorted = np.flatnonzero(indices[1:] <= indices[:-1])
    if len(unsorted):
        j = int(unsorted[0]) + 1
        raise FormatError(f"bucket indices are not strictly ascending at position {j} ({int(indices[j - 1])}, then {int(indices[j])})")
    bad = np.flatnonzero(~(np.isfinite(values) & (values > 0)))
    if len(bad):
        raise FormatError(f"count {int(bad[0])} is {float(values[bad[0]])}, not a finite number > 0")
    return indices, values


def _dense_features(record: bytes, n: int, features) -> np.ndarray:
    """The n values of a dense record, checked (FORMAT.md §1.2)."""
    values = np.frombuffer(record, dtype="<f4", count=n, offset=16).copy()
    if features is not None and n != features[1]:
        raise FormatError(f"{n} features, the store's dimension is {features[1]}")
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise FormatError(f"feature {int(bad[0])} is {float(values[bad[0]])}, not a finite number")
    return values


def decode_soft_label(record: bytes, class_count: int, *, sample: int, view: int, version: int = 2,
                      dtype: str | None = None, top_k: int | None = None) -> np.ndarray:
    """Decode and check the record of (sample, view) into dense log-probabilities (FORMAT.md §3.2,
    §3.4) in a cache of format `version` (the key enters the v2 CRC). Checked as the Swift reader
    does: top-k classes below C and distinct; no NaN, +inf or value above 2^-10 (−inf is log 0);
    the tail −inf when k = C; the largest entry at least log(1/m) − 0.05, m = C (dense) or k + 1.
    `dtype` / `top_k` (the teacher's manifest entry) must match the record when given."""
    if len(record) < 8:
        raise FormatError("record is truncated")
    _record_version(record, version)
    _, code, k = struct.unpack_from("<BBH", record, 0)
    if code not in (1, 2):
        raise FormatError(f"unknown dtype {code}")
    if class_count < 1:
        raise FormatError("no classes")
    width = 4 if code == 1 else 2
    expected = 8 + class_count * width if k == 0 else 8 + k * (4 + width) + 4
    if len(record) != expected:
        raise FormatError(f"record length {len(record)}, expected {expected}")
    if not _crc_ok(record, 4, soft_label_key(sample, view) if version >= 2 else None):
        raise FormatError("CRC-32 mismatch")
    if k > class_count:
        raise FormatError(f"top-k {k} exceeds {class_count} classes")
    if (dtype is not None and dtype != ("f32" if code == 1 else "f16")) or (top_k is not None and top_k != k):
        raise FormatError(f"a {'f32' if code == 1 else 'f16'} top-{k} record, the manifest says {dtype} top-{top_k}")
    values = np.frombuffer(record, dtype="<f4" if code == 1 else "<f2", count=k or class_count, offset=8 + 4 * k).astype(np.float32)
    bad = np.isnan(values) | (values > LOG_PROB_TOLERANCE)
    if bad.any():
        j = int(np.argmax(bad))
        v = float(values[j])
        raise FormatError(f"{'class' if k == 0 else 'top-k entry'} {j}: log-probability {v} is {'NaN' if math.isnan(v) else '+inf' if v == math.inf else 'above 0'}")
    if k == 0:
        out, largest, parts = values, float(values.max()), class_count
    else:
        out, largest, parts = _spread_top_k(record, values, k, class_count)
    bound = -math.log(parts)
    if not largest >= bound - 0.05:
        raise FormatError(f"the largest log-probability is {largest}, below log(1/{parts}) = {bound}: not a distribution")
    return out


def _spread_top_k(record: bytes, values: np.ndarray, k: int, class_count: int) -> tuple[np.ndarray, float, int]:
    """A checked top-k record's dense log-probabilities with the tail spread evenly (FORMAT.md §3.4),
    its largest entry (tail included) and the number of parts m of its distribution."""
    classes = np.frombuffer(record, dtype="<u4", count=k, offset=8)
    if int(classes.max()) >= class_count:
        raise FormatError(f"top-k entry {int(np.argmax(classes >= class_count))} names class {int(classes.max())}, beyond {class_count} classes")
    unique, counts = np.unique(classes, return_counts=True)
    if len(unique) != k:
        raise FormatError(f"class {int(unique[np.argmax(counts > 1)])} appears twice among the top-{k} entries")
    (log_tail,) = struct.unpack_from("<f", record, len(record) - 4)
    if math.isnan(log_tail) or log_tail > LOG_PROB_TOLERANCE:
        raise FormatError(f"log tail mass is {log_tail}, not a log-probability")
    rest = class_count - k
    if rest == 0 and log_tail != -math.inf:
        raise FormatError(f"log tail mass is {log_tail} but all {class_count} classes are kept (it must be -inf)")
    out = np.full(class_count, log_tail - np.log(rest) if rest else -np.inf, dtype=np.float32)
    out[classes] = values
    return out, max(float(values.max()), log_tail), k + 1 if rest else class_count


def encode_soft_label(log_probs, dtype: str, sample: int, view: int = 0) -> bytes:
    """The dense v2 record of (sample, view) (FORMAT.md §3.2): version 2, dtype, k = 0, the CRC-32 of
    key ‖ record without its CRC field (§1), then C values in `dtype` (`f16` or `f32`)."""
    body = np.asarray(log_probs, dtype="<f2" if dtype == "f16" else "<f4").tobytes()
    head = struct.pack("<BBH", 2, 1 if dtype == "f32" else 2, 0)
    crc = zlib.crc32(body, zlib.crc32(head, zlib.crc32(soft_label_key(sample, view))))
    return head + struct.pack("<I", crc) + body


def encode_sample(kind: str, split: str, label: int, values, indices=None, *, index: int) -> bytes:
    """The v2 record of sample `index` (FORMAT.md §2.2); `indices` for sparse records."""
    values = np.asarray(values, dtype="<f4")
    n = len(values)
    head = struct.pack("<BBBBII", 2, 0 if kind == "sparse" else 1, SPLITS.index(split), 0, label, n)
    body = (np.asarray(indices, dtype="<u4").tobytes() if kind == "sparse" else b"") + values.tobytes()
    crc = zlib.crc32(body, zlib.crc32(head, zlib.crc32(sample_key(index))))
    return head + struct.pack("<I", crc) + body
