"""PyTorch adapters, built lazily: importing torch costs a second, so only their users pay it, and
numpy-only users never import torch (`kdcache.DistillationDataset` calls `distillation_dataset()`)."""
from __future__ import annotations

import collections

import numpy as np

from .format import FormatError


class _DistillationDataset:
    """A map-style dataset for PyTorch: item i is (features, label, teacher probabilities at T)
    of the i-th sample of `split`. A `torch.utils.data.Dataset` when torch is importable (it only
    needs __len__ and __getitem__); safe in forked DataLoader workers (read-only environments
    without a lock file stay usable after fork)."""

    def __init__(self, data, cache, split: str = "train", temperature: float = 1.0,
                 teacher: str | None = None, dense: bool = True):
        if cache.manifest["dataset_fingerprint"] != data.manifest["fingerprint"]:
            raise FormatError(f"{cache.path}: written for dataset {cache.manifest['dataset_fingerprint']}, not {data.manifest['fingerprint']}")
        self.data, self.cache, self.temperature, self.teacher, self.dense = data, cache, temperature, teacher, dense
        self.indices = [i for i, r in data if r["split"] == split]
        self.dimension = data.manifest["featurizer"]["dimension"]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int):
        i = self.indices[k]
        r = self.data.record(i)
        if r["kind"] == "sparse" and self.dense:
            x = np.zeros(self.dimension, dtype=np.float32)
            x[r["indices"]] = r["values"]
        else:
            x = r["values"] if r["kind"] == "dense" else (r["indices"], r["values"])
        p = self.cache.probs(i, temperature=self.temperature, teacher=self.teacher).astype(np.float32)
        return x, r["label"], p


_ADAPTER = None
_PICKLED_AS = {"__module__": "kdcache"}  # pickle finds the class as kdcache.DistillationDataset (spawned workers)


def distillation_dataset() -> type:
    """The `DistillationDataset` class, built on first use: `_DistillationDataset` plus
    `torch.utils.data.Dataset` as a base when torch is importable, alone otherwise."""
    global _ADAPTER
    if _ADAPTER is None:
        try:
            import torch.utils.data as torch_data
            _ADAPTER = type("DistillationDataset", (_DistillationDataset, torch_data.Dataset), _PICKLED_AS)
        except ImportError:
            _ADAPTER = type("DistillationDataset", (_DistillationDataset,), _PICKLED_AS)
    return _ADAPTER


# ---- sequence caches (FORMAT.md §3.6–3.8) -------------------------------------------------------

def tokenizer_difference(cache_tokenizer: dict, given) -> str | None:
    """The first field, in FORMAT.md §3.6's order (`vocab_size`, `vocab_sha256`, `merges_sha256`,
    `model_sha256`), in which `given` (a tokenizer object, or a fingerprint string) differs from the
    cache's, as `field: cache … vs given …`; None when they agree."""
    from .manifest import TOKENIZER_FIELDS
    if isinstance(given, str):
        ours = cache_tokenizer["fingerprint"]
        return None if given == ours else f"fingerprint: cache {ours} vs given {given}"
    for field in TOKENIZER_FIELDS:
        if cache_tokenizer.get(field) != given.get(field):
            return f"{field}: cache {cache_tokenizer.get(field)!r} vs given {given.get(field)!r}"
    return None


class _Tempering:
    """How a teacher's stored values become values at the requested T (FORMAT.md §3.8)."""

    def __init__(self, entry: dict, temperature, allow_approximate: bool, where: str):
        from .tokens import declared_index
        s = entry["sequence"]
        self.t_w = entry["write_temperature"]
        self.t = float(temperature) if temperature is not None else self.t_w
        self.a, self.vocab, self.sampled, self.dense = self.t_w / self.t, s["vocab_size"], s["mode"] == "sampled", s["mode"] == "dense"
        self.index = declared_index(self.t, self.t_w, s["retemper_at"])
        self.exact = self.index is not None or self.dense      # a dense row re-tempers exactly at any T (§3.8)
        if not self.exact and not allow_approximate:
            raise ValueError(f"{where}: T = {self.t} is neither T_w = {self.t_w} nor declared (retemper_at {s['retemper_at']}): "
                             f"only an interval is known (FORMAT.md §3.8). Declare it when writing, or pass allow_approximate=True "
                             f"({'self-normalized weights' if self.sampled else 'the midpoint of the tail interval'})")
        if not self.exact:
            import warnings
            warnings.warn(f"{where}: T = {self.t} is not declared: values are approximate "
                          f"({'self-normalized weights, biased' if self.sampled else 'tail sum at the midpoint of its §3.8 interval'})")

    def top_k(self, log_p: np.ndarray, log_tail: np.ndarray, sums: np.ndarray):
        """(log p_T of kept ids [P, k], log tail mass at T [P]) from a record's or a batch's arrays
        (at T_w the arrays themselves)."""
        from .tokens import retemper_exact, tail_sum_interval
        if self.index == -1:
            return log_p, log_tail
        lp = log_p.astype(np.float64)
        if self.index is not None:
            return retemper_exact(lp, sums[:, self.index].astype(np.float64), self.a)
        lo, hi = tail_sum_interval(lp, log_tail.astype(np.float64), self.vocab, self.a)
        with np.errstate(divide="ignore"):
            return retemper_exact(lp, np.log((lo + hi) / 2), self.a)

    def dense_rows(self, log_p: np.ndarray) -> np.ndarray:
        """log p_T [P, V] of dense rows, exact at any T: `a·log p − log Σ p^a` (the stored rows at T_w)."""
        from .tokens import retemper_dense
        return log_p if self.index == -1 else retemper_dense(log_p, self.a)

    def weights(self, rec, pos: np.ndarray, entries: np.ndarray, N: int) -> np.ndarray:
        """w_r of the drawn entries of a record or a batch (`entries` index its flat arrays, `pos`
        their positions, non-decreasing, each position's entries all present)."""
        from .tokens import sampled_weights
        lp = rec.log_p[entries].astype(np.float64)
        if self.index == -1:
            return np.ones(len(entries))
        if self.index is not None:
            return sampled_weights(lp, rec.sums[pos, self.index].astype(np.float64), self.a)
        if not len(entries):
            return np.zeros(0)
        z = (self.a - 1.0) * lp                                            # self-normalized: Σ c·w = N per position
        first = np.flatnonzero(np.diff(pos, prepend=-1))
        raw = np.exp(z - np.repeat(np.maximum.reduceat(z, first), np.diff(first, append=len(z))))
        total = np.bincount(pos, weights=raw * rec.counts[entries], minlength=int(pos.max(initial=-1)) + 1)
        return raw * N / total[pos]


class TokenDistillationDataset:
    """Padded training batches from a sequence teacher (FORMAT.md §3.6–3.8). Item i is sample i's
    arrays (numpy); `collate(items)` pads them into a batch; `read_batch(items)` gives the same batch
    with the records read in one transaction and decoded together; iterating yields `read_batch` of
    each `batch_size` slice of `indices` (`prefetch` threads decoding ahead). Batch keys: `input_ids` [B, L] (int64),
    `attention_mask` [B, L], `position_mask` [B, L − 1] (bool), then top-k: `target_ids` [B, L − 1, k],
    `target_logprobs` (log p_T, −inf padding), `log_tail` [B, L − 1]; sampled: `target_ids`,
    `target_counts`, `target_weights` [B, L − 1, N] (count 0 padding); dense: `target_logprobs`
    [B, L − 1, V] (log p_T in id order, −inf padding). Values are exact at T_w and at declared
    temperatures (dense: at any T); elsewhere refused unless `allow_approximate` (`self.exact` says which)."""

    def __init__(self, cache, teacher=None, temperature=None, max_length: int = 2048, tokenizer_fingerprint=None,
                 allow_approximate: bool = False, batch_size: int = 8, indices=None, as_torch: bool = True, prefetch: int = 0):
        self.cache = cache
        self.teacher, entry = cache.sequence_teacher(teacher)
        where = f"{cache.path}: teacher {self.teacher}"
        if tokenizer_fingerprint is not None:
            diff = tokenizer_difference(entry["sequence"]["tokenizer"], tokenizer_fingerprint)
            if diff is not None:
                raise ValueError(f"{where}: written with another tokenizer ({diff}); a student must use the teacher's token ids")
        self.tempering = _Tempering(entry, temperature, allow_approximate, where)
        self.exact, self.sampled, self.dense = self.tempering.exact, self.tempering.sampled, self.tempering.dense
        self.width = entry["sequence"]["samples"] if self.sampled else entry["sequence"]["vocab_size"] if self.dense else entry["top_k"]
        self.max_length, self.batch_size, self.as_torch, self.prefetch = int(max_length), int(batch_size), as_torch, int(prefetch)
        self.indices = list(range(len(cache))) if indices is None else list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def _item(self, rec) -> dict:
        L = min(len(rec.tokens), self.max_length)
        P = max(L - 1, 0)
        out = {"input_ids": rec.tokens[:L].astype(np.int64)}
        if self.dense:
            out["target_logprobs"] = self.tempering.dense_rows(rec.log_p[:P].astype(np.float64))
            return out
        if not self.sampled:
            out["target_ids"] = rec.ids[:P].astype(np.int64)
            out["target_logprobs"], out["log_tail"] = self.tempering.top_k(rec.log_p[:P].astype(np.float64),
                                                                           rec.log_tail[:P].astype(np.float64), rec.sums[:P])
            return out
        d = rec.distinct.astype(np.int64)
        starts = np.cumsum(d) - d
        pos = np.repeat(np.arange(len(d)), d)
        keep = np.flatnonzero(pos < P)
        slot = keep - starts[pos[keep]]
        for key, values in (("target_ids", rec.ids[keep]), ("target_counts", rec.counts[keep]),
                            ("target_weights", self.tempering.weights(rec, pos[keep], keep, self.width))):
            out[key] = np.zeros((P, self.width), dtype=np.float64 if key == "target_weights" else np.int64)
            out[key][pos[keep], slot] = values
        return out

    def __getitem__(self, k: int) -> dict:
        with self.cache.sequence_reader(self.teacher) as get:
            return self._item(get(self.indices[k]))

    def collate(self, items: list) -> dict:
        """Pads items into one batch (numpy, or torch tensors when `as_torch`); one slice
        assignment per sample and key."""
        B, L = len(items), max((len(x["input_ids"]) for x in items), default=0)
        P = max(L - 1, 0)
        batch = {"input_ids": np.zeros((B, L), np.int64), "attention_mask": np.zeros((B, L), np.int64), "position_mask": np.zeros((B, P), bool)}
        for key, fill, dtype in self._target_keys():
            batch[key] = np.full((B, P) + (() if key == "log_tail" else (self.width,)), fill, dtype=dtype)
        for b, x in enumerate(items):
            n = len(x["input_ids"])
            batch["input_ids"][b, :n], batch["attention_mask"][b, :n], batch["position_mask"][b, :max(n - 1, 0)] = x["input_ids"], 1, True
            for key, _, _ in self._target_keys():
                batch[key][b, :len(x[key])] = x[key]
        return self._tensors(batch)

    def _tensors(self, batch: dict) -> dict:
        if self.as_torch:
            import torch
            return {k: torch.from_numpy(v) for k, v in batch.items()}
        return batch

    def _target_keys(self):
        if self.dense:
            return (("target_logprobs", -np.inf, np.float32),)
        if self.sampled:
            return (("target_ids", 0, np.int64), ("target_counts", 0, np.int64), ("target_weights", 0.0, np.float32))
        return (("target_ids", 0, np.int64), ("target_logprobs", -np.inf, np.float32), ("log_tail", -np.inf, np.float32))

    def read_batch(self, items) -> dict:
        """The padded batch of items `items` (positions in `indices`, as `self[k]` takes), equal to
        `collate([self[k] for k in items])` and refused alike, but read in one transaction and decoded
        together (`SoftLabelStore.sequence_batch`: every §1.2 check vectorised over the batch), then
        written into preallocated padded arrays by one scatter per key."""
        b = self.cache.sequence_batch([self.indices[k] for k in items], self.teacher)
        L = np.minimum(b.lengths, self.max_length)
        tok, pos = _Scatter(L, b.lengths), _Scatter(np.maximum(L - 1, 0), b.positions)
        batch = {"input_ids": tok.pad(b.tokens, 0, np.int64), "attention_mask": tok.mask.astype(np.int64), "position_mask": pos.mask}
        if self.dense:
            batch["target_logprobs"] = pos.pad(self.tempering.dense_rows(b.log_p), -np.inf, np.float32)
        else:
            batch.update(self._sampled_targets(b, pos) if self.sampled else self._top_k_targets(b, pos))
        return self._tensors(batch)

    def _top_k_targets(self, b, pos: "_Scatter") -> dict:
        lp, tail = self.tempering.top_k(b.log_p, b.log_tail, b.sums)
        return {"target_ids": pos.pad(b.ids, 0, np.int64), "target_logprobs": pos.pad(lp, -np.inf, np.float32),
                "log_tail": pos.pad(tail, -np.inf, np.float32)}

    def _sampled_targets(self, b, pos: "_Scatter") -> dict:
        """Entry e of position j (global) goes to row `row[j]` (−1: cut by max_length), slot e − start_j."""
        N, d = self.width, b.distinct.astype(np.int64)
        at = np.repeat(np.arange(len(d)), d)
        row = np.full(len(d), -1, dtype=np.int64)
        row[pos.src if pos.src is not None else slice(None)] = pos.dest
        keep = np.flatnonzero(row[at] >= 0)
        dest = row[at[keep]] * N + keep - (np.cumsum(d) - d)[at[keep]]
        out = {}
        for (key, _, dtype), values in zip(self._target_keys(), (b.ids[keep], b.counts[keep], self.tempering.weights(b, at[keep], keep, N))):
            flat = np.zeros(pos.mask.size * N, dtype=dtype)
            flat[dest] = values
            out[key] = flat.reshape(pos.mask.shape + (N,))
        return out

    def __iter__(self):
        """`read_batch` of each `batch_size` slice of `indices`, in order. With `prefetch` = n > 0, n
        threads decode the next n batches meanwhile (numpy and zlib release the GIL); a refusal is
        raised when its batch's turn comes, as without."""
        slices = [range(s, min(s + self.batch_size, len(self.indices))) for s in range(0, len(self.indices), self.batch_size)]
        if not self.prefetch:
            yield from map(self.read_batch, slices)
            return
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(self.prefetch) as pool:
            pending = collections.deque()
            for items in slices:
                pending.append(pool.submit(self.read_batch, items))
                if len(pending) > self.prefetch:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()


class _Scatter:
    """Where B records' rows go in a padded [B, max n_b] array: n_b kept rows of each record whose
    n_full_b rows are concatenated in `values`; `mask` marks the rows written. `dest` / `src`: the
    flat row indices (for entries that do not fill whole rows)."""

    def __init__(self, n: np.ndarray, n_full: np.ndarray):
        n, n_full = np.asarray(n, dtype=np.int64), np.asarray(n_full, dtype=np.int64)
        width, first = int(n.max(initial=0)), np.cumsum(n_full) - n_full
        j = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        self.dest = np.repeat(np.arange(len(n)) * width, n) + j
        self.src = None if np.array_equal(n, n_full) else np.repeat(first, n) + j
        self.mask = np.arange(width)[None, :] < n[:, None]
        self.rows = list(zip(first.tolist(), n.tolist()))

    def pad(self, values: np.ndarray, fill, dtype) -> np.ndarray:
        """`values`' kept rows in [B, width, …] (`dtype`), `fill` elsewhere: two slice copies per
        record (measured 2.5× faster than one fancy-index scatter, which copies row by row anyway)."""
        out = np.empty(self.mask.shape + values.shape[1:], dtype=dtype)
        for b, (start, n) in enumerate(self.rows):
            out[b, :n] = values[start:start + n]
            out[b, n:] = fill
        return out


def tail_bucket_kl(student_logits, target_ids, target_logprobs, log_tail, mask, temperature: float = 1.0):
    """Forward KL with the tail as one bucket, averaged over positions where `mask`:
    `Σ_S p (log p − log q) + r (log r − log q_tail)`, q = softmax(student_logits / T) over the full
    vocabulary, `q_tail = Σ_{v∉S} q_v = 1 − Σ_S q` (a log-sum-exp over the non-kept ids). Kept ids get
    the exact gradient `q_v − p_v`; the student's tail mass is pushed toward the teacher's r."""
    import torch
    logq = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    ids = target_ids.long()
    kept = logq.gather(-1, ids)
    rest = logq.scatter(-1, ids, torch.finfo(logq.dtype).min)          # constant at the kept ids: no gradient there
    log_q_tail = torch.logsumexp(rest, dim=-1)
    valid = mask.bool()
    lp = torch.where(valid[..., None], target_logprobs.float(), torch.zeros_like(kept))
    p = torch.where(valid[..., None] & torch.isfinite(lp), lp.exp(), torch.zeros_like(kept))
    lt = torch.where(valid, log_tail.float(), torch.full_like(log_q_tail, -float("inf")))
    r = lt.exp()
    kept_term = (p * (torch.where(p > 0, lp, torch.zeros_like(lp)) - kept)).sum(-1)
    tail_term = torch.where(r > 0, r * torch.where(r > 0, lt, torch.zeros_like(lt)), torch.zeros_like(r)) - r * log_q_tail
    per_position = torch.where(valid, kept_term + tail_term, torch.zeros_like(r))
    return per_position.sum() / valid.sum().clamp(min=1)


def dense_kl(student_logits, target_logprobs, mask, temperature: float = 1.0):
    """Full forward KL to a dense teacher, averaged over positions where `mask`:
    `Σ_v p_T(v) (log p_T(v) − log q_T(v))`, q_T = softmax(student_logits / T), with 0·log 0 = 0
    (p = 0 for −inf padding and for the dtype floor a writer stores for an underflow). Gradient in
    the logits: `(Σ_u p_T(u)·q_T − p_T) / T` at every id, `(q_T − p_T) / T` for a normalized row."""
    import torch
    logq = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    valid = mask.bool()
    lp = torch.where(valid[..., None], target_logprobs.float(), torch.full_like(logq, -float("inf")))
    p = lp.exp()
    per_position = (p * (torch.where(p > 0, lp, torch.zeros_like(lp)) - logq)).sum(-1)
    return torch.where(valid, per_position, torch.zeros_like(per_position)).sum() / valid.sum().clamp(min=1)


def sampled_kd_loss(student_logits, target_ids, counts, weights, mask, samples: int, temperature: float = 1.0):
    """§3.8's sampled-KD loss, averaged over positions where `mask`: `−(1/N) Σ_i c_i w_r(x_i) log q(x_i)`,
    an unbiased estimate of the cross-entropy `−Σ_v p_{T_r}(v) log q(v)` (weights 1 at T_w)."""
    import torch
    logq = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    drawn = logq.gather(-1, target_ids.long())
    valid = mask.bool()
    per_position = -(counts.float() * weights.float() * drawn).sum(-1) / samples
    return torch.where(valid, per_position, torch.zeros_like(per_position)).sum() / valid.sum().clamp(min=1)
