#!/usr/bin/env python3
"""Bytes per position against fidelity of real token-level caches (issue 12).

Reads the caches `kdcache teach --sequence` wrote (tools/bench/bench_lm.py: topk8/32/128.lmdb,
sampled12/32/64.lmdb in `--caches`, f16, T_w = 1, --retemper-at 1,2,4) with the Python reader
(kdcache.SoftLabelStore.sequence), and runs the same teacher again on the same texts (read from the
dataset store) for the dense reference `p_T = softmax(z / T)` (the teacher is deterministic; every
record's token ids are checked against the teacher's). Per layout, the training target a student
gets from the record, at T = 1 and T = 2:

- kdcache top-k: the stored kept `log p`, and the tail mass spread evenly over the V − k tail ids;
  at T = 2 re-tempered exactly with the stored f16 tail sum (§3.8, `retemper_exact`);
- kdcache sampled: `c·w/N` on the drawn ids, w = 1 at T_w and §3.8's exact weights at T = 2 (the
  target of TokenDistillationDataset's sampled loss, unbiased, so its sum is not exactly 1);
- peers for comparison: Megatron top-128 (the top-128 cache's kept fp16 values renormalized, 0
  elsewhere) and DistillKit's polynomial reconstruction, re-derived from the dense teacher.

Metrics, mean over positions: KL(target ‖ p_T), forward KL(p_T ‖ target) (∞ when the target puts 0
on an id the teacher does not: every renormalized and sampled target; the share of such positions
is printed), and total variation ½ Σ_v |target(v) − p_T(v)| (for a forward-KL student the gradient is
q − target, so this is the target's gradient error in L1). The KLs use the target divided by its sum
(a KL needs a distribution); the TV uses the target as trained on. Also the tail mass at T = 2 of the
real top-32 / top-128 caches: true, renormalized (0), spread evenly, §3.8's interval and the stored sum.

    .build-venv/bin/python tools/bench/token_cache_table.py --data D.lmdb --caches DIR \\
        --exec '.build-venv-lm/bin/python tools/teachers/smollm2_teacher.py' [--json out.json]
"""
import argparse
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools/python"))
sys.path.insert(0, str(ROOT / "tools/teachers"))
import kdcache  # noqa: E402
from kdcache.tokens import declared_index, record_length, retemper_exact, sampled_weights, tail_sum_interval  # noqa: E402
from seq_harness import read_exact, read_json_line, start_teacher  # noqa: E402

TOPK = (8, 32, 128)
SAMPLED = (12, 32, 64)
TAIL_K = (32, 128)
T_EVAL = (1.0, 2.0)
DISTILLKIT = {  # README of arcee-ai/DistillKit, "Logit Compression": (k, exact_k, polynomial terms, published B/token)
    "distillkit-recommended": (128, 16, (0, 1, 2, 3, 4, "sqrt"), "~300"),
    "distillkit-budget": (50, 1, (0, 1, "sqrt"), "~114"),
}
MEGATRON_K = 128
METRICS = ("kl", "fwd", "tv")


def bf16(x):
    """Rounds float32 to bfloat16 (round to nearest even) and back."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32).astype(np.float64)


def log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


# ---- the dense reference: the teacher run again on the store's texts -----------------------------

def teacher_rows(command: str, store, batch_size: int):
    """Yields (ready, None) once, then (index, token ids, [L, V] float32 logits) per sample of the store."""
    proc, ready = start_teacher(command)
    if ready["outputs"] != "logits":
        raise SystemExit(f"token_cache_table: the dense reference needs a logits teacher; this one sends {ready['outputs']}")
    yield ready, None, None
    vocab = int(ready["vocab_size"])
    for start in range(0, len(store), batch_size):
        batch = [{"index": i, "id": store.id(i), "view": 0, "text": store.text(i)} for i in range(start, min(start + batch_size, len(store)))]
        proc.stdin.write(json.dumps({"type": "batch", "samples": batch}).encode() + b"\n")
        proc.stdin.flush()
        header = read_json_line(proc.stdout, "a sequences header")
        if header.get("rows") != len(batch):
            raise SystemExit(f"token_cache_table: bad sequences header {header} for a batch of {len(batch)}")
        for _ in batch:
            index, length = np.frombuffer(read_exact(proc.stdout, 12, "a row header"), dtype=np.dtype([("i", "<i8"), ("l", "<i4")]))[0]
            ids = np.frombuffer(read_exact(proc.stdout, 4 * int(length), f"sample {index}'s ids"), dtype="<i4")
            rows = np.frombuffer(read_exact(proc.stdout, 4 * vocab * int(length), f"sample {index}'s logits"), dtype="<f4")
            yield int(index), ids, rows.reshape(int(length), vocab)
    proc.stdin.write(b'{"type": "end"}\n')
    proc.stdin.close()
    if proc.wait(timeout=60) != 0:
        raise SystemExit(f"token_cache_table: the teacher exited with status {proc.returncode}")


class Dense:
    """The teacher at one position block and temperature: log p, p, Σ p log p and the non-zero count per row."""

    def __init__(self, z: np.ndarray, t: float):
        self.lp = log_softmax(z / t)
        self.p = np.exp(self.lp)
        with np.errstate(invalid="ignore"):
            self.neg_entropy = np.where(self.p > 0, self.p * self.lp, 0.0).sum(axis=1)
        self.nonzero = np.count_nonzero(self.p > 0, axis=1)


# ---- a training target and its three metrics ------------------------------------------------------

class Target:
    """A target over the vocabulary per position: `q` on (`rows`, `ids`) entries (distinct ids per
    row) plus `tail` [P] spread evenly over the `m` [P] ids of the row not among them."""

    def __init__(self, rows, ids, q, tail, m, vocab):
        self.rows, self.ids, self.q = np.asarray(rows), np.asarray(ids, dtype=np.int64), np.asarray(q, dtype=np.float64)
        self.tail, self.m = np.asarray(tail, dtype=np.float64), np.asarray(m, dtype=np.float64)
        self.vocab = vocab

    @staticmethod
    def dense_rows(ids_2d, q_2d, tail, vocab):
        """From [P, k] ids and values (the same k per row)."""
        P, k = ids_2d.shape
        return Target(np.repeat(np.arange(P), k), ids_2d.ravel(), q_2d.ravel(), tail, np.full(P, vocab - k), vocab)


def per_row(rows, values, P):
    return np.bincount(rows, weights=values, minlength=P)


def metrics(target: Target, d: Dense) -> dict:
    """Per-position KL(target‖p), KL(p‖target) (∞ where the target is 0 on an id with p > 0), TV."""
    P = len(d.lp)
    lp_k = d.lp[target.rows, target.ids]
    p_k = np.exp(lp_k)
    total = per_row(target.rows, target.q, P) + target.tail
    qn, tn = target.q / total[target.rows], target.tail / total            # normalized, for the KLs
    with np.errstate(divide="ignore", invalid="ignore"):
        each = tn / target.m
        log_each = np.where(tn > 0, np.log(each), -np.inf)
        kept_lp = per_row(target.rows, lp_k, P)
        kl = per_row(target.rows, np.where(qn > 0, qn * (np.log(qn) - lp_k), 0.0), P)
        kl += np.where(tn > 0, tn * log_each - each * (d.lp.sum(axis=1) - kept_lp), 0.0)
        p_tail = np.clip(1.0 - per_row(target.rows, p_k, P), 0.0, None)
        fwd = d.neg_entropy - per_row(target.rows, p_k * np.log(qn), P) - np.where(tn > 0, p_tail * log_each, 0.0)
        uncovered = (tn <= 0) & (d.nonzero > per_row(target.rows, (p_k > 0).astype(float), P))
        fwd = np.where(uncovered, np.inf, fwd)
    return {"kl": kl, "fwd": fwd, "tv": 0.5 * (per_row(target.rows, np.abs(target.q - p_k), P) + tail_l1(target, d, p_k, p_tail))}


def tail_l1(target: Target, d: Dense, p_k, p_tail):
    """Σ over each row's tail ids of |tail/m − p(v)|: the tail mass when the target's tail is 0, else
    the dense row's Σ_v |c − p(v)| less the kept ids' share."""
    out = p_tail.copy()
    spread = np.flatnonzero(target.tail > 0)
    if len(spread):
        c = target.tail[spread] / target.m[spread]
        whole = np.abs(d.p[spread] - c[:, None]).sum(axis=1)
        lookup = np.full(len(d.lp), -1)
        lookup[spread] = np.arange(len(spread))
        sel = lookup[target.rows] >= 0
        kept = per_row(lookup[target.rows[sel]], np.abs(c[lookup[target.rows[sel]]] - p_k[sel]), len(spread))
        out[spread] = whole - kept
    return out


# ---- targets from the real records -------------------------------------------------------------

def topk_target(rec, t, vocab, retemper_at):
    """kdcache top-k: exact at T_w (stored log p, r) and at a declared T (stored tail sum)."""
    lp = rec.log_p.astype(np.float64)
    if t == 1.0:
        return Target.dense_rows(rec.ids, np.exp(lp), np.exp(rec.log_tail.astype(np.float64)), vocab)
    r = declared_index(t, 1.0, retemper_at)
    lp_t, log_tail_t = retemper_exact(lp, rec.sums[:, r].astype(np.float64), 1.0 / t)
    return Target.dense_rows(rec.ids, np.exp(lp_t), np.exp(log_tail_t), vocab)


def sampled_target(rec, t, n, vocab, retemper_at):
    """kdcache sampled: c·w/N on the drawn ids (w = 1 at T_w, §3.8's exact weights at a declared T)."""
    P = rec.positions
    rows = np.repeat(np.arange(P), rec.distinct.astype(np.int64))
    w = np.ones(len(rows))
    if t != 1.0:
        r = declared_index(t, 1.0, retemper_at)
        w = sampled_weights(rec.log_p, rec.sums[rows, r].astype(np.float64), 1.0 / t)
    return Target(rows, rec.ids, rec.counts * w / n, np.zeros(P), np.zeros(P), vocab)


def renormalized_target(ids, log_p, t, vocab):
    """Kept entries re-tempered among themselves and divided by their sum, 0 elsewhere."""
    x = log_p / t
    q = np.exp(x - x.max(axis=1, keepdims=True))
    return Target.dense_rows(ids, q / q.sum(axis=1, keepdims=True), np.zeros(len(ids)), vocab)


def distillkit_logp(lk32, exact_k, terms):
    """DistillKit's reconstruction of the sorted top-k log p: first exact_k as bf16, the rest from the
    least-squares polynomial in the rank t = 0 … k − exact_k − 1 with float32 coefficients."""
    rest = lk32[:, exact_k:]
    t = np.arange(rest.shape[1], dtype=np.float64)
    x = np.stack([np.sqrt(t) if term == "sqrt" else t ** term for term in terms], axis=1)
    coeffs, *_ = np.linalg.lstsq(x, rest.T, rcond=None)
    approx = x @ coeffs.astype(np.float32).astype(np.float64)
    return np.concatenate([bf16(lk32[:, :exact_k]), approx.T], axis=1)


def top_ids(logp1, k):
    """The k most probable ids per row by descending log p (ties by id)."""
    part = np.argpartition(-logp1, k - 1, axis=1)[:, :k]
    kept = np.take_along_axis(logp1, part, axis=1)
    return np.take_along_axis(part, np.lexsort((part, -kept), axis=1), axis=1)


# ---- the loop -----------------------------------------------------------------------------------

class Totals:
    """Running sums of per-position values by name, and counts of infinite ones."""

    def __init__(self):
        self.sums, self.infinite, self.count = {}, {}, 0

    def add(self, name, values):
        values = np.asarray(values, dtype=np.float64)
        bad = ~np.isfinite(values)
        self.infinite[name] = self.infinite.get(name, 0) + int(bad.sum())
        self.sums[name] = self.sums.get(name, 0.0) + float(values[~bad].sum())

    def mean(self, name):
        return math.inf if self.infinite.get(name) else self.sums[name] / self.count

    def add_metrics(self, name, t, values: dict):
        for key in METRICS:
            self.add(f"{name}.{key}.T{t:g}", values[key])


def tail_figures(totals, rec, d2: Dense, k, vocab, retemper_at):
    """Issue 12's figures at T = 2 of a real top-k record written at T_w = 1."""
    a = 0.5
    lp = rec.log_p.astype(np.float64)
    s_kept = np.exp(a * lp).sum(axis=1)
    r = np.exp(rec.log_tail.astype(np.float64))
    even = (vocab - k) * (r / (vocab - k)) ** a
    lo, hi = tail_sum_interval(lp, rec.log_tail, vocab, a)
    stored = np.exp(rec.sums[:, declared_index(2.0, 1.0, retemper_at)].astype(np.float64))
    kept_true = np.take_along_axis(d2.p, rec.ids.astype(np.int64), axis=1).sum(axis=1)
    for name, values in (("true", 1.0 - kept_true), ("even", even / (s_kept + even)), ("lo", lo / (s_kept + lo)),
                         ("hi", hi / (s_kept + hi)), ("stored", stored / (s_kept + stored)), ("r", r)):
        totals.add(f"tail{k}.{name}", values)


def sample_figures(totals, z, recs, layouts, args):
    dense = {t: Dense(z, t) for t in T_EVAL}
    vocab = z.shape[1]
    for k in TOPK:
        rec, lay = recs[f"topk{k}"], layouts[f"topk{k}"]
        for t in T_EVAL:
            totals.add_metrics(f"kdcache-top{k}", t, metrics(topk_target(rec, t, vocab, lay["retemper_at"]), dense[t]))
        if k in TAIL_K:
            tail_figures(totals, rec, dense[2.0], k, vocab, lay["retemper_at"])
        if k == MEGATRON_K:
            for t in T_EVAL:
                target = renormalized_target(rec.ids, rec.log_p.astype(np.float64), t, vocab)
                totals.add_metrics(f"megatron-top{k}", t, metrics(target, dense[t]))
    for n in SAMPLED:
        rec, lay = recs[f"sampled{n}"], layouts[f"sampled{n}"]
        for t in T_EVAL:
            totals.add_metrics(f"sampled{n}", t, metrics(sampled_target(rec, t, n, vocab, lay["retemper_at"]), dense[t]))
        totals.add(f"sampled{n}.distinct", rec.distinct.astype(np.float64))
    for name, (k, exact_k, terms, _) in DISTILLKIT.items():
        ids = top_ids(dense[1.0].lp, k)
        lk32 = np.take_along_axis(dense[1.0].lp, ids, axis=1).astype(np.float32).astype(np.float64)
        approx = distillkit_logp(lk32, exact_k, terms)
        for t in T_EVAL:
            totals.add_metrics(name, t, metrics(renormalized_target(ids, approx, t, vocab), dense[t]))
    totals.add("top1", (dense[1.0].lp.argmax(axis=1) == recs["tokens"][1:]).astype(np.float64))


def open_caches(caches_dir):
    stores, layouts = {}, {}
    for name in [f"topk{k}" for k in TOPK] + [f"sampled{n}" for n in SAMPLED]:
        store = kdcache.open(os.path.join(caches_dir, f"{name}.lmdb"))
        _, entry = store.sequence_teacher()
        if entry["sequence"]["retemper_at"][:2] != [1.0, 2.0] or entry["write_temperature"] != 1.0:
            raise SystemExit(f"token_cache_table: {name}.lmdb needs T_w = 1 and --retemper-at 1,2,… (has "
                             f"T_w {entry['write_temperature']}, {entry['sequence']['retemper_at']})")
        stores[name], layouts[name] = store, {**entry, "retemper_at": entry["sequence"]["retemper_at"]}
    return stores, layouts


def check_same_teacher(ready, layouts):
    for name, entry in layouts.items():
        if entry["sequence"]["tokenizer"]["vocab_sha256"] != ready["tokenizer"]["vocab_sha256"]:
            raise SystemExit(f"token_cache_table: {name}.lmdb was written with another tokenizer than this teacher's")
        if entry.get("content_hash") not in (None, ready["content_hash"]):
            raise SystemExit(f"token_cache_table: {name}.lmdb was written by another teacher ({entry.get('content_hash')}, "
                             f"this one is {ready['content_hash']})")


def run(args):
    data = kdcache.open(args.data)
    stores, layouts = open_caches(args.caches)
    totals, lengths, record_bytes = Totals(), [], {name: 0 for name in stores}
    rows = teacher_rows(args.command, data, args.batch_size)
    ready, _, _ = next(rows)
    check_same_teacher(ready, layouts)
    for index, ids, logits in rows:
        recs = {"tokens": ids}
        for name, store in stores.items():
            rec = store.sequence(index)
            if not np.array_equal(rec.tokens.astype(np.int64), ids.astype(np.int64)):
                raise SystemExit(f"token_cache_table: sample {index}: {name}.lmdb holds other token ids than the teacher "
                                 "gives now (another text, truncation or teacher?)")
            recs[name] = rec
            record_bytes[name] += record_length(3 if name.startswith("topk") else 4, 2, len(ids), rec.ids.size, rec.sums.shape[1])
        lengths.append(len(ids))
        if len(ids) > 1:
            sample_figures(totals, logits[:-1].astype(np.float64), recs, layouts, args)
            totals.count += len(ids) - 1
    return totals, np.array(lengths), int(ready["vocab_size"]), record_bytes, ready


# ---- the tables ---------------------------------------------------------------------------------

def distillkit_bytes(k, exact_k, terms, vocab):
    """DistillKit's total_bits(): exact_k bf16 + terms f32, padded to bytes, + k ids of ⌈log2 V⌉ bits."""
    return exact_k * 2 + 4 * len(terms) + (k * math.ceil(math.log2(vocab)) + 7) // 8


def figures(totals, name):
    return [totals.mean(f"{name}.{m}.T{t:g}") for m in METRICS for t in T_EVAL]


def infinite_share(totals, name):
    shares = {totals.infinite.get(f"{name}.fwd.T{t:g}", 0) / totals.count for t in T_EVAL}
    return max(shares)


def table(totals, vocab, record_bytes):
    positions = totals.count
    rows = []
    for k in TOPK:
        rows.append((f"kdcache top-{k} f16 R=3", record_bytes[f"topk{k}"] / positions, f"5k+11 = {5 * k + 11}", figures(totals, f"kdcache-top{k}"), infinite_share(totals, f"kdcache-top{k}")))
    for n in SAMPLED:
        d = totals.mean(f"sampled{n}.distinct")
        rows.append((f"kdcache sampled N={n} f16 R=3 (d̄={d:.2f})", record_bytes[f"sampled{n}"] / positions,
                     f"6d̄+10 = {6 * d + 10:.1f}", figures(totals, f"sampled{n}"), infinite_share(totals, f"sampled{n}")))
    megatron = MEGATRON_K * 2 + MEGATRON_K * 17 / 8  # fp16 values + ids packed in 17 bits
    rows.append((f"Megatron top-{MEGATRON_K} fp16 + 17-bit ids, renormalized", megatron, "528 (computed)",
                 figures(totals, f"megatron-top{MEGATRON_K}"), infinite_share(totals, f"megatron-top{MEGATRON_K}")))
    for name, (k, exact_k, terms, published) in DISTILLKIT.items():
        rows.append((f"{name} k={k} exact_k={exact_k} renormalized", distillkit_bytes(k, exact_k, terms, vocab),
                     f"{published} (published)", figures(totals, name), infinite_share(totals, name)))
    return rows


def cell(x):
    return "∞" if math.isinf(x) else f"{x:.4f}" if x >= 1e-3 else f"{x:.1e}"


def print_report(totals, lengths, vocab, record_bytes, ready, args):
    print(f"data: the {len(lengths)} texts of {args.data} (their teacher tokens: {int(lengths.sum())} tokens, "
          f"{totals.count} positions), V = {vocab}, teacher {ready['name']} ({ready['content_hash'][:19]}…); caches read "
          f"from {args.caches} by kdcache.SoftLabelStore.sequence; the dense reference recomputed from the teacher's "
          f"logits. The teacher's most probable id is the next token at {totals.mean('top1'):.3f} of the positions.\n")
    print("| layout | B/position (measured) | formula | KL(target‖teacher) T=1 | T=2 | KL(teacher‖target) T=1 | T=2 "
          "| TV T=1 | T=2 | positions with KL(teacher‖target) = ∞ |\n|---|---|---|---|---|---|---|---|---|---|")
    rows = table(totals, vocab, record_bytes)
    for name, here, formula, values, share in rows:
        print(f"| {name} | {here:.1f} | {formula} | " + " | ".join(map(cell, values)) + f" | {share:.3f} |")
    print("\nKL(teacher‖target) is ∞ wherever the target is 0 on an id the teacher gives p > 0: every position of a "
          "renormalized or sampled target (its undrawn ids). Sampled targets at T = 2 are c·w/N (unbiased, sum ≠ 1 "
          "exactly): the TV uses them as they are, the KLs divided by their sum.\n")
    print("| real top-k cache at T_w=1, tail mass at T=2 | true | renormalized | spread evenly | §3.8 interval | stored f16 sum "
          "| r at T_w |\n|---|---|---|---|---|---|---|")
    for k in TAIL_K:
        g = lambda s: totals.mean(f"tail{k}.{s}")  # noqa: E731
        print(f"| top-{k} | {g('true'):.3f} | 0 | {g('even'):.3f} | [{g('lo'):.3f}, {g('hi'):.3f}] | {g('stored'):.3f} | {g('r'):.3f} |")
    return rows


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True, help="the dataset store the caches were taught from")
    p.add_argument("--caches", required=True, help="the directory of topk8/32/128.lmdb and sampled12/32/64.lmdb")
    p.add_argument("--exec", dest="command", default=".build-venv-lm/bin/python tools/teachers/smollm2_teacher.py")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--json", help="also write every figure here")
    args = p.parse_args()
    totals, lengths, vocab, record_bytes, ready = run(args)
    rows = print_report(totals, lengths, vocab, record_bytes, ready, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"positions": totals.count, "tokens": int(lengths.sum()), "texts": len(lengths),
                       "means": {k: totals.mean(k) for k in totals.sums}, "infinite": totals.infinite,
                       "rows": [list(r) for r in rows]}, f, indent=1, default=str)


if __name__ == "__main__":
    main()
