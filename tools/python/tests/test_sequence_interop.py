"""Imports of axolotl KD rows and vLLM prompt_logprobs (kdcache.interop): their position convention
(row i = the distribution of token i, row 0 empty) becomes ours (position j predicts token j + 1),
and a shifted input is refused because the top-1 = next-token rate collapses."""
import warnings

import numpy as np
import pytest

from _sequence_support import V, dataset, log_softmax, toy_tokenizer, zipf_logits

import kdcache

K = 5


def _teacher(seed, n=6, L=30):
    """n (tokens [L], log p [L − 1, V]) where position j's distribution predicts token j + 1 well."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        tokens = rng.integers(0, V, L)
        z = zipf_logits(rng, L - 1, V)
        z[np.arange(L - 1), tokens[1:]] += 4.0
        out.append((tokens, log_softmax(z)))
    return out


def _top(lp):
    ids = np.argsort(-lp, 1, kind="stable")[:, :K]
    return ids, np.take_along_axis(lp, ids, 1)


def axolotl_rows(teacher, shift=0):
    """axolotl's layout: row i holds the distribution of token i, row 0 padding (-inf, ids 0…K−1);
    `shift` moves the distributions that many rows earlier (a wrong conversion)."""
    rows = []
    for tokens, lp in teacher:
        ids, vals = _top(lp)
        positions = list(zip(ids, vals))
        if shift > 0:
            positions = positions[shift:] + positions[-1:] * shift
        elif shift < 0:
            positions = positions[:1] * -shift + positions[:shift]
        pad = (np.arange(K), np.full(K, -np.inf))
        all_ids, all_vals = (np.stack([x[n] for x in [pad] + positions]) for n in (0, 1))
        rows.append({"input_ids": tokens.tolist(), "target_token_ids": all_ids.tolist(), "target_logprobs": all_vals.tolist(),
                     "target_mask": [[0] * K] + [[1] * K] * (len(tokens) - 1)})
    return rows


def _writer(tmp_path, name="c"):
    return kdcache.SequenceWriter(tmp_path / f"{name}.lmdb", dataset(tmp_path), name="imp", tokenizer=toy_tokenizer(), top_k=K, retemper_at=[1.0])


def test_axolotl_rows_import_with_row_i_plus_1_at_position_i(tmp_path):
    teacher = _teacher(1)
    with _writer(tmp_path) as w:
        rates = kdcache.import_axolotl_rows(w, 0, axolotl_rows(teacher))
    assert rates["next"] > 0.5 > rates["same"] + 0.3
    with kdcache.open(str(tmp_path / "c.lmdb")) as c:
        for i, (tokens, lp) in enumerate(teacher):
            rec, (ids, vals) = c.sequence(i), _top(lp)
            assert rec.tokens.tolist() == tokens.tolist() and rec.ids.tolist() == ids.tolist()
            assert np.allclose(rec.log_p, vals, atol=2e-3)
            assert np.allclose(np.exp(rec.log_tail.astype(float)), 1 - np.exp(vals).sum(1), atol=2e-3)


@pytest.mark.parametrize("shift,which", [(1, "one position early"), (-1, "one position late")])
def test_shifted_axolotl_rows_are_refused(tmp_path, shift, which):
    with _writer(tmp_path) as w:
        with pytest.raises(ValueError, match=f"positions look shifted, {which}"):
            kdcache.import_axolotl_rows(w, 0, axolotl_rows(_teacher(2), shift=shift))
        assert w.pending() == [(0, 6)], "nothing is written"


def test_renormalized_axolotl_rows_warn_that_the_tail_is_lost(tmp_path):
    rows = axolotl_rows(_teacher(3))
    for row in rows:
        lp = np.array(row["target_logprobs"])
        lp[1:] -= np.log(np.exp(lp[1:]).sum(1, keepdims=True))
        row["target_logprobs"] = lp.tolist()
    with _writer(tmp_path) as w, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kdcache.import_axolotl_rows(w, 0, rows)
    assert any("renormalized over the top-k" in str(x.message) for x in caught)


def test_padding_inside_axolotl_rows_is_refused(tmp_path):
    rows = axolotl_rows(_teacher(4))
    rows[2]["target_logprobs"][3] = [-np.inf] * K
    with _writer(tmp_path) as w, pytest.raises(ValueError, match="axolotl row 2: input index 3 holds no teacher distribution"):
        kdcache.import_axolotl_rows(w, 0, rows)


class Logprob:
    """vLLM's `Logprob` shape: `.logprob`, `.rank`, `.decoded_token`."""

    def __init__(self, logprob, rank):
        self.logprob, self.rank, self.decoded_token = logprob, rank, None


def vllm_prompt_logprobs(teacher, shift=0):
    """vLLM's layout: None first, then at index i the top-K of token i's distribution plus token i itself."""
    out = []
    for tokens, lp in teacher:
        entries = [None]
        order = list(range(len(lp)))
        order = order[shift:] + order[-1:] * shift if shift > 0 else order
        for i, j in enumerate(order, start=1):
            ids, _ = _top(lp[j:j + 1])
            d = {int(v): Logprob(float(lp[j, v]), r + 1) for r, v in enumerate(ids[0])}
            d.setdefault(int(tokens[i]), Logprob(float(lp[j, tokens[i]]), 99))
            entries.append(d)
        out.append((tokens.tolist(), entries))
    return out


def test_vllm_prompt_logprobs_import_and_a_shift_is_refused(tmp_path):
    teacher = _teacher(5)
    with _writer(tmp_path) as w:
        kdcache.import_vllm_prompt_logprobs(w, 0, vllm_prompt_logprobs(teacher))
    with kdcache.open(str(tmp_path / "c.lmdb")) as c:
        assert c.sequence(4).ids.tolist() == _top(teacher[4][1])[0].tolist()
    with _writer(tmp_path, "shifted") as w, pytest.raises(ValueError, match="positions look shifted"):
        kdcache.import_vllm_prompt_logprobs(w, 0, vllm_prompt_logprobs(teacher, shift=1))
    with _writer(tmp_path, "bad") as w, pytest.raises(ValueError, match="None first"):
        kdcache.import_vllm_prompt_logprobs(w, 0, [(p[0], p[1][1:]) for p in vllm_prompt_logprobs(teacher)])


def test_a_top_k_import_refuses_tail_sums_off_T_w(tmp_path):
    with kdcache.SequenceWriter(tmp_path / "c.lmdb", dataset(tmp_path), name="imp", tokenizer=toy_tokenizer(), top_k=K, retemper_at=[2.0]) as w:
        with pytest.raises(ValueError, match="tail sums at T_w only"):
            kdcache.import_axolotl_rows(w, 0, axolotl_rows(_teacher(6)))
