"""A seeded damage campaign: hundreds of damaged copies of real stores through every command that
opens them (issue 9, point 6).

Stores (built fresh, 200 rows each): a text dataset store (fortunes), a cache of it with a dense
f16 teacher `dense` (T_w 2) and a top-3 f32 teacher `topk`, a dense-features store (digits) and a
cache of it (`dense`, f32). Damage:

- byte level: every 4 KiB page zeroed; bytes flipped among each page's used bytes; pages copied
  over others; truncation at several lengths;
- edits that keep the file valid LMDB (py-lmdb), each record edit with its CRC recomputed as
  FORMAT.md defines it for the store's `schema_version`, so only semantic checks can catch it:
  bad top-k indices, duplicated indices, non-finite values, buckets ≥ the dimension, wrong feature
  counts, swapped or copied records, manifest fields out of range or inconsistent, dropped
  databases. Every manifest edit is made twice: with the manifest checksum (`meta`/
  `manifest_crc32`) recomputed, so that only the range checks can catch it, and without.

Each file goes through `verify` (`--data` for caches), `info`, a one-epoch linear `sweep` and, for
caches, `diff`, each under a 20 s timeout. Asserted: no command dies by a signal or exits with a
status other than 0 or 1; none hangs; no file whose content was altered passes `verify`. The tally
is printed (also under pytest's capture), written to .build/damage-campaign.txt, and repeated in
the assertion message.

Byte-level damage does not always alter content (a zeroed free page, a flipped byte in a branch
page's separator key): a file passing verify counts as altered only when a py-lmdb dump of its
databases (in a child process: damaged files can crash liblmdb) differs from the intact file's.
The manifest edits no check can catch by design — an in-range `write_temperature` (5, 1e-30; FORMAT
v2 allows (0, 10^4]) with a recomputed checksum: whoever can rewrite the checksum can forge any
in-range value — are counted apart, as "forged, in range".

Each distinct crash is printed with its signal, the trap's message and the first kdcache frame
(symbolized with llvm-symbolizer), or where it faulted: the to-do list of issue 9.
"""
import concurrent.futures
import hashlib
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import time
import zlib
from collections import Counter, defaultdict
from pathlib import Path

import lmdb
import numpy as np
import pytest
from _support import BIN, ROOT, kdcache

SEED = 20261201
PAGE = 4096
TIMEOUT = 20
WORKERS = 2
ENV = dict(os.environ, SWIFT_BACKTRACE="enable=no", CI="1")

# ─── building the intact stores ────────────────────────────────────────────────────────────────


def _run(*args):
    r = subprocess.run([BIN, *map(str, args)], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def _teacher_logits(store_path, rng):
    s = kdcache.open(str(store_path))
    C = len(s.manifest["labels"])
    y = np.array([s.label(i) for i in range(len(s))])
    x = rng.normal(size=(len(s), C)).astype("<f4")
    x[np.arange(len(s)), y] += 3
    s.close()
    return x


@pytest.fixture(scope="module")
def intact(tmp_path_factory):
    d = tmp_path_factory.mktemp("campaign")
    rng = np.random.default_rng(SEED)
    lines = (ROOT / "fixtures/fortunes/fortunes.csv").read_text().splitlines()
    (d / "f.csv").write_text("\n".join(lines[:201]) + "\n")
    lines = (ROOT / "fixtures/digits/digits.csv").read_text().splitlines()
    (d / "d.csv").write_text("\n".join(lines[:201]) + "\n")
    _run("prep", d / "f.csv", "--out", d / "data.lmdb", "--text-column", "text", "--label-column", "label",
         "--id-column", "id", "--hash-bits", "10", "--quiet")
    _run("prep", d / "d.csv", "--out", d / "digits.lmdb", "--feature-columns", "px*", "--label-column", "label",
         "--id-column", "id", "--quiet")
    np.save(d / "data.npy", _teacher_logits(d / "data.lmdb", rng))
    np.save(d / "digits.npy", _teacher_logits(d / "digits.lmdb", rng))
    _run("import", d / "data.npy", "--data", d / "data.lmdb", "--out", d / "cache.lmdb", "--dtype", "f16",
         "--name", "dense", "--write-temperature", "2", "--quiet")
    _run("import", d / "data.npy", "--data", d / "data.lmdb", "--out", d / "cache.lmdb", "--dtype", "f32",
         "--top-k", "3", "--name", "topk", "--quiet")
    _run("import", d / "digits.npy", "--data", d / "digits.lmdb", "--out", d / "dcache.lmdb", "--dtype", "f32",
         "--name", "dense", "--quiet")
    for name in ("data", "digits", "cache", "dcache"):
        Path(str(d / name) + ".lmdb-lock").unlink(missing_ok=True)
    return d


# Which intact file each damaged copy comes from, and how the commands use it.
BASES = {
    # name: (kind, dataset it belongs to, cache to sweep against, teachers)
    "data": ("dataset", None, "cache", ["dense"]),
    "digits": ("dataset", None, "dcache", ["dense"]),
    "cache": ("cache", "data", None, ["dense", "topk"]),
    "dcache": ("cache", "digits", None, ["dense"]),
}

# ─── reading and editing stores with py-lmdb ───────────────────────────────────────────────────


def _env(path, readonly=True):
    return lmdb.open(str(path), subdir=False, readonly=readonly, lock=False, max_dbs=64, map_size=1 << 28)


def _manifest(path):
    env = _env(path)
    with env.begin() as txn:
        raw = bytes(txn.get(b"manifest", db=env.open_db(b"meta", txn=txn)))
    env.close()
    return json.loads(raw)


def _records(path, db_name):
    env = _env(path)
    with env.begin() as txn:
        out = [(bytes(k), bytes(v)) for k, v in txn.cursor(db=env.open_db(db_name.encode(), txn=txn))]
    env.close()
    return out


def _crc(key, record, offset, schema):
    """The record CRC of FORMAT.md: v1 over the record without its CRC bytes, v2 over key ‖ that."""
    rest = record[:offset] + record[offset + 4:]
    return zlib.crc32(key + rest) if schema >= 2 else zlib.crc32(rest)


def _fix_crc(key, record, offset, schema):
    return record[:offset] + struct.pack("<I", _crc(key, record, offset, schema)) + record[offset + 4:]


class Edit:
    """A copy of a store changed through py-lmdb (the file stays valid LMDB)."""

    def __init__(self, src, dst):
        shutil.copyfile(src, dst)
        self.path = dst
        self.env = _env(dst, readonly=False)
        self.schema = None

    def __enter__(self):
        with self.env.begin() as txn:
            meta = self.env.open_db(b"meta", txn=txn)
            self.schema = json.loads(bytes(txn.get(b"manifest", db=meta))).get("schema_version", 1)
        return self

    def __exit__(self, *exc):
        self.env.close()
        Path(str(self.path) + "-lock").unlink(missing_ok=True)

    def db(self, name):
        return self.env.open_db(name.encode())

    def get(self, db_name, key):
        with self.env.begin(db=self.db(db_name)) as txn:
            return bytes(txn.get(key))

    def put(self, db_name, key, value):
        with self.env.begin(write=True, db=self.db(db_name)) as txn:
            txn.put(key, value)

    def delete(self, db_name, key):
        with self.env.begin(write=True, db=self.db(db_name)) as txn:
            txn.delete(key)

    def put_record(self, db_name, key, record, crc_offset):
        """Stores `record` with its CRC recomputed for this store's schema version."""
        self.put(db_name, key, _fix_crc(key, record, crc_offset, self.schema))

    def drop(self, db_name):
        with self.env.begin(write=True) as txn:
            txn.drop(self.env.open_db(db_name.encode(), txn=txn), delete=True)

    def manifest(self):
        return json.loads(self.get("meta", b"manifest"))

    def put_manifest(self, raw, checksum):
        """Writes manifest bytes; with `checksum` also `manifest_crc32` = crc32(raw) (FORMAT.md v2 §1)."""
        with self.env.begin(write=True, db=self.db("meta")) as txn:
            txn.put(b"manifest", raw)
            if checksum:
                txn.put(b"manifest_crc32", struct.pack("<I", zlib.crc32(raw)))


# ─── the damage ────────────────────────────────────────────────────────────────────────────────


class Damaged:
    def __init__(self, path, base, category, what, teacher=None, altered=True, bases=None):
        self.path, self.base, self.category, self.what = path, base, category, what
        self.teacher = teacher or (bases or BASES)[base][3][0]
        # True: content altered by construction; None: decide by dumping; "forged": undetectable by design.
        self.altered = altered
        self.results = {}


def _page_used_ranges(page):
    """Byte ranges of a page that hold data (LMDB 0.9 `MDB_page`): header and node pointers
    [0, lower), nodes [upper, 4096) for branch and leaf pages; the meta fields without `mm_txnid`
    for meta pages (a larger txnid makes the older meta page current: a consistent earlier state
    of the file, which no check can tell from the latest); the whole page otherwise (overflow)."""
    flags, lower, upper = struct.unpack_from("<HHH", page, 10)
    if flags & 0x08:                      # P_META: header 16 + MDB_meta up to mm_txnid at 144
        return [(0, 144)]
    if flags & (0x01 | 0x02) and 16 <= lower <= upper <= PAGE:
        return [(0, lower), (upper, PAGE)]
    return [(0, PAGE)]


def byte_damage(intact, out, rng, bases=None, flips=2, copies=15):
    """Every page zeroed, `flips` used bytes flipped per page, `copies` pages copied over others, 7
    cuts, of each file of `bases` (BASES by default: {name: (kind, dataset, cache, teachers)})."""
    bases = bases or BASES
    files = []
    for base in bases:
        raw = (intact / f"{base}.lmdb").read_bytes()
        pages = len(raw) // PAGE

        def emit(name, data, what):
            p = out / f"{base}-{name}.lmdb"
            p.write_bytes(data)
            teachers = bases[base][3]
            files.append(Damaged(p, base, "byte", what, teacher=teachers[len(files) % len(teachers)], altered=None, bases=bases))

        for p in range(pages):
            b = bytearray(raw)
            b[p * PAGE:(p + 1) * PAGE] = bytes(PAGE)
            emit(f"zero{p}", bytes(b), f"page {p} zeroed")
        for p in range(pages):
            ranges = _page_used_ranges(raw[p * PAGE:(p + 1) * PAGE])
            for k in range(flips):
                lo, hi = rng.choice(ranges)
                at = p * PAGE + rng.randrange(lo, hi)
                b = bytearray(raw)
                b[at] ^= rng.choice([0x01, 0x10, 0x80, 0xFF, 0x5A])
                emit(f"flip{p}-{k}", bytes(b), f"page {p}: byte {at - p * PAGE} flipped")
        for k in range(copies):
            a, c = rng.sample(range(pages), 2)
            b = bytearray(raw)
            b[c * PAGE:(c + 1) * PAGE] = raw[a * PAGE:(a + 1) * PAGE]
            emit(f"copy{a}to{c}", bytes(b), f"page {a} copied over page {c}")
        for n in sorted({0, 100, PAGE, 2 * PAGE, (pages // 2) * PAGE, len(raw) - PAGE, len(raw) - 1}):
            emit(f"cut{n}", raw[:n], f"truncated to {n} of {len(raw)} bytes")
    return files


def _sample(edit, index):
    return edit.get("samples", struct.pack(">Q", index))


def _set_f32(record, offset, value):
    return record[:offset] + struct.pack("<f", value) + record[offset + 4:]


def record_edits(intact, out):
    """Edits of records, each CRC recomputed (swaps and copies keep the record's own CRC)."""
    files = []

    def edit(base, name, what, change, teacher=None):
        p = out / f"{base}-{name}.lmdb"
        with Edit(intact / f"{base}.lmdb", p) as e:
            change(e)
        files.append(Damaged(p, base, "record", what, teacher=teacher))

    key = lambda i: struct.pack(">Q", i)  # noqa: E731
    dim = _manifest(intact / "data.lmdb")["featurizer"]["dimension"]
    C = len(_manifest(intact / "data.lmdb")["labels"])

    # Text dataset store: sparse records (16-byte header, n u32 buckets, n f32 counts).
    def sparse(e, i, change):
        r = _sample(e, i)
        n = struct.unpack_from("<I", r, 8)[0]
        e.put_record("samples", key(i), change(r, n), 12)

    edit("data", "bucket-ge-dim", "a bucket ≥ the dimension",
         lambda e: sparse(e, 5, lambda r, n: r[:16 + 4 * (n - 1)] + struct.pack("<I", dim + 7) + r[16 + 4 * n:]))
    edit("data", "bucket-2e31", "a bucket of 2^31",
         lambda e: sparse(e, 6, lambda r, n: r[:16 + 4 * (n - 1)] + struct.pack("<I", 1 << 31) + r[16 + 4 * n:]))
    edit("data", "bucket-unsorted", "buckets out of order",
         lambda e: sparse(e, 7, lambda r, n: r[:16] + r[20:24] + r[16:20] + r[24:]))
    for tag, v in (("nan", float("nan")), ("inf", float("inf")), ("-inf", float("-inf"))):
        edit("data", f"count-{tag}", f"a feature count of {tag}", lambda e, v=v: sparse(e, 8, lambda r, n: _set_f32(r, 16 + 4 * n, v)))
    edit("data", "label-eq-C", "label = C", lambda e: sparse(e, 9, lambda r, n: r[:4] + struct.pack("<I", C) + r[8:]))
    edit("data", "label-2e31", "label = 2^31", lambda e: sparse(e, 9, lambda r, n: r[:4] + struct.pack("<I", 1 << 31) + r[8:]))
    edit("data", "split-3", "split byte 3", lambda e: sparse(e, 10, lambda r, n: r[:2] + b"\x03" + r[3:]))
    edit("data", "kind-dense", "a dense record (4 features) in a hashed store",
         lambda e: e.put_record("samples", key(11), struct.pack("<BBBBIII", _sample(e, 11)[0], 1, 0, 0, 1, 4, 0) + struct.pack("<4f", 1, 2, 3, 4), 12))
    edit("data", "n-too-big", "n larger than the record", lambda e: sparse(e, 12, lambda r, n: r[:8] + struct.pack("<I", n + 1) + r[12:]))

    def swap(e, db, a, b):
        ra, rb = e.get(db, a), e.get(db, b)
        e.put(db, a, rb)
        e.put(db, b, ra)

    edit("data", "swap-samples", "samples 3 and 7 swapped", lambda e: swap(e, "samples", key(3), key(7)))
    edit("data", "copy-sample", "sample 9's record copied to sample 4", lambda e: e.put("samples", key(4), _sample(e, 9)))
    edit("data", "swap-texts", "texts of samples 2 and 5 swapped", lambda e: swap(e, "texts", key(2), key(5)))
    edit("data", "text-truncated", "a truncated zlib text", lambda e: e.put("texts", key(2), e.get("texts", key(2))[:-3]))
    edit("data", "text-other", "another text, valid zlib", lambda e: e.put("texts", key(2), zlib.compress(b"an entirely different text")))
    edit("data", "id-renamed", "sample 3's id changed in index_to_id", lambda e: e.put("index_to_id", key(3), b"renamed"))
    edit("data", "id-to-other-index", "an id mapped to another index",
         lambda e: e.put("id_to_index", e.get("index_to_id", key(3)), key(4)))
    edit("data", "sample-deleted", "sample 10 deleted", lambda e: e.delete("samples", key(10)))
    edit("data", "sample-extra", "an extra sample 200", lambda e: e.put("samples", key(200), _sample(e, 1)))

    # Dense store: 64 f32 features.
    def dense(e, i, change):
        r = _sample(e, i)
        e.put_record("samples", key(i), change(r), 12)

    for tag, v in (("nan", float("nan")), ("inf", float("inf")), ("-inf", float("-inf"))):
        edit("digits", f"feature-{tag}", f"a feature value of {tag}", lambda e, v=v: dense(e, 3, lambda r: _set_f32(r, 16 + 4 * 5, v)))
    edit("digits", "features-65", "65 features of 64",
         lambda e: dense(e, 4, lambda r: r[:8] + struct.pack("<I", 65) + r[12:] + struct.pack("<f", 1.0)))
    edit("digits", "features-63", "63 features of 64", lambda e: dense(e, 4, lambda r: r[:8] + struct.pack("<I", 63) + r[12:-4]))
    edit("digits", "swap-samples", "samples 1 and 2 swapped", lambda e: swap(e, "samples", key(1), key(2)))

    # Caches: dense f16 (C × u16) and top-3 f32 (3 × u32 index, 3 × f32, f32 log tail) records.
    skey = lambda i, v=0: struct.pack(">II", i, v)  # noqa: E731

    def softlabel(e, teacher, i, change):
        e.put_record("teacher/" + teacher, skey(i), change(e.get("teacher/" + teacher, skey(i))), 4)

    for tag, bits in (("nan", 0x7E00), ("inf", 0x7C00), ("-inf", 0xFC00)):
        edit("cache", f"dense-{tag}", f"a dense f16 log-prob of {tag}",
             lambda e, bits=bits: softlabel(e, "dense", 3, lambda r: r[:8 + 2] + struct.pack("<H", bits) + r[12:]), "dense")
    edit("cache", "dense-all-neg-inf", "every dense log-prob −inf",
         lambda e: softlabel(e, "dense", 4, lambda r: r[:8] + struct.pack("<H", 0xFC00) * C), "dense")
    edit("cache", "dense-shifted", "dense log-probs shifted by +1 (sum ≠ 1)",
         lambda e: softlabel(e, "dense", 5, lambda r: r[:8] + (np.frombuffer(r[8:], "<f2") + np.float16(1)).astype("<f2").tobytes()), "dense")
    edit("cache", "topk-index-eq-C", "a top-k index = C",
         lambda e: softlabel(e, "topk", 3, lambda r: r[:8] + struct.pack("<I", C) + r[12:]), "topk")
    edit("cache", "topk-index-max", "a top-k index of 2^32 − 1",
         lambda e: softlabel(e, "topk", 4, lambda r: r[:12] + struct.pack("<I", 0xFFFFFFFF) + r[16:]), "topk")
    edit("cache", "topk-duplicate", "duplicated top-k indices (probabilities still sum to 1)",
         lambda e: softlabel(e, "topk", 5, lambda r: r[:12] + r[8:12] + r[16:]), "topk")
    for tag, v in (("nan", float("nan")), ("inf", float("inf")), ("-inf", float("-inf"))):
        edit("cache", f"topk-value-{tag}", f"a top-k log-prob of {tag}",
             lambda e, v=v: softlabel(e, "topk", 6, lambda r: _set_f32(r, 8 + 4 * 3 + 4, v)), "topk")
    edit("cache", "topk-tail-nan", "a log tail of NaN", lambda e: softlabel(e, "topk", 7, lambda r: _set_f32(r, len(r) - 4, float("nan"))), "topk")
    edit("cache", "topk-tail-inf", "a log tail of +inf", lambda e: softlabel(e, "topk", 7, lambda r: _set_f32(r, len(r) - 4, float("inf"))), "topk")
    edit("cache", "topk-k-4", "k = 4 in a 3-kept record", lambda e: softlabel(e, "topk", 8, lambda r: r[:2] + struct.pack("<H", 4) + r[4:]), "topk")
    edit("cache", "dtype-byte", "the dtype byte of an f16 record set to f32",
         lambda e: softlabel(e, "dense", 8, lambda r: r[:1] + b"\x01" + r[2:]), "dense")
    edit("cache", "swap-records", "records of samples 3 and 7 swapped",
         lambda e: swap(e, "teacher/dense", skey(3), skey(7)), "dense")
    edit("cache", "copy-record", "sample 9's record copied to sample 4",
         lambda e: e.put("teacher/topk", skey(4), e.get("teacher/topk", skey(9))), "topk")
    edit("cache", "record-deleted", "sample 10's record deleted", lambda e: e.delete("teacher/dense", skey(10)), "dense")
    edit("cache", "record-extra-sample", "an extra record for sample 200",
         lambda e: e.put("teacher/dense", skey(200), e.get("teacher/dense", skey(1))), "dense")
    edit("cache", "record-extra-view", "an extra view 1 record", lambda e: e.put("teacher/topk", skey(1, 1), e.get("teacher/topk", skey(1))), "topk")
    edit("dcache", "dense-nan", "an f32 log-prob of NaN", lambda e: softlabel(e, "dense", 2, lambda r: _set_f32(r, 8 + 4, float("nan"))))

    # Dropped databases.
    edit("cache", "drop-teacher", "teacher/topk dropped (still in the manifest)", lambda e: e.drop("teacher/topk"), "topk")
    edit("cache", "drop-meta", "meta dropped", lambda e: e.drop("meta"))
    edit("data", "drop-meta", "meta dropped", lambda e: e.drop("meta"))
    edit("data", "drop-samples", "samples dropped", lambda e: e.drop("samples"))
    edit("data", "drop-texts", "texts dropped", lambda e: e.drop("texts"))
    edit("data", "drop-id-to-index", "id_to_index dropped", lambda e: e.drop("id_to_index"))
    edit("digits", "drop-meta", "meta dropped", lambda e: e.drop("meta"))
    return files


def manifest_edits(intact, out):
    """Manifest edits, each written twice: checksum recomputed ("forged") and left alone ("stale")."""
    files = []

    def edit(base, name, what, change, teacher=None, forgeable=False):
        for checksum in (True, False):
            p = out / f"{base}-m-{name}-{'forged' if checksum else 'stale'}.lmdb"
            with Edit(intact / f"{base}.lmdb", p) as e:
                m = e.manifest()
                raw = change(m)
                raw = raw if isinstance(raw, bytes) else json.dumps(m, sort_keys=True, separators=(",", ":")).encode()
                e.put_manifest(raw, checksum)
            altered = "forged" if (forgeable and checksum) else True
            files.append(Damaged(p, base, "manifest", what + (" (checksum recomputed)" if checksum else " (checksum left)"),
                                 teacher=teacher, altered=altered))

    def setter(path, value):
        def change(m):
            node = m
            for k in path[:-1]:
                node = node[k]
            if value is DELETE:
                del node[path[-1]]
            else:
                node[path[-1]] = value
        return change

    DELETE = object()
    for v in (-1, 1 << 62, 199, 201):
        edit("data", f"sample-count-{v}", f"sample_count {v}", setter(["sample_count"], v))
    for v in (-1, 1 << 40, 512):
        edit("data", f"dimension-{v}", f"featurizer.dimension {v}", setter(["featurizer", "dimension"], v))
    edit("data", "bits-11", "featurizer.bits 11", setter(["featurizer", "bits"], 11))
    edit("data", "ngrams-1", "featurizer.ngrams [1]", setter(["featurizer", "ngrams"], [1]))
    edit("data", "signature", "featurizer.signature changed", lambda m: m["featurizer"].update(signature=m["featurizer"]["signature"].replace("bits=10", "bits=12")))
    edit("data", "labels-drop", "one label dropped", lambda m: m["labels"].pop())
    edit("data", "labels-duplicate", "a label duplicated", lambda m: m["labels"].__setitem__(1, m["labels"][0]))
    edit("data", "labels-reordered", "labels reordered", lambda m: m["labels"].reverse())
    edit("data", "split-counts", "split_counts off by one", lambda m: m["split_counts"].update(train=m["split_counts"]["train"] + 1))
    edit("data", "has-text-false", "has_text false", setter(["has_text"], False))
    edit("data", "kind-dense", "featurizer.kind dense, without columns / mean / std", setter(["featurizer", "kind"], "dense"))
    edit("data", "schema-99", "schema_version 99", setter(["schema_version"], 99))
    edit("data", "not-json", "not JSON", lambda m: b"{\"format\": \"kdcache-dataset\", ")
    edit("digits", "no-mean", "dense dataset without mean", setter(["featurizer", "mean"], DELETE))
    edit("digits", "no-std", "dense dataset without std", setter(["featurizer", "std"], DELETE))
    edit("digits", "std-negative", "a negative std", lambda m: m["featurizer"]["std"].__setitem__(3, -1.0))
    edit("digits", "std-zero", "a std of 0", lambda m: m["featurizer"]["std"].__setitem__(3, 0.0))
    edit("digits", "mean-short", "63 means for 64 columns", lambda m: m["featurizer"]["mean"].pop())
    edit("digits", "dimension-65", "dimension 65 for 64 columns", setter(["featurizer", "dimension"], 65))
    edit("digits", "mean-nan-token", "a NaN token among the means (not JSON)",
         lambda m: json.dumps(dict(m, featurizer=dict(m["featurizer"], mean=[float("nan")] + m["featurizer"]["mean"][1:])), sort_keys=True).encode())

    T = lambda name, *path: ["teachers", name, *path]  # noqa: E731
    for v in ([[5]], [[5, 2]], [[0, 201]], [[-1, 200]], [[0, 100], [50, 200]]):
        edit("cache", f"completed-{json.dumps(v).replace(' ', '')}", f"completed {v}", setter(T("dense", "completed"), v), "dense")
    for v in (0, 1 << 62, 2):
        edit("cache", f"views-{v}", f"views {v}", setter(T("topk", "views"), v), "topk")
    for v in (-1, 1 << 62, 199):
        edit("cache", f"sample-count-{v}", f"sample_count {v}", setter(["sample_count"], v), "dense")
    for v in (-2, 0, float("inf")):
        edit("cache", f"write-temperature-{v}", f"write_temperature {v}", setter(T("dense", "write_temperature"), v), "dense")
    # In FORMAT v2's range (0, 10^4]: caught by the manifest checksum only.
    for v in (5, 1e-30):
        edit("cache", f"write-temperature-{v}", f"write_temperature {v} (in range)", setter(T("dense", "write_temperature"), v),
             "dense", forgeable=True)
    edit("cache", "top-k-5", "top_k 5 for 3-kept records", setter(T("topk", "top_k"), 5), "topk")
    edit("cache", "top-k-neg", "top_k −1", setter(T("topk", "top_k"), -1), "topk")
    edit("cache", "dtype-f64", "dtype f64", setter(T("dense", "dtype"), "f64"), "dense")
    edit("cache", "identity-absent", "teacher key whose identity name is absent from the cache",
         setter(T("dense", "identity", "name"), "nobody"), "dense")
    edit("cache", "identity-other", "teacher key 'dense' carrying identity name 'topk'",
         setter(T("dense", "identity", "name"), "topk"), "dense")
    edit("cache", "labels-drop", "one label dropped", lambda m: m["labels"].pop(), "dense")
    edit("cache", "labels-reordered", "labels reordered", lambda m: m["labels"].reverse(), "dense")
    edit("cache", "fingerprint", "dataset_fingerprint changed", lambda m: m.update(dataset_fingerprint="sha256:" + "0" * 64), "dense")
    edit("cache", "signature", "featurizer_signature changed", lambda m: m.update(featurizer_signature="dense;columns=x"), "dense")
    edit("cache", "augmentation-bogus", "views 2 with augmentation 'bogus'",
         lambda m: m["teachers"]["topk"].update(views=2, augmentation="bogus", augmentation_seed=0), "topk")
    edit("cache", "format-dataset", "format kdcache-dataset", setter(["format"], "kdcache-dataset"), "dense")
    edit("dcache", "write-temperature-neg", "write_temperature −2", setter(T("dense", "write_temperature"), -2))
    return files


# ─── running the commands ──────────────────────────────────────────────────────────────────────


def commands(f, intact, scratch):
    kind, dataset, cache, _ = BASES[f.base]
    sweep = ["--student", "linear", "--temperature", "2", "--alpha", "0.5", "--lr", "0.1", "--epochs", "1",
             "--seeds", "1", "--workers", "1", "--quiet", "--out", str(scratch / ("sweep-" + f.path.stem))]
    if kind == "dataset":
        return {"verify": ["verify", f.path], "info": ["info", f.path],
                "sweep": ["sweep", "--data", f.path, "--logits", intact / f"{cache}.lmdb", *sweep]}
    data = intact / f"{dataset}.lmdb"
    return {"verify": ["verify", f.path, "--data", data], "info": ["info", f.path],
            "sweep": ["sweep", "--data", data, "--logits", f.path, "--teacher", f.teacher, *sweep],
            "diff": ["diff", f.path, intact / f"{f.base}.lmdb", "--teacher-a", f.teacher, "--teacher-b", f.teacher]}


def run_command(args):
    start = time.monotonic()
    try:
        r = subprocess.run([BIN, *map(str, args)], capture_output=True, text=True, errors="replace", env=ENV, timeout=TIMEOUT)
        return r.returncode, r.stdout[-1000:] + "\n" + r.stderr[:6000], time.monotonic() - start
    except subprocess.TimeoutExpired:
        return "hang", "", time.monotonic() - start


DUMP = r"""
import hashlib, sys, lmdb
env = lmdb.open(sys.argv[1], subdir=False, readonly=True, lock=False, max_dbs=128)
h = hashlib.sha256()
with env.begin() as txn:
    names = sorted(bytes(k) for k, _ in txn.cursor())
for n in names:
    h.update(len(n).to_bytes(4, "little") + n)
    with env.begin() as txn:
        for k, v in txn.cursor(db=env.open_db(n, txn=txn, create=False)):
            h.update(len(k).to_bytes(4, "little") + bytes(k) + len(v).to_bytes(4, "little") + bytes(v))
print(h.hexdigest())
"""


def content_digest(path):
    """SHA-256 over every named database's keys and values (py-lmdb in a child); None if unreadable."""
    try:
        r = subprocess.run([sys.executable, "-c", DUMP, str(path)], capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return None
    Path(str(path) + "-lock").unlink(missing_ok=True)
    return r.stdout.strip() if r.returncode == 0 else None


SIGNALS = {-4: "SIGILL", -5: "SIGTRAP", -6: "SIGABRT", -7: "SIGBUS", -8: "SIGFPE", -11: "SIGSEGV"}
TRAP_LINE = ("Fatal error", "Assertion", "failed to allocate", "Precondition")
FRAME = r"^\s*\d+\s+kdcache\s+0x[0-9a-f]+ <unavailable> \+ (\d+)"


def crash_message(code, output):
    """The signal (or exit status) and the trap's own message, if it printed one."""
    sig = SIGNALS.get(code, f"exit status {code}")
    lines = [l for l in output.splitlines() if any(t in l for t in TRAP_LINE)]
    if lines:
        return sig, re.sub(r"^.*?(Fatal error|Assertion|failed to allocate|Precondition)", r"\1", lines[0])[:110]
    return sig, ""


def top_frames(outputs):
    """Symbolizes the first kdcache frame of each crash output (the offsets of its "Current stack
    trace") with llvm-symbolizer and swift demangle, one call each: {output index: "function (file:line)"}."""
    tops = {}
    for i, out in enumerate(outputs):
        m = re.search(FRAME, out, re.M)
        if m:
            tops[i] = int(m.group(1))
    symbolizer = shutil.which("llvm-symbolizer") or "/opt/swift/usr/bin/llvm-symbolizer"
    if not tops or not os.path.exists(symbolizer):
        return {}
    offsets = sorted(set(tops.values()))
    r = subprocess.run([symbolizer, f"--obj={BIN}"], input="\n".join(map(str, offsets)) + "\n",
                       capture_output=True, text=True, timeout=120)
    blocks = [b.splitlines() for b in r.stdout.strip().split("\n\n")]
    names = [b[0] if b else "?" for b in blocks]
    try:
        d = subprocess.run(["swift", "demangle", "--simplified", "--compact"], input="\n".join(names) + "\n",
                           capture_output=True, text=True, timeout=60)
        demangled = d.stdout.splitlines() if d.returncode == 0 and len(d.stdout.splitlines()) == len(names) else names
    except (OSError, subprocess.TimeoutExpired):
        demangled = names
    where = {}
    for off, block, name in zip(offsets, blocks, demangled):
        loc = block[1].split("/Sources/")[-1] if len(block) > 1 else "?"
        where[off] = f"{name[:90]} ({loc})"
    return {i: where.get(off, "?") for i, off in tops.items()}


def faulting_image(args):
    """For a crash without a Swift message (a fault, an arithmetic overflow trap): what the Swift
    backtracer names as frame 0, and the first frame in Sources/ when that is not frame 0."""
    env = dict(ENV, SWIFT_BACKTRACE="enable=yes,interactive=no,color=no,threads=crashed,registers=none,images=none,limit=none")
    try:
        r = subprocess.run([BIN, *map(str, args)], capture_output=True, text=True, errors="replace", env=env, timeout=60)
    except subprocess.TimeoutExpired:
        return "?"
    frames = [m.group(1) for m in re.finditer(r"^\s*\d+\s+(?:\[[^\]]*\]\s+)*0x[0-9a-f]+\s+(.*)$", r.stderr, re.M)]
    if not frames:
        return "?"
    first = frames[0].replace(" in kdcache at //<compiler-generated>", "")[:90]
    ours = next((f for f in frames if "/Sources/" in f), None)
    if ours and ours != frames[0]:
        name, _, loc = ours.partition(" in kdcache at ")
        first += f", in {name.split(' + ')[0][:80]} ({loc.split('/Sources/')[-1]})"
    return first


NATIVE = ("verify", "info", "sweep", "diff", "export")


class Tally:
    """The outcome of a campaign: crashes (file, command, code, output), hangs, files that passed
    verify though altered, and the other counts `campaign_report` prints."""

    def __init__(self, files, is_altered, tolerated=None):
        self.crashes, self.hangs, self.passed_altered, self.tolerated = [], [], [], []
        self.refused = self.passed_intact = self.forged = 0
        for f in files:
            for name, (code, output, _) in f.results.items():
                if code == "hang":
                    self.hangs.append(f"{f.path.name} ({f.what}): {name} gave no answer within {TIMEOUT} s")
                elif code not in (0, 1) and tolerated and tolerated(f, name, code):
                    self.tolerated.append(f"{f.path.name} ({f.what}): {name} {SIGNALS.get(code, code)}")
                elif code not in (0, 1):
                    self.crashes.append((f, name, code, output))
            self._count_verify(f, is_altered)
        self.crashed_files = {id(c[0]) for c in self.crashes}
        self.hung_files = {f.path.name for f in files if any(r[0] == "hang" for r in f.results.values())}
        self.clean_errors = sum(1 for f in files if f.results["verify"][0] == 1 and id(f) not in self.crashed_files
                                and f.path.name not in self.hung_files)

    def _count_verify(self, f, is_altered):
        verify_code = f.results["verify"][0]
        if verify_code == 0:
            altered = f.altered if f.altered is not None else is_altered(f)
            if altered == "forged":
                self.forged += 1
            elif altered:
                self.passed_altered.append(f"{f.path.name}: {f.what}")
            else:
                self.passed_intact += 1
        elif verify_code == 1:
            self.refused += 1

    @property
    def failed(self):
        return bool(self.crashed_files or self.hangs or self.passed_altered)


def _crash_lines(tally, command_of):
    """One line per distinct crash (command, signal, trap message, first kdcache frame)."""
    tops = top_frames([c[3] for c in tally.crashes])
    signatures = defaultdict(list)
    for i, (f, name, code, output) in enumerate(tally.crashes):
        sig, message = crash_message(code, output)
        signatures[(name, sig, message, tops.get(i, ""))].append(f)
    if not signatures:
        return []
    lines = [f"  {len(signatures)} distinct crashes (command: signal — message, at the first kdcache frame [count; first example]):"]
    for (name, sig, message, top), where in sorted(signatures.items(), key=lambda kv: -len(kv[1])):
        f = where[0]
        if not message and not top and name in NATIVE:
            top = faulting_image(command_of(f, name))
        lines.append(f"    {name}: {sig}" + (f" — {message}" if message else "") + (f" at {top}" if top else "")
                     + f"  [{len(where)}×; e.g. {f.path.name}: {f.what}]")
    return lines


def campaign_report(title, files, jobs, started, is_altered, command_of, report_name, capsys, tolerated=None, notes=()):
    """Tallies the results of `files` (each `f.results[command] = (code, output, seconds)`; code
    "hang", 0, 1, or anything else for a crash), prints it (past pytest's capture), writes it to
    .build/`report_name`; returns (report, whether anything crashed, hung or passed altered).
    `is_altered(f)` says whether a byte-damaged file passing verify has other content than its
    intact base; `command_of(f, name)` gives the argv of a native command, to rerun a crash under
    the backtracer. `tolerated(f, name, code)` marks the crashes of a known limitation: listed
    apart, not failures. `notes`: more lines for the tally (or a function giving them, called
    after `is_altered` has seen every file)."""
    t = Tally(files, is_altered, tolerated)
    seconds = Counter()
    for f in files:
        for name, (_, _, elapsed) in f.results.items():
            seconds[name] += elapsed
    lines = [
        f"{title} (seed {SEED}): {len(files)} files tried ("
        + ", ".join(f"{k} {v}" for k, v in sorted(Counter(f.category for f in files).items()))
        + f"), {jobs} commands in {time.monotonic() - started:.0f} s ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()) + f" of CPU-side wall time, {WORKERS} workers)",
        f"  clean errors (verify exit 1, every command exit 0/1): {t.clean_errors}",
        f"  crashes: {len(t.crashed_files)} files ({len(t.crashes)} command runs); hangs: {len(t.hung_files)} files; "
        f"altered but passed verify: {len(t.passed_altered)}",
        f"  also: verify exit 1 {t.refused}; passed with content intact {t.passed_intact}; "
        f"passed, forged in range (undetectable by design) {t.forged}",
    ] + list(notes() if callable(notes) else notes) + _crash_lines(t, command_of)
    for heading, items in (("altered but passed verify", t.passed_altered), ("hangs", t.hangs),
                           (f"tolerated, a known limitation ({len(t.tolerated)})", t.tolerated)):
        if items:
            lines += [f"  {heading}:"] + [f"    {line}" for line in items]
    report = "\n".join(lines)
    with capsys.disabled():   # shown in `make test` too, where pytest captures output
        print("\n" + report)
    (ROOT / ".build").mkdir(exist_ok=True)
    (ROOT / ".build" / report_name).write_text(report + "\n")
    return report, t.failed


def test_damage_campaign(intact, tmp_path, capsys):
    rng = random.Random(SEED)
    out = tmp_path / "damaged"
    out.mkdir()
    files = byte_damage(intact, out, rng) + record_edits(intact, out) + manifest_edits(intact, out)
    assert len(files) >= 500, len(files)
    started = time.monotonic()
    jobs = [(f, name, args) for f in files for name, args in commands(f, intact, tmp_path).items()]
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        for (f, name, _), result in zip(jobs, pool.map(lambda j: run_command(j[2]), jobs)):
            f.results[name] = result
    original = {b: content_digest(intact / f"{b}.lmdb") for b in BASES}
    report, failed = campaign_report("damage campaign", files, len(jobs), started, lambda f: content_digest(f.path) != original[f.base],
                                     lambda f, name: commands(f, intact, tmp_path)[name], "damage-campaign.txt", capsys)
    assert not failed, report
