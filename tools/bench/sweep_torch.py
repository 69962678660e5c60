#!/usr/bin/env python3
"""The PyTorch baseline of the sweep benchmark: the same sweep as `kdcache sweep` and
sweep_numpy.py — linear students over the store's hashed features (reduced to the buckets in use),
loss a·T²·KL(p_t^T‖p_s^T) + (1−a)·CE, 5 % warm-up then linear decay — written the idiomatic PyTorch
way for sparse text features: an `nn.EmbeddingBag(sum, per_sample_weights)` with `sparse=True`
trained by `SparseAdam` (lazy Adam, as kdcache), the bias by `Adam`. With `--optimizer sgd`, SGD
with momentum μ done lazily as kdcache does, u ← μu + g, p ← p − lr·u on the rows the batch touched
(torch.optim.SGD keeps a sparse momentum buffer whose decay touches every row it ever saw: neither
the same update nor a fast one), the bias by `torch.optim.SGD(momentum=μ)`. Batches are gathered
from flat CSR tensors with vectorised index arithmetic. CPU, --threads threads (default 2). Reads
the same stores through the tools/python reader.

Usage: sweep_torch.py DATA CACHE --temperature 2,4 --alpha 0,0.5,0.9 --lr 0.1 --epochs 10 --seeds 2
                      [--optimizer adam|sgd] [--momentum 0.9] [--batch-size 32] [--threads 2]
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
import kdcache  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("data"); p.add_argument("cache")
    p.add_argument("--temperature", default="2,4"); p.add_argument("--alpha", default="0,0.5,0.9")
    p.add_argument("--lr", default="0.1"); p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", type=int, default=2); p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--optimizer", choices=["adam", "sgd"], default="adam"); p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    a = p.parse_args()
    t0 = time.perf_counter()
    torch.set_num_threads(a.threads)
    ds, cache = kdcache.open(a.data), kdcache.open(a.cache)
    C = len(ds.manifest["labels"])
    cols, vals, lengths, labels, splits = [], [], [], [], []
    for _, r in ds:
        v = r["values"] / np.linalg.norm(r["values"]) if len(r["values"]) else r["values"]
        cols.append(r["indices"].astype(np.int64)); vals.append(v.astype(np.float32)); lengths.append(len(v))
        labels.append(r["label"]); splits.append(r["split"])
    used, flat = np.unique(np.concatenate(cols), return_inverse=True)     # only the buckets in use
    flat = torch.from_numpy(flat.ravel().astype(np.int64)); weights = torch.from_numpy(np.concatenate(vals))
    lengths = np.array(lengths, dtype=np.int64); starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    y = torch.tensor(labels); splits = np.array(splits)
    teacher = torch.tensor(np.array([cache.log_probs(i) for i in range(len(ds))]), dtype=torch.float32)
    t_w = next(iter(cache.manifest["teachers"].values()))["write_temperature"]
    train, test = np.where(splits == "train")[0], np.where(splits == "test")[0]

    def bag(indices):
        """(flat indices, offsets, weights) of these samples, gathered without a Python loop."""
        n = lengths[indices]; offsets = np.concatenate([[0], np.cumsum(n)[:-1]])
        at = torch.from_numpy(np.repeat(starts[indices] - offsets, n) + np.arange(n.sum()))
        return flat[at], torch.from_numpy(offsets), weights[at]

    temps = [float(t) for t in a.temperature.split(",")]
    grid = [(lr, al, T, s) for lr in map(float, a.lr.split(",")) for al in map(float, a.alpha.split(","))
            for T in ([temps[0]] if al == 0 else temps) for s in range(a.seeds)]
    test_bag = bag(test)
    soft = {T: F.softmax(teacher * (t_w / T), dim=1) for T in temps}
    for lr, alpha, T, seed in grid:
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        emb = torch.nn.EmbeddingBag(len(used), C, mode="sum", sparse=True)
        torch.nn.init.zeros_(emb.weight)
        bias = torch.nn.Parameter(torch.zeros(C))
        if a.optimizer == "adam":
            opt_sparse, opt_dense = torch.optim.SparseAdam(emb.parameters(), lr=lr), torch.optim.Adam([bias], lr=lr)
        else:
            opt_sparse, opt_dense = None, torch.optim.SGD([bias], lr=lr, momentum=a.momentum)
            velocity = torch.zeros_like(emb.weight)
        steps = -(-len(train) // a.batch_size); total = steps * a.epochs; warm = int(total * 0.05)
        pt = soft[T]
        step = 0
        for _ in range(a.epochs):
            perm = train[rng.permutation(len(train))]
            for s in range(steps):
                batch = perm[s * a.batch_size:(s + 1) * a.batch_size]
                rate = lr * ((step + 1) / warm if step < warm else max(0.0, 1 - (step - warm) / max(1, total - warm)))
                for o in (opt_sparse, opt_dense):
                    for g in (o.param_groups if o is not None else []):
                        g["lr"] = rate
                idx, offsets, w = bag(batch)
                z = emb(idx, offsets, per_sample_weights=w) + bias
                tb = torch.from_numpy(batch)
                loss = (1 - alpha) * F.cross_entropy(z, y[tb])
                if alpha > 0:
                    loss = loss + alpha * T * T * F.kl_div(F.log_softmax(z / T, dim=1), pt[tb], reduction="batchmean")
                emb.zero_grad(); opt_dense.zero_grad()
                loss.backward()
                if opt_sparse is not None:
                    opt_sparse.step()
                else:
                    with torch.no_grad():
                        grad = emb.weight.grad.coalesce()
                        rows, g = grad.indices()[0], grad.values()
                        u = a.momentum * velocity[rows] + g
                        velocity[rows] = u
                        emb.weight[rows] -= rate * u
                opt_dense.step()
                step += 1
        with torch.no_grad():
            acc = float(((emb(*test_bag[:2], per_sample_weights=test_bag[2]) + bias).argmax(1) == y[torch.from_numpy(test)]).float().mean())
        print(f"lr {lr} alpha {alpha} T {T} seed {seed}: test accuracy {acc:.4f}", flush=True)
    print(f"total {time.perf_counter() - t0:.3f} s for {len(grid)} configurations")


if __name__ == "__main__":
    main()
