#!/usr/bin/env python3
"""Read rate of token-level KD targets into PyTorch batches: a kdcache sequence cache against the
same data as peers keep it, side by side in one run.

    python tools/bench/token_read_bench.py --bin .build/release/kdcache [--tokens 1000000] [--k 32] [--reps 3]

Every path yields the same padded batch (checked before timing): input_ids [B, L], attention_mask,
target_ids [B, L−1, k] (int64), target_logprobs [B, L−1, k] (float32, −inf padding), log_tail [B, L−1].
- kdcache: `TokenDistillationDataset` (every record checked: CRC, ids < V, distinct, ordered, finite),
  in the calling thread (the figure the ratios use) and with one thread decoding ahead (`prefetch=1`).
- datasets, axolotl layout: the columns axolotl's KD chat-template strategy stores (`input_ids`,
  `target_token_ids` / `target_logprobs` / `target_mask` as [seq][k] lists, so int64 / float64 /
  int64 in Arrow, as `datasets` infers them from Python lists), fetched as a DataLoader does
  (`__getitems__`), either in the default Python format with a collator that pads the lists position
  by position and calls `torch.tensor` (axolotl's DataCollatorForKD), or in torch format padded with
  `pad_sequence`.
- datasets, flat layout: one flat int32 / float32 array per sample and column, numpy format.
- Parquet via pyarrow: the flat layout, the whole table read, then sliced per batch.
Data: random ids and Zipf-like log-probabilities (V = 49152), written once (not timed). Prints
tokens/s (median of --reps, interleaved) and kdcache's ratio to each.
"""
import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools/python"))
import kdcache  # noqa: E402

VOCAB = 49152
KEYS = ("input_ids", "attention_mask", "target_ids", "target_logprobs", "log_tail")


def synthetic(n, length, k, equal, seed=0):
    """n samples of (tokens [L], ids [L−1, k] distinct per position, log p [L−1, k] descending); L =
    `length`, or uniform in [length/2, 3·length/2] unless `equal`."""
    rng = np.random.default_rng(seed)
    ranks = -1.1 * np.log(np.arange(1, k + 2))
    lp = ranks - np.log(np.exp(ranks).sum() + 2.0)   # k kept + a tail mass
    for _ in range(n):
        L = length if equal else int(rng.integers(length // 2, 3 * length // 2 + 1))
        base, step = rng.integers(0, VOCAB, (L - 1, 1)), rng.integers(1, VOCAB // k, (L - 1, 1))
        ids = (base + np.arange(k) * step) % VOCAB        # j·step < V: distinct within a position
        yield rng.integers(0, VOCAB, L), ids, np.tile(lp[:k], (L - 1, 1)) + rng.normal(0, 1e-3, (L - 1, 1))


def prep(binary, d, n):
    rows = ["id,label,text"] + [f"r{i},{'ab'[i % 2]},text {i}" for i in range(n)]
    (d / "d.csv").write_text("\n".join(rows) + "\n")
    subprocess.run([binary, "prep", d / "d.csv", "--out", d / "d.lmdb", "--text-column", "text", "--label-column", "label",
                    "--hash-bits", "8", "--quiet"], check=True, capture_output=True)
    return d / "d.lmdb"


def _nested(flat, rows, k, outer):
    """A list<list<…>> Arrow column: `flat` values in rows of k, rows grouped `outer` per sample."""
    import pyarrow as pa
    inner = pa.ListArray.from_arrays(pa.array(np.arange(rows + 1, dtype=np.int32) * k), pa.array(flat))
    return pa.ListArray.from_arrays(pa.array(outer, type=pa.int32()), inner)


def write_cache(d, data, n, length, k, equal):
    """The kdcache cache (Python writer, top-k input, f16)."""
    tok = kdcache.tokenizer_fingerprint([f"t{i}" for i in range(VOCAB)], None, name="bench")
    with kdcache.SequenceWriter(d / "c.lmdb", data, name="lm", tokenizer=tok, top_k=k, retemper_at=[1.0]) as w:
        chunk = []
        for i, seq in enumerate(synthetic(n, length, k, equal)):
            chunk.append(seq)
            if len(chunk) == 256 or i == n - 1:
                w.write_top_k(i + 1 - len(chunk), chunk)
                chunk = []


def stored_columns(d):
    """Per-sample arrays of exactly the values the cache holds (so that every path's batches are equal)."""
    cols = {"input_ids": [], "target_ids": [], "target_logprobs": [], "log_tail": []}
    with kdcache.open(str(d / "c.lmdb")) as c:
        for i in range(len(c)):
            r = c.sequence(i)
            for name, v in zip(cols, (r.tokens, r.ids, r.log_p, r.log_tail)):
                cols[name].append(v.astype(np.float32 if v.dtype.kind == "f" else np.int32))
    return cols


def write_peers(d, cols, k):
    """The flat layout (c.parquet: one flat array per sample and column) and axolotl's (a.parquet)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({c: pa.array([x.reshape(-1) for x in v]) for c, v in cols.items()}), d / "c.parquet")
    P = np.array([len(x) for x in cols["target_ids"]])
    outer, rows = np.concatenate(([0], np.cumsum(P))), int(P.sum())
    flat = {c: np.concatenate([x.reshape(-1) for x in cols[c]]) for c in ("target_ids", "target_logprobs")}
    pq.write_table(pa.table({"input_ids": pa.array([x.astype(np.int64) for x in cols["input_ids"]]),
                             "target_token_ids": _nested(flat["target_ids"].astype(np.int64), rows, k, outer),
                             "target_logprobs": _nested(flat["target_logprobs"].astype(np.float64), rows, k, outer),
                             "target_mask": _nested(np.ones(rows * k, np.int64), rows, k, outer),
                             "log_tail": pa.array([x.astype(np.float64) for x in cols["log_tail"]])}), d / "a.parquet")


def pad_batch(input_ids, ids, lp, tail, k):
    """The common padded batch from per-sample flat arrays (numpy, one slice per sample)."""
    import torch
    B, L = len(input_ids), max(len(x) for x in input_ids)
    out = {"input_ids": np.zeros((B, L), np.int64), "attention_mask": np.zeros((B, L), np.int64),
           "target_ids": np.zeros((B, L - 1, k), np.int64), "target_logprobs": np.full((B, L - 1, k), -np.inf, np.float32),
           "log_tail": np.full((B, L - 1), -np.inf, np.float32)}
    for b in range(B):
        n = len(input_ids[b])
        out["input_ids"][b, :n], out["attention_mask"][b, :n] = input_ids[b], 1
        out["target_ids"][b, :n - 1] = ids[b].reshape(n - 1, k)
        out["target_logprobs"][b, :n - 1] = lp[b].reshape(n - 1, k)
        out["log_tail"][b, :n - 1] = tail[b]
    return {key: torch.from_numpy(v) for key, v in out.items()}


def axolotl_collate(rows):
    """axolotl's DataCollatorForKD on rows in the Python format: per position the lists padded to the
    largest k, per sample rows of padding appended, then `torch.tensor` of the nested lists; the other
    fields padded as `tokenizer.pad` does (right, 0). Padding is −inf (axolotl: −1e9) so that the
    batch equals the others'."""
    import torch
    P, k = max(len(r["target_logprobs"]) for r in rows), max(len(x) for r in rows for x in r["target_logprobs"])
    padded = {"target_logprobs": [], "target_ids": [], "target_mask": []}
    for r in rows:
        per = {"target_logprobs": [], "target_ids": [], "target_mask": []}
        for lp, ids, m in zip(r["target_logprobs"], r["target_token_ids"], r["target_mask"]):
            short = k - len(lp)
            for key, v, fill in (("target_logprobs", lp, -np.inf), ("target_ids", ids, 0), ("target_mask", m, 0)):
                per[key].append(v + [fill] * short if short else v[:k])
        for key, fill in (("target_logprobs", -np.inf), ("target_ids", 0), ("target_mask", 0)):
            per[key].extend([[fill] * k for _ in range(P - len(per[key]))])
            padded[key].append(per[key])
    L = P + 1
    out = {"input_ids": torch.tensor([r["input_ids"] + [0] * (L - len(r["input_ids"])) for r in rows]),
           "attention_mask": torch.tensor([[1] * len(r["input_ids"]) + [0] * (L - len(r["input_ids"])) for r in rows]),
           "log_tail": torch.tensor([r["log_tail"] + [-np.inf] * (P - len(r["log_tail"])) for r in rows], dtype=torch.float)}
    out.update({"target_logprobs": torch.tensor(padded["target_logprobs"], dtype=torch.float),
                "target_ids": torch.tensor(padded["target_ids"], dtype=torch.long), "target_mask": torch.tensor(padded["target_mask"], dtype=torch.int)})
    return out


def torch_collate(rows):
    """Rows in the torch format (a [P, k] tensor per nested column) padded with `pad_sequence`."""
    import torch
    from torch.nn.utils.rnn import pad_sequence

    def pad(key, fill, dtype):
        return pad_sequence([r[key] for r in rows], batch_first=True, padding_value=fill).to(dtype)
    ids = pad("input_ids", 0, torch.long)
    lengths = torch.tensor([len(r["input_ids"]) for r in rows])
    return {"input_ids": ids, "attention_mask": (torch.arange(ids.shape[1])[None, :] < lengths[:, None]).long(),
            "target_ids": pad("target_token_ids", 0, torch.long), "target_logprobs": pad("target_logprobs", -np.inf, torch.float),
            "log_tail": pad("log_tail", -np.inf, torch.float), "target_mask": pad("target_mask", 0, torch.int)}


def read_kdcache(prefetch):
    """kdcache's batches; `prefetch` threads decoding ahead (0: all in the calling thread)."""
    def read(d, batch, k):
        with kdcache.open(str(d / "c.lmdb")) as c:
            yield from kdcache.TokenDistillationDataset(c, batch_size=batch, prefetch=prefetch)
    return read


def read_parquet(d, batch, k):
    import pyarrow.parquet as pq
    table = pq.read_table(d / "c.parquet")
    for start in range(0, table.num_rows, batch):
        t = table.slice(start, batch)
        yield pad_batch(*[[np.asarray(x) for x in t.column(c).to_numpy(zero_copy_only=False)] for c in ("input_ids", "target_ids", "target_logprobs", "log_tail")], k)


def read_flat(ds, batch, k):
    for start in range(0, len(ds), batch):
        rows = ds[start:start + batch]
        yield pad_batch(rows["input_ids"], rows["target_ids"], rows["target_logprobs"], rows["log_tail"], k)


def read_fetched(collate):
    """Batches as a DataLoader makes them from a map-style dataset: `__getitems__`, then `collate`."""
    def read(ds, batch, k):
        for start in range(0, len(ds), batch):
            yield collate(ds.__getitems__(list(range(start, min(start + batch, len(ds))))))
    return read


def hf_datasets(d):
    """The Parquet files as Hugging Face datasets (their Arrow caches built here, before any timing)."""
    import datasets
    flat = datasets.Dataset.from_parquet(str(d / "c.parquet"), cache_dir=str(d / "hf")).with_format("numpy")
    axolotl = datasets.Dataset.from_parquet(str(d / "a.parquet"), cache_dir=str(d / "hf"))
    return flat, axolotl, axolotl.with_format("torch")


def paths(d):
    flat, axolotl, axolotl_torch = hf_datasets(d)
    return {"kdcache": (read_kdcache(0), d), "kdcache, prefetch = 1 (a second thread)": (read_kdcache(1), d),
            "datasets, axolotl layout, python + axolotl collator": (read_fetched(axolotl_collate), axolotl),
            "datasets, axolotl layout, torch + pad_sequence": (read_fetched(torch_collate), axolotl_torch),
            "datasets, flat layout, numpy": (read_flat, flat), "parquet (pyarrow), flat layout": (read_parquet, d)}


def check_same_batches(readers, batch, k):
    """Every path's first batch equals kdcache's on the common keys (values, dtypes, shapes)."""
    import torch
    ref = next(readers["kdcache"][0](readers["kdcache"][1], batch, k))
    for name, (read, source) in readers.items():
        got = next(read(source, batch, k))
        bad = [key for key in KEYS if got[key].dtype != ref[key].dtype or not torch.equal(got[key], ref[key])]
        if bad:
            raise SystemExit(f"{name}: its batch differs from kdcache's in {bad}")


def time_all(readers, batch, k, reps):
    """tokens/s of each path: the median over `reps` passes, the paths interleaved within each pass."""
    rates = {name: [] for name in readers}
    for _ in range(reps):
        for name, (read, source) in readers.items():
            t0 = time.perf_counter()
            tokens = sum(int(b["attention_mask"].sum()) for b in read(source, batch, k))
            rates[name].append(tokens / (time.perf_counter() - t0))
    return {name: statistics.median(r) for name, r in rates.items()}, tokens


def sizes(d):
    mb = {name: sum(f.stat().st_size for f in (d / name).rglob("*") if f.is_file()) if (d / name).is_dir() else (d / name).stat().st_size
          for name in ("c.lmdb", "c.parquet", "a.parquet", "hf")}
    return ", ".join(f"{name} {v / 1e6:,.0f} MB" for name, v in mb.items())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=str(ROOT / ".build/release/kdcache"))
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--equal-lengths", action="store_true", help="every text exactly --length tokens")
    a = ap.parse_args()
    n = -(-a.tokens // a.length)
    import datasets  # (imported before any timing: importing torch alone takes seconds)
    datasets.disable_progress_bars()
    import torch  # noqa: F401
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        t0 = time.perf_counter()
        write_cache(d, prep(a.bin, d, n), n, a.length, a.k, a.equal_lengths)
        write_peers(d, stored_columns(d), a.k)
        readers = paths(d)
        print(f"{n} samples × {'' if a.equal_lengths else '≈ '}{a.length} tokens, k = {a.k}, f16 in the cache, batches of {a.batch}; "
              f"written in {time.perf_counter() - t0:.0f} s; {sizes(d)}", flush=True)
        check_same_batches(readers, a.batch, a.k)
        rates, tokens = time_all(readers, a.batch, a.k, a.reps)
        print(f"{tokens:,} tokens per pass, median of {a.reps} interleaved passes:")
        for name, rate in rates.items():
            ratio = "" if name.startswith("kdcache") else f"   kdcache is {rates['kdcache'] / rate:.2f}× this"
            print(f"  {name:52s} {rate:12,.0f} tokens/s{ratio}")


if __name__ == "__main__":
    main()
