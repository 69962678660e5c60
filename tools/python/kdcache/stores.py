"""Readers of both stores (FORMAT.md §2, §3): `open`, `DatasetStore`, `SoftLabelStore`."""
from __future__ import annotations

import contextlib

import lmdb
import numpy as np

from . import registry
from .format import (FormatError, decode_sample, decode_soft_label, decompress_text, parse_sample_key,
                     parse_soft_label_key, sample_key, sample_record_v1, soft_label_key)
from .hashing import dataset_fingerprint
from .manifest import check_stored_manifest
from .tokens import SequenceBatch, SequenceLayout, SequenceRecord, decode_sequence, decode_sequence_batch, sequence_key


class _Store:
    """Shared by both stores: the file's environment (shared within a process, `registry`) and
    its databases, reopened whenever the registry reopens the environment."""

    def __init__(self, shared: registry.SharedEnvironment, manifest: dict, path: str):
        self._shared, self.manifest, self.path = shared, manifest, path
        self._closed = False
        self._open_dbs()
        shared.follow(self, lambda store: store._open_dbs())

    @property
    def env(self) -> lmdb.Environment:
        """The file's LMDB environment (the registry may replace it while a writer opens or closes)."""
        return self._shared.env

    def _open_dbs(self):
        raise NotImplementedError

    def __len__(self) -> int:
        return self.manifest["sample_count"]

    def close(self) -> None:
        """Releases the file (its environment closes with its last reader or writer in this process)."""
        if not self._closed:
            self._closed = True
            registry.release(self._shared)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _read_manifest(shared: registry.SharedEnvironment, path: str) -> dict:
    """The checked manifest of an acquired file: its bytes and checksum read in one transaction."""
    env = shared.env
    try:
        meta = env.open_db(b"meta", create=False)
        with env.begin(db=meta) as txn:
            raw, crc = txn.get(b"manifest"), txn.get(b"manifest_crc32")
            raw, crc = (bytes(raw) if raw is not None else None), (bytes(crc) if crc is not None else None)
    except lmdb.Error as e:
        raise FormatError(f"{path}: not a kdcache store (no 'meta' database)") from e
    if raw is None:
        raise FormatError(f"{path}: incomplete store (no manifest)")
    return check_stored_manifest(path, raw, crc)


def open(path: str):  # noqa: A001 - mirrors the builtin on purpose
    """Open either store; the returned object's class says which it is. The manifest is checked
    completely first (checksum in format v2, every field: FORMAT.md §1.1)."""
    shared = registry.acquire(path)
    try:
        manifest = _read_manifest(shared, path)
        kind = manifest.get("format")
        if kind == "kdcache-dataset":
            return DatasetStore(shared, manifest, path)
        if kind == "kdcache-softlabels":
            return SoftLabelStore(shared, manifest, path)
        raise FormatError(f"{path}: unknown format {kind!r}")
    except BaseException:
        registry.release(shared)
        raise


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

    def _get(self, db, i: int, what: str = "record") -> bytes:
        """Sample i's value in `db`: KeyError when i is no sample index of the store, FormatError when
        it is one and the value is missing (every index below `sample_count` has one: FORMAT.md §2.1)."""
        if not 0 <= i < len(self):
            raise KeyError(i)
        with self.env.begin(db=db) as txn:
            v = txn.get(sample_key(i))
        if v is None:
            raise FormatError(f"{self.path}: sample {i}: no {what}, though the store holds {len(self)} samples: a damaged store")
        return bytes(v)

    def _key(self, key, db: str) -> int:
        """The sample index of a `u64be` key read from `db`, refused by name when it is not 8 bytes
        or not below `sample_count`."""
        if len(key) != 8:
            raise FormatError(f"{self.path}: database {db} holds a {len(key)}-byte key {bytes(key).hex()} (sample keys are 8 bytes): a damaged store")
        i = parse_sample_key(key)
        if i >= len(self):
            raise FormatError(f"{self.path}: database {db} holds sample {i}, past its {len(self)} samples: a damaged store")
        return i

    def _utf8(self, raw: bytes, i: int, what: str) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise FormatError(f"{self.path}: sample {i}: its {what} is not UTF-8 (byte {e.start}): a damaged store") from e

    def _decode(self, record: bytes, i: int) -> dict:
        try:
            return decode_sample(record, len(self.manifest["labels"]), index=i, version=self.version, features=self._feature_layout)
        except FormatError as e:
            raise FormatError(f"{self.path}: sample {i}: {e}") from e

    def record(self, i: int) -> dict:
        """Sample i's checked record: kind, split, label and (indices,) values (FORMAT.md §2.2)."""
        return self._decode(self._get(self._samples, i), i)

    def features(self, i: int):
        """(bucket indices, counts) of a sparse sample, or the values of a dense one."""
        r = self.record(i)
        return (r["indices"], r["values"]) if r["kind"] == "sparse" else r["values"]

    def label(self, i: int) -> int:
        """Sample i's label: an index into `manifest["labels"]`."""
        return self.record(i)["label"]

    def split(self, i: int) -> str:
        """Sample i's split: train, valid or test."""
        return self.record(i)["split"]

    def id(self, i: int) -> str:
        """Sample i's original id."""
        return self._utf8(self._get(self._index_to_id, i, "id"), i, "id")

    def index_of(self, sample_id: str) -> int:
        """The index of the sample with this original id."""
        with self.env.begin(db=self._id_to_index) as txn:
            v = txn.get(sample_id.encode("utf-8"))
        if v is None:
            raise KeyError(sample_id)
        if len(v) != 8:
            raise FormatError(f"{self.path}: id {sample_id!r} maps to a {len(v)}-byte index (8 expected): a damaged store")
        i = parse_sample_key(v)
        if i >= len(self):
            raise FormatError(f"{self.path}: id {sample_id!r} maps to sample {i}, past its {len(self)} samples: a damaged store")
        return i

    def text(self, i: int) -> str:
        """Sample i's raw text (text stores only)."""
        try:
            raw = decompress_text(self._get(self._texts, i, "text"))
        except FormatError as e:
            raise FormatError(f"{self.path}: sample {i}: {e}") from e
        return self._utf8(raw, i, "text")

    def __iter__(self):
        """(index, record) in index order, one cursor pass."""
        with self._shared.reading(db=self._samples) as txn:
            for k, v in txn.cursor():
                i = self._key(k, "samples")
                yield i, self._decode(bytes(v), i)

    def fingerprint(self) -> str:
        """Recompute the fingerprint of FORMAT.md §2.6 from the content: each record as format v1
        encodes it (version byte 1, the CRC without the key), so v1 and v2 stores of one input agree."""
        has_text = self.manifest["has_text"]

        def value(txn, db, k, what):
            v = txn.get(k, db=db)
            if v is None:
                raise FormatError(f"{self.path}: sample {self._key(k, 'samples')}: no {what}: a damaged store")
            return bytes(v)

        with self._shared.reading() as txn:
            samples = ((value(txn, self._index_to_id, k, "id"), sample_record_v1(bytes(v), self.version),
                        decompress_text(value(txn, self._texts, k, "text")) if has_text else b"")
                       for k, v in txn.cursor(db=self._samples))
            return dataset_fingerprint(self.manifest["featurizer"]["signature"], self.manifest["labels"], samples)


class SoftLabelStore(_Store):
    """A soft-label cache (FORMAT.md §3)."""

    def _open_dbs(self):
        self._dbs = {}
        for name in self.manifest["teachers"]:
            try:
                self._dbs[name] = self.env.open_db(f"teacher/{name}".encode(), create=False)
            except lmdb.Error as e:
                raise FormatError(f"{self.path}: the manifest lists teacher {name} but the file has no database teacher/{name} "
                                  f"({type(e).__name__}): a damaged or partly copied cache") from e
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
            if "sequence" in entry:
                return decode_sequence(raw, sample, SequenceLayout.of(entry)).copy()
            return decode_soft_label(raw, len(self.manifest["labels"]), sample=sample, view=view, version=self.version,
                                     dtype=entry["dtype"], top_k=entry["top_k"])
        except FormatError as e:
            raise FormatError(f"{self.path}: teacher {name} sample {sample} view {view}: {e}") from e

    def log_probs(self, i: int, view: int = 0, temperature: float | None = None, teacher: str | None = None) -> np.ndarray:
        """log p at the write temperature, or re-tempered exactly to `temperature` (FORMAT.md §3.3):
        `log_softmax((T_w / T) · log p_{T_w})`."""
        name, entry = self._teacher(teacher)
        if "sequence" in entry:
            raise FormatError(f"{self.path}: teacher {name} is a sequence teacher (FORMAT.md §3.6): read it with sequence(i) or TokenDistillationDataset")
        if not (0 <= i <= 0xFFFFFFFF and 0 <= view <= 0xFFFFFFFF):
            raise KeyError((i, view))
        with self.env.begin(db=self._dbs[name]) as txn:
            raw = txn.get(soft_label_key(i, view))
        if raw is None:
            raise KeyError((i, view))
        lp = self._decode(bytes(raw), name, entry, i, view).astype(np.float64)
        if temperature is not None:
            z = lp * (entry["write_temperature"] / temperature)
            z -= z.max()
            lp = z - np.log(np.exp(z).sum())
        return lp

    def probs(self, i: int, view: int = 0, temperature: float | None = None, teacher: str | None = None) -> np.ndarray:
        """`exp(log_probs(…))`."""
        return np.exp(self.log_probs(i, view, temperature, teacher))

    def __iter__(self):
        """((sample, view), log p at T_w) for the only teacher, in key order."""
        name, entry = self._teacher(None)
        with self._shared.reading(db=self._dbs[name]) as txn:
            for k, v in txn.cursor():
                if len(k) != 8:
                    raise FormatError(f"{self.path}: teacher {name} holds a {len(k)}-byte key {bytes(k).hex()} "
                                      "(soft-label keys are 8 bytes): a damaged cache")
                sample, view = parse_soft_label_key(k)
                yield (sample, view), self._decode(bytes(v), name, entry, sample, view)

    def sequence_teacher(self, teacher: str | None = None) -> tuple[str, dict]:
        """(name, entry) of a sequence teacher (FORMAT.md §3.6); refuses a class teacher."""
        name, entry = self._teacher(teacher)
        if "sequence" not in entry:
            raise FormatError(f"{self.path}: teacher {name} is a class teacher, not a sequence teacher")
        return name, entry

    @contextlib.contextmanager
    def _sequence_txn(self, teacher):
        """(name, layout, a `buffers=True` read transaction on the teacher's database)."""
        name, entry = self.sequence_teacher(teacher)
        with self._shared.reading(db=self._dbs[name], buffers=True) as txn:
            yield name, SequenceLayout.of(entry), txn

    def _sequence_buffer(self, txn, i: int, name: str):
        """Sample i's record; KeyError when not written yet, FormatError when `completed` covers it
        but it is missing, or liblmdb finds the file damaged on the way to it."""
        if not 0 <= i < len(self):
            raise KeyError(i)
        try:
            buf = txn.get(sequence_key(i))
        except lmdb.Error as e:
            raise FormatError(f"{self.path}: teacher {name} sample {i}: the file is damaged (liblmdb: {e}); "
                              f"`kdcache verify {self.path}` names the page") from e
        if buf is None:
            completed = self.manifest["teachers"][name]["completed"]
            if any(a <= i < b for a, b in completed):
                raise FormatError(f"{self.path}: teacher {name} sample {i}: no record, though its completed ranges {completed} "
                                  "cover it: a damaged cache")
            raise KeyError(i)
        return buf

    def _decode_sequence(self, name: str, layout: SequenceLayout, i: int, buf) -> SequenceRecord:
        try:
            return decode_sequence(buf, i, layout)
        except FormatError as e:
            raise FormatError(f"{self.path}: teacher {name} sample {i}: {e}") from e

    @contextlib.contextmanager
    def sequence_reader(self, teacher: str | None = None):
        """A read transaction yielding `get(i) -> SequenceRecord` whose arrays are zero-copy views on
        the map (a `buffers=True` transaction), checked (FORMAT.md §1.2): valid until the block ends."""
        with self._sequence_txn(teacher) as (name, layout, txn):
            yield lambda i: self._decode_sequence(name, layout, i, self._sequence_buffer(txn, i, name))

    def sequence_batch(self, indices, teacher: str | None = None) -> SequenceBatch:
        """Samples `indices` read in one transaction and decoded together (`decode_sequence_batch`:
        every check of FORMAT.md §1.2, vectorised over the batch), as copies. Refuses exactly as
        `get(i)` of `sequence_reader` would on the first bad sample in `indices` order (on a refusal
        the records are decoded one by one to name the sample and position)."""
        indices = [int(i) for i in indices]
        with self._sequence_txn(teacher) as (name, layout, txn):
            bufs = []
            try:
                for i in indices:
                    bufs.append(self._sequence_buffer(txn, i, name))
                return decode_sequence_batch(bufs, indices, layout)
            except (KeyError, FormatError) as e:
                for i, buf in zip(indices, bufs):
                    self._decode_sequence(name, layout, i, buf)      # raises the first record's own refusal
                if isinstance(e, KeyError):
                    raise
                raise FormatError(f"{self.path}: teacher {name} samples {indices[0]}…{indices[-1]}: {e}") from e

    def sequence(self, i: int, teacher: str | None = None) -> SequenceRecord:
        """Sample i's checked sequence record (FORMAT.md §3.7), copied out of the map."""
        with self.sequence_reader(teacher) as get:
            return get(i).copy()
