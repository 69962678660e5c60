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
import math
import os
import re
import struct
import unicodedata
import zlib

import lmdb
import numpy as np

__all__ = ["open", "DatasetStore", "SoftLabelStore", "SoftLabelWriter", "DistillationDataset", "TextFeaturizer", "hash_split", "fnv1a64",
           "FormatError", "dataset_manifest_problems", "softlabel_manifest_problems", "manifest_checksum", "encode_soft_label", "encode_sample"]

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


def _record_crc(record: bytes, offset: int, key: bytes | None) -> int:
    """CRC-32 of `key ‖ record` with the record's four CRC bytes at `offset` left out (FORMAT.md §1);
    format v1 (`key` None) leaves the key out."""
    crc = zlib.crc32(key) if key is not None else 0
    return zlib.crc32(record[offset + 4:], zlib.crc32(record[:offset], crc))


def _crc_ok(record: bytes, offset: int, key: bytes | None) -> bool:
    (stored,) = struct.unpack_from("<I", record, offset)
    return _record_crc(record, offset, key) == stored


def _sample_key(i: int) -> bytes:
    return _U64.pack(i)


def _soft_label_key(sample: int, view: int) -> bytes:
    return struct.pack(">II", sample, view)


def manifest_checksum(manifest_bytes: bytes) -> bytes:
    """The value of `meta`/`manifest_crc32` for these exact manifest bytes: u32 LE CRC-32 (FORMAT.md §1)."""
    return struct.pack("<I", zlib.crc32(manifest_bytes))


def _reject_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def _loads(raw: bytes):
    """Strict JSON: NaN and ±Infinity are not numbers (Python's json would accept them)."""
    return json.loads(raw, parse_constant=_reject_constant)


def _decompress(data: bytes, limit: int = 256 << 20) -> bytes:
    """Exactly one complete zlib stream, at most `limit` bytes out (as the Swift reader)."""
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, limit)
    except zlib.error as e:
        raise FormatError(f"corrupt compressed text: {e}") from e
    if not d.eof or d.unconsumed_tail or d.unused_data:
        raise FormatError("corrupt, truncated or oversized compressed text")
    return out


def _lp(b: bytes) -> bytes:
    return struct.pack("<I", len(b)) + b


# --- Manifest checks (FORMAT.md §1.1): the same bounds and kinds of messages as the Swift reader. ---

MAX_SAMPLES = 2**32 - 1          # soft-label keys hold the sample index as a u32
MAX_CLASSES = 1 << 20
MAX_VIEWS = 65535
MAX_TOP_K = 65535
MAX_WRITE_TEMPERATURE = 1e4
MAX_DENSE_DIMENSION = 1 << 24
MAX_TEACHERS = 62
MAX_TEACHER_NAME_BYTES = 200
LOG_PROB_TOLERANCE = 1.0 / 1024  # the largest positive log-probability a record may hold
_TEACHER_NAME = re.compile(r"[A-Za-z0-9._-]+\Z")
_SHA256 = re.compile(r"sha256:[0-9a-f]{64}\Z")
_SPLIT_METHODS = ("hash", "column", "hash+test-file")


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


class _Checker:
    def __init__(self):
        self.problems: list[str] = []

    def fail(self, field: str, message: str) -> None:
        self.problems.append(f"manifest field {field}: {message}")

    def check(self, ok: bool, field: str, message: str) -> None:
        if not ok:
            self.fail(field, message)

    def header(self, m: dict, expected: str) -> None:
        self.check(m.get("format") == expected, "format", f"{m.get('format')!r} is not {expected}")
        v = m.get("schema_version")
        self.check(_is_int(v) and v in (1, 2), "schema_version", f"{v!r} is not a version this reader reads (1 or 2)")

    def labels(self, m: dict) -> list:
        labels = m.get("labels")
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            self.fail("labels", "missing or not a list of strings")
            return []
        self.check(len(labels) > 0, "labels", "empty: a store needs at least one class")
        self.check(len(labels) <= MAX_CLASSES, "labels", f"{len(labels)} classes, more than {MAX_CLASSES}")
        seen = set()
        for i, label in enumerate(labels):
            if label in seen:
                self.fail(f"labels[{i}]", f"'{label}' appears twice")
                break
            seen.add(label)
        return labels

    def sample_count(self, m: dict):
        n = m.get("sample_count")
        if not (_is_int(n) and 0 <= n <= MAX_SAMPLES):
            self.fail("sample_count", f"{n!r} is not in 0…{MAX_SAMPLES}")
            return None
        return n


def _float32_ok(v, positive: bool) -> bool:
    """Finite as a float32 (and > 0 with a finite float32 reciprocal when `positive`)."""
    if not _is_number(v):
        return False
    with np.errstate(over="ignore", divide="ignore"):
        f = np.float32(v)
        if not np.isfinite(f):
            return False
        return not positive or (f > 0 and bool(np.isfinite(np.float32(1) / f)))


def _hashed_signature(bits: int, ngrams) -> str:
    """FORMAT.md §2.4's signature for these fields."""
    return f"hashed-ngrams;tokenizer=unicode-lnm-lower-v1;hash=fnv1a64;bits={bits};ngrams={','.join(map(str, ngrams))}"


def _check_featurizer(c: _Checker, f) -> None:
    if not isinstance(f, dict):
        c.fail("featurizer", "missing or not an object")
        return
    kind, signature, dimension = f.get("kind"), f.get("signature"), f.get("dimension")
    c.check(isinstance(signature, str), "featurizer.signature", "missing or not a string")
    if not _is_int(dimension):
        c.fail("featurizer.dimension", f"{dimension!r} is not an integer")
        return
    if kind == "hashed-ngrams":
        c.check(all(f.get(k) is None for k in ("columns", "mean", "std")), "featurizer", "hashed n-grams have no columns, mean or std")
        bits = f.get("bits")
        if bits is None:
            c.fail("featurizer.bits", "missing (hashed n-grams need it)")
            return
        if not (_is_int(bits) and 1 <= bits <= 30):
            c.fail("featurizer.bits", f"{bits!r} is not in 1…30")
            return
        c.check(dimension == 1 << bits, "featurizer.dimension", f"{dimension} is not 2^bits = {1 << bits}")
        ngrams = f.get("ngrams")
        if not isinstance(ngrams, list) or not ngrams:
            c.fail("featurizer.ngrams", "missing or empty")
            return
        if not (len(ngrams) <= 8 and all(_is_int(n) and 1 <= n <= 8 for n in ngrams) and all(a < b for a, b in zip(ngrams, ngrams[1:]))):
            c.fail("featurizer.ngrams", f"{ngrams} are not strictly ascending orders in 1…8")
            return
        canonical = _hashed_signature(bits, ngrams)
        if isinstance(signature, str) and signature != canonical:
            parts = signature.split(";")
            fields = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
            expected = [("tokenizer", "unicode-lnm-lower-v1"), ("hash", "fnv1a64"), ("bits", str(bits)), ("ngrams", ",".join(map(str, ngrams)))]
            wrong = [(k, v) for k, v in expected if fields.get(k) != v]
            if parts[0] != "hashed-ngrams":
                detail = "it does not start with hashed-ngrams"
            elif wrong:
                k, v = wrong[0]
                detail = f"it says {k}={fields.get(k, 'nothing')}, the featurizer has {k}={v}"
            else:
                detail = "it is not the canonical form"
            c.fail("featurizer.signature", f"'{signature[:120]}' disagrees with bits and ngrams: {detail} (expected '{canonical}')")
    elif kind == "dense":
        if not 1 <= dimension <= MAX_DENSE_DIMENSION:
            c.fail("featurizer.dimension", f"{dimension} is not in 1…{MAX_DENSE_DIMENSION}")
            return
        c.check(f.get("bits") is None and f.get("ngrams") is None, "featurizer", "a dense featurizer has no bits or ngrams")
        columns = f.get("columns")
        if isinstance(columns, list) and all(isinstance(x, str) for x in columns):
            c.check(len(columns) == dimension, "featurizer.columns", f"{len(columns)} columns for dimension {dimension}")
            c.check(len(set(columns)) == len(columns), "featurizer.columns", "a column appears twice")
            expected = "dense;columns=" + ",".join(columns)
            c.check(signature == expected, "featurizer.signature", f"'{str(signature)[:80]}' does not name the columns: expected '{expected[:80]}'")
        else:
            c.fail("featurizer.columns", "missing (a dense store names its columns)")
        for name in ("mean", "std"):
            values = f.get(name)
            if not isinstance(values, list):
                c.fail(f"featurizer.{name}", "missing (a dense store needs the per-column mean and std of its train split)")
                continue
            if len(values) != dimension:
                c.fail(f"featurizer.{name}", f"{len(values)} values for dimension {dimension}")
                continue
            for j, v in enumerate(values):
                if not _float32_ok(v, positive=name == "std"):
                    c.fail(f"featurizer.{name}[{j}]", f"{v!r} is not {'a finite number' if name == 'mean' else 'a positive finite number'}")
                    break
    else:
        c.fail("featurizer.kind", f"{kind!r} is not hashed-ngrams or dense")


def dataset_manifest_problems(m) -> list[str]:
    """Every problem of a dataset manifest, one line each (empty when valid): FORMAT.md §1.1."""
    if not isinstance(m, dict):
        return ["unreadable manifest: not a JSON object"]
    c = _Checker()
    c.header(m, "kdcache-dataset")
    labels = c.labels(m)
    n = c.sample_count(m)
    featurizer = m.get("featurizer")
    _check_featurizer(c, featurizer)
    split_counts, class_counts = m.get("split_counts"), m.get("class_counts")
    if not isinstance(split_counts, dict) or not isinstance(class_counts, dict):
        c.fail("split_counts" if not isinstance(split_counts, dict) else "class_counts", "missing or not an object")
    else:
        for key in sorted(split_counts):
            c.check(key in _SPLITS, f"split_counts.{key}", "unknown split (train, valid, test)")
        for key in sorted(class_counts):
            c.check(key in _SPLITS, f"class_counts.{key}", "unknown split (train, valid, test)")
        totals = []
        for s in _SPLITS:
            k = split_counts.get(s)
            if k is None:
                c.fail(f"split_counts.{s}", "missing")
                continue
            if not (_is_int(k) and 0 <= k and (n is None or k <= n)):
                c.fail(f"split_counts.{s}", f"{k!r} is not in 0…sample_count ({n})")
                continue
            totals.append(k)
            per = class_counts.get(s)
            if per is None:
                c.fail(f"class_counts.{s}", "missing")
                continue
            if not isinstance(per, list) or len(per) != len(labels):
                c.fail(f"class_counts.{s}", f"{len(per) if isinstance(per, list) else per!r} entries for {len(labels)} labels")
                continue
            bad = next((i for i, x in enumerate(per) if not (_is_int(x) and 0 <= x <= k)), None)
            if bad is not None:
                c.fail(f"class_counts.{s}[{bad}]", f"{per[bad]!r} is not in 0…split_counts.{s} ({k})")
                continue
            c.check(sum(per) == k, f"class_counts.{s}", f"sums to {sum(per)}, split_counts.{s} is {k}")
        if len(totals) == 3 and n is not None:
            c.check(sum(totals) == n, "split_counts", f"sums to {sum(totals)}, sample_count is {n}")
    split = m.get("split")
    if isinstance(split, dict):
        c.check(split.get("method") in _SPLIT_METHODS, "split.method", f"{split.get('method')!r} is not hash, column or hash+test-file")
        for name in ("test_fraction", "valid_fraction"):
            f = split.get(name)
            if f is not None:
                c.check(_is_number(f) and math.isfinite(f) and 0 <= f <= 1, f"split.{name}", f"{f!r} is not in 0…1")
    else:
        c.fail("split", "missing or not an object")
    kind = featurizer.get("kind") if isinstance(featurizer, dict) else None
    has_text = m.get("has_text")
    c.check(isinstance(has_text, bool) and has_text == (kind == "hashed-ngrams"), "has_text",
            f"{has_text!r} with a {kind} featurizer (raw texts are kept exactly for hashed n-grams)")
    fingerprint = m.get("fingerprint")
    c.check(isinstance(fingerprint, str) and _SHA256.match(fingerprint) is not None, "fingerprint",
            f"'{str(fingerprint)[:80]}' is not 'sha256:' and 64 hex digits")
    skipped = m.get("skipped_rows", {})
    if isinstance(skipped, dict):
        for reason in sorted(skipped):
            c.check(_is_int(skipped[reason]) and skipped[reason] >= 0, f"skipped_rows.{reason}", f"{skipped[reason]!r} is negative")
    return c.problems


def _augmentation_ok(spec) -> bool:
    """`token-dropout:p=P` (0 ≤ P < 1) or `gaussian:sigma=S` (S finite, ≥ 0), as FORMAT.md §3.5."""
    if not isinstance(spec, str) or ":" not in spec:
        return False
    kind, rest = spec.split(":", 1)
    kv = rest.split("=")
    if len(kv) != 2:
        return False
    try:
        x = float(kv[1])
    except ValueError:
        return False
    if not math.isfinite(x) or x < 0:
        return False
    return (kind, kv[0]) == ("token-dropout", "p") and x < 1 or (kind, kv[0]) == ("gaussian", "sigma")


def _check_teacher(c: _Checker, key: str, t, classes: int, n) -> None:
    f = f"teachers.{key[:80]}"
    c.check(_TEACHER_NAME.match(key) is not None and len(key.encode()) <= MAX_TEACHER_NAME_BYTES, f,
            f"the name is not 1…{MAX_TEACHER_NAME_BYTES} characters of A-Z a-z 0-9 . _ -")
    if not isinstance(t, dict):
        c.fail(f, "not an object")
        return
    identity = t.get("identity")
    name = identity.get("name") if isinstance(identity, dict) else None
    c.check(name == key, f"{f}.identity.name", f"'{str(name)[:80]}' differs from the teacher's key '{key[:80]}' (its records are in teacher/{key[:80]})")
    tw = t.get("write_temperature")
    c.check(_is_number(tw) and math.isfinite(tw) and 0 < tw <= MAX_WRITE_TEMPERATURE, f"{f}.write_temperature",
            f"{tw!r} is not in (0, {int(MAX_WRITE_TEMPERATURE)}]")
    c.check(t.get("dtype") in ("f16", "f32"), f"{f}.dtype", f"{str(t.get('dtype'))[:40]!r} is not f16 or f32")
    k, max_k = t.get("top_k"), min(classes, MAX_TOP_K)
    c.check(_is_int(k) and 0 <= k <= max_k, f"{f}.top_k", f"{k!r} is not in 0…{max_k}")
    views = t.get("views")
    c.check(_is_int(views) and 1 <= views <= MAX_VIEWS, f"{f}.views", f"{views!r} is not in 1…{MAX_VIEWS}")
    completed = t.get("completed")
    if not isinstance(completed, list):
        c.fail(f"{f}.completed", "missing or not a list")
    else:
        previous_end = 0
        for i, r in enumerate(completed):
            field = f"{f}.completed[{i}]"
            if not isinstance(r, list) or len(r) != 2 or not all(_is_int(x) for x in r):
                c.fail(field, f"{str(r)[:40]} is not 2 integers ([start, end])")
                break
            if not (0 <= r[0] < r[1] and (n is None or r[1] <= n)):
                c.fail(field, f"[{r[0]}, {r[1]}] is not a non-empty range inside [0, {n}]")
                break
            if r[0] < previous_end:
                c.fail(field, f"[{r[0]}, {r[1]}] overlaps or precedes the range before it")
                break
            previous_end = r[1]
    augmentation = t.get("augmentation")
    if augmentation is not None:
        c.check(_augmentation_ok(augmentation), f"{f}.augmentation",
                f"'{str(augmentation)[:80]}' is not token-dropout:p=P (0 ≤ P < 1) or gaussian:sigma=S (S finite, ≥ 0)")
    metrics = t.get("metrics", {})
    if isinstance(metrics, dict):
        for name in sorted(metrics):
            v = metrics[name]
            c.check(_is_number(v) and math.isfinite(v), f"{f}.metrics.{name}", f"{v!r} is not finite")


def softlabel_manifest_problems(m) -> list[str]:
    """Every problem of a soft-label manifest, one line each (empty when valid): FORMAT.md §1.1."""
    if not isinstance(m, dict):
        return ["unreadable manifest: not a JSON object"]
    c = _Checker()
    c.header(m, "kdcache-softlabels")
    c.check(isinstance(m.get("dataset_fingerprint"), str) and m.get("dataset_fingerprint") != "", "dataset_fingerprint", "empty")
    c.check(isinstance(m.get("featurizer_signature"), str) and m.get("featurizer_signature") != "", "featurizer_signature", "empty")
    labels = c.labels(m)
    n = c.sample_count(m)
    teachers = m.get("teachers")
    if not isinstance(teachers, dict):
        c.fail("teachers", "missing or not an object")
        return c.problems
    c.check(len(teachers) <= MAX_TEACHERS, "teachers", f"{len(teachers)} teachers, more than {MAX_TEACHERS}")
    for key in sorted(teachers):
        _check_teacher(c, key, teachers[key], len(labels), n)
    return c.problems


def _check_stored_manifest(path: str, raw: bytes, stored_crc) -> dict:
    """The manifest of `path` after every check, in the Swift reader's order: it decodes, its schema
    version is known, its checksum matches (required from v2 on), every field is in range."""
    try:
        m = _loads(raw)
    except ValueError as e:
        raise FormatError(f"{path}: unreadable manifest: {e}") from e
    if not isinstance(m, dict) or not _is_int(m.get("schema_version")):
        raise FormatError(f"{path}: unreadable manifest: no schema_version")
    v = m["schema_version"]
    if v > 2:
        raise FormatError(f"{path}: schema version {v} is newer than this reader reads (2)")
    if v < 1:
        raise FormatError(f"{path}: unknown schema version {v}")
    computed = zlib.crc32(raw)
    if stored_crc is not None:
        stored_crc = bytes(stored_crc)
        if len(stored_crc) != 4:
            raise FormatError(f"{path}: the manifest checksum (meta/manifest_crc32) is {len(stored_crc)} bytes, not 4")
        (stored,) = struct.unpack("<I", stored_crc)
        if stored != computed:
            raise FormatError(f"{path}: manifest checksum mismatch: stored 0x{stored:08x}, computed 0x{computed:08x} over its {len(raw)} bytes")
    elif v >= 2:
        raise FormatError(f"{path}: the manifest has no checksum (meta/manifest_crc32), which format v2 requires")
    kind = m.get("format")
    problems = dataset_manifest_problems(m) if kind == "kdcache-dataset" else softlabel_manifest_problems(m) if kind == "kdcache-softlabels" else []
    if problems:
        raise FormatError(f"{path}: {problems[0]}")
    return m


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
    """Open either store; the returned object's class says which it is. The manifest is checked
    completely first (checksum in format v2, every field: FORMAT.md §1.1)."""
    env = _open_env(path)
    try:
        meta = env.open_db(b"meta", create=False)
        with env.begin(db=meta) as txn:
            raw, crc = txn.get(b"manifest"), txn.get(b"manifest_crc32")
            raw, crc = (bytes(raw) if raw is not None else None), (bytes(crc) if crc is not None else None)
    except lmdb.Error as e:
        _release_env(env)
        raise FormatError(f"{path}: not a kdcache store (no 'meta' database)") from e
    if raw is None:
        _release_env(env)
        raise FormatError(f"{path}: incomplete store (no manifest)")
    try:
        manifest = _check_stored_manifest(path, raw, crc)
    except FormatError:
        _release_env(env)
        raise
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
        f = self.manifest["featurizer"]
        self.version = self.manifest["schema_version"]
        self._feature_layout = ("dense" if f["kind"] == "dense" else "sparse", f["dimension"])

    def _get(self, db, i: int) -> bytes:
        with self.env.begin(db=db) as txn:
            v = txn.get(_U64.pack(i))
        if v is None:
            raise KeyError(i)
        return bytes(v)

    def _decode(self, record: bytes, i: int) -> dict:
        try:
            return decode_sample(record, len(self.manifest["labels"]), index=i, version=self.version, features=self._feature_layout)
        except FormatError as e:
            raise FormatError(f"{self.path}: sample {i}: {e}") from e

    def record(self, i: int) -> dict:
        return self._decode(self._get(self._samples, i), i)

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
        try:
            return _decompress(self._get(self._texts, i)).decode("utf-8")
        except FormatError as e:
            raise FormatError(f"{self.path}: sample {i}: {e}") from e

    def __iter__(self):
        """(index, record) in index order, one cursor pass."""
        with self.env.begin(db=self._samples) as txn:
            for k, v in txn.cursor():
                i = _U64.unpack(k)[0]
                yield i, self._decode(bytes(v), i)

    def fingerprint(self) -> str:
        """Recompute the fingerprint of FORMAT.md §2.6 from the content: each record as format v1
        encodes it (version byte 1, the CRC without the key), so v1 and v2 stores of one input agree."""
        content = hashlib.sha256()
        with self.env.begin() as txn:
            for k, v in txn.cursor(db=self._samples):
                sample_id = txn.get(k, db=self._index_to_id)
                text = _decompress(txn.get(k, db=self._texts)) if self.manifest["has_text"] else b""
                record = bytearray(v)
                if self.version >= 2 and len(record) >= 16:
                    record[0] = 1
                    struct.pack_into("<I", record, 12, _record_crc(bytes(record), 12, None))
                content.update(_lp(bytes(sample_id)) + _lp(bytes(record)) + _lp(text))
        header = b"kdcache-dataset-v1\n" + _lp(self.manifest["featurizer"]["signature"].encode())
        header += struct.pack("<I", len(self.manifest["labels"]))
        header += b"".join(_lp(l.encode("utf-8")) for l in self.manifest["labels"])
        return "sha256:" + hashlib.sha256(header + content.digest()).hexdigest()


def _record_version(record: bytes, version: int) -> None:
    if record[0] != version:
        if record[0] in (1, 2):
            raise FormatError(f"record version {record[0]} in a format v{version} store, which holds version {version} records")
        raise FormatError(f"unknown record version {record[0]}")


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
    if not _crc_ok(record, 12, _sample_key(index) if version >= 2 else None):
        raise FormatError("CRC-32 mismatch")
    if class_count is not None and label >= class_count:
        raise FormatError(f"label {label} out of range 0..<{class_count}")
    out = {"kind": "sparse" if kind == 0 else "dense", "split": _SPLITS[split], "label": label}
    if features is not None and features[0] != out["kind"]:
        raise FormatError(f"a {out['kind']} record in a store of {features[0]} features")
    if kind == 0:
        indices = np.frombuffer(record, dtype="<u4", count=n, offset=16).copy()
        values = np.frombuffer(record, dtype="<f4", count=n, offset=16 + 4 * n).copy()
        limit = features[1] if features is not None else 1 << 32
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
        out["indices"], out["values"] = indices, values
    else:
        values = np.frombuffer(record, dtype="<f4", count=n, offset=16).copy()
        if features is not None and n != features[1]:
            raise FormatError(f"{n} features, the store's dimension is {features[1]}")
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            raise FormatError(f"feature {int(bad[0])} is {float(values[bad[0]])}, not a finite number")
        out["values"] = values
    return out


class SoftLabelStore(_Store):
    """A soft-label cache (FORMAT.md §3)."""

    def _open_dbs(self):
        self._dbs = {name: self.env.open_db(f"teacher/{name}".encode(), create=False) for name in self.manifest["teachers"]}
        self.version = self.manifest["schema_version"]

    def _teacher(self, teacher):
        teachers = self.manifest["teachers"]
        if teacher is None:
            if len(teachers) != 1:
                raise KeyError(f"name a teacher: {sorted(teachers)}")
            teacher = next(iter(teachers))
        return teacher, teachers[teacher]

    def _decode(self, raw: bytes, name: str, entry: dict, sample: int, view: int) -> np.ndarray:
        try:
            return decode_soft_label(raw, len(self.manifest["labels"]), sample=sample, view=view, version=self.version,
                                     dtype=entry["dtype"], top_k=entry["top_k"])
        except FormatError as e:
            raise FormatError(f"{self.path}: teacher {name} sample {sample} view {view}: {e}") from e

    def log_probs(self, i: int, view: int = 0, temperature: float | None = None, teacher: str | None = None) -> np.ndarray:
        """log p at the write temperature, or re-tempered exactly to `temperature` (FORMAT.md §3.3)."""
        name, entry = self._teacher(teacher)
        if not (0 <= i <= 0xFFFFFFFF and 0 <= view <= 0xFFFFFFFF):
            raise KeyError((i, view))
        with self.env.begin(db=self._dbs[name]) as txn:
            raw = txn.get(_soft_label_key(i, view))
        if raw is None:
            raise KeyError((i, view))
        lp = self._decode(bytes(raw), name, entry, i, view).astype(np.float64)
        if temperature is not None:
            z = lp * (entry["write_temperature"] / temperature)
            z -= z.max()
            lp = z - np.log(np.exp(z).sum())
        return lp

    def probs(self, i: int, view: int = 0, temperature: float | None = None, teacher: str | None = None) -> np.ndarray:
        return np.exp(self.log_probs(i, view, temperature, teacher))

    def __iter__(self):
        """((sample, view), log p at T_w) for the only teacher, in key order."""
        name, entry = self._teacher(None)
        with self.env.begin(db=self._dbs[name]) as txn:
            for k, v in txn.cursor():
                sample, view = struct.unpack(">II", k)
                yield (sample, view), self._decode(bytes(v), name, entry, sample, view)


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
    np_dtype = "<f4" if code == 1 else "<f2"
    expected = 8 + class_count * width if k == 0 else 8 + k * (4 + width) + 4
    if len(record) != expected:
        raise FormatError(f"record length {len(record)}, expected {expected}")
    if not _crc_ok(record, 4, _soft_label_key(sample, view) if version >= 2 else None):
        raise FormatError("CRC-32 mismatch")
    if k > class_count:
        raise FormatError(f"top-k {k} exceeds {class_count} classes")
    if (dtype is not None and dtype != ("f32" if code == 1 else "f16")) or (top_k is not None and top_k != k):
        raise FormatError(f"a {'f32' if code == 1 else 'f16'} top-{k} record, the manifest says {dtype} top-{top_k}")
    values = np.frombuffer(record, dtype=np_dtype, count=k or class_count, offset=8 + 4 * k).astype(np.float32)
    bad = np.isnan(values) | (values > LOG_PROB_TOLERANCE)
    if bad.any():
        j = int(np.argmax(bad))
        v = float(values[j])
        raise FormatError(f"{'class' if k == 0 else 'top-k entry'} {j}: log-probability {v} is {'NaN' if math.isnan(v) else '+inf' if v == math.inf else 'above 0'}")
    largest, parts = float(values.max()), class_count
    if k == 0:
        out = values
    else:
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
        parts = k + 1 if rest else class_count
        largest = max(largest, log_tail)
        out = np.full(class_count, log_tail - np.log(rest) if rest else -np.inf, dtype=np.float32)
        out[classes] = values
    bound = -math.log(parts)
    if not largest >= bound - 0.05:
        raise FormatError(f"the largest log-probability is {largest}, below log(1/{parts}) = {bound}: not a distribution")
    return out


def encode_soft_label(log_probs, dtype: str, sample: int, view: int = 0) -> bytes:
    """The dense v2 record of (sample, view) (FORMAT.md §3.2): version 2, dtype, k = 0, the CRC-32 of
    key ‖ record without its CRC field (§1), then C values in `dtype` (`f16` or `f32`)."""
    body = np.asarray(log_probs, dtype="<f2" if dtype == "f16" else "<f4").tobytes()
    head = struct.pack("<BBH", 2, 1 if dtype == "f32" else 2, 0)
    crc = zlib.crc32(body, zlib.crc32(head, zlib.crc32(_soft_label_key(sample, view))))
    return head + struct.pack("<I", crc) + body


def encode_sample(kind: str, split: str, label: int, values, indices=None, *, index: int) -> bytes:
    """The v2 record of sample `index` (FORMAT.md §2.2); `indices` for sparse records."""
    values = np.asarray(values, dtype="<f4")
    n = len(values)
    head = struct.pack("<BBBBII", 2, 0 if kind == "sparse" else 1, _SPLITS.index(split), 0, label, n)
    body = (np.asarray(indices, dtype="<u4").tobytes() if kind == "sparse" else b"") + values.tobytes()
    crc = zlib.crc32(body, zlib.crc32(head, zlib.crc32(_sample_key(index))))
    return head + struct.pack("<I", crc) + body


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
        self.path = str(path)
        self.env = lmdb.open(str(path), subdir=False, map_size=map_size, max_dbs=64)
        self.meta = self.env.open_db(b"meta")
        try:
            with self.env.begin(db=self.meta) as txn:
                stored = self._stored_manifest(txn)
        except FormatError:
            self.env.close()
            raise
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        if stored is None:
            manifest = {"format": "kdcache-softlabels", "schema_version": 2, "tool_version": "python-0.2.0", "created": now,
                        "dataset_fingerprint": ds.manifest["fingerprint"], "featurizer_signature": ds.manifest["featurizer"]["signature"],
                        "labels": ds.manifest["labels"], "sample_count": self.sample_count, "teachers": {}}
        else:
            manifest = stored
            if manifest["schema_version"] != 2:
                self.env.close()
                raise FormatError(f"{path}: is a format v{manifest['schema_version']} cache; this writer adds records to format v2 caches only. "
                                  f"Write to a new file, or upgrade it first with kdcache merge {path} --out NEW (it re-checksums every record)")
            if manifest.get("format") != "kdcache-softlabels":
                self.env.close()
                raise FormatError(f"{path}: is not a soft-label cache")
            for field, ours in (("dataset_fingerprint", ds.manifest["fingerprint"]), ("labels", ds.manifest["labels"]),
                                ("sample_count", self.sample_count)):
                if manifest[field] != ours:
                    self.env.close()
                    raise FormatError(f"{path}: written for another dataset ({field} differs)")
        self.db = self.env.open_db(f"teacher/{name}".encode())
        self.entry = {"identity": {"name": name, "description": description, "content_hash": content_hash},
                      "write_temperature": self.write_temperature, "dtype": dtype, "top_k": 0, "views": views,
                      "completed": [], "metrics": {}, "created": now, "tool_version": "python-0.2.0"}
        self._adopt(manifest)  # fail early, before writing anything
        self.manifest = manifest
        with self.env.begin(write=True, db=self.meta) as txn:
            self._commit_manifest(txn)

    def _stored_manifest(self, txn):
        """The manifest as stored, checked like a reader checks it (checksum, every field), or None."""
        raw = txn.get(b"manifest", db=self.meta)
        if raw is None:
            return None
        return _check_stored_manifest(self.path, bytes(raw), txn.get(b"manifest_crc32", db=self.meta))

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
        another teacher into the same file) with this teacher's completed range, checks it, and writes it
        back with its checksum (FORMAT.md §1), in this same transaction."""
        stored = self._stored_manifest(txn)
        manifest = stored if stored is not None else self.manifest
        entry = self._adopt(manifest)
        if completed is not None:
            entry["completed"] = _merge_ranges([tuple(r) for r in entry["completed"]] + [completed])
        problems = softlabel_manifest_problems(manifest)
        if problems:
            raise FormatError(f"{self.path}: refusing to write an invalid manifest: {problems[0]}")
        raw = json.dumps(manifest, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
        txn.put(b"manifest", raw, db=self.meta)
        txn.put(b"manifest_crc32", manifest_checksum(raw), db=self.meta)
        self.manifest = manifest

    def pending(self):
        """Sample ranges still to write, counted from the records themselves (FORMAT.md §3.1):
        `completed` in the manifest is a claim, and a record it claims may be gone."""
        out, cursor = [], 0
        with self.env.begin(db=self.db) as txn:
            for key in txn.cursor().iternext(keys=True, values=False):
                if len(key) != 8:
                    continue
                sample, view = struct.unpack(">II", bytes(key))
                if view != 0 or sample >= self.sample_count or sample < cursor:
                    continue
                if sample > cursor:
                    out.append((cursor, sample))
                cursor = sample + 1
        if cursor < self.sample_count:
            out.append((cursor, self.sample_count))
        return out

    def encode(self, log_probs: np.ndarray, sample: int, view: int = 0) -> bytes:
        """The v2 record of (sample, view) in this writer's dtype (`encode_soft_label`)."""
        return encode_soft_label(log_probs, self.dtype, sample, view)

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
                txn.put(_soft_label_key(start + k, view), self.encode(row, start + k, view))
            self._commit_manifest(txn, completed=(start, start + len(x)))

    def close(self):
        self.env.sync(True)
        self.env.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
