#!/usr/bin/env python3
"""The Python baseline of the sweep benchmark: the same sweep as `kdcache sweep` — linear students
over the store's hashed features (L2-normalised), loss a·T²·KL(p_t^T‖p_s^T) + (1−a)·CE, 5 % warm-up
then linear decay, the same grid — in numpy, reading the same stores through py-lmdb (tools/python).
Written the way a careful numpy user would: CSR features built once, the feature space reduced to
the buckets in use (as kdcache does), the soft targets computed once per temperature, and each
minibatch's gradient over only the rows it touched (scipy sparse products on the batch's columns
renumbered 0..k−1), with lazy optimizer state on those rows, as kdcache:
  Adam:  m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², p ← p − lr·m̂/(√v̂ + ε)   (β 0.9/0.999, ε 1e-8)
  SGD:   u ← μu + g, p ← p − lr·u                                       (μ = --momentum)

Usage: sweep_numpy.py DATA CACHE --temperature 2,4 --alpha 0,0.5,0.9 --lr 0.1 --epochs 10 --seeds 2
                      [--optimizer adam|sgd] [--momentum 0.9] [--batch-size 32]
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
    p.add_argument("--optimizer", choices=["adam", "sgd"], default="adam"); p.add_argument("--momentum", type=float, default=0.9)
    a = p.parse_args()
    t0 = time.perf_counter()
    ds, cache = kdcache.open(a.data), kdcache.open(a.cache)
    dim, C = ds.manifest["featurizer"]["dimension"], len(ds.manifest["labels"])
    cols, vals, lengths, labels, splits = [], [], [], [], []
    for _, r in ds:
        v = r["values"] / np.linalg.norm(r["values"]) if len(r["values"]) else r["values"]
        cols.append(r["indices"]); vals.append(v.astype(np.float32)); lengths.append(len(v))
        labels.append(r["label"]); splits.append(r["split"])
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    X = sparse.csr_matrix((np.concatenate(vals), np.concatenate(cols), indptr), shape=(len(ds), dim), dtype=np.float32)
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
    soft = {T: np.exp(log_softmax(teacher * (t_w / T))).astype(np.float32) for T in temps}
    eye = np.eye(C, dtype=np.float32)
    adam = a.optimizer == "adam"
    for lr, alpha, T, seed in grid:
        rng = np.random.default_rng(seed)
        W = np.zeros((dim, C), np.float32); b = np.zeros(C, np.float32)
        mW, mb = np.zeros_like(W), np.zeros_like(b)
        vW, vb = (np.zeros_like(W), np.zeros_like(b)) if adam else (None, None)
        pt_T = soft[T]
        steps_per_epoch = -(-len(train) // a.batch_size); total = steps_per_epoch * a.epochs; warm = int(total * 0.05)
        step = 0
        for epoch in range(a.epochs):
            perm = train[rng.permutation(len(train))]
            for s in range(steps_per_epoch):
                idx = perm[s * a.batch_size:(s + 1) * a.batch_size]
                xb = X[idx]
                # The batch's columns renumbered 0..k−1: products over the k touched rows only.
                touched, local = np.unique(xb.indices, return_inverse=True)
                xl = sparse.csr_matrix((xb.data, local.ravel(), xb.indptr), shape=(len(idx), len(touched)))
                z = xl @ W[touched] + b
                ps = np.exp(log_softmax(z))
                g = (1 - alpha) * (ps - eye[y[idx]])
                if alpha > 0:
                    g += alpha * T * (np.exp(log_softmax(z / T)) - pt_T[idx])
                g /= len(idx)
                gW = np.asarray(xl.T @ g); gb = g.sum(0)
                rate = lr * ((step + 1) / warm if step < warm else max(0.0, 1 - (step - warm) / max(1, total - warm)))
                step += 1
                if adam:
                    c1, c2 = 1 - 0.9 ** step, 1 - 0.999 ** step
                    m = 0.9 * mW[touched] + 0.1 * gW; v = 0.999 * vW[touched] + 0.001 * gW * gW
                    mW[touched], vW[touched] = m, v
                    W[touched] -= rate * (m / c1) / (np.sqrt(v / c2) + 1e-8)
                    mb[:] = 0.9 * mb + 0.1 * gb; vb[:] = 0.999 * vb + 0.001 * gb * gb
                    b -= rate * (mb / c1) / (np.sqrt(vb / c2) + 1e-8)
                else:
                    u = a.momentum * mW[touched] + gW
                    mW[touched] = u
                    W[touched] -= rate * u
                    mb[:] = a.momentum * mb + gb
                    b -= rate * mb
        acc = float(((X[test] @ W + b).argmax(1) == y[test]).mean())
        print(f"lr {lr} alpha {alpha} T {T} seed {seed}: test accuracy {acc:.4f}", flush=True)
    print(f"total {time.perf_counter() - t0:.3f} s for {len(grid)} configurations")


if __name__ == "__main__":
    main()
