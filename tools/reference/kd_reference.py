#!/usr/bin/env python3
"""Independent numpy reference for the distillation loss, its gradient and the Adam / SGD steps.

Writes fixtures/reference/kd_cases.json, which the Swift tests (Tests/KDTrainTests) compare against,
and which tools/python/tests/test_reference.py regenerates to prove the file is not stale.
Everything here is float64 and written from the formulas in Sources/KDTrain/Loss.swift's
documentation, not from the Swift code.
"""
import json
import sys
from pathlib import Path

import numpy as np


def log_softmax(x):
    m = x.max()
    return x - m - np.log(np.exp(x - m).sum())


def kd_loss(z, y, teacher_log_probs_tw, t_w, alpha, T, kind="kd"):
    """L = a T^2 KL(p_t^T || p_s^T) + (1-a) CE(y, p_s); or a * 1/2 mean (zc - tc)^2 + (1-a) CE."""
    C = len(z)
    ls = log_softmax(z)
    ce = -ls[y]
    grad = (1 - alpha) * (np.exp(ls) - np.eye(C)[y])
    loss = (1 - alpha) * ce
    if alpha > 0:
        if kind == "kd":
            lt = log_softmax(teacher_log_probs_tw * (t_w / T))
            pt = np.exp(lt)
            lq = log_softmax(z / T)
            kl = np.sum(np.where(pt > 0, pt * (lt - lq), 0.0))
            loss += alpha * T * T * kl
            grad += alpha * T * (np.exp(lq) - pt)
        else:
            zc = z - z.mean()
            t = t_w * teacher_log_probs_tw
            tc = t - t.mean()
            d = zc - tc
            loss += alpha * 0.5 * np.mean(d * d)
            grad += alpha * d / C
    return float(loss), grad.tolist()


def adam(p, grads, lr, b1=0.9, b2=0.999, eps=1e-8, wd=0.0):
    m = np.zeros_like(p); v = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * ((m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps) + wd * p)
    return p.tolist()


def sgd(p, grads, lr, mu=0.9, wd=0.0):
    v = np.zeros_like(p)
    for g in grads:
        v = mu * v + g
        p = p - lr * (v + wd * p)
    return p.tolist()


def cases():
    rng = np.random.default_rng(20261129)
    loss_cases = []
    for kind, alpha, T, t_w in [("kd", 0.0, 1.0, 1.0), ("kd", 0.5, 2.0, 1.0), ("kd", 0.9, 4.0, 2.0), ("kd", 1.0, 1.0, 4.0),
                                ("kd", 0.7, 0.5, 2.0), ("mse-logits", 0.5, 1.0, 2.0)]:
        C = 6
        z = rng.normal(0, 2, C)
        y = int(rng.integers(C))
        teacher = log_softmax(rng.normal(0, 3, C) / t_w)
        teacher[int(rng.integers(C))] = -np.inf if kind == "kd" and alpha == 1.0 else teacher[0]
        teacher = log_softmax(np.where(np.isinf(teacher), -1e30, teacher))  # a class with p = 0
        loss, grad = kd_loss(z, y, teacher, t_w, alpha, T, kind)
        loss_cases.append({"kind": kind, "alpha": alpha, "temperature": T, "write_temperature": t_w, "logits": z.tolist(),
                           "label": y, "teacher_log_probs": [max(x, -1e30) for x in teacher.tolist()], "loss": loss, "grad": grad})
    p0 = rng.normal(0, 1, 13)   # 13 = one 8-lane SIMD block and a scalar tail
    grads = [rng.normal(0, 1, 13) for _ in range(4)]
    opt_cases = [
        {"kind": "adam", "lr": 0.01, "weight_decay": 0.0, "start": p0.tolist(), "grads": [g.tolist() for g in grads], "end": adam(p0, grads, 0.01)},
        {"kind": "adam", "lr": 0.1, "weight_decay": 0.01, "start": p0.tolist(), "grads": [g.tolist() for g in grads], "end": adam(p0, grads, 0.1, wd=0.01)},
        {"kind": "sgd", "lr": 0.05, "weight_decay": 0.0, "start": p0.tolist(), "grads": [g.tolist() for g in grads], "end": sgd(p0, grads, 0.05)},
    ]
    return {"loss": loss_cases, "optimizer": opt_cases}


def main(out):
    text = json.dumps(cases(), indent=1, sort_keys=True) + "\n"
    if out == "-":
        sys.stdout.write(text)
    else:
        Path(out).write_text(text)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "fixtures/reference/kd_cases.json")
