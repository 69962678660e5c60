"""One `lmdb.Environment` per file per process, shared and counted.

LMDB forbids opening one file twice in a process (closing the second handle drops the first's
locks), so every reader and writer of a file goes through `acquire` / `release`. Readers alone get
a read-only environment without LMDB's lock file (MDB_NOLOCK): it works on read-only directories
and media, and stays usable in a forked child (PyTorch DataLoader workers), since no reader-table
slot is shared. Readers then assume no concurrent writer in another process: kdcache writers build
files under a temporary name, or are finished before caches are shared. While a writer is open
the environment is writable and locked, and readers of the same file read through it: the first
writer reopens the file that way, and the last one to close reopens it read-only again; each time
the readers' database handles are reopened (`SharedEnvironment.follow`). Before py-lmdb first
maps an existing file, `pages.check_file` walks its pages, so that a damaged file is a FormatError
naming the page rather than a SIGBUS of liblmdb in this process.
"""
from __future__ import annotations

import contextlib
import os
import threading
import weakref

import lmdb

from . import pages
from .format import FormatError

_MAX_DBS = 64
_LOCK = threading.Lock()
_OPEN: dict[tuple[int, int], "SharedEnvironment"] = {}


def _lmdb_open(path: str, writable: bool, map_size: int, walk: bool = True) -> lmdb.Environment:
    """Opens the file with py-lmdb, after `pages.check_file` has walked an existing one (`walk`):
    liblmdb trusts every page it maps, and a damaged one would kill this process (SIGBUS, SIGABRT).
    A reopening (`SharedEnvironment._reopen`) does not walk again: the file was walked when this
    process first opened it, and changed since only through liblmdb's own writes."""
    if walk and os.path.exists(path):
        pages.check_file(path, free_list=writable)
    if writable:
        return lmdb.open(path, subdir=False, map_size=map_size, max_dbs=_MAX_DBS)
    try:
        return lmdb.open(path, subdir=False, readonly=True, lock=False, max_dbs=_MAX_DBS)
    except lmdb.Error as e:
        raise FormatError(f"{path}: cannot open as LMDB: {e}") from e


class SharedEnvironment:
    """The environment of one file in this process, with its number of readers and writers.
    `env` changes when the first writer arrives and when the last one leaves: keep this object,
    not `env`, and register a callback with `follow` to reopen database handles then."""

    def __init__(self, path: str, key: tuple[int, int], env: lmdb.Environment, writable: bool):
        self.path, self.key, self.env, self.writable = path, key, env, writable
        self.readers = self.writers = self._live_reads = 0
        self._followers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def follow(self, owner, reopen) -> None:
        """Calls `reopen(owner)` after each reopening of `env`, for as long as `owner` lives."""
        self._followers[owner] = reopen

    @contextlib.contextmanager
    def reading(self, **begin):
        """A read transaction that a long iteration holds: counted, so that reopening `env` under it
        is refused instead of invalidating its cursor."""
        with _LOCK:
            self._live_reads += 1
        try:
            with self.env.begin(**begin) as txn:
                yield txn
        finally:
            with _LOCK:
                self._live_reads -= 1

    def _reopen(self, writable: bool, map_size: int) -> None:
        """Closes `env` and opens the file again, writable (and locked) or read-only."""
        if self._live_reads:
            raise FormatError(f"{self.path}: a reader in this process is iterating over this file; finish it before a writer opens or closes it")
        if self.writable:
            self.env.sync(True)
        self.env.close()
        try:
            self.env, self.writable = _lmdb_open(self.path, writable, map_size, walk=False), writable
        except Exception:
            self.env, self.writable = _lmdb_open(self.path, self.writable, map_size, walk=False), self.writable
            self._reopen_followers()
            raise
        self._reopen_followers()

    def _reopen_followers(self) -> None:
        for owner, reopen in list(self._followers.items()):
            reopen(owner)


def _file_key(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError as e:
        raise FormatError(f"{path}: {e.strerror}") from e
    return st.st_dev, st.st_ino


def acquire(path: str, write: bool = False, map_size: int = 1 << 30) -> SharedEnvironment:
    """The shared environment of `path`, counted once more as a reader or (`write`) a writer. A
    writer creates the file when it does not exist; `map_size` is the first writer's."""
    with _LOCK:
        if write and not os.path.exists(path):
            env = _lmdb_open(path, True, map_size)
            shared = SharedEnvironment(path, _file_key(path), env, True)
            _OPEN[shared.key] = shared
        else:
            key = _file_key(path)
            shared = _OPEN.get(key)
            if shared is None:
                shared = _OPEN[key] = SharedEnvironment(path, key, _lmdb_open(path, write, map_size), write)
            elif write and not shared.writable:
                shared._reopen(True, map_size)
        if write:
            shared.writers += 1
        else:
            shared.readers += 1
        return shared


def release(shared: SharedEnvironment, write: bool = False) -> None:
    """Counts one reader or writer less; closes the environment after the last, and reopens it
    read-only after the last writer when readers remain."""
    with _LOCK:
        if write:
            shared.writers -= 1
        else:
            shared.readers -= 1
        if shared.readers + shared.writers == 0:
            del _OPEN[shared.key]
            if shared.writable:
                shared.env.sync(True)
            shared.env.close()
        elif shared.writers == 0 and shared.writable and not shared._live_reads:
            shared._reopen(False, 0)   # under a live iteration it stays writable until the last close
