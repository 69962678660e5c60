#!/usr/bin/env python3
"""The Python baseline of the sweep benchmark: the same sweep as `kdcache sweep` — linear students
over the store's hashed features, loss a·T²·KL(p_t^T‖p_s^T) + (1−a)·CE, Adam with 5 % warm-up and
linear decay, minibatches of 32, the same grid — in numpy, reading the same stores through
py-lmdb (tools/python). Written the way a careful numpy user would: CSR features built once,
minibatch gradients with scipy sparse products, lazy Adam on the touched rows, and the
feature space reduced to the buckets in use (as kdcache does).

Usage: sweep_numpy.py DATA CACHE --temperature 2,4 --alpha 0,0.5,0.9 --lr 0.1 --epochs 10 --seeds 2
Prints one line per configuration and the total time.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import sparse

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
import kdcache  # noqa: E402


def log_softmax(z):
    m = z.max(axis=1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("data"); p.add_argument("cache")
    p.add_argument("--temperature", default="2,4"); p.add_argument("--alpha", default="0,0.5,0.9")
    p.add_argument("--lr", default="0.1"); p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", type=int, default=2); p.add_argument("--batch-size", type=int, default=32)
    a = p.parse_args()
    t0 = time.perf_counter()
    ds, cache = kdcache.open(a.data), kdcache.open(a.cache)
    dim, C = ds.manifest["featurizer"]["dimension"], len(ds.manifest["labels"])
    rows, cols, vals, labels, splits = [], [], [], [], []
    for i, r in ds:
        v = r["values"] / np.linalg.norm(r["values"]) if len(r["values"]) else r["values"]
        rows += [i] * len(v); cols += r["indices"].tolist(); vals += v.tolist()
        labels.append(r["label"]); splits.append(r["split"])
    X = sparse.csr_matrix((vals, (rows, cols)), shape=(len(ds), dim), dtype=np.float32)
    X = X[:, np.unique(X.indices)]          # only the hashed buckets in use, as kdcache does
    dim = X.shape[1]
    y = np.array(labels); splits = np.array(splits)
    teacher = np.array([cache.log_probs(i) for i in range(len(ds))])      # log p at T_w
    t_w = next(iter(cache.manifest["teachers"].values()))["write_temperature"]
    train, test = np.where(splits == "train")[0], np.where(splits == "test")[0]
    temps = [float(t) for t in a.temperature.split(",")]
    grid = []
    for lr in [float(x) for x in a.lr.split(",")]:
        for alpha in [float(x) for x in a.alpha.split(",")]:
            for T in ([temps[0]] if alpha == 0 else temps):
                for seed in range(a.seeds):
                    grid.append((lr, alpha, T, seed))
    for lr, alpha, T, seed in grid:
        rng = np.random.default_rng(seed)
        W = np.zeros((dim, C), np.float32); b = np.zeros(C, np.float32)
        mW, vW, mb, vb = np.zeros_like(W), np.zeros_like(W), np.zeros_like(b), np.zeros_like(b)
        pt_T = np.exp(log_softmax(teacher * (t_w / T)))
        steps_per_epoch = -(-len(train) // a.batch_size); total = steps_per_epoch * a.epochs; warm = int(total * 0.05)
        step = 0
        for epoch in range(a.epochs):
            perm = train[rng.permutation(len(train))]
            for s in range(steps_per_epoch):
                idx = perm[s * a.batch_size:(s + 1) * a.batch_size]
                xb = X[idx]
                z = xb @ W + b
                ps = np.exp(log_softmax(z))
                g = (1 - alpha) * (ps - np.eye(C)[y[idx]])
                if alpha > 0:
                    g += alpha * T * (np.exp(log_softmax(z / T)) - pt_T[idx])
                g /= len(idx)
                # Lazy Adam on the rows the batch touched (as kdcache does for sparse inputs).
                touched = np.unique(xb.indices)
                gW = np.asarray(xb[:, touched].T @ g); gb = g.sum(0)
                rate = lr * ((step + 1) / warm if step < warm else max(0.0, 1 - (step - warm) / max(1, total - warm)))
                step += 1
                c1, c2 = 1 - 0.9 ** step, 1 - 0.999 ** step
                m = 0.9 * mW[touched] + 0.1 * gW; v = 0.999 * vW[touched] + 0.001 * gW * gW
                mW[touched], vW[touched] = m, v
                W[touched] -= rate * (m / c1) / (np.sqrt(v / c2) + 1e-8)
                mb[:] = 0.9 * mb + 0.1 * gb; vb[:] = 0.999 * vb + 0.001 * gb * gb
                b -= rate * (mb / c1) / (np.sqrt(vb / c2) + 1e-8)
        acc = float(((X[test] @ W + b).argmax(1) == y[test]).mean())
        print(f"lr {lr} alpha {alpha} T {T} seed {seed}: test accuracy {acc:.4f}")
    print(f"total {time.perf_counter() - t0:.3f} s for {len(grid)} configurations")


if __name__ == "__main__":
    main()
