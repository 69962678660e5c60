#!/usr/bin/env python3
"""Bytes per token against fidelity for token-level caches, from a teacher's dense logits (issue 12).

Input: what tools/teachers/seq_harness.py saved from a `--outputs logits` teacher (`X.npz` with the
token ids and offsets, `X.npz.logits.npy` with the [Σ P, V] float32 rows, row j of a sample = the
prediction of token j+1). For each layout it rebuilds, in numpy, what a cache would store (FORMAT.md
§3.7, f16 with R = 3 declared temperatures 1, 2, 4; peers as they publish) and the distribution a
student gets from it, then measures KL(stored ‖ dense teacher) over the whole vocabulary at T = 1
and T = 2 (T_w = 1):

- kdcache top-k: kept entries + the tail mass spread evenly over the V − k tail ids; at T = 2
  re-tempered exactly with the stored f16 tail sum (§3.8).
- renormalized top-k (Megatron, DistillKit): kept entries divided by their sum, 0 elsewhere; at
  T = 2 re-tempered among the kept ids. DistillKit's values are its polynomial reconstruction
  (first `exact_k` in bf16, the rest from a least-squares fit of log p against rank, f32 terms).
- sampled: counts / N of N inverse-CDF draws (§3.7, seed 0); at T = 2 the counts times the exact
  weights w = exp((a − 1) log p − log-sum) of §3.8, self-normalized (a KL needs a distribution).

Every q is normalized to sum 1 before its KL, so f16 rounding cannot make a KL negative.
Also prints the tail-mass table of issue 12: the true tail mass at T = 2 of a top-k cache written
at T = 1, against renormalizing (0), spreading evenly, §3.8's interval and the stored tail sum.

    .build-venv/bin/python tools/bench/token_cache_table.py /tmp/lm.npz [--json out.json]
"""
import argparse
import json
import math

import numpy as np

TOPK = (8, 32, 128)
SAMPLED = (12, 32, 64)
TAIL_K = (32, 128)
RETEMPER = (1.0, 2.0, 4.0)
T_EVAL = (1.0, 2.0)
DISTILLKIT = {  # README of arcee-ai/DistillKit, "Logit Compression": (k, exact_k, polynomial terms, published B/token)
    "distillkit-recommended": (128, 16, (0, 1, 2, 3, 4, "sqrt"), "~300"),
    "distillkit-budget": (50, 1, (0, 1, "sqrt"), "~114"),
}
MEGATRON_K = 128


def f16(x):
    """Rounds to IEEE binary16 and back (what an f16 record stores)."""
    return np.asarray(x, dtype=np.float64).astype(np.float16).astype(np.float64)


def bf16(x):
    """Rounds float32 to bfloat16 (round to nearest even) and back."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32).astype(np.float64)


def log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def logsumexp(x, axis=1):
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)


# ---- FORMAT.md §3.5 / §3.7: the uniforms of the draws --------------------------------------------

def uniform(seed: int, sample, position, draw):
    """u(s, i, j, n) = (fmix64(FNV-1a-64(s, i, j, n as u64 LE)) >> 11) / 2^53, vectorized."""
    with np.errstate(over="ignore"):
        h = np.full(np.broadcast(sample, position, draw).shape, 0xCBF29CE484222325, dtype=np.uint64)
        for word in (np.uint64(seed), sample, position, draw):
            word = np.asarray(word, dtype=np.uint64)
            for byte in range(8):
                h = (h ^ ((word >> np.uint64(8 * byte)) & np.uint64(0xFF))) * np.uint64(0x100000001B3)
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xC4CEB9FE1A85EC53)
        h ^= h >> np.uint64(33)
    return (h >> np.uint64(11)).astype(np.float64) / 2.0 ** 53


# ---- the distribution each layout gives a student -------------------------------------------------

def kl_sparse(q_ids, q, logp_t, tail_mass=None, tail_mask=None):
    """KL(q ‖ p_T) per row, q given on ids (rows of q sum with tail_mass to 1), the tail mass spread
    evenly over the ids outside the kept set (tail_mask True there)."""
    lp_kept = np.take_along_axis(logp_t, q_ids, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.where(q > 0, q * (np.log(q) - lp_kept), 0.0).sum(axis=1)
    if tail_mass is not None:
        m = tail_mask.sum(axis=1)
        sum_lp_tail = np.where(tail_mask, logp_t, 0.0).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            kl += np.where(tail_mass > 0, tail_mass * np.log(tail_mass / m) - tail_mass / m * sum_lp_tail, 0.0)
    return kl


def kl_bucket(q_ids, q, tail_mass, logp_t, tail_mask):
    """KL over the k + 1 parts a tail-as-one-bucket loss sees: the kept ids and the tail lump."""
    lp_kept = np.take_along_axis(logp_t, q_ids, axis=1)
    lp_tail = logsumexp(np.where(tail_mask, logp_t, -np.inf))
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.where(q > 0, q * (np.log(q) - lp_kept), 0.0).sum(axis=1)
        return kl + np.where(tail_mass > 0, tail_mass * (np.log(tail_mass) - lp_tail), 0.0)


def kdcache_topk(ids, logp1, mask, a):
    """kdcache top-k f16 at a = T_w / T ∈ {1, 1/2}: kept entries and tail mass, via the stored tail sums."""
    lk = f16(np.take_along_axis(logp1, ids, axis=1))
    log_tail = f16(logsumexp(np.where(mask, a * logp1, -np.inf)))  # stored: log Σ_tail p^a (a = 1: log r)
    log_z = logsumexp(np.concatenate([a * lk, log_tail[:, None]], axis=1))
    q = np.exp(a * lk - log_z[:, None])
    tail = np.exp(log_tail - log_z)
    total = q.sum(axis=1) + tail
    return q / total[:, None], tail / total


def renormalized(lk, a):
    """Kept entries divided by their sum, re-tempered among themselves: q ∝ exp(a · log p)."""
    x = a * lk
    return np.exp(x - logsumexp(x)[:, None])


def distillkit_logp(lk32, exact_k, terms):
    """DistillKit's reconstruction of the sorted top-k log p: first exact_k as bf16, the rest from the
    least-squares polynomial in the rank t = 0 … k − exact_k − 1 with float32 coefficients."""
    rest = lk32[:, exact_k:]
    t = np.arange(rest.shape[1], dtype=np.float64)
    x = np.stack([np.sqrt(t) if term == "sqrt" else t ** term for term in terms], axis=1)
    coeffs, *_ = np.linalg.lstsq(x, rest.T, rcond=None)
    approx = x @ coeffs.astype(np.float32).astype(np.float64)
    return np.concatenate([bf16(lk32[:, :exact_k]), approx.T], axis=1)


def sampled_q(logp1, n_draws, seed, sample_ids, positions, a):
    """Per row: the distinct drawn ids, and q = counts/N (a = 1) or counts·w normalized (a ≠ 1)."""
    cdf = np.cumsum(np.exp(logp1), axis=1)
    u = uniform(seed, sample_ids[:, None], positions[:, None], np.arange(n_draws, dtype=np.uint64)[None, :])
    draws = np.minimum(np.stack([np.searchsorted(cdf[r], u[r], side="right") for r in range(len(u))]), logp1.shape[1] - 1)
    draws.sort(axis=1)
    distinct = np.concatenate([np.ones((len(draws), 1), bool), draws[:, 1:] != draws[:, :-1]], axis=1)
    weight = np.ones(draws.shape)
    if a != 1.0:
        lp = f16(np.take_along_axis(logp1, draws, axis=1))
        log_norm = f16(logsumexp(a * logp1))
        weight = np.exp((a - 1.0) * lp - log_norm[:, None])
    q = weight / weight.sum(axis=1, keepdims=True)  # each draw's share; equal ids add up in the KL
    return draws, q, distinct.sum(axis=1)


def kl_draws(draws, q, logp_t):
    """KL(q ‖ p_T) for q given as per-draw shares (repeated ids summed first)."""
    kl = np.zeros(len(draws))
    for r in range(len(draws)):
        ids, inverse = np.unique(draws[r], return_inverse=True)
        mass = np.bincount(inverse, weights=q[r])
        kl[r] = float((mass * (np.log(mass) - logp_t[r, ids])).sum())
    return kl


# ---- the chunk loop ------------------------------------------------------------------------------

class Totals:
    """Running sums of per-position values by name."""

    def __init__(self):
        self.sums, self.count = {}, 0

    def add(self, name, values):
        self.sums[name] = self.sums.get(name, 0.0) + float(np.sum(values))

    def mean(self, name):
        return self.sums[name] / self.count


def top_ids(logp1, k):
    """The k most probable ids per row by descending log p (ties by id), and the tail mask."""
    part = np.argpartition(-logp1, k - 1, axis=1)[:, :k]
    kept = np.take_along_axis(logp1, part, axis=1)
    ids = np.take_along_axis(part, np.lexsort((part, -kept), axis=1), axis=1)
    mask = np.ones(logp1.shape, bool)
    np.put_along_axis(mask, ids, False, axis=1)
    return ids, mask


def tail_mass_figures(totals, logp1, logp2, ids, mask, k):
    """Issue 12's figures at T = 2 for a top-k written at T_w = 1 (exact p, and the f16 stored sum)."""
    a = 0.5
    p1 = np.exp(logp1)
    kept = np.take_along_axis(p1, ids, axis=1)
    r = np.where(mask, p1, 0.0).sum(axis=1)
    m = mask.sum(axis=1)
    s_kept = (kept ** a).sum(axis=1)
    even = m * (r / m) ** a
    p_star = np.minimum(kept.min(axis=1), r)
    n = np.floor(r / p_star)
    packed = n * p_star ** a + (r - n * p_star) ** a
    stored = np.exp(f16(logsumexp(np.where(mask, a * logp1, -np.inf))))
    totals.add(f"tail{k}.true", np.where(mask, np.exp(logp2), 0.0).sum(axis=1))
    totals.add(f"tail{k}.even", even / (s_kept + even))
    totals.add(f"tail{k}.packed", packed / (s_kept + packed))
    totals.add(f"tail{k}.stored", stored / (s_kept + stored))
    totals.add(f"tail{k}.r", r)


def chunk_figures(totals, z, sample_ids, positions, args):
    logp = {t: log_softmax(z / t) for t in T_EVAL}
    for k in sorted(set(TOPK) | set(TAIL_K) | {MEGATRON_K} | {v[0] for v in DISTILLKIT.values()}):
        ids, mask = top_ids(logp[1.0], k)
        lk32 = np.take_along_axis(logp[1.0], ids, axis=1).astype(np.float32).astype(np.float64)
        for t in T_EVAL:
            if k in TOPK:
                q, tail = kdcache_topk(ids, logp[1.0], mask, 1.0 / t)
                totals.add(f"kdcache-top{k}.T{t:g}", kl_sparse(ids, q, logp[t], tail, mask))
                totals.add(f"kdcache-top{k}.bucket.T{t:g}", kl_bucket(ids, q, tail, logp[t], mask))
            if k == MEGATRON_K:
                q = renormalized(f16(lk32), 1.0 / t)
                totals.add(f"megatron-top{k}.T{t:g}", kl_sparse(ids, q, logp[t]))
                totals.add(f"megatron-top{k}.bucket.T{t:g}", kl_bucket(ids, q, np.zeros(len(q)), logp[t], mask))
            for name, (dk, exact_k, terms, _) in DISTILLKIT.items():
                if dk == k:
                    q = renormalized(distillkit_logp(lk32, exact_k, terms), 1.0 / t)
                    totals.add(f"{name}.T{t:g}", kl_sparse(ids, q, logp[t]))
                    totals.add(f"{name}.bucket.T{t:g}", kl_bucket(ids, q, np.zeros(len(q)), logp[t], mask))
        if k in TAIL_K:
            tail_mass_figures(totals, logp[1.0], logp[2.0], ids, mask, k)
    for n in SAMPLED:
        for t in T_EVAL:
            draws, q, distinct = sampled_q(logp[1.0], n, args.seed, sample_ids, positions, 1.0 / t)
            totals.add(f"sampled{n}.T{t:g}", kl_draws(draws, q, logp[t]))
        totals.add(f"sampled{n}.distinct", distinct)


def run(path, args):
    data = np.load(path)
    offsets = data["offsets"]
    lengths = np.diff(offsets)
    logits = np.load(path + ".logits.npy", mmap_mode="r")[: int(data["positions"])]
    sample_ids = np.repeat(np.arange(len(lengths), dtype=np.uint64), np.maximum(lengths - 1, 0))
    positions = np.concatenate([np.arange(max(l - 1, 0), dtype=np.uint64) for l in lengths])
    totals = Totals()
    for start in range(0, len(logits), args.chunk):
        stop = min(start + args.chunk, len(logits))
        chunk_figures(totals, np.asarray(logits[start:stop], dtype=np.float64), sample_ids[start:stop], positions[start:stop], args)
        totals.count = stop
    return totals, lengths, logits.shape[1]


# ---- bytes per token -----------------------------------------------------------------------------

def record_bytes_topk(lengths, k, w=2, r=len(RETEMPER)):
    """§3.7: 20 + 3L + D(3 + w) + P·w + P·R·w with D = P·k, summed over records."""
    p = np.maximum(lengths - 1, 0)
    return int(np.sum(20 + 3 * lengths + p * k * (3 + w) + p * w + p * r * w))


def record_bytes_sampled(lengths, mean_distinct, w=2, r=len(RETEMPER)):
    """§3.7: 20 + 3L + P + D(4 + w) + P·R·w with D = P·d̄, summed over records."""
    p = np.maximum(lengths - 1, 0)
    return float(np.sum(20 + 3 * lengths + p + p * mean_distinct * (4 + w) + p * r * w))


def distillkit_bytes(k, exact_k, terms, vocab):
    """DistillKit's total_bits(): exact_k bf16 + terms f32, padded to bytes, + k ids of ⌈log2 V⌉ bits."""
    return exact_k * 2 + 4 * len(terms) + (k * math.ceil(math.log2(vocab)) + 7) // 8


def kls(totals, name):
    """(KL T=1, KL T=2, bucket KL T=1, bucket KL T=2); the bucket ones are None for sampled layouts."""
    bucket = [totals.sums.get(f"{name}.bucket.T{t:g}") for t in T_EVAL]
    return tuple(totals.mean(f"{name}.T{t:g}") for t in T_EVAL) + tuple(
        None if b is None else b / totals.count for b in bucket)


def table(totals, lengths, vocab):
    positions = int(np.maximum(lengths - 1, 0).sum())
    rows = []
    for k in TOPK:
        rows.append((f"kdcache top-{k} f16 R=3", record_bytes_topk(lengths, k) / positions, f"5k+11 = {5 * k + 11}")
                    + kls(totals, f"kdcache-top{k}"))
    for n in SAMPLED:
        d = totals.mean(f"sampled{n}.distinct")
        rows.append((f"kdcache sampled N={n} f16 R=3 (d̄={d:.2f})", record_bytes_sampled(lengths, d) / positions,
                     f"6d̄+10 = {6 * d + 10:.1f}") + kls(totals, f"sampled{n}"))
    megatron = MEGATRON_K * 2 + MEGATRON_K * 17 / 8  # fp16 values + ids packed in 17 bits
    rows.append((f"Megatron top-{MEGATRON_K} fp16 + 17-bit ids, renormalized", megatron, "528 (computed)")
                + kls(totals, f"megatron-top{MEGATRON_K}"))
    for name, (k, exact_k, terms, published) in DISTILLKIT.items():
        rows.append((f"{name} k={k} exact_k={exact_k} renormalized", distillkit_bytes(k, exact_k, terms, vocab),
                     f"{published} (published)") + kls(totals, name))
    return rows


def print_report(totals, lengths, vocab):
    positions = int(np.maximum(lengths - 1, 0).sum())
    print(f"{len(lengths)} texts, {int(lengths.sum())} tokens, {positions} positions, V = {vocab}\n")
    print("| layout | B/position here | formula | KL(stored‖teacher) T=1 | T=2 | k+1-bucket KL T=1 | T=2 |\n"
          "|---|---|---|---|---|---|---|")
    rows = table(totals, lengths, vocab)
    cell = lambda x: "—" if x is None else f"{x:.4f}" if x >= 1e-3 else f"{x:.1e}"  # noqa: E731
    for name, here, formula, *values in rows:
        print(f"| {name} | {here:.1f} | {formula} | " + " | ".join(map(cell, values)) + " |")
    print("\n| top-k at T_w=1, tail mass at T=2 | true | renormalized | spread evenly | §3.8 interval | stored f16 sum | r at T_w |\n|---|---|---|---|---|---|---|")
    for k in TAIL_K:
        g = lambda s: totals.mean(f"tail{k}.{s}")  # noqa: E731
        lo, hi = sorted((g("even"), g("packed")))  # a = 1/2 < 1: [C, E] (§3.8), means of the ends
        print(f"| top-{k} | {g('true'):.3f} | 0 | {g('even'):.3f} | [{lo:.3f}, {hi:.3f}] | {g('stored'):.3f} | {g('r'):.3f} |")
    return rows


def main():
    p = argparse.ArgumentParser()
    p.add_argument("npz", help="seq_harness.py --out of a logits teacher")
    p.add_argument("--chunk", type=int, default=64, help="positions per numpy chunk (memory: chunk × V × 8 B × a few)")
    p.add_argument("--seed", type=int, default=0, help="sample_seed of the draws")
    p.add_argument("--json", help="also write every figure here")
    args = p.parse_args()
    totals, lengths, vocab = run(args.npz, args)
    rows = print_report(totals, lengths, vocab)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"positions": totals.count, "means": {k: v / totals.count for k, v in totals.sums.items()},
                       "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
