"""Manifests (FORMAT.md §1.1, §2.3, §3.1): every check a reader makes on open, with the same bounds
and kinds of messages as the Swift reader; the stored manifest's checksum; what makes two teacher
entries the same layout."""
from __future__ import annotations

import json
import math
import re
import struct
import zlib

import numpy as np

from .format import SPLITS, FormatError
from .hashing import hashed_signature, tokenizer_fingerprint_of

MAX_SAMPLES = 2**32 - 1          # soft-label keys hold the sample index as a u32
MAX_CLASSES = 1 << 20
MAX_VIEWS = 65535
MAX_TOP_K = 65535
MAX_WRITE_TEMPERATURE = 1e4
MAX_DENSE_DIMENSION = 1 << 24
MAX_TEACHERS = 62
MAX_TEACHER_NAME_BYTES = 200
_TEACHER_NAME = re.compile(r"[A-Za-z0-9._-]+\Z")
_SHA256 = re.compile(r"sha256:[0-9a-f]{64}\Z")
_SPLIT_METHODS = ("hash", "column", "hash+test-file")

# Every field of a teacher entry that changes the bytes or the meaning of its records (FORMAT.md
# §3.1, §3.5): a writer may add records to a teacher only when all of them are equal.
LAYOUT_FIELDS = ("write_temperature", "dtype", "top_k", "views", "augmentation", "augmentation_seed", "sequence")
MAX_SCHEMA_VERSION = 3
_SEQUENCE_KEYS = ("mode", "samples", "sample_seed", "retemper_at", "vocab_size", "tokenizer")
TOKENIZER_FIELDS = ("vocab_size", "vocab_sha256", "merges_sha256", "model_sha256")


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


class _Checker:
    """Collects "manifest field PATH: message" lines."""

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
        self.check(_is_int(v) and v in (1, 2, 3), "schema_version", f"{v!r} is not a version this reader reads (1, 2 or 3)")

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


def _signature_detail(signature: str, bits: int, ngrams) -> str:
    """Which part of a hashed-ngrams signature disagrees with `bits` and `ngrams`."""
    parts = signature.split(";")
    fields = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
    expected = [("tokenizer", "unicode-lnm-lower-v1"), ("hash", "fnv1a64"), ("bits", str(bits)), ("ngrams", ",".join(map(str, ngrams)))]
    wrong = [(k, v) for k, v in expected if fields.get(k) != v]
    if parts[0] != "hashed-ngrams":
        return "it does not start with hashed-ngrams"
    if wrong:
        k, v = wrong[0]
        return f"it says {k}={fields.get(k, 'nothing')}, the featurizer has {k}={v}"
    return "it is not the canonical form"


def _check_hashed(c: _Checker, f: dict, signature, dimension: int) -> None:
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
    canonical = hashed_signature(bits, ngrams)
    if isinstance(signature, str) and signature != canonical:
        c.fail("featurizer.signature", f"'{signature[:120]}' disagrees with bits and ngrams: "
                                       f"{_signature_detail(signature, bits, ngrams)} (expected '{canonical}')")


def _check_dense(c: _Checker, f: dict, signature, dimension: int) -> None:
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
        elif len(values) != dimension:
            c.fail(f"featurizer.{name}", f"{len(values)} values for dimension {dimension}")
        else:
            bad = next((j for j, v in enumerate(values) if not _float32_ok(v, positive=name == "std")), None)
            if bad is not None:
                c.fail(f"featurizer.{name}[{bad}]", f"{values[bad]!r} is not {'a finite number' if name == 'mean' else 'a positive finite number'}")


def _check_featurizer(c: _Checker, f) -> None:
    if not isinstance(f, dict):
        c.fail("featurizer", "missing or not an object")
        return
    kind, signature, dimension = f.get("kind"), f.get("signature"), f.get("dimension")
    c.check(isinstance(signature, str), "featurizer.signature", "missing or not a string")
    if not _is_int(dimension):
        c.fail("featurizer.dimension", f"{dimension!r} is not an integer")
    elif kind == "hashed-ngrams":
        _check_hashed(c, f, signature, dimension)
    elif kind == "dense":
        _check_dense(c, f, signature, dimension)
    else:
        c.fail("featurizer.kind", f"{kind!r} is not hashed-ngrams or dense")


def _check_split_count(c: _Checker, s: str, k, per, n, labels: list) -> bool:
    """One split's `split_counts` entry and its `class_counts` list; True when `k` itself is valid."""
    if k is None:
        c.fail(f"split_counts.{s}", "missing")
        return False
    if not (_is_int(k) and 0 <= k and (n is None or k <= n)):
        c.fail(f"split_counts.{s}", f"{k!r} is not in 0…sample_count ({n})")
        return False
    if per is None:
        c.fail(f"class_counts.{s}", "missing")
    elif not isinstance(per, list) or len(per) != len(labels):
        c.fail(f"class_counts.{s}", f"{len(per) if isinstance(per, list) else per!r} entries for {len(labels)} labels")
    else:
        bad = next((i for i, x in enumerate(per) if not (_is_int(x) and 0 <= x <= k)), None)
        if bad is not None:
            c.fail(f"class_counts.{s}[{bad}]", f"{per[bad]!r} is not in 0…split_counts.{s} ({k})")
        else:
            c.check(sum(per) == k, f"class_counts.{s}", f"sums to {sum(per)}, split_counts.{s} is {k}")
    return True


def _check_counts(c: _Checker, m: dict, n, labels: list) -> None:
    split_counts, class_counts = m.get("split_counts"), m.get("class_counts")
    if not isinstance(split_counts, dict) or not isinstance(class_counts, dict):
        c.fail("split_counts" if not isinstance(split_counts, dict) else "class_counts", "missing or not an object")
        return
    for key in sorted(split_counts):
        c.check(key in SPLITS, f"split_counts.{key}", "unknown split (train, valid, test)")
    for key in sorted(class_counts):
        c.check(key in SPLITS, f"class_counts.{key}", "unknown split (train, valid, test)")
    totals = [split_counts[s] for s in SPLITS
              if _check_split_count(c, s, split_counts.get(s), class_counts.get(s), n, labels)]
    if len(totals) == 3 and n is not None:
        c.check(sum(totals) == n, "split_counts", f"sums to {sum(totals)}, sample_count is {n}")


def _check_split(c: _Checker, split) -> None:
    if not isinstance(split, dict):
        c.fail("split", "missing or not an object")
        return
    c.check(split.get("method") in _SPLIT_METHODS, "split.method", f"{split.get('method')!r} is not hash, column or hash+test-file")
    for name in ("test_fraction", "valid_fraction"):
        f = split.get(name)
        if f is not None:
            c.check(_is_number(f) and math.isfinite(f) and 0 <= f <= 1, f"split.{name}", f"{f!r} is not in 0…1")


def dataset_manifest_problems(m) -> list[str]:
    """Every problem of a dataset manifest, one line each (empty when valid): FORMAT.md §1.1."""
    if not isinstance(m, dict):
        return ["unreadable manifest: not a JSON object"]
    c = _Checker()
    c.header(m, "kdcache-dataset")
    c.check(m.get("schema_version") != 3, "schema_version", "3 is the version of sequence caches; dataset stores are version 2")
    labels = c.labels(m)
    n = c.sample_count(m)
    featurizer = m.get("featurizer")
    _check_featurizer(c, featurizer)
    _check_counts(c, m, n, labels)
    _check_split(c, m.get("split"))
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


def _check_completed(c: _Checker, f: str, completed, n) -> None:
    """`completed`: sorted, disjoint, non-empty [a, b] ranges inside [0, sample_count]."""
    if not isinstance(completed, list):
        c.fail(f"{f}.completed", "missing or not a list")
        return
    previous_end = 0
    for i, r in enumerate(completed):
        field = f"{f}.completed[{i}]"
        if not isinstance(r, list) or len(r) != 2 or not all(_is_int(x) for x in r):
            c.fail(field, f"{str(r)[:40]} is not 2 integers ([start, end])")
            return
        if not (0 <= r[0] < r[1] and (n is None or r[1] <= n)):
            c.fail(field, f"[{r[0]}, {r[1]}] is not a non-empty range inside [0, {n}]")
            return
        if r[0] < previous_end:
            c.fail(field, f"[{r[0]}, {r[1]}] overlaps or precedes the range before it")
            return
        previous_end = r[1]


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
    if "sequence" in t:
        _check_sequence(c, f, t)
    else:
        k, max_k = t.get("top_k"), min(classes, MAX_TOP_K)
        c.check(_is_int(k) and 0 <= k <= max_k, f"{f}.top_k", f"{k!r} is not in 0…{max_k}")
    views = t.get("views")
    c.check(_is_int(views) and 1 <= views <= MAX_VIEWS, f"{f}.views", f"{views!r} is not in 1…{MAX_VIEWS}")
    _check_completed(c, f, t.get("completed"), n)
    augmentation = t.get("augmentation")
    if augmentation is not None:
        c.check(_augmentation_ok(augmentation), f"{f}.augmentation",
                f"'{str(augmentation)[:80]}' is not token-dropout:p=P (0 ≤ P < 1) or gaussian:sigma=S (S finite, ≥ 0)")
    metrics = t.get("metrics", {})
    if isinstance(metrics, dict):
        for name in sorted(metrics):
            v = metrics[name]
            c.check(_is_number(v) and math.isfinite(v), f"{f}.metrics.{name}", f"{v!r} is not finite")


def _check_tokenizer(c: _Checker, f: str, tok, vocab) -> None:
    """`tokenizer` (FORMAT.md §3.6): the vocabulary size V, sha256 fields, and a fingerprint equal to its computation."""
    if not isinstance(tok, dict):
        c.fail(f"{f}.tokenizer", "missing or not an object")
        return
    c.check(tok.get("vocab_size") == vocab, f"{f}.tokenizer.vocab_size", f"{tok.get('vocab_size')!r} differs from sequence.vocab_size {vocab!r}")
    for name, nullable in (("vocab_sha256", False), ("merges_sha256", True), ("model_sha256", True)):
        v = tok.get(name)
        c.check(v is None and nullable or isinstance(v, str) and _SHA256.match(v) is not None, f"{f}.tokenizer.{name}",
                f"'{str(v)[:80]}' is not 'sha256:' and 64 hex digits{' or null' if nullable else ''}")
    expected = tokenizer_fingerprint_of(vocab, tok.get("vocab_sha256"), tok.get("merges_sha256"), tok.get("model_sha256"))
    c.check(tok.get("fingerprint") == expected, f"{f}.tokenizer.fingerprint", f"'{str(tok.get('fingerprint'))[:80]}' is not the one computed from its fields ({expected})")


def _check_retemper(c: _Checker, f: str, temps) -> None:
    """`retemper_at`: 0…16 temperatures, strictly ascending, each finite in (0, 10^4]."""
    if not isinstance(temps, list) or len(temps) > 16:
        c.fail(f"{f}.retemper_at", f"{str(temps)[:80]} is not a list of at most 16 temperatures")
        return
    bad = next((i for i, t in enumerate(temps) if not (_is_number(t) and math.isfinite(t) and 0 < t <= MAX_WRITE_TEMPERATURE)), None)
    if bad is not None:
        c.fail(f"{f}.retemper_at[{bad}]", f"{temps[bad]!r} is not in (0, {int(MAX_WRITE_TEMPERATURE)}]")
    elif any(b <= a for a, b in zip(temps, temps[1:])):
        c.fail(f"{f}.retemper_at", f"{temps} is not strictly ascending")


def _check_sequence(c: _Checker, f: str, t: dict) -> None:
    """A sequence teacher's `sequence` object and the fields it constrains (FORMAT.md §1.1, §3.6)."""
    s = t["sequence"]
    if not isinstance(s, dict) or any(k not in s for k in _SEQUENCE_KEYS):
        c.fail(f"{f}.sequence", f"not an object with {', '.join(_SEQUENCE_KEYS)}")
        return
    f2, mode, vocab = f"{f}.sequence", s["mode"], s["vocab_size"]
    c.check(mode in ("top-k", "sampled", "dense"), f"{f2}.mode", f"{str(mode)[:40]!r} is not top-k, sampled or dense")
    vocab_ok = _is_int(vocab) and 2 <= vocab <= 1 << 24
    c.check(vocab_ok, f"{f2}.vocab_size", f"{vocab!r} is not in 2…{1 << 24}")
    n, k, seed = s["samples"], t.get("top_k"), s["sample_seed"]
    sampled, top_k = mode == "sampled", mode == "top-k"
    c.check(_is_int(n) and (1 <= n <= 255 if sampled else n == 0), f"{f2}.samples", f"{n!r} is not {'in 1…255' if sampled else f'0 for {mode}'}")
    c.check(_is_int(seed) and (0 <= seed < 1 << 64 if sampled else seed == 0), f"{f2}.sample_seed", f"{seed!r} is not {'a u64' if sampled else f'0 for {mode}'}")
    max_k = min(vocab, 1024) if vocab_ok else 1024
    c.check(_is_int(k) and (1 <= k <= max_k if top_k else k == 0), f"{f}.top_k", f"{k!r} is not {f'in 1…{max_k}' if top_k else f'0 for {mode}'}")
    _check_retemper(c, f2, s["retemper_at"])
    if vocab_ok:
        _check_tokenizer(c, f2, s["tokenizer"], vocab)
    c.check(t.get("views") == 1, f"{f}.views", f"{t.get('views')!r}: a sequence teacher has one view")
    c.check("augmentation" not in t, f"{f}.augmentation", "a sequence teacher has no augmentation")


def _check_schema_teachers(c: _Checker, m: dict, teachers: dict) -> None:
    """Version 3 exactly for a cache whose teachers are all sequence teachers (FORMAT.md §1.1)."""
    v = m.get("schema_version")
    sequence = sorted(k for k, t in teachers.items() if isinstance(t, dict) and "sequence" in t)
    if v == 3:
        other = sorted(set(teachers) - set(sequence))
        c.check(not other, f"teachers.{other[0][:80] if other else ''}", "a class teacher in a format v3 cache (v3 holds sequence teachers only)")
    elif sequence:
        c.fail(f"teachers.{sequence[0][:80]}", f"a sequence teacher in a format v{v} cache (sequence teachers need schema_version 3)")


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
    _check_schema_teachers(c, m, teachers)
    return c.problems




def _reject_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def _loads(raw: bytes):
    """Strict JSON: NaN and ±Infinity are not numbers (Python's json would accept them)."""
    return json.loads(raw, parse_constant=_reject_constant)


def encode_manifest(manifest: dict) -> bytes:
    """The bytes a writer stores as `meta`/`manifest`: compact JSON, sorted keys, no NaN (FORMAT.md §1)."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _check_checksum(path: str, raw: bytes, stored_crc, version: int) -> None:
    """`meta`/`manifest_crc32` matches `raw`; required from format v2 on (FORMAT.md §1)."""
    computed = zlib.crc32(raw)
    if stored_crc is not None:
        stored_crc = bytes(stored_crc)
        if len(stored_crc) != 4:
            raise FormatError(f"{path}: the manifest checksum (meta/manifest_crc32) is {len(stored_crc)} bytes, not 4")
        (stored,) = struct.unpack("<I", stored_crc)
        if stored != computed:
            raise FormatError(f"{path}: manifest checksum mismatch: stored 0x{stored:08x}, computed 0x{computed:08x} over its {len(raw)} bytes")
    elif version >= 2:
        raise FormatError(f"{path}: the manifest has no checksum (meta/manifest_crc32), which format v2 requires")


def check_stored_manifest(path: str, raw: bytes, stored_crc) -> dict:
    """The manifest of `path` after every check, in the Swift reader's order: it decodes, its schema
    version is known, its checksum matches (required from v2 on), every field is in range."""
    try:
        m = _loads(raw)
    except ValueError as e:
        raise FormatError(f"{path}: unreadable manifest: {e}") from e
    if not isinstance(m, dict) or not _is_int(m.get("schema_version")):
        raise FormatError(f"{path}: unreadable manifest: no schema_version")
    v = m["schema_version"]
    if v > MAX_SCHEMA_VERSION:
        raise FormatError(f"{path}: schema version {v} is newer than this reader reads ({MAX_SCHEMA_VERSION})")
    if v < 1:
        raise FormatError(f"{path}: unknown schema version {v}")
    _check_checksum(path, raw, stored_crc, v)
    kind = m.get("format")
    problems = dataset_manifest_problems(m) if kind == "kdcache-dataset" else softlabel_manifest_problems(m) if kind == "kdcache-softlabels" else []
    if problems:
        raise FormatError(f"{path}: {problems[0]}")
    return m


def layout_differences(a: dict, b: dict) -> list[str]:
    """The `LAYOUT_FIELDS` in which two teacher entries differ, as `field a vs b` (an absent optional
    field is None, so a teacher with an augmentation never matches one without)."""
    return [f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in LAYOUT_FIELDS if a.get(k) != b.get(k)]
