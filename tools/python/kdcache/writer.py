"""`SoftLabelWriter`: writes a soft-label cache (FORMAT.md §3) from Python, through the registry."""
from __future__ import annotations

import datetime

import numpy as np

from . import registry
from .format import FormatError, encode_soft_label, manifest_checksum, parse_soft_label_key, soft_label_key
from .hashing import fnv1a64
from .manifest import check_stored_manifest, encode_manifest, layout_differences, softlabel_manifest_problems
from .stores import DatasetStore, open as open_store
from .tokens import SequenceLayout, decode_sequence, encode_sampled, encode_top_k

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

    SCHEMA_VERSION = 2   # the format version of the caches this writer writes and adds to

    def _layout(self) -> dict:
        """Teacher-entry fields beyond the class layout (none here; `SequenceWriter` adds its own)."""
        return {}

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
        self.entry.update(self._layout())
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
            manifest = {"format": "kdcache-softlabels", "schema_version": self.SCHEMA_VERSION, "tool_version": _TOOL_VERSION, "created": now,
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
        if manifest["schema_version"] != self.SCHEMA_VERSION:
            v = manifest["schema_version"]
            hint = f"upgrade it first with kdcache merge {path} --out NEW (it re-checksums every record)" if v == 1 else \
                "class and sequence teachers live in different files (v2 and v3)"
            raise FormatError(f"{path}: is a format v{v} cache; this writer adds records to format v{self.SCHEMA_VERSION} caches only. "
                              f"Write to a new file, or {hint}")
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
        self._put(start, [self.encode(row, start + k, view) for k, row in enumerate(lp)], view)

    def _put(self, start: int, records: list, view: int = 0) -> None:
        """One write transaction: the records of samples start, start+1, … and the manifest's
        `completed` range for them (FORMAT.md §3.1)."""
        with self.env.begin(write=True, db=self.db) as txn:
            for k, record in enumerate(records):
                txn.put(soft_label_key(start + k, view), record)
            self._commit_manifest(txn, completed=(start, start + len(records)))

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


# ---- sequence teachers (FORMAT.md §3.6–3.7) ----------------------------------------------------

_FLOOR = {"f16": -65504.0, "f32": float(np.finfo(np.float32).min)}   # the most negative finite stored value


def _logsumexp_rows(x: np.ndarray) -> np.ndarray:
    """log Σ exp over the last axis (−inf for a row of −inf)."""
    m = x.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(x - m).sum(axis=-1)) + m[..., 0]


def top_k_entries(lp: np.ndarray, k: int, alphas) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """From full `log p_{T_w}` [P, V]: the k most probable ids per position (ties to the lower id),
    their log p, the log tail `log Σ_tail p` and the tail sums `log Σ_tail p^{a_r}` [P, R]
    (log-sum-exp over the tail; −∞ when k = V)."""
    order = np.argsort(-lp, axis=1, kind="stable")[:, :k]
    kept = np.take_along_axis(lp, order, axis=1)
    tail = lp.copy()
    np.put_along_axis(tail, order, -np.inf, axis=1)
    sums = np.stack([_logsumexp_rows(a * tail) for a in alphas], axis=1) if len(alphas) else np.zeros((len(lp), 0))
    return order, kept, _logsumexp_rows(tail), sums


def uniforms(seed: int, sample: int, positions: np.ndarray, draws: int) -> np.ndarray:
    """§3.5's `u(s, i, j, n) = (fmix64(FNV-1a-64(s ‖ i ‖ j ‖ n as u64 LE)) >> 11) / 2^53` for every
    position j in `positions` and n < `draws`, as a [P, N] float64 array (vectorised FNV and fmix64)."""
    h0 = fnv1a64(np.array([seed, sample], dtype="<u8").tobytes())
    j = np.repeat(np.asarray(positions, dtype=np.uint64), draws)
    n = np.tile(np.arange(draws, dtype=np.uint64), len(positions))
    h = np.full(len(j), h0, dtype=np.uint64)
    prime = np.uint64(0x100000001B3)
    for word in (j, n):
        for t in range(8):
            h = (h ^ ((word >> np.uint64(8 * t)) & np.uint64(0xFF))) * prime
    for shift, mult in ((33, 0xFF51AFD7ED558CCD), (33, 0xC4CEB9FE1A85EC53), (33, None)):
        h ^= h >> np.uint64(shift)
        if mult is not None:
            h = h * np.uint64(mult)
    return ((h >> np.uint64(11)).astype(np.float64) / float(1 << 53)).reshape(len(positions), draws)


def draw_entries(lp: np.ndarray, draws: int, seed: int, sample: int, alphas):
    """§3.7's draws from full `log p_{T_w}` [P, V]: draw n at position j is the smallest v with
    F(v) > u(s, i, j, n), F the float64 running sum of p in id order (the last id of positive p when
    rounding leaves u ≥ F(V−1)); returns (d [P], ids, counts, log p, log-sums [P, R]) with ids
    ascending within a position and `log-sum_r = log Σ_v p^{a_r}`."""
    P, V = lp.shape
    p = np.exp(lp)
    u = uniforms(seed, sample, np.arange(P), draws)
    last = V - 1 - np.argmax(p[:, ::-1] > 0, axis=1)
    picks = np.empty((P, draws), dtype=np.int64)
    for j in range(P):   # one searchsorted per position (numpy has no batched one); O(N log V) each
        picks[j] = np.minimum(np.searchsorted(np.cumsum(p[j]), u[j], side="right"), last[j])
    keys, counts = np.unique(picks + np.arange(P)[:, None] * V, return_counts=True)
    pos, ids = keys // V, keys % V
    sums = np.stack([_logsumexp_rows(a * lp) for a in alphas], axis=1) if len(alphas) else np.zeros((P, 0))
    return np.bincount(pos, minlength=P), ids, counts, lp[pos, ids], sums


class SequenceWriter(SoftLabelWriter):
    """Writes a sequence teacher (FORMAT.md §3.6–3.8) into a v3 cache, through the registry:

        tok = kdcache.tokenizer_fingerprint(vocab, merges, name="my-tokenizer")
        with kdcache.SequenceWriter("lm.lmdb", "data.lmdb", name="lm", tokenizer=tok, mode="top-k", top_k=32,
                                    retemper_at=[1.0, 2.0, 4.0], write_temperature=1.0) as w:
            w.write_logits(start, [(tokens, logits), …])      # logits [L, V] (or [L − 1, V]) per sample

    Each call is one transaction: records and `completed` together, so `pending()` resumes a run."""

    SCHEMA_VERSION = 3

    def __init__(self, path, dataset, name, tokenizer: dict, mode="top-k", top_k=32, samples=0, sample_seed=0, retemper_at=(),
                 description="", content_hash="", write_temperature=1.0, dtype="f16", map_size=1 << 30):
        if mode not in ("top-k", "sampled"):
            raise ValueError("mode must be top-k or sampled")
        self.mode, self.vocab = mode, int(tokenizer["vocab_size"])
        self.top_k, self.samples = (int(top_k), 0) if mode == "top-k" else (0, int(samples))
        self.sample_seed = int(sample_seed) if mode == "sampled" else 0
        self.retemper_at, self.tokenizer = [float(t) for t in retemper_at], dict(tokenizer)
        self.alphas = [float(write_temperature) / t for t in self.retemper_at]
        super().__init__(path, dataset, name, description, content_hash, write_temperature, dtype, 1, map_size)
        self.layout = SequenceLayout.of(self.entry)

    def _layout(self) -> dict:
        return {"top_k": self.top_k, "sequence": {"mode": self.mode, "samples": self.samples, "sample_seed": self.sample_seed,
                                                 "retemper_at": self.retemper_at, "vocab_size": self.vocab, "tokenizer": self.tokenizer}}

    def _tokens(self, tokens, sample: int) -> np.ndarray:
        t = np.asarray(tokens, dtype=np.int64).reshape(-1)
        if len(t) and (t.min() < 0 or t.max() >= self.vocab):
            raise ValueError(f"sample {sample}: token id {int(t[(t < 0) | (t >= self.vocab)][0])} is not in 0…{self.vocab - 1}")
        return t

    def encode_logits(self, sample: int, tokens, logits) -> bytes:
        """Sample `sample`'s record from raw logits [L, V] (row L − 1 dropped) or [L − 1, V]:
        `log_softmax(z / T_w)`, then top-k and tail sums, or the §3.7 draws."""
        t = self._tokens(tokens, sample)
        z = np.asarray(logits, dtype=np.float64)
        P = max(len(t) - 1, 0)
        if z.ndim != 2 or z.shape[1] != self.vocab or z.shape[0] not in (P, len(t)):
            raise ValueError(f"sample {sample}: logits of shape {z.shape}, expected [{len(t)}, {self.vocab}] or [{P}, {self.vocab}]")
        z = z[:P]
        # −∞ is p = 0 (a masked or padded vocabulary id), as the Swift teacher path takes it; NaN, +∞ and a
        # row with no finite logit have no distribution.
        bad = np.isnan(z) | (z == np.inf) | ~np.isfinite(z).any(axis=1, keepdims=True)
        if bad.any():
            j = int(np.argwhere(bad)[0][0])
            raise ValueError(f"sample {sample} position {j}: a logit is NaN or +∞, or no logit is finite")
        return self._encode_log_probs(sample, t, _log_softmax(z / self.write_temperature))

    def _encode_log_probs(self, sample: int, t: np.ndarray, lp: np.ndarray) -> bytes:
        floor = _FLOOR[self.dtype]
        if self.mode == "top-k":
            ids, kept, tail, sums = top_k_entries(lp, self.top_k, self.alphas)
            if self.top_k < self.vocab:
                kept, tail, sums = (np.maximum(x, floor) for x in (kept, tail, sums))
            return encode_top_k(t, ids, np.maximum(kept, floor), tail, sums, self.dtype, sample)
        d, ids, counts, drawn, sums = draw_entries(lp, self.samples, self.sample_seed, sample, self.alphas)
        return encode_sampled(t, d, ids, counts, drawn, sums, self.samples, self.dtype, sample)

    def encode_top_k(self, sample: int, tokens, ids, log_probs, log_tail=None) -> bytes:
        """Sample `sample`'s record from a teacher's own top-K' (K' ≥ k) ids and `log p_{T_w}` per
        position [P, K']: the k largest kept (ties to the lower id), `log r = log(1 − Σ_kept p)` (or
        `log_tail` when given and K' = k), floored at the dtype's most negative finite value. Tail
        sums need the full distribution: `retemper_at` may only declare T_w."""
        if self.mode != "top-k" or any(abs(a - 1.0) > 1e-12 for a in self.alphas):
            raise ValueError(f"{self.path}: top-k input gives tail sums at T_w only: a top-k teacher with retemper_at ⊆ [{self.write_temperature}]")
        t = self._tokens(tokens, sample)
        P = max(len(t) - 1, 0)
        ids, lp = np.asarray(ids, dtype=np.int64), np.asarray(log_probs, dtype=np.float64)
        if ids.shape != lp.shape or ids.ndim != 2 or ids.shape[0] != P or ids.shape[1] < self.top_k:
            raise ValueError(f"sample {sample}: ids {ids.shape} and log-probs {lp.shape}, expected [{P}, ≥ {self.top_k}] each")
        # All K' entries are checked, as Swift does, before the K' − k beyond the kept fold into the tail.
        answered = np.exp(lp).sum(axis=1)
        if (answered > 1 + 1e-3).any():
            j = int(np.argmax(answered > 1 + 1e-3))
            raise ValueError(f"sample {sample} position {j}: the teacher's probabilities sum to {answered[j]:.6f} > 1 (not log-probabilities at T_w?)")
        twice = (np.diff(np.sort(ids, axis=1), axis=1) == 0).any(axis=1) if P else np.zeros(0, bool)
        if twice.any():
            raise ValueError(f"sample {sample} position {int(np.argmax(twice))}: an id is answered twice")
        if log_tail is not None and ids.shape[1] != self.top_k:
            raise ValueError(f"sample {sample}: log_tail is taken only when the teacher answers exactly k = {self.top_k} ids "
                             f"(it answered {ids.shape[1]}: the extra ones fold into the tail, so leave log_tail out)")
        order = np.lexsort((ids, -lp), axis=1)[:, :self.top_k] if P else np.zeros((0, self.top_k), np.int64)
        ids, lp = np.take_along_axis(ids, order, 1), np.take_along_axis(lp, order, 1)
        mass = np.exp(lp).sum(axis=1)
        if self.top_k == self.vocab and (mass < 1 - 1e-3).any():
            j = int(np.argmax(mass < 1 - 1e-3))
            raise ValueError(f"sample {sample} position {j}: all the vocabulary's ids are kept (k = V) but their probabilities "
                             f"sum to {mass[j]:.6f}, below 1 − 1e-3: with no tail, the ids must hold all the mass "
                             f"(log-probabilities at T_w over the whole vocabulary?)")
        with np.errstate(divide="ignore", invalid="ignore"):
            tail = np.log1p(-np.minimum(mass, 1.0)) if log_tail is None else np.asarray(log_tail, dtype=np.float64).reshape(P)
        floor = _FLOOR[self.dtype] if self.top_k < self.vocab else -np.inf
        tail = np.maximum(tail, floor) if self.top_k < self.vocab else np.full(P, -np.inf)
        sums = np.repeat(tail[:, None], len(self.alphas), axis=1)
        return encode_top_k(t, ids, np.maximum(lp, _FLOOR[self.dtype]), tail, sums, self.dtype, sample)

    def _checked(self, records: list, start: int) -> list:
        for k, r in enumerate(records):
            try:
                decode_sequence(r, start + k, self.layout)
            except FormatError as e:
                raise ValueError(f"{self.path}: sample {start + k}: the teacher's output makes a bad record: {e}") from e
        return records

    def _range(self, start: int, n: int) -> None:
        if start < 0 or start + n > self.sample_count:
            raise ValueError(f"samples {start}..{start + n} outside 0..{self.sample_count}")

    def write_logits(self, start: int, sequences) -> None:
        """Samples start, start+1, … from (tokens [L], logits [L or L − 1, V]) pairs, in one transaction."""
        sequences = list(sequences)
        self._range(start, len(sequences))
        self._put(start, self._checked([self.encode_logits(start + k, t, z) for k, (t, z) in enumerate(sequences)], start))

    def write_top_k(self, start: int, sequences) -> None:
        """Samples start, start+1, … from (tokens, ids [P, K'], log p [P, K']) or (…, log_tail [P]) tuples."""
        sequences = list(sequences)
        self._range(start, len(sequences))
        self._put(start, self._checked([self.encode_top_k(start + k, *s) for k, s in enumerate(sequences)], start))

    def write(self, *args, **kwargs):
        raise TypeError("a SequenceWriter writes with write_logits or write_top_k")
