"""Tampered stores that are still valid LMDB (issue 9): every edit is made with py-lmdb, record CRCs
and the manifest checksum recomputed, so only the v2 field and record checks can catch it. Each is
reported by `kdcache verify`, refused by `sweep` (and `diff`) with exit 1 and a message (never a
signal), and refused by the Python reader with the same kind of message."""
import json
import shutil
import struct

import lmdb
import numpy as np
import pytest
from _support import ROOT, kdcache, run


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    d = tmp_path_factory.mktemp("tamper")
    rows = ["id,label,text"] + [f"r{i},{['x', 'y', 'z'][i % 3]},{['alpha beta', 'gamma delta', 'eps zeta'][i % 3]} t{i % 11} u{i % 7}" for i in range(60)]
    (d / "d.csv").write_text("\n".join(rows) + "\n")
    run("prep", d / "d.csv", "--out", d / "data.lmdb", "--text-column", "text", "--label-column", "label", "--hash-bits", "10", "--quiet")
    z = np.random.default_rng(0).normal(0, 2, (60, 3)).astype(np.float32)
    np.save(d / "z.npy", z)
    run("import", d / "z.npy", "--data", d / "data.lmdb", "--out", d / "cache.lmdb", "--name", "dense", "--dtype", "f16", "--write-temperature", "2", "--quiet")
    run("import", d / "z.npy", "--data", d / "data.lmdb", "--out", d / "cache.lmdb", "--name", "topk", "--dtype", "f32", "--top-k", "2", "--quiet")
    run("prep", ROOT / "fixtures/digits/digits.csv", "--out", d / "dense.lmdb", "--feature-columns", "px*", "--label-column", "label", "--quiet")
    zd = np.random.default_rng(1).normal(0, 2, (1797, 10)).astype(np.float32)
    np.save(d / "zd.npy", zd)
    run("import", d / "zd.npy", "--data", d / "dense.lmdb", "--out", d / "dense-cache.lmdb", "--name", "t", "--quiet")
    for lock in d.glob("*-lock"):
        lock.unlink()
    return d


CLEAN_CACHE = []


def copy(clean, tmp_path):
    CLEAN_CACHE[:] = [clean / "cache.lmdb"]
    for name in ("data.lmdb", "cache.lmdb", "dense.lmdb", "dense-cache.lmdb"):
        shutil.copy(clean / name, tmp_path / name)
    return tmp_path


def edit_manifest(path, edit, rechecksum=True):
    env = lmdb.open(str(path), subdir=False, max_dbs=64, lock=False)
    meta = env.open_db(b"meta")
    with env.begin(write=True, db=meta) as txn:
        m = json.loads(txn.get(b"manifest"))
        edit(m)
        raw = json.dumps(m, sort_keys=True).encode()
        txn.put(b"manifest", raw)
        if rechecksum:
            txn.put(b"manifest_crc32", kdcache.manifest_checksum(raw))
    env.close()


def drop_checksum(path):
    env = lmdb.open(str(path), subdir=False, max_dbs=64, lock=False)
    with env.begin(write=True, db=env.open_db(b"meta")) as txn:
        txn.delete(b"manifest_crc32")
    env.close()


def edit_record(path, db, key, crc_offset, edit, reseal=True):
    """Applies `edit` to the record under `key`, then recomputes its CRC over key and record."""
    env = lmdb.open(str(path), subdir=False, max_dbs=64, lock=False)
    d = env.open_db(db)
    with env.begin(write=True, db=d) as txn:
        v = bytearray(txn.get(key))
        v = edit(v) or v
        if reseal:
            struct.pack_into("<I", v, crc_offset, kdcache.record_crc(bytes(v), crc_offset, key))
        txn.put(key, bytes(v))
    env.close()


def swap(path, db, a, b):
    env = lmdb.open(str(path), subdir=False, max_dbs=64, lock=False)
    d = env.open_db(db)
    with env.begin(write=True, db=d) as txn:
        va, vb = bytes(txn.get(a)), bytes(txn.get(b))
        txn.put(a, vb)
        txn.put(b, va)
    env.close()


def soft(sample, view=0):
    return struct.pack(">II", sample, view)


def key(i):
    return struct.pack(">Q", i)


def teacher_field(name, field, value):
    return lambda m: m["teachers"][name].__setitem__(field, value)


def featurizer_field(field, value):
    def edit(m):
        if value is None:
            del m["featurizer"][field]
        else:
            m["featurizer"][field] = value
    return edit


def rename_identity(m):
    m["teachers"]["dense"]["identity"]["name"] = "topk"


def drop_identity_name(m):
    del m["teachers"]["dense"]["identity"]["name"]


def set_tw(v):
    return teacher_field("dense", "write_temperature", v)


# (store, teacher for sweep, edit, what the CLI and the Python reader both say)
MANIFEST_CASES = [
    ("cache", "dense", teacher_field("dense", "completed", [[5]]), "manifest field teachers.dense.completed[0]"),
    ("cache", "dense", teacher_field("dense", "views", 0), "manifest field teachers.dense.views: 0 is not in 1…65535"),
    ("cache", "dense", teacher_field("dense", "views", 2**62), "manifest field teachers.dense.views: 4611686018427387904 is not in 1…65535"),
    ("cache", "dense", lambda m: m.__setitem__("sample_count", -1), "manifest field sample_count: -1 is not in 0…4294967295"),
    ("cache", "dense", lambda m: m.__setitem__("sample_count", 2**62), "manifest field sample_count: 4611686018427387904 is not in 0…4294967295"),
    ("cache", "dense", drop_identity_name, "teachers.dense.identity.name"),
    ("cache", "dense", rename_identity, "manifest field teachers.dense.identity.name: 'topk' differs from the teacher's key 'dense'"),
    ("cache", "dense", set_tw(-2), "manifest field teachers.dense.write_temperature: -2"),
    ("cache", "dense", set_tw(0), "manifest field teachers.dense.write_temperature: 0"),
    ("cache", "topk", teacher_field("topk", "top_k", 4), "manifest field teachers.topk.top_k: 4 is not in 0…3"),
    ("data", "dense", featurizer_field("dimension", -1), "manifest field featurizer.dimension: -1 is not 2^bits = 1024"),
    ("data", "dense", featurizer_field("dimension", 2**40), "manifest field featurizer.dimension: 1099511627776 is not 2^bits = 1024"),
    ("data", "dense", featurizer_field("ngrams", [1]), "manifest field featurizer.signature"),
    ("data", "dense", lambda m: m.__setitem__("sample_count", 2**62), "manifest field sample_count: 4611686018427387904 is not in 0…4294967295"),
    ("dense", "t", featurizer_field("mean", None), "manifest field featurizer.mean: missing"),
    ("dense", "t", featurizer_field("std", None), "manifest field featurizer.std: missing"),
    ("dense", "t", lambda m: m["featurizer"]["std"].__setitem__(3, -1.0), "manifest field featurizer.std[3]: -1"),
    ("dense", "t", featurizer_field("dimension", 65), "manifest field featurizer.columns: 64 columns for dimension 65"),
]


def paths(d, store):
    """(store file, dataset file, cache file) for a case on `store`."""
    if store == "dense":
        return d / "dense.lmdb", d / "dense.lmdb", d / "dense-cache.lmdb"
    return (d / "cache.lmdb" if store == "cache" else d / "data.lmdb"), d / "data.lmdb", d / "cache.lmdb"


def assert_refused(d, store, teacher, expected):
    """verify reports it (exit 1), sweep stops with exit 1 and the message, the Python reader raises it."""
    target, data, cache = paths(d, store)
    v = run("verify", target, *(["--data", data] if store == "cache" else []), check=False)
    assert v.returncode == 1 and expected in v.stdout, v.stdout + v.stderr
    s = run("sweep", "--data", data, "--logits", cache, "--teacher", teacher, "--student", "linear", "--epochs", "1", "--seeds", "1",
            "--alpha", "0.5", "--temperature", "2", "--out", d / "runs", "--quiet", check=False)
    assert s.returncode == 1, f"sweep: exit {s.returncode} (a negative code is a signal)\n{s.stdout}{s.stderr}"
    assert expected in s.stderr, s.stderr
    if store == "cache":
        clean_cache = d.parent / "clean-cache.lmdb"   # another file: one process opens each file once
        if not clean_cache.exists():
            shutil.copy(CLEAN_CACHE[0], clean_cache)
        diff = run("diff", cache, clean_cache, "--teacher-a", teacher, "--teacher-b", teacher, check=False)
        assert diff.returncode == 1 and expected in diff.stderr, diff.stderr
    return v


@pytest.mark.parametrize("store,teacher,edit,expected", MANIFEST_CASES, ids=[c[3][15:70] for c in MANIFEST_CASES])
def test_a_manifest_field_out_of_range_is_refused_everywhere(clean, tmp_path, store, teacher, edit, expected):
    d = copy(clean, tmp_path)
    target, _, _ = paths(d, store)
    edit_manifest(target, edit)
    v = assert_refused(d, store, teacher, expected)
    assert "ok    manifest checksum" in v.stdout or "newer" in expected, "the checksum was recomputed: only the field check may fire"
    with pytest.raises(kdcache.FormatError, match=expected.split(":")[0].replace("[", r"\[").replace("]", r"\]")):
        kdcache.open(str(target))


def test_an_edit_without_a_new_checksum_and_a_missing_checksum_are_refused(clean, tmp_path):
    d = copy(clean, tmp_path)
    edit_manifest(d / "cache.lmdb", set_tw(5), rechecksum=False)   # in range: only the checksum can tell
    assert_refused(d, "cache", "dense", "manifest checksum mismatch: stored 0x")
    with pytest.raises(kdcache.FormatError, match="manifest checksum mismatch"):
        kdcache.open(str(d / "cache.lmdb"))
    drop_checksum(d / "data.lmdb")
    assert_refused(d, "data", "dense", "the manifest has no checksum (meta/manifest_crc32), which format v2 requires")
    with pytest.raises(kdcache.FormatError, match="no checksum"):
        kdcache.open(str(d / "data.lmdb"))


def set_u32(offset, value):
    return lambda v: struct.pack_into("<I", v, offset, value)


def set_f16(offset, value):
    return lambda v: v.__setitem__(slice(offset, offset + 2), np.array([value], dtype="<f2").tobytes())


def last_bucket(value):
    def edit(v):
        n = struct.unpack_from("<I", v, 8)[0]
        struct.pack_into("<I", v, 16 + 4 * (n - 1), value)
    return edit


def extra_feature(v):
    struct.pack_into("<I", v, 8, 65)
    return v + struct.pack("<f", 1.0)


def duplicate_class(v):
    v[12:16] = v[8:12]


# (store, teacher, database, key, CRC offset, edit, message: verify's problem line, sweep's error, the reader's error)
RECORD_CASES = [
    ("cache", "topk", b"teacher/topk", soft(4), 4, set_u32(8, 3), "teacher topk sample 4 view 0", "names class 3, beyond 3 classes"),
    ("cache", "topk", b"teacher/topk", soft(5), 4, duplicate_class, "teacher topk sample 5 view 0", "appears twice among the top-2 entries"),
    ("cache", "dense", b"teacher/dense", soft(6), 4, set_f16(10, np.nan), "teacher dense sample 6 view 0", "is NaN"),
    ("cache", "dense", b"teacher/dense", soft(7), 4, set_f16(8, np.inf), "teacher dense sample 7 view 0", "is +inf"),
    ("cache", "dense", b"teacher/dense", soft(8), 4, set_f16(12, 0.5), "teacher dense sample 8 view 0", "is above 0"),
    ("data", "dense", b"samples", key(9), 12, last_bucket(5000), "sample 9", "bucket index 5000"),
    ("dense", "t", b"samples", key(10), 12, extra_feature, "sample 10", "65 features, the store's dimension is 64"),
    ("dense", "t", b"samples", key(11), 12, lambda v: struct.pack_into("<f", v, 16, float("nan")), "sample 11", "feature 0 is nan, not a finite number"),
]


@pytest.mark.parametrize("store,teacher,db,k,offset,edit,where,what", RECORD_CASES, ids=[c[7][:40] for c in RECORD_CASES])
def test_a_tampered_record_is_refused_everywhere(clean, tmp_path, store, teacher, db, k, offset, edit, where, what):
    d = copy(clean, tmp_path)
    target, _, _ = paths(d, store)
    edit_record(target, db, k, offset, edit)
    v = assert_refused(d, store, teacher, what)
    assert any(line.startswith(f"FAIL  {where}") and what in line for line in v.stdout.splitlines()), v.stdout
    s = kdcache.open(str(target))
    with pytest.raises(kdcache.FormatError, match=where):
        if store == "cache":
            s.log_probs(struct.unpack(">II", k)[0], teacher=teacher)
        else:
            s.record(struct.unpack(">Q", k)[0])


def test_swapped_records_fail_their_key_covering_checksums(clean, tmp_path):
    d = copy(clean, tmp_path)
    swap(d / "cache.lmdb", b"teacher/dense", soft(3), soft(4))
    swap(d / "data.lmdb", b"samples", key(2), key(5))
    v = run("verify", d / "cache.lmdb", "--data", d / "data.lmdb", check=False)
    assert v.returncode == 1
    assert "FAIL  teacher dense sample 3 view 0: CRC-32 mismatch" in v.stdout and "FAIL  teacher dense sample 4 view 0: CRC-32 mismatch" in v.stdout
    v = run("verify", d / "data.lmdb", check=False)
    assert "FAIL  sample 2: CRC-32 mismatch" in v.stdout and "FAIL  sample 5: CRC-32 mismatch" in v.stdout
    with pytest.raises(kdcache.FormatError, match="sample 3 view 0: CRC-32 mismatch"):
        kdcache.open(str(d / "cache.lmdb")).log_probs(3, teacher="dense")
    with pytest.raises(kdcache.FormatError, match="sample 2: CRC-32 mismatch"):
        kdcache.open(str(d / "data.lmdb")).record(2)


def test_the_python_writer_refuses_a_tampered_or_v1_cache(clean, tmp_path):
    d = copy(clean, tmp_path)
    edit_manifest(d / "cache.lmdb", set_tw(5), rechecksum=False)
    with pytest.raises(kdcache.FormatError, match="manifest checksum mismatch"):
        kdcache.SoftLabelWriter(d / "cache.lmdb", str(d / "data.lmdb"), name="py")
    shutil.copy(ROOT / "fixtures/format-v1/softlabels.lmdb", tmp_path / "v1.lmdb")
    shutil.copy(ROOT / "fixtures/format-v1/dataset.lmdb", tmp_path / "v1-data.lmdb")
    before = (tmp_path / "v1.lmdb").read_bytes()
    with pytest.raises(kdcache.FormatError, match="format v1 cache; this writer adds records to format v2 caches only.*kdcache merge"):
        kdcache.SoftLabelWriter(tmp_path / "v1.lmdb", str(tmp_path / "v1-data.lmdb"), name="py")
    assert (tmp_path / "v1.lmdb").read_bytes() == before
    np.save(tmp_path / "z12.npy", np.zeros((12, 3), dtype=np.float32))
    r = run("import", tmp_path / "z12.npy", "--data", tmp_path / "v1-data.lmdb", "--out", tmp_path / "v1.lmdb", "--name", "x", check=False)
    assert r.returncode == 1 and "kdcache merge" in r.stderr, r.stderr


def test_python_and_swift_check_manifests_alike(clean):
    """The two readers' manifest checks agree on the valid stores and name the same field otherwise."""
    store = kdcache.open(str(clean / "cache.lmdb"))
    m = json.loads(json.dumps(store.manifest))
    assert kdcache.softlabel_manifest_problems(m) == []
    m["teachers"]["dense"]["completed"] = [[10, 20], [0, 5]]
    m["teachers"]["topk"]["augmentation"] = "gaussian:sigma=inf"
    assert kdcache.softlabel_manifest_problems(m) == [
        "manifest field teachers.dense.completed[1]: [0, 5] overlaps or precedes the range before it",
        "manifest field teachers.topk.augmentation: 'gaussian:sigma=inf' is not token-dropout:p=P (0 ≤ P < 1) or gaussian:sigma=S (S finite, ≥ 0)"]
    data = json.loads(json.dumps(kdcache.open(str(clean / "data.lmdb")).manifest))
    assert kdcache.dataset_manifest_problems(data) == []
    data["split_counts"]["train"] += 1
    assert kdcache.dataset_manifest_problems(data) == [f"manifest field class_counts.train: sums to {data['split_counts']['train'] - 1}, split_counts.train is {data['split_counts']['train']}",
                                                       "manifest field split_counts: sums to 61, sample_count is 60"]
