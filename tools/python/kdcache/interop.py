"""Imports of the top-k layouts peers use, into a `SequenceWriter` (FORMAT.md §3.6–3.7).

Position conventions, read from their code:
- **axolotl** KD rows (`src/axolotl/integrations/kd/chat_template.py`, `trainer.py`): `target_token_ids[i]`
  and `target_logprobs[i]` sit at input index i and hold the teacher's distribution *of token i* (the
  trainer shifts: student logits `[:, :-1]` against targets `[:, 1:]`); row 0 has no teacher data
  (padding, masked). `target_logprobs` are at the dataset's generation temperature, and
  `ChatTemplateStrategyWithKDv2` renormalizes them over the kept ids (the tail mass is lost).
- **vLLM** `prompt_logprobs`: a list as long as the prompt, `None` first, then at index i a dict
  id → logprob (a float or a `Logprob` with `.logprob`) of token i given tokens 0…i−1; it holds the
  top-k plus the prompt token itself.

kdcache's position j predicts token j+1, so both map as ours[j] = theirs[j + 1], j = 0 … L − 2. A
shifted input is caught by `check_alignment`: the teacher's top-1 is the next token far more often
at the true alignment than one position off, for any teacher better than chance.
"""
from __future__ import annotations

import warnings

import numpy as np


def alignment_rates(pairs) -> dict:
    """Over (tokens [L], top-1 ids [L − 1]) pairs: how often the top-1 at position j equals token
    j + 1 (`next`, kdcache's convention), token j (`same`: shifted one late) and token j + 2 (`after`:
    one early), with the number of positions compared."""
    hits = {"next": 0, "same": 0, "after": 0}
    n = n2 = 0
    for tokens, top1 in pairs:
        t, a = np.asarray(tokens), np.asarray(top1)
        hits["next"] += int((a == t[1:]).sum())
        hits["same"] += int((a == t[:-1]).sum())
        hits["after"] += int((a[:-1] == t[2:]).sum())
        n, n2 = n + len(a), n2 + max(len(a) - 1, 0)
    return {"positions": n, "next": hits["next"] / max(n, 1), "same": hits["same"] / max(n, 1), "after": hits["after"] / max(n2, 1)}


def check_alignment(pairs, source: str, min_positions: int = 16, margin: float = 0.1) -> dict:
    """Refuses (ValueError) an input whose top-1 matches a neighbouring token more often than the next
    one by `margin`: its positions are shifted. Returns the rates (`alignment_rates`)."""
    rates = alignment_rates(pairs)
    if rates["positions"] >= min_positions:
        best = max(("same", "after"), key=rates.get)
        if rates[best] > rates["next"] + margin:
            off = "one position late (row i holds the prediction after token i)" if best == "same" else "one position early"
            raise ValueError(f"{source}: the positions look shifted, {off}: the teacher's top-1 is token j+1 at {rates['next']:.1%} of "
                             f"{rates['positions']} positions but token {'j' if best == 'same' else 'j+2'} at {rates[best]:.1%}. kdcache's "
                             f"position j predicts token j+1; pass rows in the layout named (axolotl: row i = distribution of token i)")
    return rates


def _warn_renormalized(tails: list, source: str) -> None:
    lost = np.concatenate([np.asarray(t) for t in tails]) if tails else np.zeros(0)
    if len(lost) and (lost < -13.8).mean() > 0.5:   # tail mass below 1e-6 at most positions
        warnings.warn(f"{source}: the kept probabilities sum to ≈ 1 at most positions: they were renormalized over the top-k, "
                      f"so the teacher's tail mass is lost (stored as ≈ 0; the tail bucket of the KD loss will be wrong)")


def _write(writer, start: int, rows: list, source: str) -> dict:
    """Checks alignment over all rows, then writes them in one transaction."""
    rates = check_alignment(((t, np.take_along_axis(ids, lp.argmax(1)[:, None], 1)[:, 0]) for t, ids, lp in rows), source)
    with np.errstate(divide="ignore", invalid="ignore"):
        _warn_renormalized([np.log1p(-np.minimum(np.exp(lp[:, :writer.top_k]).sum(1), 1)) for _, _, lp in rows], source)
    writer.write_top_k(start, rows)
    return rates


def import_axolotl_rows(writer, start: int, rows) -> dict:
    """Writes axolotl KD rows (dicts with `input_ids` [L], `target_token_ids` [L][K], `target_logprobs`
    [L][K], optional `target_mask`) as samples start, start+1, …: ours[j] = row[j + 1]. The
    log-probabilities must be at the writer's T_w. Rows whose positions 1…L−1 hold padding (−inf)
    are refused: kdcache stores a distribution at every position. Returns the alignment rates."""
    out = []
    for r, row in enumerate(rows):
        tokens = np.asarray(row["input_ids"], dtype=np.int64)
        ids = np.asarray(row["target_token_ids"], dtype=np.int64)[1:]
        lp = np.asarray(row["target_logprobs"], dtype=np.float64)[1:]
        if ids.shape[0] != len(tokens) - 1 or lp.shape != ids.shape:
            raise ValueError(f"axolotl row {r}: {len(tokens)} input ids but targets of shape {ids.shape} / {lp.shape} (expected [{len(tokens)}, K])")
        empty = np.flatnonzero(~np.isfinite(lp).any(axis=1))
        if len(empty):
            raise ValueError(f"axolotl row {r}: input index {int(empty[0]) + 1} holds no teacher distribution (padding); "
                             f"kdcache stores one at every position: trim the row to where teacher data starts")
        out.append((tokens, ids, lp))
    return _write(writer, start, out, "axolotl rows")


def _entry_logprob(v) -> float:
    return float(v.logprob if hasattr(v, "logprob") else v)


def import_vllm_prompt_logprobs(writer, start: int, prompts) -> dict:
    """Writes vLLM prompts, (prompt_token_ids [L], prompt_logprobs [None, {id: logprob}, …]) pairs,
    as samples start, start+1, …: ours[j] = the top-k of prompt_logprobs[j + 1] by log p (ties to
    the lower id), k = the writer's `top_k`; each dict must hold at least k ids. Returns the
    alignment rates."""
    out, k = [], writer.top_k
    for r, (tokens, entries) in enumerate(prompts):
        tokens = np.asarray(tokens, dtype=np.int64)
        if len(entries) != len(tokens) or (len(entries) and entries[0] is not None):
            raise ValueError(f"vLLM prompt {r}: prompt_logprobs must have one entry per prompt token, None first "
                             f"(got {len(entries)} entries for {len(tokens)} tokens, first {type(entries[0]).__name__ if entries else None})")
        ids, lp = np.zeros((len(tokens) - 1, k), np.int64), np.zeros((len(tokens) - 1, k))
        for j, d in enumerate(entries[1:]):
            if d is None or len(d) < k:
                raise ValueError(f"vLLM prompt {r}: prompt_logprobs[{j + 1}] has {0 if d is None else len(d)} ids, the teacher keeps {k}")
            best = sorted(((-_entry_logprob(v), int(i)) for i, v in d.items()))[:k]
            ids[j], lp[j] = [i for _, i in best], [-v for v, _ in best]
        out.append((tokens, ids, lp))
    return _write(writer, start, out, "vLLM prompt_logprobs")
