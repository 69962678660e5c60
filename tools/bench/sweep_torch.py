#!/usr/bin/env python3
"""The PyTorch baseline of the sweep benchmark: the same sweep as `kdcache sweep` and
sweep_numpy.py — linear students over the store's hashed features (reduced to the buckets in use),
loss a·T²·KL(p_t^T‖p_s^T) + (1−a)·CE, minibatches of 32, 5 % warm-up then linear decay — written
the idiomatic PyTorch way for sparse text features: an `nn.EmbeddingBag(sum, per_sample_weights)`
with `sparse=True` trained by `SparseAdam` (lazy Adam, as kdcache), the bias by `Adam`. CPU, two
threads. Reads the same stores through the tools/python reader.

Usage: sweep_torch.py DATA CACHE --temperature 2,4 --alpha 0,0.5,0.9 --lr 0.1 --epochs 10 --seeds 2
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
    a = p.parse_args()
    t0 = time.perf_counter()
    torch.set_num_threads(2)
    ds, cache = kdcache.open(a.data), kdcache.open(a.cache)
    C = len(ds.manifest["labels"])
    rows, labels, splits = [], [], []
    for _, r in ds:
        v = r["values"] / np.linalg.norm(r["values"]) if len(r["values"]) else r["values"]
        rows.append((r["indices"].astype(np.int64), v.astype(np.float32)))
        labels.append(r["label"]); splits.append(r["split"])
    used = np.unique(np.concatenate([i for i, _ in rows]))
    remap = {int(b): k for k, b in enumerate(used)}
    rows = [(torch.tensor([remap[int(x)] for x in i]), torch.tensor(v)) for i, v in rows]
    y = torch.tensor(labels); splits = np.array(splits)
    teacher = torch.tensor(np.array([cache.log_probs(i) for i in range(len(ds))]), dtype=torch.float32)
    t_w = next(iter(cache.manifest["teachers"].values()))["write_temperature"]
    train, test = np.where(splits == "train")[0], np.where(splits == "test")[0]

    def bag(indices):
        idx = torch.cat([rows[i][0] for i in indices]); w = torch.cat([rows[i][1] for i in indices])
        offsets = torch.tensor(np.cumsum([0] + [len(rows[i][0]) for i in indices[:-1]]))
        return idx, offsets, w

    temps = [float(t) for t in a.temperature.split(",")]
    grid = [(lr, al, T, s) for lr in map(float, a.lr.split(",")) for al in map(float, a.alpha.split(","))
            for T in ([temps[0]] if al == 0 else temps) for s in range(a.seeds)]
    test_bag = bag(list(test))
    for lr, alpha, T, seed in grid:
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        emb = torch.nn.EmbeddingBag(len(used), C, mode="sum", sparse=True)
        torch.nn.init.zeros_(emb.weight)
        bias = torch.nn.Parameter(torch.zeros(C))
        opt_sparse, opt_dense = torch.optim.SparseAdam(emb.parameters(), lr=lr), torch.optim.Adam([bias], lr=lr)
        steps = -(-len(train) // a.batch_size); total = steps * a.epochs; warm = int(total * 0.05)
        pt = F.softmax(teacher * (t_w / T), dim=1)
        step = 0
        for _ in range(a.epochs):
            perm = train[rng.permutation(len(train))]
            for s in range(steps):
                batch = list(perm[s * a.batch_size:(s + 1) * a.batch_size])
                rate = lr * ((step + 1) / warm if step < warm else max(0.0, 1 - (step - warm) / max(1, total - warm)))
                for o in (opt_sparse, opt_dense):
                    for g in o.param_groups:
                        g["lr"] = rate
                idx, offsets, w = bag(batch)
                z = emb(idx, offsets, per_sample_weights=w) + bias
                loss = (1 - alpha) * F.cross_entropy(z, y[batch])
                if alpha > 0:
                    loss = loss + alpha * T * T * F.kl_div(F.log_softmax(z / T, dim=1), pt[batch], reduction="batchmean")
                opt_sparse.zero_grad(); opt_dense.zero_grad()
                loss.backward()
                opt_sparse.step(); opt_dense.step()
                step += 1
        with torch.no_grad():
            acc = float(((emb(*test_bag[:2], per_sample_weights=test_bag[2]) + bias).argmax(1) == y[test]).float().mean())
        print(f"lr {lr} alpha {alpha} T {T} seed {seed}: test accuracy {acc:.4f}")
    print(f"total {time.perf_counter() - t0:.3f} s for {len(grid)} configurations")


if __name__ == "__main__":
    main()
