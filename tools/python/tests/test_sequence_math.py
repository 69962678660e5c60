"""FORMAT.md §3.8 against dense numpy values on Zipf-like logits: exact re-tempering at T_w and at
declared temperatures within the f16 bound derived below, the interval elsewhere (it contains the
truth and is attained by flat and packed tails), and sampled-record weights.

The f16 bound. The writer rounds each float64 value x once to f16: |x̃ − x| ≤ u·|x| + e with
u = 2^-11 (half an ulp, relative) and e = 2^-25 (half the subnormal spacing). The reader computes
log p_T(i) = a·l_i − log Z, log Z = logaddexp(LSE_S(a·l), s) in float64. LSE and logaddexp are
1-Lipschitz in the max-norm, so
  |Δ log p_T(i)| ≤ a(u|l_i| + e) + max(a(u·max_S|l| + e), u|s| + e),
  |Δ log tail_T| ≤ (u|s| + e) + max(a(u·max_S|l| + e), u|s| + e),
with s the stored log tail sum (log r at T_w, a = 1)."""
import numpy as np
import pytest

from _sequence_support import V, dataset, log_softmax, sequences, write_cache, zipf_logits

import kdcache
from kdcache.tokens import retemper_exact, retemper_interval, tail_sum_interval

U, E = 2.0 ** -11, 2.0 ** -25
TEMPS = [0.5, 2.0]


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("seqmath")
    data, seqs = dataset(tmp), sequences(5)
    out = {dtype: write_cache(tmp / f"{dtype}.lmdb", data, seqs, dtype=dtype, retemper_at=TEMPS, top_k=6) for dtype in ("f16", "f32")}
    return out, seqs


def _truth(z, ids, T):
    """Dense log p_T of the kept ids and the log tail mass at T."""
    lp = log_softmax(z / T)
    kept = np.take_along_axis(lp, ids, 1)
    with np.errstate(divide="ignore"):
        return kept, np.log1p(-np.exp(kept).sum(1))


def _bound(stored_lp, stored_sum, a):
    shared = np.maximum(a * (U * np.abs(stored_lp).max(1) + E), U * np.abs(stored_sum) + E)
    return a * (U * np.abs(stored_lp) + E) + shared[:, None], U * np.abs(stored_sum) + E + shared


@pytest.mark.parametrize("T", [1.0] + TEMPS)
def test_exact_retempering_at_declared_temperatures_is_within_the_f16_bound(caches, T):
    paths, seqs = caches
    worst = renormalized_worst = 0.0
    with kdcache.open(str(paths["f16"])) as c:
        ds = kdcache.TokenDistillationDataset(c, temperature=T, as_torch=False)
        assert ds.exact
        for i, (tokens, z) in enumerate(seqs):
            rec, item = c.sequence(i), ds[i]
            P = len(tokens) - 1
            kept, tail = _truth(z[:P], item["target_ids"], T)
            a = 1.0 / T
            s = rec.log_tail.astype(float) if T == 1.0 else rec.sums[:, TEMPS.index(T)].astype(float)
            b_kept, b_tail = _bound(rec.log_p.astype(float), s, a)
            err = np.abs(item["target_logprobs"] - kept)
            assert (err <= b_kept).all(), float((err - b_kept).max())
            assert (np.abs(item["log_tail"] - tail) <= b_tail).all()
            worst = max(worst, float((err / b_kept).max()))
            renormalized = a * rec.log_p.astype(float) - np.log(np.exp(a * rec.log_p.astype(float)).sum(1, keepdims=True))
            renormalized_worst = max(renormalized_worst, float((np.abs(renormalized - kept) / b_kept).max()))
    print(f"T = {T}: worst error / f16 bound = {worst:.3f}; renormalizing over the top-k instead: {renormalized_worst:.1f}× the bound")
    assert worst > 0 and renormalized_worst > 1, "the bound must be attainable in scale and the tail sums must matter"


def test_f32_records_are_exact_to_float32_rounding(caches):
    paths, seqs = caches
    with kdcache.open(str(paths["f32"])) as c:
        ds = kdcache.TokenDistillationDataset(c, temperature=2.0, as_torch=False)
        for i, (tokens, z) in enumerate(seqs):
            item = ds[i]
            kept, tail = _truth(z[:len(tokens) - 1], item["target_ids"], 2.0)
            assert np.abs(item["target_logprobs"] - kept).max() < 1e-5 and np.abs(item["log_tail"] - tail).max() < 1e-5


@pytest.mark.parametrize("a", [0.3, 0.7, 1.5, 3.0])
def test_the_interval_contains_the_truth_on_zipf_logits(a):
    rng = np.random.default_rng(int(a * 10))
    z = zipf_logits(rng, 200, V)
    lp = log_softmax(z)
    for k in (1, 4, 16):
        order = np.argsort(-lp, 1, kind="stable")
        kept, rest = np.take_along_axis(lp, order[:, :k], 1), np.take_along_axis(lp, order[:, k:], 1)
        truth = np.exp(a * rest).sum(1)
        lo, hi = tail_sum_interval(kept, np.log(np.exp(rest).sum(1)), V, a)
        assert (lo <= truth * (1 + 1e-12)).all() and (truth <= hi * (1 + 1e-12)).all()
        assert (hi - lo > 1e-6 * hi).all(), "a real interval off T_w"
        (t_lo, t_hi), (p_lo, p_hi) = retemper_interval(kept, np.log(np.exp(rest).sum(1)), V, a)
        p_true = np.exp(a * kept) / (np.exp(a * kept).sum(1) + truth)[:, None]
        assert (p_lo <= p_true * (1 + 1e-12)).all() and (p_true <= p_hi * (1 + 1e-12)).all()
        tail_true = truth / (np.exp(a * kept).sum(1) + truth)
        assert (t_lo <= tail_true * (1 + 1e-12)).all() and (tail_true <= t_hi * (1 + 1e-12)).all()


def _with_tail(kept_p, tail_p):
    """log p of one position (kept first, then the tail ids), and its log tail mass."""
    p = np.concatenate([kept_p, tail_p])
    assert abs(p.sum() - 1) < 1e-12
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(kept_p)[None, :], np.log([tail_p.sum()]), np.log(tail_p)


@pytest.mark.parametrize("a", [0.5, 2.0])
def test_the_interval_is_attained_by_a_flat_and_by_a_packed_tail(a):
    kept = np.array([0.4, 0.2, 0.1])
    m, r = V - 3, 0.3
    lp, lt, tail = _with_tail(kept, np.full(m, r / m))                        # flat: E
    lo, hi = tail_sum_interval(lp, lt, V, a)
    flat_end = lo if a > 1 else hi
    assert np.isclose(flat_end[0], np.exp(a * tail).sum(), rtol=1e-12)
    kept, r = np.array([0.4, 0.2, 0.15]), 0.25                               # p* = min(min_S p, r) = 0.15: n = 1, ρ = 0.1
    packed = np.zeros(m)
    packed[0], packed[1] = 0.15, 0.1
    lp, lt, tail = _with_tail(kept, packed)
    lo, hi = tail_sum_interval(lp, lt, V, a)
    packed_end = hi if a > 1 else lo
    with np.errstate(divide="ignore"):
        assert np.isclose(packed_end[0], np.exp(a * tail).sum(), rtol=1e-9)


def test_an_undeclared_temperature_is_refused_unless_approximate_and_then_in_the_interval(caches):
    paths, seqs = caches
    with kdcache.open(str(paths["f32"])) as c:
        with pytest.raises(ValueError, match="T = 3.0 is neither T_w"):
            kdcache.TokenDistillationDataset(c, temperature=3.0)
        with pytest.warns(UserWarning, match="not declared"):
            ds = kdcache.TokenDistillationDataset(c, temperature=3.0, allow_approximate=True, as_torch=False)
        assert not ds.exact
        rec, item = c.sequence(0), ds[0]
        (t_lo, t_hi), _ = retemper_interval(rec.log_p.astype(float), rec.log_tail.astype(float), V, 1 / 3)
        tail = np.exp(item["log_tail"])
        assert ((t_lo - 1e-9 <= tail) & (tail <= t_hi + 1e-9)).all()
        _, true_tail = _truth(seqs[0][1][:len(seqs[0][0]) - 1], item["target_ids"], 3.0)
        assert ((t_lo - 1e-6 <= np.exp(true_tail)) & (np.exp(true_tail) <= t_hi + 1e-6)).all()


def test_sampled_weights_turn_p_into_p_at_a_declared_temperature(tmp_path):
    data, seqs = dataset(tmp_path), sequences(6)
    path = write_cache(tmp_path / "s.lmdb", data, seqs, mode="sampled", samples=32, sample_seed=1, dtype="f32", retemper_at=TEMPS)
    with kdcache.open(str(path)) as c:
        for T in [1.0] + TEMPS:
            ds = kdcache.TokenDistillationDataset(c, temperature=T, as_torch=False)
            for i, (tokens, z) in enumerate(seqs):
                item = ds[i]
                used = item["target_counts"] > 0
                lp, lp_T = log_softmax(z[:len(tokens) - 1]), log_softmax(z[:len(tokens) - 1] / T)
                p = np.exp(np.take_along_axis(lp, item["target_ids"], 1))
                p_T = np.exp(np.take_along_axis(lp_T, item["target_ids"], 1))
                assert np.allclose((item["target_weights"] * p)[used], p_T[used], rtol=1e-5)
                assert (item["target_counts"].sum(1) == 32).all()


def test_retemper_exact_at_T_w_returns_the_stored_values():
    lp = np.log(np.array([[0.5, 0.25]]))
    kept, tail = retemper_exact(lp, np.log([0.25]), 1.0)
    assert np.allclose(kept, lp) and np.allclose(tail, np.log(0.25))


def test_an_undeclared_temperature_on_sampled_records_self_normalizes(tmp_path):
    data, seqs = dataset(tmp_path), sequences(7)
    path = write_cache(tmp_path / "s.lmdb", data, seqs, mode="sampled", samples=16, sample_seed=2, dtype="f32", retemper_at=[2.0])
    with kdcache.open(str(path)) as c:
        with pytest.raises(ValueError, match="self-normalized weights"):
            kdcache.TokenDistillationDataset(c, temperature=3.0)
        with pytest.warns(UserWarning, match="biased"):
            ds = kdcache.TokenDistillationDataset(c, temperature=3.0, allow_approximate=True, as_torch=False)
        for i, (tokens, z) in enumerate(seqs):
            item = ds[i]
            assert np.allclose((item["target_counts"] * item["target_weights"]).sum(1), 16)
            lp = log_softmax(z[:len(tokens) - 1])
            p = np.take_along_axis(np.exp(lp), item["target_ids"], 1)
            used = item["target_counts"] > 0
            ratio = np.where(used, item["target_weights"] / p ** (1 / 3 - 1), np.nan)   # ∝ p^(a − 1) within a position
            assert np.allclose(np.nanmax(ratio, 1), np.nanmin(ratio, 1), rtol=1e-4)


def test_minus_infinity_logits_are_zero_probability_and_nan_is_refused(tmp_path):
    """A masked vocabulary (−∞ logits at unused ids) writes as the Swift teacher path takes it: those
    ids get p = 0 and are never kept ahead of a finite one nor drawn; NaN or +∞ is refused."""
    import pytest
    from _sequence_support import dataset, sequences, write_cache
    data = dataset(tmp_path)
    seqs = sequences(seed=3)
    masked = [(t, np.where(np.arange(z.shape[1]) >= 40, -np.inf, z)) for t, z in seqs]
    for mode in ("top-k", "sampled"):
        path = tmp_path / f"masked-{mode}.lmdb"
        write_cache(path, data, masked, mode=mode, **({"top_k": 8} if mode == "top-k" else {"samples": 16}))
        with kdcache.open(str(path)) as c:
            for i in range(len(masked)):
                rec = c.sequence(i)
                assert (rec.ids < 40).all(), f"{mode}: an id with p = 0 was kept or drawn"
    bad = [(seqs[0][0], np.where(np.arange(seqs[0][1].shape[1]) == 3, np.nan, seqs[0][1]))]
    with pytest.raises(ValueError, match="NaN"):
        write_cache(tmp_path / "nan.lmdb", data, bad, top_k=8)


def test_a_teachers_own_top_k_is_checked_over_all_its_entries(tmp_path):
    """Ids and mass beyond the kept k are checked too (as Swift does): a duplicate or excess mass
    among the entries that fold into the tail is refused, and so is a log_tail that would drop them."""
    import pytest
    from _sequence_support import dataset, toy_tokenizer
    data = dataset(tmp_path)
    tokens = [1, 2, 3]
    lp = np.log(np.full((2, 6), 0.1))
    ids = np.tile(np.arange(6), (2, 1))
    with kdcache.SequenceWriter(tmp_path / "c.lmdb", data, name="lm", tokenizer=toy_tokenizer(), top_k=2,
                                retemper_at=[1.0], write_temperature=1.0) as w:
        w.encode_top_k(0, tokens, ids, lp)                       # 0.6 in all: fine, 0.4 folds into the tail
        dup = ids.copy(); dup[1, 5] = 0
        with pytest.raises(ValueError, match="answered twice"):
            w.encode_top_k(0, tokens, dup, lp)
        heavy = lp.copy(); heavy[0, 5] = np.log(0.6)
        with pytest.raises(ValueError, match="sum to 1.1"):
            w.encode_top_k(0, tokens, ids, heavy)
        with pytest.raises(ValueError, match="log_tail is taken only"):
            w.encode_top_k(0, tokens, ids, lp, log_tail=np.log([0.8, 0.8]))
