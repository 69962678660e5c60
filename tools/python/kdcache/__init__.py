"""Read kdcache stores from Python with py-lmdb and numpy only.

Written from FORMAT.md alone (no Swift code consulted): if this module needs something FORMAT.md
does not say, FORMAT.md is incomplete.

    import kdcache
    store = kdcache.open("data.lmdb")      # DatasetStore or SoftLabelStore
    store.manifest, len(store), store.features(0), store.text(0), store.label(0)
"""
from __future__ import annotations

import hashlib
import json
import struct
import unicodedata
import zlib

import lmdb
import numpy as np

__all__ = ["open", "DatasetStore", "SoftLabelStore", "TextFeaturizer", "hash_split", "fnv1a64", "FormatError"]

_U64 = struct.Struct(">Q")
_SPLITS = ("train", "valid", "test")


class FormatError(Exception):
    """A store or record that does not follow FORMAT.md."""


def fnv1a64(data: bytes, h: int = 0xCBF29CE484222325) -> int:
    """FNV-1a, 64-bit (FORMAT.md §2.4)."""
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def _fmix64(h: int) -> int:
    m = 0xFFFFFFFFFFFFFFFF
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & m
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & m
    h ^= h >> 33
    return h


def hash_split(sample_id: str, test_fraction: float, valid_fraction: float, seed: int) -> str:
    """The hash split of FORMAT.md §2.5."""
    h = _fmix64(fnv1a64(sample_id.encode("utf-8"), fnv1a64(struct.pack("<Q", seed))))
    u = (h >> 11) / float(1 << 53)
    if u < test_fraction:
        return "test"
    if u < test_fraction + valid_fraction:
        return "valid"
    return "train"


class TextFeaturizer:
    """Hashed word n-grams (FORMAT.md §2.4)."""

    def __init__(self, bits: int, ngrams):
        self.bits = bits
        self.ngrams = sorted(ngrams)

    @staticmethod
    def tokens(text: str) -> list[str]:
        out, current = [], []
        for ch in text.lower():
            if unicodedata.category(ch)[0] in "LMN":
                current.append(ch)
            elif current:
                out.append("".join(current))
                current = []
        if current:
            out.append("".join(current))
        return out

    def features(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        toks = self.tokens(text)
        mask = (1 << self.bits) - 1
        counts: dict[int, int] = {}
        for n in self.ngrams:
            for i in range(len(toks) - n + 1):
                b = fnv1a64(" ".join(toks[i:i + n]).encode("utf-8")) & mask
                counts[b] = counts.get(b, 0) + 1
        keys = sorted(counts)
        return np.array(keys, dtype=np.uint32), np.array([counts[k] for k in keys], dtype=np.float32)


def _crc_ok(record: bytes, offset: int) -> bool:
    (stored,) = struct.unpack_from("<I", record, offset)
    return zlib.crc32(record[offset + 4:], zlib.crc32(record[:offset])) == stored


def _lp(b: bytes) -> bytes:
    return struct.pack("<I", len(b)) + b


def _open_env(path: str) -> lmdb.Environment:
    try:
        return lmdb.open(path, subdir=False, readonly=True, lock=False, max_dbs=64)
    except lmdb.Error as e:
        raise FormatError(f"{path}: cannot open as LMDB: {e}") from e


def open(path: str):  # noqa: A001 - mirrors the builtin on purpose
    """Open either store; the returned object's class says which it is."""
    env = _open_env(path)
    try:
        meta = env.open_db(b"meta", create=False)
    except lmdb.Error as e:
        env.close()
        raise FormatError(f"{path}: not a kdcache store (no 'meta' database)") from e
    with env.begin(db=meta) as txn:
        raw = txn.get(b"manifest")
    if raw is None:
        env.close()
        raise FormatError(f"{path}: incomplete store (no manifest)")
    manifest = json.loads(raw)
    if manifest.get("schema_version", 0) > 1:
        env.close()
        raise FormatError(f"{path}: schema version {manifest['schema_version']} is newer than this reader")
    kind = manifest.get("format")
    if kind == "kdcache-dataset":
        return DatasetStore(env, manifest, path)
    if kind == "kdcache-softlabels":
        return SoftLabelStore(env, manifest, path)
    env.close()
    raise FormatError(f"{path}: unknown format {kind!r}")


class DatasetStore:
    """A dataset store (FORMAT.md §2)."""

    def __init__(self, env, manifest, path):
        self.env, self.manifest, self.path = env, manifest, path
        self._samples = env.open_db(b"samples", create=False)
        self._texts = env.open_db(b"texts", create=False)
        self._index_to_id = env.open_db(b"index_to_id", create=False)
        self._id_to_index = env.open_db(b"id_to_index", create=False)

    def __len__(self) -> int:
        return self.manifest["sample_count"]

    def close(self) -> None:
        self.env.close()

    def _get(self, db, i: int) -> bytes:
        with self.env.begin(db=db) as txn:
            v = txn.get(_U64.pack(i))
        if v is None:
            raise KeyError(i)
        return bytes(v)

    def record(self, i: int) -> dict:
        return decode_sample(self._get(self._samples, i), len(self.manifest["labels"]))

    def features(self, i: int):
        r = self.record(i)
        return (r["indices"], r["values"]) if r["kind"] == "sparse" else r["values"]

    def label(self, i: int) -> int:
        return self.record(i)["label"]

    def split(self, i: int) -> str:
        return self.record(i)["split"]

    def id(self, i: int) -> str:
        return self._get(self._index_to_id, i).decode("utf-8")

    def index_of(self, sample_id: str) -> int:
        with self.env.begin(db=self._id_to_index) as txn:
            v = txn.get(sample_id.encode("utf-8"))
        if v is None:
            raise KeyError(sample_id)
        return _U64.unpack(v)[0]

    def text(self, i: int) -> str:
        return zlib.decompress(self._get(self._texts, i)).decode("utf-8")

    def __iter__(self):
        """(index, record) in index order, one cursor pass."""
        with self.env.begin(db=self._samples) as txn:
            for k, v in txn.cursor():
                yield _U64.unpack(k)[0], decode_sample(bytes(v), len(self.manifest["labels"]))

    def fingerprint(self) -> str:
        """Recompute the fingerprint of FORMAT.md §2.6 from the content."""
        content = hashlib.sha256()
        with self.env.begin() as txn:
            for k, v in txn.cursor(db=self._samples):
                sample_id = txn.get(k, db=self._index_to_id)
                text = zlib.decompress(txn.get(k, db=self._texts)) if self.manifest["has_text"] else b""
                content.update(_lp(bytes(sample_id)) + _lp(bytes(v)) + _lp(text))
        header = b"kdcache-dataset-v1\n" + _lp(self.manifest["featurizer"]["signature"].encode())
        header += struct.pack("<I", len(self.manifest["labels"]))
        header += b"".join(_lp(l.encode("utf-8")) for l in self.manifest["labels"])
        return "sha256:" + hashlib.sha256(header + content.digest()).hexdigest()


def decode_sample(record: bytes, class_count: int | None = None) -> dict:
    """Decode and check a sample record (FORMAT.md §2.2)."""
    if len(record) < 16:
        raise FormatError(f"sample record of {len(record)} bytes is truncated")
    version, kind, split, _, label, n = struct.unpack_from("<BBBBII", record, 0)
    if version != 1:
        raise FormatError(f"unknown sample record version {version}")
    expected = 16 + n * (8 if kind == 0 else 4)
    if len(record) != expected:
        raise FormatError(f"sample record length {len(record)}, expected {expected}")
    if not _crc_ok(record, 12):
        raise FormatError("sample record CRC-32 mismatch")
    if class_count is not None and label >= class_count:
        raise FormatError(f"label {label} out of range")
    out = {"kind": "sparse" if kind == 0 else "dense", "split": _SPLITS[split], "label": label}
    if kind == 0:
        out["indices"] = np.frombuffer(record, dtype="<u4", count=n, offset=16).copy()
        out["values"] = np.frombuffer(record, dtype="<f4", count=n, offset=16 + 4 * n).copy()
    else:
        out["values"] = np.frombuffer(record, dtype="<f4", count=n, offset=16).copy()
    return out


class SoftLabelStore:
    """A soft-label cache (FORMAT.md §3)."""

    def __init__(self, env, manifest, path):
        self.env, self.manifest, self.path = env, manifest, path
        self._dbs = {name: env.open_db(f"teacher/{name}".encode(), create=False) for name in manifest["teachers"]}

    def __len__(self) -> int:
        return self.manifest["sample_count"]

    def _teacher(self, teacher):
        teachers = self.manifest["teachers"]
        if teacher is None:
            if len(teachers) != 1:
                raise KeyError(f"name a teacher: {sorted(teachers)}")
            teacher = next(iter(teachers))
        return teacher, teachers[teacher]

    def log_probs(self, i: int, view: int = 0, temperature: float | None = None, teacher: str | None = None) -> np.ndarray:
        """log p at the write temperature, or re-tempered exactly to `temperature` (FORMAT.md §3.3)."""
        name, entry = self._teacher(teacher)
        with self.env.begin(db=self._dbs[name]) as txn:
            raw = txn.get(struct.pack(">II", i, view))
        if raw is None:
            raise KeyError((i, view))
        lp = decode_soft_label(bytes(raw), len(self.manifest["labels"])).astype(np.float64)
        if temperature is not None:
            z = lp * (entry["write_temperature"] / temperature)
            z -= z.max()
            lp = z - np.log(np.exp(z).sum())
        return lp

    def probs(self, i: int, view: int = 0, temperature: float | None = None, teacher: str | None = None) -> np.ndarray:
        return np.exp(self.log_probs(i, view, temperature, teacher))


def decode_soft_label(record: bytes, class_count: int) -> np.ndarray:
    """Decode and check a soft-label record into dense log-probabilities (FORMAT.md §3.2, §3.4)."""
    if len(record) < 8:
        raise FormatError("soft-label record is truncated")
    version, dtype, k = struct.unpack_from("<BBH", record, 0)
    if version != 1 or dtype not in (1, 2):
        raise FormatError(f"unknown soft-label record version {version} / dtype {dtype}")
    width = 4 if dtype == 1 else 2
    np_dtype = "<f4" if dtype == 1 else "<f2"
    expected = 8 + class_count * width if k == 0 else 8 + k * (4 + width) + 4
    if len(record) != expected:
        raise FormatError(f"soft-label record length {len(record)}, expected {expected}")
    if not _crc_ok(record, 4):
        raise FormatError("soft-label record CRC-32 mismatch")
    if k == 0:
        return np.frombuffer(record, dtype=np_dtype, count=class_count, offset=8).astype(np.float32)
    classes = np.frombuffer(record, dtype="<u4", count=k, offset=8)
    values = np.frombuffer(record, dtype=np_dtype, count=k, offset=8 + 4 * k).astype(np.float32)
    (log_tail,) = struct.unpack_from("<f", record, len(record) - 4)
    rest = class_count - k
    out = np.full(class_count, log_tail - np.log(rest) if rest else -np.inf, dtype=np.float32)
    out[classes] = values
    return out
