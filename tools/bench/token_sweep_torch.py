#!/usr/bin/env python3
"""Positions/s of the token-level student (issue 13): kdcache's trainer against the same student and
loss in PyTorch on this CPU, side by side in one run, on one sequence cache.

    python tools/bench/token_sweep_torch.py --kdcache .build/release/kdcache [--work DIR] [--positions 100000]
        [--threads 1,2] [--temperature 1] [--alpha 0.5] [--lr 0.1] [--width 32] [--context 3] [--hash-bits 18]
        [--batch-size 4] [--max-positions N] [--json OUT]

Data: tools/bench/token_sweep_data.py's synthetic V = 49,152 top-k:32 cache of ≥ --positions
positions in --work (written once, not timed), read through tools/python/kdcache's
`TokenDistillationDataset` at --temperature (a declared `retemper_at`, so p_T and r_T are exact).

The student (contract13.md): at position j the hashed n-grams of the context ending at t_j, orders
1…n (n = --context): `h_o = hash(o, t_{j−o+1} … t_j) mod 2^b` (positions before the record's
start hash as id −1; the hash is an FNV-style multiply-xor in int64: its cost, not its values, is
what must match kdcache's), an embedding bag E [2^b × d] (mean of the n rows), then `z = W·h + c`
over the full vocabulary V, `q_T = softmax(z / T)`. Loss per position:
`(1 − α)·CE(t_{j+1}, q_1) + α·T²·KD_T`, KD_T the tail-bucket KL (kdcache.torch.tail_bucket_kl),
averaged over the batch's positions; plain SGD at --lr on E, W and c. Batches are --batch-size
records (all their positions), in record order, one epoch (or the first --max-positions positions).

Timed: everything per batch — reading and decoding the records, hashing, forward, backward, the
step — with `torch.set_num_threads(t)` for each t in --threads. Prints positions/s per thread count.

kdcache's side: `kdcache sweep --data D --logits C --out DIR --temperature T --alpha α --lr LR
--seeds 1 --epochs 1 --width d --context n --hash-bits b --workers 1 [--max-positions N]` (a token sweep of
one configuration), its positionsPerSecond from DIR/results.jsonl; when the binary has no token sweep
yet (it refuses a sequence cache), this says so and prints PyTorch's figures alone: no number is made up.
Then the ratio kdcache / PyTorch at each thread count.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools/python"))
sys.path.insert(0, str(ROOT / "tools/bench"))
import kdcache  # noqa: E402
from kdcache.torch import tail_bucket_kl  # noqa: E402
from token_sweep_data import make  # noqa: E402

FNV_PRIME = 1099511628211
FNV_OFFSET = -3750763034362895579   # 14695981039346656037 as a signed int64


def ngram_ids(tokens, context: int, bits: int):
    """[B, L − 1, n] hashed n-gram ids of the contexts ending at t_0 … t_{L−2} (torch int64)."""
    import torch
    B, L = tokens.shape
    P = L - 1
    pad = torch.full((B, context - 1), -1, dtype=torch.int64)
    t = torch.cat([pad, tokens[:, :P]], dim=1)          # t[:, j + n − 1] = t_j
    out = []
    for order in range(1, context + 1):
        h = torch.full((B, P), FNV_OFFSET ^ order, dtype=torch.int64)
        for back in range(order - 1, -1, -1):           # t_{j−back}, oldest first
            h = (h ^ t[:, context - 1 - back: context - 1 - back + P]) * FNV_PRIME
        out.append(h & ((1 << bits) - 1))
    return torch.stack(out, dim=-1)


class Student:
    """E [2^b, d] (mean bag), W [V, d], c [V]; seeded initialisation (small normal E and W, c = 0)."""

    def __init__(self, vocab: int, width: int, bits: int, seed: int = 0):
        import torch
        g = torch.Generator().manual_seed(seed)
        self.E = (torch.randn(1 << bits, width, generator=g) * 0.1).requires_grad_()
        self.W = (torch.randn(vocab, width, generator=g) * (1 / width ** 0.5)).requires_grad_()
        self.c = torch.zeros(vocab).requires_grad_()
        self.params = [self.E, self.W, self.c]

    def logits(self, ids):
        import torch.nn.functional as F
        h = F.embedding_bag(ids, self.E, mode="mean")   # ids [M, n] → [M, d]
        return F.linear(h, self.W, self.c)


def train_torch(cache_path: Path, threads: int, args) -> dict:
    """One epoch (or --max-positions positions) of the student on the cache; positions/s."""
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    with kdcache.open(str(cache_path)) as cache:
        ds = kdcache.TokenDistillationDataset(cache, temperature=args.temperature, batch_size=args.batch_size)
        vocab = int(cache.sequence_teacher(None)[1]["sequence"]["vocab_size"])
        student = Student(vocab, args.width, args.hash_bits)
        opt = torch.optim.SGD(student.params, lr=args.lr)
        T, a = args.temperature, args.alpha
        positions, losses = 0, []
        started = time.perf_counter()
        for batch in ds:
            mask = batch["position_mask"]
            ids = ngram_ids(batch["input_ids"], args.context, args.hash_bits)[mask]          # [M, n]
            nxt = batch["input_ids"][:, 1:][mask]
            z = student.logits(ids)                                                          # [M, V]
            ones = torch.ones(len(nxt), dtype=torch.bool)
            kd = tail_bucket_kl(z, batch["target_ids"][mask], batch["target_logprobs"][mask], batch["log_tail"][mask], ones, T)
            loss = (1 - a) * F.cross_entropy(z, nxt) + a * T * T * kd
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            positions += len(nxt)
            losses.append(float(loss.detach()))
            if args.max_positions and positions >= args.max_positions:
                break
        seconds = time.perf_counter() - started
    if not np.isfinite(losses).all():
        raise SystemExit(f"token_sweep_torch: the PyTorch loss became non-finite at {threads} thread(s); lower --lr")
    return {"threads": threads, "positions": positions, "seconds": seconds, "positions_per_second": positions / seconds,
            "first_loss": losses[0], "last_loss": losses[-1]}


def run_kdcache(binary: str, data: Path, cache: Path, args) -> dict | None:
    """kdcache's token sweep of one configuration; None (with the reason printed) when it has none."""
    out = Path(tempfile.mkdtemp(prefix="token-sweep-bench-"))
    command = [binary, "sweep", "--data", str(data), "--logits", str(cache), "--out", str(out / "sweep"),
               "--temperature", str(args.temperature), "--alpha", str(args.alpha), "--lr", str(args.lr), "--seeds", "1",
               "--epochs", "1", "--width", str(args.width), "--context", str(args.context), "--hash-bits", str(args.hash_bits),
               "--workers", "1"] + (["--max-positions", str(args.max_positions)] if args.max_positions else [])
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    results = out / "sweep" / "results.jsonl"
    try:
        if proc.returncode != 0 or not results.exists():
            why = (proc.stderr or proc.stdout).strip().splitlines()
            print(f"kdcache: skipped — this kdcache has no token sweep yet ({why[0] if why else f'status {proc.returncode}'}); "
                  "PyTorch's figures alone follow, no ratio", flush=True)
            return None
        runs = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
        runs = [r for r in runs if r.get("sweep") == "token" and r.get("alpha") == args.alpha]
        if len(runs) != 1:
            print(f"kdcache: skipped — {results} holds {len(runs)} token runs at α {args.alpha}, not 1", flush=True)
            return None
        r = runs[0]
        if r.get("diverged"):
            raise SystemExit("token_sweep_torch: kdcache's run diverged; lower --lr")
        return {"positions": r["trainPositions"], "seconds": r["trainSeconds"], "positions_per_second": r["positionsPerSecond"],
                "process_seconds": wall, "validPerplexity": r.get("validPerplexity")}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kdcache", required=True, help="the kdcache binary (release)")
    ap.add_argument("--work", default=".build-bench/token-sweep")
    ap.add_argument("--positions", type=int, default=100_000)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--temperature", type=float, default=1.0, help="T of the KD term; the synthetic cache declares T = 1 only (the cost does not depend on T)")
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--context", type=int, default=3)
    ap.add_argument("--hash-bits", type=int, default=18)
    ap.add_argument("--batch-size", type=int, default=4, help="records per PyTorch step (each of 127 positions)")
    ap.add_argument("--max-positions", type=int, default=0, help="stop both sides after this many positions (0: one epoch)")
    ap.add_argument("--json")
    return ap.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    """Both sides, printed as they finish; the figures (kdcache None when it has no token sweep)."""
    data, cache, positions = make(args.kdcache, Path(args.work), args.positions, 32, 128)
    print(f"token sweep bench: {cache} ({positions} positions, V = 49152, top-k:32), T {args.temperature}, α {args.alpha}, "
          f"lr {args.lr}, width {args.width}, context {args.context}, hash bits {args.hash_bits}; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    report = {"positions": positions, "load_before": os.getloadavg()[0], "torch": [], "kdcache": None}
    report["kdcache"] = run_kdcache(args.kdcache, data, cache, args)
    if report["kdcache"]:
        k = report["kdcache"]
        print(f"kdcache sweep (1 worker): {k['positions_per_second']:.0f} positions/s ({k['positions']} positions in {k['seconds']:.1f} s)", flush=True)
    for t in (int(x) for x in args.threads.split(",")):
        r = train_torch(cache, t, args)
        report["torch"].append(r)
        line = f"PyTorch {t} thread{'s' if t > 1 else ''}: {r['positions_per_second']:.0f} positions/s ({r['positions']} positions in {r['seconds']:.1f} s)"
        if report["kdcache"]:
            r["ratio"] = report["kdcache"]["positions_per_second"] / r["positions_per_second"]
            line += f"; kdcache / PyTorch = {r['ratio']:.2f}×"
        print(line, flush=True)
    report["load_after"] = os.getloadavg()[0]
    print(f"load average after: {report['load_after']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return report


def main() -> None:
    run(parse())


if __name__ == "__main__":
    main()
