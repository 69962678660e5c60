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
import os
import struct
import unicodedata
import zlib

import lmdb
import numpy as np

__all__ = ["open", "DatasetStore", "SoftLabelStore", "SoftLabelWriter", "DistillationDataset", "TextFeaturizer", "hash_split", "fnv1a64", "FormatError"]

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


_ENVIRONMENTS: dict = {}


def _open_env(path: str) -> lmdb.Environment:
    """Read-only and without LMDB's lock file (MDB_NOLOCK): works on read-only directories and
    media, and an environment opened before fork() stays usable in the child (no reader-table slot
    is shared), which is what PyTorch DataLoader workers need. Readers assume no concurrent writer:
    kdcache writers build files under a temporary name, or are finished before caches are shared.
    LMDB forbids opening one file twice in a process, so environments are shared per file."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise FormatError(f"{path}: {e.strerror}") from e
    key = (st.st_dev, st.st_ino)
    entry = _ENVIRONMENTS.get(key)
    if entry is not None:
        entry[1] += 1
        return entry[0]
    try:
        env = lmdb.open(path, subdir=False, readonly=True, lock=False, max_dbs=64)
    except lmdb.Error as e:
        raise FormatError(f"{path}: cannot open as LMDB: {e}") from e
    _ENVIRONMENTS[key] = [env, 1]
    return env


def _release_env(env) -> None:
    for key, entry in list(_ENVIRONMENTS.items()):
        if entry[0] is env:
            entry[1] -= 1
            if entry[1] == 0:
                del _ENVIRONMENTS[key]
                env.close()
            return


class _Store:
    """Shared by both stores: the environment (shared per file within a process) and its databases."""

    def __init__(self, env, manifest, path):
        self.env, self.manifest, self.path = env, manifest, path
        self._closed = False
        self._open_dbs()

    def _open_dbs(self):
        raise NotImplementedError

    def __len__(self) -> int:
        return self.manifest["sample_count"]

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _release_env(self.env)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open(path: str):  # noqa: A001 - mirrors the builtin on purpose
    """Open either store; the returned object's class says which it is."""
    env = _open_env(path)
    try:
        meta = env.open_db(b"meta", create=False)
        with env.begin(db=meta) as txn:
            raw = txn.get(b"manifest")
    except lmdb.Error as e:
        _release_env(env)
        raise FormatError(f"{path}: not a kdcache store (no 'meta' database)") from e
    if raw is None:
        _release_env(env)
        raise FormatError(f"{path}: incomplete store (no manifest)")
    manifest = json.loads(raw)
    if manifest.get("schema_version", 0) > 1:
        _release_env(env)
        raise FormatError(f"{path}: schema version {manifest['schema_version']} is newer than this reader")
    kind = manifest.get("format")
    if kind == "kdcache-dataset":
        return DatasetStore(env, manifest, path)
    if kind == "kdcache-softlabels":
        return SoftLabelStore(env, manifest, path)
    _release_env(env)
    raise FormatError(f"{path}: unknown format {kind!r}")


class DatasetStore(_Store):
    """A dataset store (FORMAT.md §2)."""

    def _open_dbs(self):
        env = self.env
        self._samples = env.open_db(b"samples", create=False)
        self._texts = env.open_db(b"texts", create=False)
        self._index_to_id = env.open_db(b"index_to_id", create=False)
        self._id_to_index = env.open_db(b"id_to_index", create=False)

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


class SoftLabelStore(_Store):
    """A soft-label cache (FORMAT.md §3)."""

    def _open_dbs(self):
        self._dbs = {name: self.env.open_db(f"teacher/{name}".encode(), create=False) for name in self.manifest["teachers"]}

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

    def __iter__(self):
        """((sample, view), log p at T_w) for the only teacher, in key order."""
        name, _ = self._teacher(None)
        classes = len(self.manifest["labels"])
        with self.env.begin(db=self._dbs[name]) as txn:
            for k, v in txn.cursor():
                yield struct.unpack(">II", k), decode_soft_label(bytes(v), classes)


class _DistillationDataset:
    """A map-style dataset for PyTorch: item i is (features, label, teacher probabilities at T)
    of the i-th sample of `split`. A `torch.utils.data.Dataset` when torch is importable (it only
    needs __len__ and __getitem__); safe in forked DataLoader workers (stores reopen after fork)."""

    def __init__(self, data: "DatasetStore", cache: "SoftLabelStore", split: str = "train", temperature: float = 1.0,
                 teacher: str | None = None, dense: bool = True):
        if cache.manifest["dataset_fingerprint"] != data.manifest["fingerprint"]:
            raise FormatError(f"{cache.path}: written for dataset {cache.manifest['dataset_fingerprint']}, not {data.manifest['fingerprint']}")
        self.data, self.cache, self.temperature, self.teacher, self.dense = data, cache, temperature, teacher, dense
        self.indices = [i for i, r in data if r["split"] == split]
        self.dimension = data.manifest["featurizer"]["dimension"]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int):
        i = self.indices[k]
        r = self.data.record(i)
        if r["kind"] == "sparse" and self.dense:
            x = np.zeros(self.dimension, dtype=np.float32)
            x[r["indices"]] = r["values"]
        else:
            x = r["values"] if r["kind"] == "dense" else (r["indices"], r["values"])
        p = self.cache.probs(i, temperature=self.temperature, teacher=self.teacher).astype(np.float32)
        return x, r["label"], p


_ADAPTER = None


def __getattr__(name):
    """`kdcache.DistillationDataset`, built on first use: a `torch.utils.data.Dataset` when torch
    is importable (importing torch costs a second, so only users of the adapter pay it)."""
    global _ADAPTER
    if name != "DistillationDataset":
        raise AttributeError(name)
    if _ADAPTER is None:
        try:
            import torch.utils.data as torch_data
            _ADAPTER = type("DistillationDataset", (_DistillationDataset, torch_data.Dataset), {})
        except ImportError:
            _ADAPTER = type("DistillationDataset", (_DistillationDataset,), {})
    return _ADAPTER


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


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def _merge_ranges(ranges):
    """[(a, b), …] → sorted, overlapping or touching ranges joined: [[a, b], …]."""
    merged = []
    for a, b in sorted(ranges):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return merged


class SoftLabelWriter:
    """Writes a soft-label cache (FORMAT.md §3) from Python, e.g. from a PyTorch teacher:

        with kdcache.SoftLabelWriter("cache.lmdb", "data.lmdb", name="bert", description="…",
                                     content_hash="sha256:…", write_temperature=2.0, dtype="f16") as w:
            for start in range(0, n, 4096):
                w.write(start, logits[start:start + 4096])        # rows in dataset order

    Each `write` is one transaction holding the records and the manifest's updated completed ranges,
    so an interrupted run can resume: `w.pending()` lists the sample ranges still missing.
    """

    def __init__(self, path, dataset, name, description="", content_hash="", write_temperature=1.0, dtype="f16",
                 views=1, map_size=1 << 30):
        import datetime
        if dtype not in ("f16", "f32"):
            raise ValueError("dtype must be f16 or f32")
        if views != 1:
            raise ValueError("this writer writes one view per sample")
        ds = dataset if isinstance(dataset, DatasetStore) else open(str(dataset))
        self.classes = len(ds.manifest["labels"])
        self.sample_count = len(ds)
        self.dtype, self.views, self.write_temperature, self.name = dtype, views, float(write_temperature), name
        self.env = lmdb.open(str(path), subdir=False, map_size=map_size, max_dbs=64)
        self.meta = self.env.open_db(b"meta")
        self.db = self.env.open_db(f"teacher/{name}".encode())
        with self.env.begin(db=self.meta) as txn:
            raw = txn.get(b"manifest")
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        if raw is None:
            manifest = {"format": "kdcache-softlabels", "schema_version": 1, "tool_version": "python-0.1.0", "created": now,
                        "dataset_fingerprint": ds.manifest["fingerprint"], "featurizer_signature": ds.manifest["featurizer"]["signature"],
                        "labels": ds.manifest["labels"], "sample_count": self.sample_count, "teachers": {}}
        else:
            manifest = json.loads(raw)
            if manifest["dataset_fingerprint"] != ds.manifest["fingerprint"]:
                raise FormatError(f"{path}: written for another dataset ({manifest['dataset_fingerprint']})")
        self.path = str(path)
        self.entry = {"identity": {"name": name, "description": description, "content_hash": content_hash},
                      "write_temperature": self.write_temperature, "dtype": dtype, "top_k": 0, "views": views,
                      "completed": [], "metrics": {}, "created": now, "tool_version": "python-0.1.0"}
        self._adopt(manifest)  # fail early, before writing anything
        self.manifest = manifest
        with self.env.begin(write=True, db=self.meta) as txn:
            self._commit_manifest(txn)

    def _adopt(self, manifest):
        """Adds this teacher to `manifest`, or checks the one already there has the same identity and layout."""
        old = manifest["teachers"].get(self.name)
        keys = ("identity", "write_temperature", "dtype", "top_k", "views")
        if old is None:
            manifest["teachers"][self.name] = dict(self.entry)
        elif {k: old[k] for k in keys} != {k: self.entry[k] for k in keys}:
            raise FormatError(f"{self.path}: teacher '{self.name}' exists with another identity or layout")
        return manifest["teachers"][self.name]

    def _commit_manifest(self, txn, completed=None):
        """Inside a write transaction: updates the manifest *as stored* (another process may be writing
        another teacher into the same file) with this teacher's completed range, and writes it back."""
        raw = txn.get(b"manifest", db=self.meta)
        manifest = json.loads(raw) if raw is not None else self.manifest
        entry = self._adopt(manifest)
        if completed is not None:
            entry["completed"] = _merge_ranges([tuple(r) for r in entry["completed"]] + [completed])
        txn.put(b"manifest", json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode(), db=self.meta)
        self.manifest = manifest

    def pending(self):
        done = sorted(tuple(r) for r in self.manifest["teachers"][self.name]["completed"])
        out, cursor = [], 0
        for a, b in done:
            if a > cursor:
                out.append((cursor, a))
            cursor = max(cursor, b)
        if cursor < self.sample_count:
            out.append((cursor, self.sample_count))
        return out

    def encode(self, log_probs: np.ndarray) -> bytes:
        body = np.asarray(log_probs, dtype="<f2" if self.dtype == "f16" else "<f4").tobytes()
        head = struct.pack("<BBH", 1, 1 if self.dtype == "f32" else 2, 0)
        crc = zlib.crc32(body, zlib.crc32(head))
        return head + struct.pack("<I", crc) + body

    def write(self, start: int, logits, kind: str = "logits", temperature: float = 1.0, view: int = 0):
        """Rows for samples start, start+1, … (one view); `kind` logits / logprobs / probs at `temperature`."""
        x = np.asarray(logits, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.classes:
            raise ValueError(f"expected shape [n, {self.classes}], got {x.shape}")
        if start < 0 or start + len(x) > self.sample_count:
            raise ValueError(f"samples {start}..{start + len(x)} outside 0..{self.sample_count}")
        if kind == "probs":
            x = np.log(x) * temperature
        elif kind == "logprobs":
            x = x * temperature
        if np.isnan(x).any() or np.isposinf(x).any():
            bad = int(np.argwhere(np.isnan(x) | np.isposinf(x))[0][0])
            raise ValueError(f"sample {start + bad}: NaN or +inf")
        lp = _log_softmax(x / self.write_temperature)
        with self.env.begin(write=True, db=self.db) as txn:
            for k, row in enumerate(lp):
                txn.put(struct.pack(">II", start + k, view), self.encode(row))
            self._commit_manifest(txn, completed=(start, start + len(x)))

    def close(self):
        self.env.sync(True)
        self.env.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
