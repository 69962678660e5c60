#!/usr/bin/env python3
"""Read rate of token-level KD targets into PyTorch batches: a kdcache sequence cache against the
same data in Parquet (pyarrow) and in Hugging Face `datasets`, side by side in one run.

    python tools/bench/token_read_bench.py --bin .build/release/kdcache [--tokens 1000000] [--k 32]

Every path yields the same padded batch: input_ids [B, L], attention_mask, target_ids [B, L−1, k],
target_logprobs [B, L−1, k] (float32), log_tail [B, L−1], as torch tensors. Data: random ids and
Zipf-like log-probabilities (V = 49152), written once (not timed). Prints tokens/s and the ratios.
"""
import argparse
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


def synthetic(n, length, k, equal, seed=0):
    """n samples of (tokens [L], ids [L−1, k], log p [L−1, k] descending); L = `length`, or uniform in
    [length/2, 3·length/2] unless `equal` (texts differ in length)."""
    rng = np.random.default_rng(seed)
    ranks = -1.1 * np.log(np.arange(1, k + 2))
    lp = ranks - np.log(np.exp(ranks).sum() + 2.0)   # k kept + a tail mass
    for _ in range(n):
        L = length if equal else int(rng.integers(length // 2, 3 * length // 2 + 1))
        tokens = rng.integers(0, VOCAB, L)
        ids = np.stack([rng.choice(VOCAB, k, replace=False) for _ in range(L - 1)])
        yield tokens, ids, np.tile(lp[:k], (L - 1, 1)) + rng.normal(0, 1e-3, (L - 1, 1))


def prep(binary, d, n):
    rows = ["id,label,text"] + [f"r{i},{'ab'[i % 2]},text {i}" for i in range(n)]
    (d / "d.csv").write_text("\n".join(rows) + "\n")
    subprocess.run([binary, "prep", d / "d.csv", "--out", d / "d.lmdb", "--text-column", "text", "--label-column", "label",
                    "--hash-bits", "8", "--quiet"], check=True, capture_output=True)
    return d / "d.lmdb"


def write_all(d, data, n, length, k, equal):
    """The cache (Python writer, top-k input) and the same arrays as a Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    tok = kdcache.tokenizer_fingerprint([f"t{i}" for i in range(VOCAB)], None, name="bench")
    cols = {"input_ids": [], "target_ids": [], "target_logprobs": [], "log_tail": []}
    with kdcache.SequenceWriter(d / "c.lmdb", data, name="lm", tokenizer=tok, top_k=k, retemper_at=[1.0]) as w:
        chunk = []
        for i, (tokens, ids, lp) in enumerate(synthetic(n, length, k, equal)):
            chunk.append((tokens, ids, lp))
            cols["input_ids"].append(tokens.astype(np.int32))
            cols["target_ids"].append(ids.reshape(-1).astype(np.int32))
            cols["target_logprobs"].append(lp.reshape(-1).astype(np.float32))
            cols["log_tail"].append(np.log1p(-np.exp(lp).sum(1)).astype(np.float32))
            if len(chunk) == 256:
                w.write_top_k(i + 1 - len(chunk), chunk)
                chunk = []
        if chunk:
            w.write_top_k(n - len(chunk), chunk)
    pq.write_table(pa.table({c: pa.array(v) for c, v in cols.items()}), d / "c.parquet")


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


def read_kdcache(d, batch, k):
    with kdcache.open(str(d / "c.lmdb")) as c:
        return sum(int(b["attention_mask"].sum()) for b in kdcache.TokenDistillationDataset(c, batch_size=batch))


def _arrow_batches(table, batch, k):
    for start in range(0, table.num_rows, batch):
        t = table.slice(start, batch)
        split = [[np.asarray(x) for x in t.column(c).to_numpy(zero_copy_only=False)] for c in ("input_ids", "target_ids", "target_logprobs", "log_tail")]
        yield pad_batch(*split, k)


def read_parquet(d, batch, k):
    import pyarrow.parquet as pq
    return sum(int(b["attention_mask"].sum()) for b in _arrow_batches(pq.read_table(d / "c.parquet"), batch, k))


def hf_dataset(d):
    """The Parquet file as a Hugging Face dataset (its Arrow cache built here, before any timing)."""
    import datasets
    return datasets.Dataset.from_parquet(str(d / "c.parquet"), cache_dir=str(d / "hf")).with_format("numpy")


def read_datasets(ds, batch, k):
    total = 0
    for start in range(0, len(ds), batch):
        rows = ds[start:start + batch]
        total += int(pad_batch(rows["input_ids"], rows["target_ids"], rows["target_logprobs"], rows["log_tail"], k)["attention_mask"].sum())
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=str(ROOT / ".build/release/kdcache"))
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--equal-lengths", action="store_true", help="every text exactly --length tokens (datasets then returns 2-D arrays)")
    a = ap.parse_args()
    n = -(-a.tokens // a.length)
    import datasets  # noqa: F401  (imported before any timing: importing torch alone takes seconds)
    import torch  # noqa: F401
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        t0 = time.perf_counter()
        write_all(d, prep(a.bin, d, n), n, a.length, a.k, a.equal_lengths)
        print(f"wrote {n} samples × {'' if a.equal_lengths else '≈ '}{a.length} tokens (k = {a.k}, f16) in {time.perf_counter() - t0:.1f} s; "
              f"cache {(d / 'c.lmdb').stat().st_size / 1e6:.0f} MB, parquet {(d / 'c.parquet').stat().st_size / 1e6:.0f} MB")
        hf = hf_dataset(d)
        rates = {}
        for name, fn, source in (("kdcache", read_kdcache, d), ("parquet (pyarrow)", read_parquet, d), ("datasets", read_datasets, hf)):
            t0 = time.perf_counter()
            tokens = fn(source, a.batch, a.k)
            rates[name] = tokens / (time.perf_counter() - t0)
            print(f"{name:18s} {rates[name]:12,.0f} tokens/s ({tokens} tokens)", flush=True)
        for name in ("parquet (pyarrow)", "datasets"):
            print(f"kdcache / {name}: {rates['kdcache'] / rates[name]:.2f}×")


if __name__ == "__main__":
    main()
