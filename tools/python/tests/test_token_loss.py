"""The token-level student's loss (issue 13) against numpy: `kdcache-bench token-loss` reads one
sequence record position (re-tempered by kdcache's reader to the declared T) and the student's logits,
and prints the loss and its gradient; numpy recomputes both from FORMAT.md §3.8 and the contract
(`(1 − α)·CE + α·T²·KD_T`, tail-bucket KL for top-k, `−Σ c_i w_T(x_i) log q_T(x_i) / N` for sampled)."""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from _support import BIN

BENCH = str(Path(BIN).parent / "kdcache-bench")


def log_softmax(x):
    m = x.max()
    return x - m - np.log(np.exp(x - m).sum())


def f32(x):
    return np.asarray(x, dtype=np.float32).astype(np.float64)


def teacher_position(kind, V, width, Tw, retemper_at, rng):
    """Stored entries of one position, in float32 as a record keeps them."""
    logits = rng.normal(0, 2.5, V)
    logp = log_softmax(logits / Tw)
    a = [Tw / t for t in retemper_at]
    if kind == "top-k":
        order = np.argsort(-logp, kind="stable")
        kept, tail = order[:width], order[width:]
        if width == V:
            return dict(ids=kept.tolist(), logProbs=f32(logp[kept]).tolist(), logTail=None, logSums=[None] * len(a))
        log_r = np.log(np.exp(logp[tail]).sum())
        sums = [float(np.log(np.exp(ar * logp[tail]).sum())) for ar in a]
        return dict(ids=kept.tolist(), logProbs=f32(logp[kept]).tolist(), logTail=float(f32(log_r)), logSums=f32(sums).tolist())
    draws = rng.choice(V, size=width, p=np.exp(logp) / np.exp(logp).sum())
    ids, counts = np.unique(draws, return_counts=True)
    sums = [float(np.log(np.exp(ar * logp).sum())) for ar in a]
    return dict(ids=ids.tolist(), counts=counts.tolist(), logProbs=f32(logp[ids]).tolist(), logSums=f32(sums).tolist())


def numpy_loss(inp):
    """The loss and ∂L/∂z in float64 from the stored (float32) values."""
    V, T, Tw, alpha = inp["vocab"], inp["temperature"], inp["writeTemperature"], inp["alpha"]
    z = f32(inp["logits"])
    y = inp["tokens"][1]
    ids = np.array(inp["ids"])
    lp = np.array(inp["logProbs"], dtype=np.float64)
    a = Tw / T
    r_index = None if abs(T - Tw) < 1e-12 else inp["retemperAt"].index(T)
    log_sum = None if r_index is None else inp["logSums"][r_index]
    q1 = np.exp(log_softmax(z))
    lqT = log_softmax(z / T)
    qT = np.exp(lqT)
    ce = -np.log(q1[y])
    g = np.zeros(V)
    if inp["kind"] == "top-k":
        # FORMAT.md §3.8: p_T(i) = p(i)^a / (s_S + s_tail), s_tail = r at T_w, exp(log-sum) at T_r.
        s_S = np.exp(a * lp).sum()
        if inp["logTail"] is None:
            s_tail = 0.0
        else:
            s_tail = np.exp(inp["logTail"]) if r_index is None else np.exp(log_sum)
        Z = s_S + s_tail
        pT, rT = np.exp(a * lp) / Z, s_tail / Z
        tail = np.ones(V, bool)
        tail[ids] = False
        QT = qT[tail].sum()
        kd = (pT * (np.log(pT) - lqT[ids])).sum() + (rT * (np.log(rT) - np.log(QT)) if rT > 0 else 0.0)
        g = qT.copy()
        g[ids] -= pT
        if rT > 0:
            g[tail] -= rT * qT[tail] / QT
    else:
        N = inp["width"]
        w = np.ones(len(ids)) if r_index is None else np.exp((a - 1) * lp - log_sum)
        c = np.array(inp["counts"]) * w / N
        kd = -(c * lqT[ids]).sum()
        g = c.sum() * qT
        g[ids] -= c
    grad = (1 - alpha) * (q1 - np.eye(V)[y]) + alpha * T * g
    return (1 - alpha) * ce + alpha * T * T * kd, grad


CASES = [
    ("top-k", 64, 8, 1.0, [2.0], 1.0, 0.5),    # at T_w
    ("top-k", 64, 8, 1.0, [0.5, 2.0], 2.0, 0.7),   # at a declared T ≠ T_w: the stored tail log-sum
    ("top-k", 21, 21, 2.0, [1.0], 1.0, 0.9),   # k = V: dense KL, re-tempered exactly
    ("sampled", 64, 16, 1.0, [0.5, 2.0], 2.0, 0.6),   # weights w_T ≠ 1
    ("sampled", 64, 16, 1.0, [2.0], 1.0, 0.3),   # at T_w: weights 1
]


@pytest.mark.parametrize("kind,V,width,Tw,retemper_at,T,alpha", CASES)
def test_token_loss_matches_numpy(tmp_path, kind, V, width, Tw, retemper_at, T, alpha):
    if not os.path.exists(BENCH):
        pytest.fail(f"{BENCH} is missing: build it (swift build)")
    rng = np.random.default_rng(V * 100 + width)
    entries = teacher_position(kind, V, width, Tw, retemper_at, rng)
    y = int(rng.integers(V))
    inp = dict(vocab=V, kind=kind, width=width, writeTemperature=Tw, retemperAt=retemper_at, temperature=T, alpha=alpha,
               tokens=[int(rng.integers(V)), y], logits=f32(rng.normal(0, 1.5, V)).tolist(), **entries)
    path = tmp_path / "input.json"
    path.write_text(json.dumps(inp))
    out = subprocess.run([BENCH, "token-loss", str(path)], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout)
    loss, grad = numpy_loss(inp)
    assert abs(got["loss"] - loss) <= 1e-5 * max(1.0, abs(loss)), (got["loss"], loss)
    np.testing.assert_allclose(np.array(got["gradient"]), grad, rtol=0, atol=1e-5)
