"""A bounded walk of an LMDB 0.9 data file's pages, in Python, before liblmdb (py-lmdb) maps it.

liblmdb trusts every page it maps: a damaged page number, node offset or size makes it read past
the file's end (SIGBUS) or assert (SIGABRT), which kills the interpreter. `check_file` reads the
file with `os.pread` (never a map: a concurrent truncation is a short read, not a signal) and
refuses, with a `FormatError` naming the file and the page, whatever could make liblmdb read
outside the file or loop. It is the second, independent reading of the layout of
Sources/LMDB/PageValidator.swift (64-bit little-endian `mdb.c` 0.9.x):

    page header (16)   pgno u64 @0 · pad u16 @8 · flags u16 @10 · lower u16 @12 · upper u16 @14
                       (overflow pages: the run's page count u32 @12)
    pointer array      u16 node offsets from byte 16 up to `lower`: nkeys = (lower - 16) / 2
    node (8 + key + data)  lo u16 @0 · hi u16 @2 · flags u16 @4 · ksize u16 @6 · key · data;
                       leaf: data size lo | hi<<16 (F_BIGDATA 1: data is the u64 pgno of an
                       overflow run; F_SUBDATA 2: data is the 48-byte MDB_db of a named database);
                       branch: child pgno lo | hi<<16 | flags<<32
    meta (pages 0, 1)  @16: magic u32 (0xBEEFC0DE) · version u32 (1) · address · mapsize ·
                       FREE MDB_db @40 · MAIN MDB_db @88 · last_pg u64 @136 · txnid u64 @144
    MDB_db (48)        pad u32 @0 (page size, FREE's) · flags u16 @4 · depth u16 @6 ·
                       branch, leaf, overflow, entries u64 @8…@32 · root u64 @40 (~0: empty)

Checked: both metas (P_META, magic, version, one power-of-two page size); the one liblmdb picks (the
larger txnid, page 0 on a tie), on the page its txnid's parity gives, with `(last_pg + 1)` pages
inside the file; from its FREE and MAIN roots and each named database's root (MAIN's F_SUBDATA
nodes): every page number in [2, last_pg], read whole from the file, with its own number in its
header, branch pages above `md_depth ≤ 32` and leaves at it, `16 ≤ lower ≤ upper ≤ page size`,
branch pages with ≥ 2 nodes (liblmdb asserts it), node offsets even, at or above `upper`, with
header, key (≤ 511 bytes) and in-page data inside the page, node flags known (no MDB_DUPSORT,
which kdcache never writes); every overflow run starting with a P_OVERFLOW page whose count keeps
the run inside `last_pg` and holds the value; no page reached twice (by a tree or a run). Not
checked (liblmdb reads them without leaving the file): key order, the MDB_db counters; the free
list's page lists only for a file opened for writing (only a writer reads them: `check_file`). Levels are walked breadth-first, each level's pages
checked together with numpy, so the cost is one `pread` per tree page and per overflow run.
"""
from __future__ import annotations

import os
import struct
import time

import numpy as np

from .format import FormatError

P_BRANCH, P_LEAF, P_OVERFLOW, P_META = 0x01, 0x02, 0x04, 0x08
F_BIGDATA, F_SUBDATA = 0x01, 0x02
MDB_DUPSORT, KNOWN_DB_FLAGS = 0x04, 0x7E
P_INVALID = (1 << 64) - 1
MAX_DEPTH = 32                      # CURSOR_STACK in mdb.c
MAX_KEY = 511                       # MDB_MAXKEYSIZE
GAP = 4                             # pages read and dropped between two wanted ones
MAX_ATTEMPTS = 8                    # walks of a file that a writer keeps committing to
_HEADER = struct.Struct("<QHHHH")   # pgno, pad, flags, lower, upper
_META = struct.Struct("<II QQ IHHQQQQQ IHHQQQQQ QQ")   # at page offset 16, up to mm_txnid


class _Damage(Exception):
    """One problem found by the walk (the message names the page)."""
    snapshot = None


class _Meta:
    __slots__ = ("page", "flags", "magic", "version", "free", "main", "last_pg", "txnid")

    def __init__(self, page: int, raw: bytes):
        self.page = page
        self.flags = _HEADER.unpack_from(raw, 0)[2]
        f = _META.unpack_from(raw, 16)
        self.magic, self.version = f[0], f[1]
        self.free, self.main = f[4:12], f[12:20]    # (pad, flags, depth, branch, leaf, overflow, entries, root)
        self.last_pg, self.txnid = f[20], f[21]

    @property
    def psize(self) -> int:
        return self.free[0]


def _read(fd: int, offset: int, count: int) -> bytes:
    out = b""
    while len(out) < count:
        chunk = os.pread(fd, count - len(out), offset + len(out))
        if not chunk:
            break
        out += chunk
    return out


def _metas(fd: int, size: int) -> tuple[_Meta, _Meta]:
    """Both meta pages as `mdb_env_read_header` finds them: page 0, and one page size further."""
    need = 16 + _META.size
    m0raw = _read(fd, 0, need)
    if len(m0raw) < need:
        raise _Damage(f"{size} bytes, too short for an LMDB file")
    m0 = _Meta(0, m0raw)
    psize = m0.psize
    if m0.flags & P_META == 0 or m0.magic != 0xBEEFC0DE:
        raise _Damage("page 0 is not an LMDB meta page")
    if not (512 <= psize <= 65536 and psize & (psize - 1) == 0):
        raise _Damage(f"meta page 0 gives a page size of {psize} bytes (a power of two in 512…65536 expected)")
    m1raw = _read(fd, psize, need)
    if len(m1raw) < need:
        raise _Damage(f"meta page 1 (at byte {psize}) is missing: the file ends at byte {size}")
    m1 = _Meta(1, m1raw)
    for m in (m0, m1):
        if m.flags & P_META == 0 or m.magic != 0xBEEFC0DE:
            raise _Damage(f"page {m.page} is not an LMDB meta page")
        if m.version != 1:
            raise _Damage(f"meta page {m.page}: LMDB data format version {m.version}, this liblmdb reads version 1")
    if m1.psize != psize:
        raise _Damage(f"the meta pages disagree on the page size ({psize} and {m1.psize})")
    return m0, m1


def _picked(fd: int, size: int) -> _Meta:
    m0, m1 = _metas(fd, size)
    return m1 if m0.txnid < m1.txnid else m0


class _Walk:
    """One walk of one file: the picked meta, and which pages a tree or overflow run has reached."""

    def __init__(self, fd: int, size: int, meta: _Meta, free_list: bool = False):
        self.fd, self.size, self.meta, self.free_list = fd, size, meta, free_list
        self.free_ids: list[np.ndarray] = []       # the free list's page numbers (free_list only)
        self.psize, self.last = meta.psize, meta.last_pg
        self.seen = np.zeros(self.last + 1, dtype=bool)
        self.runs: list[np.ndarray] = []           # (start, count) pairs of overflow runs
        self.pages = 0
        self.buffer = np.empty((0, self.psize), dtype=np.uint8)   # reused by read_pages: one level chunk (≤ 16 MiB)

    def run(self) -> list[bytes]:
        """Walks FREE, MAIN and every named database; returns the names of the named databases."""
        m = self.meta
        if m.txnid & 1 != m.page:
            raise _Damage(f"meta page {m.page} (the one LMDB uses) holds txnid {m.txnid}, which belongs on meta page {m.txnid & 1}")
        self.tree("<free>", m.free, main=False)
        names = self.tree("<main>", m.main, main=True)
        for name, db in names:
            label = name.decode("utf-8", "replace")
            if db[1] & ~KNOWN_DB_FLAGS or db[1] & MDB_DUPSORT:
                raise _Damage(f"database '{label}' (its record in the main database): flags {db[1]:#x} "
                              "(unknown, or MDB_DUPSORT, which kdcache never writes)")
            self.tree(f"database '{label}'", db, main=False)
        self.check_runs()
        if self.free_list and self.free_ids:
            ids = np.sort(np.concatenate(self.free_ids)).astype(np.int64)
            if (m := np.r_[False, np.diff(ids) == 0]).any():
                raise _Damage(f"the free list names page {int(ids[m][0])} twice: a writer would hand it out twice and overwrite a record")
            if (m := self.cover[ids] > 0).any():
                raise _Damage(f"the free list names page {int(ids[m][0])}, which a tree or an overflow run uses: "
                              "a writer would reuse it and overwrite a record")
        return [n for n, _ in names]

    def tree(self, label: str, db, main: bool):
        """Walks one B-tree from its MDB_db record level by level; MAIN's F_SUBDATA nodes are
        returned as (name, MDB_db fields) when `main`."""
        depth, root = db[2], db[7]
        if root == P_INVALID:
            if depth != 0:
                raise _Damage(f"{label}: no root page but a depth of {depth}")
            return []
        if not 1 <= depth <= MAX_DEPTH:
            raise _Damage(f"{label}: depth {depth} (1…{MAX_DEPTH} for a tree with a root page)")
        level = np.array([root], dtype=np.uint64)                # sorted, as every level below
        named = []
        for lvl in range(1, depth + 1):
            leaf = lvl == depth
            kind = "leaf" if leaf else "branch"
            bad = (level < 2) | (level > self.last)
            if bad.any():
                raise _Damage(f"{label}: a {kind} page number {int(level[bad][0])} outside 2…{self.last} (the meta's last page)")
            idx = level.astype(np.int64)
            twice = np.flatnonzero(self.seen[idx] | np.r_[False, np.diff(idx) == 0])
            if twice.size:
                raise _Damage(f"page {int(idx[twice[0]])} ({label}, {kind}): reached twice (a cycle, or a page copied over another)")
            self.seen[idx] = True
            children, step = [], max(1, (16 << 20) // self.psize)
            for start in range(0, level.size, step):
                out = self.level(label, level[start:start + step], leaf, main, named)
                if out is not None:
                    children.append(out)
            if not leaf:
                level = np.sort(np.concatenate(children))
        return named

    def read_pages(self, label, pgnos: np.ndarray) -> np.ndarray:
        """Pages `pgnos` (sorted, distinct) as an (n, page size) array: one `preadv` per span of
        page numbers with gaps of at most GAP pages (the gaps are read and dropped), so the pages of
        a bulk-loaded file, a few databases interleaved, cost few system calls."""
        ps, n = self.psize, pgnos.size
        if self.buffer.shape[0] < n:
            self.buffer = np.empty((n, ps), dtype=np.uint8)
        buf = self.buffer[:n]
        breaks = (np.flatnonzero(np.diff(pgnos) > GAP) + 1).tolist()
        for a, b in zip([0, *breaks], [*breaks, n]):
            first, last = int(pgnos[a]), int(pgnos[b - 1])
            dense = last - first == b - a - 1
            span = buf[a:b] if dense else np.empty((last - first + 1, ps), dtype=np.uint8)
            mv, want, got = memoryview(span).cast("B"), span.size, 0
            while got < want:
                k = os.preadv(self.fd, [mv[got:]], first * ps + got)
                if k <= 0:
                    raise _Damage(f"page {first + got // ps} ({label}): past the end of the file ({self.size} bytes)")
                got += k
            if not dense:
                buf[a:b] = span[(pgnos[a:b] - np.uint64(first)).astype(np.int64)]
        self.pages += n
        return buf

    def level(self, label, pgnos: np.ndarray, leaf: bool, main: bool, named: list):
        """Checks pages `pgnos` (sorted) of one level; returns the child page numbers of branch pages."""
        ps, n = self.psize, pgnos.size
        pages = self.read_pages(label, pgnos)
        kind = "leaf" if leaf else "branch"

        def fail(mask, what):
            i = int(np.flatnonzero(mask)[0])
            raise _Damage(f"page {int(pgnos[i])} ({label}, {kind}): {what(i)}")

        words = pages.view("<u2")                          # (n, ps / 2): flags @5, lower @6, upper @7, pointers from @8
        own = pages.view("<u8")[:, 0]
        flags, lower, upper = words[:, 5].astype(np.int64), words[:, 6].astype(np.int64), words[:, 7].astype(np.int64)
        if (m := own != pgnos).any():
            fail(m, lambda i: f"its header says page {int(own[i])}")
        want = P_LEAF if leaf else P_BRANCH
        if (m := flags != want).any():
            fail(m, lambda i: f"page flags {int(flags[i]):#x}, {want:#x} expected at this level")
        if (m := (lower < 16) | (lower > upper) | (upper > ps) | (lower & 1 == 1)).any():
            fail(m, lambda i: f"lower {int(lower[i])}, upper {int(upper[i])} (16 ≤ lower ≤ upper ≤ {ps}, lower even)")
        nkeys = (lower - 16) >> 1
        if not leaf and (m := nkeys < 2).any():
            fail(m, lambda i: f"{int(nkeys[i])} nodes (a branch page has at least 2)")
        most = int(nkeys.max())
        pi, slot = np.nonzero(np.arange(most)[None, :] < nkeys[:, None])
        off = words[:, 8:8 + most][pi, slot].astype(np.int64)

        def node_fail(mask, what):
            j = int(np.flatnonzero(mask)[0])
            raise _Damage(f"page {int(pgnos[pi[j]])} ({label}, {kind}): node {int(slot[j])} at offset {int(off[j])}: {what(j)}")

        if (m := (off < upper[pi]) | (off + 8 > ps) | (off & 1 == 1)).any():
            node_fail(m, lambda j: f"outside the page's node area {int(upper[pi[j]])}…{ps}, or odd")
        base = pi * ps + off                               # even: node headers are u16-aligned
        w = words.reshape(-1)
        lo, hi, nflags, ksize = (w[base // 2 + k].astype(np.int64) for k in range(4))
        key_end = off + 8 + ksize
        if (m := (ksize > MAX_KEY) | (key_end > ps)).any():
            node_fail(m, lambda j: f"a key of {int(ksize[j])} bytes (at most {MAX_KEY}, inside the page's {ps})")
        if not leaf:
            return (lo | (hi << 16) | (nflags << 32)).astype(np.uint64)
        dsize = lo | (hi << 16)
        big = (nflags & F_BIGDATA) != 0
        sub = (nflags & F_SUBDATA) != 0
        if (m := (nflags & ~(F_BIGDATA | F_SUBDATA)) != 0).any():
            node_fail(m, lambda j: f"node flags {int(nflags[j]):#x} (F_DUPDATA or unknown: kdcache never writes them)")
        if (m := sub & (big | (dsize != 48) | (not main))).any():
            node_fail(m, lambda j: f"a named-database record (F_SUBDATA) of {int(dsize[j])} bytes"
                      + ("" if main else " outside the main database"))
        inpage = np.where(big, 8, dsize)
        if (m := key_end + inpage > ps).any():
            node_fail(m, lambda j: f"{int(inpage[j])} bytes of data run past the page end ({ps})")
        flat = pages.reshape(-1)
        if big.any():
            bj = np.flatnonzero(big)
            at = (base + 8 + ksize)[bj]
            ov = np.zeros(bj.size, dtype=np.uint64)
            for k in range(8):
                ov |= flat[at + k].astype(np.uint64) << np.uint64(8 * k)
            self.overflow(label, pgnos[pi[bj]], slot[bj], ov, dsize[bj])
        if self.free_list and label == "<free>":
            for j in range(base.size):
                if big[j]:
                    start = int(sum(int(flat[int(base[j]) + 8 + int(ksize[j]) + k]) << (8 * k) for k in range(8)))
                    value = _read(self.fd, start * ps + 16, int(dsize[j]))
                else:
                    a = int(base[j]) + 8 + int(ksize[j])
                    value = bytes(flat[a:a + int(dsize[j])])
                self.free_record(f"page {int(pgnos[pi[j]])} ({label}, leaf): node {int(slot[j])}", value)
        for j in np.flatnonzero(sub).tolist():
            a, k = int(base[j]) + 8, int(ksize[j])
            named.append((bytes(flat[a:a + k]), struct.unpack_from("<IHHQQQQQ", bytes(flat[a + k:a + k + 48]))))
        return None

    def overflow(self, label, pages, slots, starts: np.ndarray, dsize: np.ndarray):
        """Checks the first page of each overflow run (one `pread` of its header)."""
        ps = self.psize
        for page, slot, start, size in zip(pages.tolist(), slots.tolist(), starts.tolist(), dsize.tolist()):
            where = f"page {page} ({label}, leaf): node {slot}: overflow run at page {start}"
            if not 2 <= start <= self.last:
                raise _Damage(f"{where}: outside 2…{self.last} (the meta's last page)")
            h = _read(self.fd, start * ps, 16)
            if len(h) < 16:
                raise _Damage(f"{where}: past the end of the file ({self.size} bytes)")
            own, _, flags, count = struct.unpack_from("<QHHI", h)
            if own != start or flags != P_OVERFLOW:
                raise _Damage(f"{where}: not an overflow page (header page {own}, flags {flags:#x})")
            if count < 1 or start + count - 1 > self.last:
                raise _Damage(f"{where}: {count} pages run past the meta's last page {self.last}")
            if size > count * ps - 16:
                raise _Damage(f"{where}: {count} pages cannot hold the node's {size} bytes")
            self.runs.append((start, count))
            self.pages += 1

    def free_record(self, where: str, value: bytes):
        """One free-list record (an IDL: u64 count n, then n u64 page numbers), which a writer trusts:
        n must fit the value, and every page number lie in 2…last_pg."""
        if len(value) < 8:
            raise _Damage(f"{where}: a free-list record of {len(value)} bytes (at least 8)")
        n = struct.unpack_from("<Q", value)[0]
        if 8 * (n + 1) > len(value):
            raise _Damage(f"{where}: a free-list record counts {n} pages in {len(value)} bytes")
        ids = np.frombuffer(value, dtype="<u8", count=n, offset=8)
        if (m := (ids < 2) | (ids > self.last)).any():
            raise _Damage(f"{where}: the free list names page {int(ids[m][0])}, outside 2…{self.last}")
        self.free_ids.append(ids)

    def check_runs(self):
        """No overflow run overlaps a tree page or another run (`cover`: how many use each page)."""
        self.cover = self.seen.astype(np.int32)
        if not self.runs:
            return
        runs = np.array(self.runs, dtype=np.int64)
        cover = np.zeros(self.last + 2, dtype=np.int32)
        np.add.at(cover, runs[:, 0], 1)
        np.add.at(cover, runs[:, 0] + runs[:, 1], -1)
        cover = np.cumsum(cover)[:-1] + self.seen
        self.cover = cover
        if (m := cover > 1).any():
            raise _Damage(f"page {int(np.flatnonzero(m)[0])}: reached twice (by overflow runs or a tree and a run)")


def check_file(path: str, free_list: bool = False) -> None:
    """Walks the file's pages (module doc) and raises `FormatError` naming the file and the first
    problem. A file whose page 0 lacks LMDB's magic is left to lmdb.open to refuse. `free_list`
    (for a file about to be opened for writing, since only a writer reads them): also every
    free-list record fits its value and names distinct pages in 2…last_pg that no tree or overflow
    run uses — liblmdb would hand such a page out and overwrite a record.

    The walk is not an LMDB reader: a writer in another process may reuse the pages of the snapshot
    it walks, or commit while it reads the meta pages. So a problem counts only when no commit came
    between the walk's start and its end (same picked txnid, same file length), and is reported
    when two such walks in a row find it. A walk that a commit overlapped is repeated after a pause
    (1, 2, 4 … ms), up to MAX_ATTEMPTS walks; a file that changed under every one of them, or never
    showed the same problem twice, is left to liblmdb, which a writer's lock file keeps consistent (kdcache's readers, without one, assume
    that no other process writes the file: registry)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return                                   # lmdb.open reports it
    try:
        last = None
        for attempt in range(MAX_ATTEMPTS):
            try:
                _check(fd, free_list)
                return
            except _Damage as e:
                seen = (str(e), e.snapshot)
            if seen[1] is not None and seen == last:
                break
            if seen[1] is None:
                time.sleep(0.001 * 2 ** attempt)
            last = seen
        else:
            return                               # never the same problem twice: not shown to be damage
    finally:
        os.close(fd)
    problem = seen[0]
    if problem.startswith("truncated"):
        raise FormatError(f"{path}: {problem} (a cut copy or an interrupted transfer: copy the file again)")
    raise FormatError(f"{path}: damaged LMDB file: {problem} (refused before liblmdb reads it: `kdcache verify {path}` "
                      "lists every damaged page; copy the file again from a sound source)")


def _snapshot(fd: int) -> tuple[_Meta, int]:
    """The picked meta and the file length, in that order: a writer extends the file before it
    writes the meta page that refers to the new pages."""
    head = _read(fd, 0, 16 + _META.size)
    if len(head) < 20 or struct.unpack_from("<I", head, 16)[0] != 0xBEEFC0DE:
        return None, 0
    size = os.fstat(fd).st_size
    return _picked(fd, size), os.fstat(fd).st_size


def _check(fd: int, free_list: bool = False) -> None:
    """One walk; a `_Damage` carries `snapshot`: (txnid, length) when the snapshot did not change
    during the walk, else None."""
    try:
        meta, size = _snapshot(fd)
    except _Damage as e:
        e.snapshot = ("meta pages", os.fstat(fd).st_size)      # a writer never leaves these unreadable
        raise
    if meta is None:
        return                                   # not LMDB at all: lmdb.open refuses it
    try:
        if meta.last_pg < 1 or (meta.last_pg + 1) * meta.psize > size:
            raise _Damage(f"truncated: its meta page says {meta.last_pg + 1} pages of {meta.psize} bytes, the file holds {size} bytes")
        _Walk(fd, size, meta, free_list).run()
    except _Damage as e:
        try:
            again, now = _snapshot(fd)
            e.snapshot = (meta.txnid, size) if again is not None and (again.txnid, now) == (meta.txnid, size) else None
        except _Damage:
            e.snapshot = None
        raise
