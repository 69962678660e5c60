"""Damaged keys and side records that are still valid LMDB: the Python reader refuses each with a
FormatError naming the store and the sample, never a struct.error, UnicodeDecodeError or a bare
KeyError for a sample the store says it has."""
import shutil

import lmdb
import pytest
from _support import kdcache, run


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    rows = ["id,label,text"] + [f"r{i},{'xy'[i % 2]},word{i % 5} other{i % 3}" for i in range(20)]
    (d / "d.csv").write_text("\n".join(rows) + "\n")
    run("prep", d / "d.csv", "--out", d / "data.lmdb", "--text-column", "text", "--label-column", "label", "--id-column", "id", "--hash-bits", "8", "--quiet")
    for lock in d.glob("*-lock"):
        lock.unlink()
    return d / "data.lmdb"


def damaged(clean, tmp_path, edit):
    path = tmp_path / "data.lmdb"
    shutil.copy(clean, path)
    env = lmdb.open(str(path), subdir=False, max_dbs=64, lock=False)
    edit(env)
    env.close()
    return path



def edit(db, fn):
    def apply(env):
        handle = env.open_db(db)
        with env.begin(write=True, db=handle) as txn:
            fn(txn)
    return apply


def key(i):
    return i.to_bytes(8, "big")


CASES = [
    # (what, the edit, how the reader is used, words the refusal must contain)
    ("a 7-byte sample key", edit(b"samples", lambda t: t.put(b"\x00" * 7, b"x")), lambda s: list(s), "7-byte key"),
    ("a sample key past sample_count", edit(b"samples", lambda t: t.put(key(10**6), t.get(key(0)))), lambda s: list(s), "past its 20 samples"),
    ("an id that is not UTF-8", edit(b"index_to_id", lambda t: t.put(key(3), b"\xff\xfe")), lambda s: s.id(3), "sample 3: its id is not UTF-8"),
    ("a missing id", edit(b"index_to_id", lambda t: t.delete(key(4))), lambda s: s.id(4), "sample 4: no id"),
    ("a missing record", edit(b"samples", lambda t: t.delete(key(5))), lambda s: s.record(5), "sample 5: no record"),
    ("a missing text", edit(b"texts", lambda t: t.delete(key(6))), lambda s: s.text(6), "sample 6: no text"),
    ("a 4-byte index", edit(b"id_to_index", lambda t: t.put(b"r7", b"\x00\x00\x00\x07")), lambda s: s.index_of("r7"), "4-byte index"),
    ("an index past sample_count", edit(b"id_to_index", lambda t: t.put(b"r8", key(99))), lambda s: s.index_of("r8"), "sample 99, past"),
    ("a missing id, met by the fingerprint", edit(b"index_to_id", lambda t: t.delete(key(2))), lambda s: s.fingerprint(), "no id"),
]


@pytest.mark.parametrize("what,change,use,words", CASES, ids=[c[0] for c in CASES])
def test_damaged_keys_are_refused_by_name(clean, tmp_path, what, change, use, words):
    path = damaged(clean, tmp_path, change)
    with kdcache.open(str(path)) as s:
        with pytest.raises(kdcache.FormatError) as e:
            use(s)
    assert str(e.value).startswith(str(path)), str(e.value)
    assert words in str(e.value), str(e.value)


def test_the_intact_store_reads_and_indices_outside_it_are_key_errors(clean):
    with kdcache.open(str(clean)) as s:
        assert len(list(s)) == 20 and s.id(3) == "r3" and s.index_of("r7") == 7 and s.text(6)
        for bad in (-1, 20, 10**9):
            with pytest.raises(KeyError):
                s.record(bad)
        with pytest.raises(KeyError):
            s.index_of("no such id")
