"""`SoftLabelWriter`: writes a soft-label cache (FORMAT.md §3) from Python, through the registry."""
from __future__ import annotations

import datetime

import numpy as np

from . import registry
from .format import FormatError, encode_soft_label, manifest_checksum, parse_soft_label_key, soft_label_key
from .manifest import check_stored_manifest, encode_manifest, layout_differences, softlabel_manifest_problems
from .stores import DatasetStore, open as open_store

_TOOL_VERSION = "python-0.2.0"


def _log_softmax(z: np.ndarray) -> np.ndarray:
    """log_softmax over the last axis, in float64."""
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


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class SoftLabelWriter:
    """Writes a soft-label cache (FORMAT.md §3) from Python, e.g. from a PyTorch teacher:

        with kdcache.SoftLabelWriter("cache.lmdb", "data.lmdb", name="bert", description="…",
                                     content_hash="sha256:…", write_temperature=2.0, dtype="f16") as w:
            for start in range(0, n, 4096):
                w.write(start, logits[start:start + 4096])        # rows in dataset order

    Each `write` is one transaction holding the records and the manifest's updated completed ranges,
    so an interrupted run can resume: `w.pending()` lists the sample ranges still missing. The file
    is opened through the process's environment registry, so readers of the same file in this
    process share its environment (and see each write once it commits).
    """

    def __init__(self, path, dataset, name, description="", content_hash="", write_temperature=1.0, dtype="f16",
                 views=1, map_size=1 << 30):
        if dtype not in ("f16", "f32"):
            raise ValueError("dtype must be f16 or f32")
        if views != 1:
            raise ValueError("this writer writes one view per sample")
        ds = dataset if isinstance(dataset, DatasetStore) else open_store(str(dataset))
        if not isinstance(ds, DatasetStore):
            ds.close()
            raise FormatError(f"{ds.path}: is not a dataset store (the writer needs the dataset the cache labels)")
        self.classes = len(ds.manifest["labels"])
        self.sample_count = len(ds)
        if ds is not dataset:
            ds.close()   # only its manifest is needed
        self.dtype, self.views, self.write_temperature, self.name = dtype, views, float(write_temperature), name
        self.path = str(path)
        now = _now()
        self.entry = {"identity": {"name": name, "description": description, "content_hash": content_hash},
                      "write_temperature": self.write_temperature, "dtype": dtype, "top_k": 0, "views": views,
                      "completed": [], "metrics": {}, "created": now, "tool_version": _TOOL_VERSION}
        self._shared = registry.acquire(self.path, write=True, map_size=map_size)
        self._closed = False
        try:
            self._start(ds.manifest, now)
        except BaseException:
            self.close()
            raise

    @property
    def env(self):
        """The file's LMDB environment, shared with this process's readers of the file."""
        return self._shared.env

    def _start(self, dataset_manifest: dict, now: str) -> None:
        """Checks the cache already at `path` (if any) fits the dataset and this teacher, then
        commits the manifest with this teacher's entry, before any record is written."""
        self.meta = self.env.open_db(b"meta")
        with self.env.begin(db=self.meta) as txn:
            stored = self._stored_manifest(txn)
        if stored is None:
            manifest = {"format": "kdcache-softlabels", "schema_version": 2, "tool_version": _TOOL_VERSION, "created": now,
                        "dataset_fingerprint": dataset_manifest["fingerprint"],
                        "featurizer_signature": dataset_manifest["featurizer"]["signature"],
                        "labels": dataset_manifest["labels"], "sample_count": self.sample_count, "teachers": {}}
        else:
            manifest = stored
            self._check_resumable(manifest, dataset_manifest)
        self.db = self.env.open_db(f"teacher/{self.name}".encode())
        self._adopt(manifest)  # fail early, before writing anything
        self.manifest = manifest
        with self.env.begin(write=True, db=self.meta) as txn:
            self._commit_manifest(txn)

    def _check_resumable(self, manifest: dict, dataset_manifest: dict) -> None:
        path = self.path
        if manifest["schema_version"] != 2:
            raise FormatError(f"{path}: is a format v{manifest['schema_version']} cache; this writer adds records to format v2 caches only. "
                              f"Write to a new file, or upgrade it first with kdcache merge {path} --out NEW (it re-checksums every record)")
        if manifest.get("format") != "kdcache-softlabels":
            raise FormatError(f"{path}: is not a soft-label cache")
        for field, ours in (("dataset_fingerprint", dataset_manifest["fingerprint"]), ("labels", dataset_manifest["labels"]),
                            ("sample_count", self.sample_count)):
            if manifest[field] != ours:
                raise FormatError(f"{path}: written for another dataset ({field} differs)")

    def _stored_manifest(self, txn):
        """The manifest as stored, checked like a reader checks it (checksum, every field), or None."""
        raw = txn.get(b"manifest", db=self.meta)
        if raw is None:
            return None
        return check_stored_manifest(self.path, bytes(raw), txn.get(b"manifest_crc32", db=self.meta))

    def _adopt(self, manifest):
        """Adds this teacher to `manifest`, or checks the one already there has the same identity and
        layout (every field of `manifest.LAYOUT_FIELDS`, augmentation included)."""
        old = manifest["teachers"].get(self.name)
        if old is None:
            manifest["teachers"][self.name] = dict(self.entry)
            return manifest["teachers"][self.name]
        if old["identity"] != self.entry["identity"]:
            raise FormatError(f"{self.path}: teacher '{self.name}' exists with another identity "
                              f"(content hash {old['identity'].get('content_hash')!r} in the cache, {self.entry['identity']['content_hash']!r} here)")
        differences = layout_differences(old, self.entry)
        if differences:
            raise FormatError(f"{self.path}: teacher '{self.name}' exists with another layout "
                              f"({', '.join(differences)}; the cache's first): write another name or to a new file")
        return old

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
        raw = encode_manifest(manifest)
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
                sample, view = parse_soft_label_key(bytes(key))
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
        """Rows for samples start, start+1, … (one view); `kind` logits / logprobs / probs at `temperature`.
        Stored: `log_softmax(z / T_w)` with z = logits, `T · logprobs` or `T · log probs` (FORMAT.md §3.3)."""
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
                txn.put(soft_label_key(start + k, view), self.encode(row, start + k, view))
            self._commit_manifest(txn, completed=(start, start + len(x)))

    def close(self):
        """Syncs and releases the file: its readers in this process keep reading."""
        if not self._closed:
            self._closed = True
            self.env.sync(True)
            registry.release(self._shared, write=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
