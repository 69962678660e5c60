"""The Python reader's page walk (kdcache/pages.py): a byte-damaged file is a FormatError naming the
file and the page, never a dead interpreter (liblmdb inside py-lmdb trusts every page it maps).

Every damaged file is read in a long-lived child (`Reader`), so that a SIGBUS fails the test instead
of killing pytest: the child opens the file with `kdcache.open`, decodes every record of every
database the manifest names, then iterates every named database with py-lmdb (every leaf and
overflow value touched). Stores: a 200-row text dataset store (prep), and over it the two sequence
caches of the big sequence damage campaign (test_sequence_damage, KDCACHE_DAMAGE_BIG=1) and a dense
f32 class cache, all written by the Python writer.
"""
import os
import random
import select
import struct
import subprocess
import sys
import time
from pathlib import Path

import lmdb
import numpy as np
import pytest
from _sequence_support import toy_tokenizer
from _support import ROOT, kdcache, prep_three_classes
from test_sequence_damage import SAMPLED, SEED, TOPK, _sequences

from kdcache import pages

PAGE = 4096
TIMEOUT = 20
ENV = dict(os.environ, CI="1")


@pytest.fixture(scope="module")
def intact(tmp_path_factory):
    d = tmp_path_factory.mktemp("pages")
    prep_three_classes(d, 200).rename(d / "data.lmdb")
    rng = np.random.default_rng(SEED)
    seqs = _sequences(rng, 200)                 # the caches of the big sequence campaign, byte for byte
    for base, options in (("seqtopk", TOPK), ("seqsampled", SAMPLED)):
        with kdcache.SequenceWriter(d / f"{base}.lmdb", d / "data.lmdb", tokenizer=toy_tokenizer(), **options) as w:
            w.write_logits(0, seqs)
    with kdcache.SoftLabelWriter(d / "dense.lmdb", d / "data.lmdb", "mlp", dtype="f32") as w:
        w.write(0, np.random.default_rng(1).normal(size=(200, 3)).astype("<f4"))
    for p in d.glob("*.lmdb-lock"):
        p.unlink()
    return d


READER = r"""
import sys
sys.path.insert(0, sys.argv[1])
import kdcache, lmdb
from kdcache import pages
if sys.argv[2] == "unchecked":
    pages.check_file = lambda path, free_list=False: None     # what the reader did before pages.py
def read(path):
    s = kdcache.open(path)
    try:
        n = 0
        if isinstance(s, kdcache.DatasetStore):
            for i, _ in s:
                s.id(i); s.text(i) if s.manifest["has_text"] else None; n += 1
        else:
            for name, entry in s.manifest["teachers"].items():
                if "sequence" in entry:
                    with s.sequence_reader(name) as get:
                        for a, b in entry["completed"]:
                            for i in range(a, b):
                                get(i); n += 1
                else:
                    for i in range(len(s)):
                        s.log_probs(i, teacher=name); n += 1
        env = s.env
        with env.begin() as txn:
            names = [bytes(k) for k, _ in txn.cursor()]
        for db in names:
            with env.begin(db=env.open_db(db, create=False)) as txn:
                n += sum(len(k) + len(v) > 0 for k, v in txn.cursor())
        return n
    finally:
        s.close()
for line in sys.stdin:
    try:
        out = f"0 {read(line.strip())}"
    except kdcache.FormatError as e:
        out = "1 " + str(e)
    except lmdb.Error as e:
        out = "2 " + str(e)
    except KeyError as e:
        out = "4 no record " + str(e)            # a damaged key: the record is missing, as the API says
    except BaseException as e:
        out = f"3 {type(e).__name__}: {e}"
    print(out.replace("\n", " ")[:2000], flush=True)
"""


class Reader:
    """A child running READER; `read(path)` → (code, message): 0 read, 1 FormatError, 2 another
    lmdb.Error, 3 another exception, 4 KeyError (a record missing), the negative signal number when the child died ("hang" after
    TIMEOUT s). `unchecked`: the child skips the page walk (to show what it guards against)."""

    def __init__(self, unchecked=False):
        self.mode, self.child = "unchecked" if unchecked else "checked", None

    def read(self, path):
        if self.child is None or self.child.poll() is not None:
            self.child = subprocess.Popen([sys.executable, "-c", READER, str(ROOT / "tools/python"), self.mode], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV)
        self.child.stdin.write(f"{path}\n")
        self.child.stdin.flush()
        ready, _, _ = select.select([self.child.stdout], [], [], TIMEOUT)
        line = self.child.stdout.readline() if ready else None
        if not line:
            if not ready:
                self.child.kill()
            code = self.child.wait() if ready else "hang"
            self.child = None
            return code, ""
        code, _, message = line.rstrip("\n").partition(" ")
        return int(code), message

    def close(self):
        if self.child is not None:
            self.child.stdin.close()
            self.child.wait()


@pytest.fixture
def reader():
    r = Reader()
    yield r
    r.close()


def _damaged(intact, out, base, edits, name):
    """A copy of `base` with bytes xored: edits = [(page, offset in page, xor)]."""
    b = bytearray((intact / f"{base}.lmdb").read_bytes())
    for page, at, x in edits:
        b[page * PAGE + at] ^= x
    p = out / f"{name}.lmdb"
    p.write_bytes(bytes(b))
    return p


# The byte flips of the big sequence campaign (seed 20261201) that killed the Python reader with
# SIGBUS before pages.py: each corrupts a node offset in a leaf page's pointer array, and liblmdb
# reads the node up to 64 KiB past the page, beyond the end of the file.
SIGBUS_CASES = [
    ("seqtopk", [(32, 19, 0xFF)], "page 32 (database 'teacher/lm', leaf): node 1 at offset 62906"),
    ("seqtopk", [(39, 29, 0x5A)], "page 39 (database 'teacher/lm', leaf): node 6 at offset 22762"),
    ("seqsampled", [(52, 17, 0xFF)], "page 52 (database 'teacher/lm', leaf): node 0 at offset 62416"),
    ("seqsampled", [(55, 21, 0xFF)], "page 55 (database 'teacher/lm', leaf): node 2 at offset 65040"),
    ("seqsampled", [(64, 17, 0xFF)], "page 64 (<main>, leaf): node 0 at offset 61636"),
]


def test_the_campaign_files_that_killed_the_reader_are_refused(intact, tmp_path, reader):
    unchecked = Reader(unchecked=True)
    try:
        for k, (base, edits, where) in enumerate(SIGBUS_CASES):
            p = _damaged(intact, tmp_path, base, edits, f"sigbus{k}")
            code, message = reader.read(p)
            assert code == 1 and message.startswith(f"{p}: damaged LMDB file: {where}"), (base, edits, code, message)
            assert "kdcache verify" in message
            # Without the walk, liblmdb dies on it (the case is not vacuous): SIGBUS or SIGSEGV.
            assert unchecked.read(p)[0] in (-7, -11), (base, edits)
    finally:
        unchecked.close()


def test_zeroed_pages_are_refused_where_liblmdb_aborted(intact, tmp_path, reader):
    """Every page of the dataset store and the class cache zeroed in turn (the byte damage of the
    class campaign, test_damage_campaign): liblmdb asserts on a zeroed tree page (SIGABRT) or
    reads past the file; each is now a FormatError, or read when the page was not in use."""
    unchecked = Reader(unchecked=True)
    died = 0
    try:
        for base in ("data", "dense"):
            raw = (intact / f"{base}.lmdb").read_bytes()
            for page in range(2, len(raw) // PAGE):
                p = tmp_path / f"{base}-zero{page}.lmdb"
                p.write_bytes(raw[:page * PAGE] + bytes(PAGE) + raw[(page + 1) * PAGE:])
                code, message = reader.read(p)
                assert code in (0, 1), (base, page, code, message)
                assert code == 0 or message.startswith(f"{p}: damaged LMDB file: page {page} ("), (base, page, message)
                died += unchecked.read(p)[0] in (-6, -7, -11)
                p.unlink()
    finally:
        unchecked.close()
    assert died >= 3, died                       # without the walk, some kill the reader (4 when written)


def test_every_intact_store_opens_and_reads(intact, reader):
    for base in ("data", "seqtopk", "seqsampled", "dense"):
        code, message = reader.read(intact / f"{base}.lmdb")
        assert code == 0 and int(message) > 200, (base, code, message)


def _walk_info(raw):
    """(flags, lower, upper) of each page of an intact file, read here independently of pages.py."""
    return [struct.unpack_from("<HHH", raw, p * PAGE + 10) for p in range(len(raw) // PAGE)]


def _fuzz_damage(raw, rng):
    """One seeded random damage: bytes xored in a page's used ranges, a node offset or a node's u64
    overwritten, or a page copied over another; (bytes, what)."""
    b = bytearray(raw)
    info = _walk_info(raw)
    tree = [p for p, (f, lo, up) in enumerate(info) if f in (1, 2) and 16 <= lo <= up <= PAGE]
    kind = rng.choice(["xor", "pointer", "u64", "copy"])
    p = rng.choice(tree)
    f, lower, upper = info[p]
    if kind == "xor":
        for _ in range(rng.randint(1, 3)):
            at = rng.choice([rng.randrange(0, lower), rng.randrange(upper, PAGE)])
            b[p * PAGE + at] ^= rng.randrange(1, 256)
        return bytes(b), f"{kind} page {p}"
    if kind == "pointer" and lower > 16:
        at = rng.randrange(16, lower, 2)
        struct.pack_into("<H", b, p * PAGE + at, rng.randrange(0, 65536))
        return bytes(b), f"{kind} page {p} at {at}"
    if kind == "u64" and lower > 16:
        node = struct.unpack_from("<H", raw, p * PAGE + rng.randrange(16, lower, 2))[0]
        ksize = struct.unpack_from("<H", raw, p * PAGE + node + 6)[0] if node + 8 <= PAGE else 0
        at = min(node + 8 + ksize, PAGE - 8)
        struct.pack_into("<Q", b, p * PAGE + at, rng.choice([rng.randrange(0, 1 << 64), rng.randrange(0, 2 * len(raw) // PAGE)]))
        return bytes(b), f"{kind} page {p} at {at}"
    src = rng.randrange(len(raw) // PAGE)
    b[p * PAGE:(p + 1) * PAGE] = raw[src * PAGE:(src + 1) * PAGE]
    return bytes(b), f"copy page {src} over page {p}"


def test_random_byte_damage_never_kills_the_reader(intact, tmp_path, reader):
    rng = random.Random(SEED + 14)
    codes, refused = {}, 0
    for base in ("data", "seqtopk", "seqsampled", "dense"):
        raw = (intact / f"{base}.lmdb").read_bytes()
        for k in range(70):
            data, what = _fuzz_damage(raw, rng)
            p = tmp_path / f"{base}-fuzz{k}.lmdb"
            p.write_bytes(data)
            code, message = reader.read(p)
            assert code in (0, 1, 4), (base, what, code, message)     # read, a FormatError or a missing record
            if code == 1:
                assert message.startswith(str(p)), message
                refused += 1
            codes[code] = codes.get(code, 0) + 1
            p.unlink()
    assert refused >= 100, codes                 # most damages are caught, not read past (the walk is not vacuous)


def test_a_damaged_page_is_named(tmp_path):
    """One crafted damage per kind of check, each refused with the page it is on, in a file with
    branch pages and overflow runs (written here with py-lmdb)."""
    path = tmp_path / "plain.lmdb"
    env = lmdb.open(str(path), subdir=False, map_size=1 << 26, max_dbs=4, lock=False)
    db = env.open_db(b"values")
    with env.begin(write=True) as txn:
        for i in range(400):
            txn.put(i.to_bytes(4, "big"), bytes([i % 251]) * (6000 if i % 8 == 0 else 100), db=db)
    env.close()
    raw = path.read_bytes()
    info = _walk_info(raw)
    with open(path, "rb") as f:              # which pages the trees reach (not free ones): the walk's own map
        walk = pages._Walk(f.fileno(), len(raw), pages._picked(f.fileno(), len(raw)))
        walk.run()
    reached = [p for p in range(len(info)) if walk.seen[p]]
    last = walk.last
    leaf = next(p for p in reached if info[p][0] == 2 and info[p][1] > 18)
    branch = next(p for p in reached if info[p][0] == 1)
    overflow_node = None
    for p in reached:
        f, lo, up = info[p]
        for at in range(16, lo, 2) if f == 2 else ():
            node = struct.unpack_from("<H", raw, p * PAGE + at)[0]
            if struct.unpack_from("<H", raw, p * PAGE + node + 4)[0] & 1:
                overflow_node = (p, node + 8 + struct.unpack_from("<H", raw, p * PAGE + node + 6)[0])
                break
        if overflow_node:
            break
    child = struct.unpack_from("<H", raw, branch * PAGE + 16)[0]

    def edited(name, put):
        b = bytearray(raw)
        put(b)
        p = tmp_path / f"{name}.lmdb"
        p.write_bytes(bytes(b))
        return str(p)

    cases = {
        "upper past the page": (lambda b: struct.pack_into("<H", b, leaf * PAGE + 14, PAGE + 2), f"page {leaf} ("),
        "a child beyond the last page": (lambda b: struct.pack_into("<HH", b, branch * PAGE + child, last + 1, 0),
                                         f"page number {last + 1} outside 2…{last}"),
        "a cycle": (lambda b: struct.pack_into("<HH", b, branch * PAGE + child, branch, 0), f"page {branch} ("),
        "an overflow run past the file": (lambda b: struct.pack_into("<Q", b, overflow_node[0] * PAGE + overflow_node[1], last - 1) if overflow_node else None,
                                          "overflow run at page"),
        "meta page 1 without the magic": (lambda b: struct.pack_into("<I", b, PAGE + 16, 0), "page 1 is not an LMDB meta page"),
        "a meta depth over 32": (lambda b: [struct.pack_into("<H", b, m * PAGE + 16 + 72 + 6, 40) for m in (0, 1)], "depth 40"),
    }
    assert overflow_node, "the file has values in overflow pages"
    for what, (put, where) in cases.items():
        path = edited(what.replace(" ", "-"), put)
        with pytest.raises(kdcache.FormatError) as e:
            pages.check_file(path)
        assert str(e.value).startswith(f"{path}: damaged LMDB file: ") and where in str(e.value), (what, str(e.value))


def test_a_truncated_file_is_refused_before_lmdb_maps_it(intact, tmp_path):
    raw = (intact / "dense.lmdb").read_bytes()
    p = tmp_path / "cut.lmdb"
    p.write_bytes(raw[:len(raw) - PAGE])
    with pytest.raises(kdcache.FormatError, match=r"cut\.lmdb: truncated: its meta page says \d+ pages of 4096 bytes"):
        kdcache.open(str(p))


WRITER = r"""
import random, select, sys, lmdb
env = lmdb.open(sys.argv[1], subdir=False, map_size=1 << 28, max_dbs=8, sync=False, metasync=False)
dbs = [env.open_db(n) for n in (b"a", b"b", b"c")]
rng = random.Random(int(sys.argv[2]))
commits = 0
print("ready", flush=True)
while not select.select([sys.stdin], [], [], 0)[0] or commits < 50:   # until the parent closes stdin
    with env.begin(write=True) as txn:
        for _ in range(rng.randint(1, 20)):
            db = rng.choice(dbs)
            key = rng.randrange(500).to_bytes(4, "big")
            if rng.random() < 0.3:
                txn.delete(key, db=db)
            else:
                txn.put(key, rng.randbytes(rng.choice([16, 300, 1500, 6000, 20000])), db=db)
    commits += 1
env.close()
print(commits, flush=True)
"""


def test_a_file_being_written_by_another_process_is_never_refused(tmp_path):
    """A writer in another process commits without pause (puts, overwrites, deletes: freed pages are
    reused) while this process walks the file 40 times: a walk that races a commit is repeated."""
    path = tmp_path / "live.lmdb"
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "7"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        for _ in range(40):
            pages.check_file(str(path))          # raises FormatError on a false alarm
        child.stdin.close()
        commits = int(child.stdout.readline())
        assert child.wait() == 0 and commits >= 50
        pages.check_file(str(path))
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def _free_list_file(path):
    """An LMDB file whose free list holds records: values written, then half of them deleted and
    rewritten over several transactions."""
    env = lmdb.open(str(path), subdir=False, map_size=64 << 20, max_dbs=2)
    db = env.open_db(b"d")
    for t in range(6):
        with env.begin(write=True, db=db) as txn:
            for i in range(400):
                if (i + t) % 2:
                    txn.delete(struct.pack(">Q", i))
                else:
                    txn.put(struct.pack(">Q", i), bytes([t]) * 300)
    env.close()
    return path


def _free_record(path):
    """(offset of the first free-list record's value in the file, its size): the FREE root of the
    picked meta, which a small file's free list fits in (one leaf)."""
    raw = Path(path).read_bytes()
    metas = [struct.unpack_from("<QQ", raw, p * PAGE + 136) for p in (0, 1)]      # last_pg, txnid (pages.py's layout)
    page = 0 if metas[0][1] >= metas[1][1] else 1
    depth, root = struct.unpack_from("<H", raw, page * PAGE + 40 + 6)[0], struct.unpack_from("<Q", raw, page * PAGE + 40 + 40)[0]
    assert depth == 1, "the fixture's free list should be one leaf"
    off = struct.unpack_from("<H", raw, root * PAGE + 16)[0]
    lo, hi, flags, ksize = struct.unpack_from("<HHHH", raw, root * PAGE + off)
    assert flags == 0, "an inline free-list record"
    return root * PAGE + off + 8 + ksize, lo | (hi << 16)


def test_a_writer_refuses_a_free_list_that_would_overwrite_records(tmp_path):
    # liblmdb's writer trusts the free list: a count beyond its record, or a live page listed as
    # free, would read past the record or hand out a page that holds records. Readers never use it.
    healthy = _free_list_file(tmp_path / "ok.lmdb")
    pages.check_file(str(healthy), free_list=True)                   # no false alarm on a sound file
    at, size = _free_record(healthy)
    raw = bytearray(healthy.read_bytes())
    n = struct.unpack_from("<Q", raw, at)[0]
    assert n >= 1 and 8 * (n + 1) <= size
    for name, edit, message in [
        ("count", lambda b: struct.pack_into("<Q", b, at, n + 1000), "free-list record counts"),
        ("live", lambda b: struct.pack_into("<Q", b, at + 8, 0), "outside 2…"),
    ]:
        bad = bytearray(raw)
        edit(bad)
        path = tmp_path / f"{name}.lmdb"
        path.write_bytes(bad)
        pages.check_file(str(path))                                  # a reader does not read the free list
        with pytest.raises(kdcache.FormatError, match=message):
            pages.check_file(str(path), free_list=True)
    # A live page (the FREE root itself) listed as free.
    bad = bytearray(raw)
    struct.pack_into("<Q", bad, at + 8, at // PAGE)
    path = tmp_path / "reused.lmdb"
    path.write_bytes(bad)
    with pytest.raises(kdcache.FormatError, match="which a tree or an overflow run uses"):
        pages.check_file(str(path), free_list=True)
