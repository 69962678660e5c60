"""kdcache.torch's sequence KD losses against dense KD on a small vocabulary (V = 50): the tail-bucket
KL equals dense KD when k = V and its gradient is exact; for k < V its bias is measured (and bounded:
grouping the tail can only lower a KL); the sampled-KD loss is unbiased for the dense cross-entropy."""
import numpy as np
import pytest
import torch

from _sequence_support import V, dataset, log_softmax, sequences, write_cache, zipf_logits

import kdcache
from kdcache.tokens import sampled_weights
from kdcache.torch import sampled_kd_loss, tail_bucket_kl
from kdcache.writer import draw_entries


def _batch(tmp_path, seqs, k, T=1.0):
    data = dataset(tmp_path)
    path = write_cache(tmp_path / f"k{k}.lmdb", data, seqs, top_k=k, dtype="f32", retemper_at=[2.0])
    c = kdcache.open(str(path))
    return c, next(iter(kdcache.TokenDistillationDataset(c, temperature=T, batch_size=len(seqs))))


def _dense_kl(student, teacher_logp, mask):
    logq = torch.log_softmax(student, -1)
    kl = (teacher_logp.exp() * (teacher_logp - logq)).sum(-1)
    return torch.where(mask, kl, torch.zeros_like(kl)).sum() / mask.sum()


def _teacher_dense(seqs, L, T):
    """Dense teacher log p_T [B, L − 1, V] (zeros where padded)."""
    out = np.zeros((len(seqs), L - 1, V))
    for b, (tokens, z) in enumerate(seqs):
        out[b, :len(tokens) - 1] = log_softmax(z[:len(tokens) - 1] / T)
    return torch.tensor(out, dtype=torch.float32)


@pytest.mark.parametrize("T", [1.0, 2.0])
def test_the_tail_bucket_loss_is_dense_kd_when_k_is_v(tmp_path, T):
    seqs = sequences(11)
    c, batch = _batch(tmp_path, seqs, V, T)
    with c:
        L = batch["input_ids"].shape[1]
        student = torch.randn(len(seqs), L - 1, V, generator=torch.Generator().manual_seed(0), requires_grad=True)
        ours = tail_bucket_kl(student, batch["target_ids"], batch["target_logprobs"], batch["log_tail"], batch["position_mask"])
        dense = _dense_kl(student, _teacher_dense(seqs, L, T), batch["position_mask"])
        assert torch.isfinite(ours) and abs(ours.item() - dense.item()) < 1e-5 * max(1.0, dense.item())
        g_ours, = torch.autograd.grad(ours, student)
        g_dense, = torch.autograd.grad(_dense_kl(student, _teacher_dense(seqs, L, T), batch["position_mask"]), student)
        assert torch.allclose(g_ours, g_dense, atol=1e-6)


def _closed_form(student, ids, teacher_logp, log_tail, mask):
    """KL with the tail bucket written out: Σ_S p (log p − log q_i) + r (log r − log(1 − Σ_S q))."""
    q = torch.softmax(student, -1)
    q_kept = q.gather(-1, ids)
    p = teacher_logp.exp()
    r = log_tail.exp()
    kl = (p * (teacher_logp - q_kept.log())).sum(-1) + r * (log_tail - torch.log1p(-q_kept.sum(-1)))
    return torch.where(mask, kl, torch.zeros_like(kl)).sum() / mask.sum()


def test_the_tail_bucket_gradient_on_kept_logits_is_q_minus_p(tmp_path):
    seqs = sequences(12)
    c, batch = _batch(tmp_path, seqs, 8)
    with c:
        L = batch["input_ids"].shape[1]
        student = torch.randn(len(seqs), L - 1, V, generator=torch.Generator().manual_seed(1), dtype=torch.float64, requires_grad=True)
        m, ids = batch["position_mask"], batch["target_ids"]
        lp, lt = batch["target_logprobs"].double(), batch["log_tail"].double()
        ours = tail_bucket_kl(student, ids, torch.where(m[..., None], lp, 0), torch.where(m, lt, -1.0), m)
        closed = _closed_form(student, ids, torch.where(m[..., None], lp, 0), torch.where(m, lt, -1.0), m)
        g_ours, = torch.autograd.grad(ours, student)
        g_closed, = torch.autograd.grad(closed, student)
        assert abs(ours.item() - closed.item()) < 1e-5 and torch.allclose(g_ours, g_closed, atol=1e-6)
        q = torch.softmax(student.detach(), -1).gather(-1, ids)
        analytic = (q - lp.exp()) / m.sum()
        assert torch.allclose(g_ours.gather(-1, ids)[m], analytic[m], atol=1e-6)


def test_the_tail_bucket_bias_against_dense_kd_is_measured_and_bounded(tmp_path):
    seqs = sequences(13)
    rows = []
    for k in (1, 4, 16, 32):
        (tmp_path / f"k{k}").mkdir()
        c, batch = _batch(tmp_path / f"k{k}", seqs, k)
        with c:
            L = batch["input_ids"].shape[1]
            student = torch.randn(len(seqs), L - 1, V, generator=torch.Generator().manual_seed(2))
            m = batch["position_mask"]
            ours = tail_bucket_kl(student, batch["target_ids"], batch["target_logprobs"], batch["log_tail"], m).item()
            dense = _dense_kl(student, _teacher_dense(seqs, L, 1.0), m).item()
            rows.append((k, ours, dense))
    for k, ours, dense in rows:
        print(f"k = {k:2d}: tail-bucket KL {ours:.4f}, dense KL {dense:.4f}, bias {ours - dense:+.4f} ({(ours - dense) / dense:+.1%})")
        assert ours <= dense + 1e-5, "grouping the tail into one bucket can only lower a KL"
        assert dense - ours > 1e-4, "the bias is real for k < V"
    biases = [dense - ours for _, ours, dense in rows]
    assert biases == sorted(biases, reverse=True), "keeping more ids leaves less bias"


@pytest.mark.parametrize("T,r", [(1.0, None), (2.0, 0), (0.5, 1)])
def test_sampled_kd_is_unbiased_for_the_dense_cross_entropy(T, r):
    rng = np.random.default_rng(3)
    z = zipf_logits(rng, 8, V)
    lp = log_softmax(z)
    student = torch.tensor(rng.normal(size=(8, V)))
    truth = -(torch.tensor(np.exp(log_softmax(z / T))) * torch.log_softmax(student, -1)).sum(-1).mean().item()
    N, alphas = 4, [1 / 2.0, 1 / 0.5]
    losses = []
    for seed in range(600):
        d, ids, counts, drawn, sums = draw_entries(lp, N, seed, 0, alphas)
        pos = np.repeat(np.arange(8), d)
        slot = np.arange(len(ids)) - np.repeat(np.cumsum(d) - d, d)
        w = np.ones(len(ids)) if r is None else sampled_weights(drawn, sums[pos, r], alphas[r])
        grid = {name: np.zeros((8, N)) for name in ("ids", "counts", "w")}
        for name, values in (("ids", ids), ("counts", counts), ("w", w)):
            grid[name][pos, slot] = values
        losses.append(sampled_kd_loss(student, torch.tensor(grid["ids"]).long(), torch.tensor(grid["counts"]), torch.tensor(grid["w"]),
                                      torch.ones(8, dtype=torch.bool), N).item())
    mean, se = float(np.mean(losses)), float(np.std(losses, ddof=1) / np.sqrt(len(losses)))
    print(f"T = {T}: sampled-KD mean {mean:.4f} ± {se:.4f} (SE) over {len(losses)} seeds, dense cross-entropy {truth:.4f}")
    assert abs(mean - truth) < 4 * se and se < 0.05 * truth
