#!/usr/bin/env python3
"""A synthetic token-sweep benchmark set: a dataset store and a V = 49,152 top-k:32 sequence cache of
at least --positions positions (issue 13's speed comparison; tools/bench/token_sweep_torch.py reads it).

    python tools/bench/token_sweep_data.py --bin .build/release/kdcache --out DIR [--positions 100000] [--k 32] [--length 128]

DIR/d.lmdb: `kdcache prep` of n = ceil(positions / (length − 1)) rows (token_read_bench.prep,
prep's default 80/10/10 split). DIR/topk32.lmdb: the Python SequenceWriter (f16, T_w = 1,
retemper_at [1]: top-k input gives the tail sums at T_w only), records of `length` tokens from token_read_bench.synthetic (seed 0: random
ids, k distinct kept ids per position with Zipf-like log-probabilities and a tail mass), written
in chunks of 256. Same arguments → the same records. Prints the two paths and the positions.
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools/python"))
sys.path.insert(0, str(ROOT / "tools/bench"))
import kdcache  # noqa: E402
from token_read_bench import VOCAB, prep, synthetic  # noqa: E402

RETEMPER_AT = [1.0]   # top-k input carries its tail sums at T_w only, so T_w = 1 is the one exact temperature


def make(binary: str, out: Path, positions: int, k: int, length: int) -> tuple[Path, Path, int]:
    """Writes DIR/d.lmdb and DIR/topk{k}.lmdb unless both exist; (data, cache, positions)."""
    out.mkdir(parents=True, exist_ok=True)
    n = -(-positions // (length - 1))
    data, cache = out / "d.lmdb", out / f"topk{k}.lmdb"
    if not (data.exists() and cache.exists()):
        for p in (data, cache, Path(str(data) + "-lock"), Path(str(cache) + "-lock")):
            if p.exists():
                p.unlink()
        prep(binary, out, n)          # writes out/d.csv and out/d.lmdb
        tok = kdcache.tokenizer_fingerprint([f"t{i}" for i in range(VOCAB)], None, name="bench")
        with kdcache.SequenceWriter(cache, data, name="lm", tokenizer=tok, top_k=k, retemper_at=RETEMPER_AT) as w:
            chunk = []
            for i, seq in enumerate(synthetic(n, length, k, equal=True)):
                chunk.append(seq)
                if len(chunk) == 256 or i == n - 1:
                    w.write_top_k(i + 1 - len(chunk), chunk)
                    chunk = []
    return data, cache, n * (length - 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="the kdcache binary (for prep)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--positions", type=int, default=100_000)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--length", type=int, default=128)
    args = ap.parse_args()
    if args.length < 2 or args.positions < 1 or not 1 <= args.k <= VOCAB:
        raise SystemExit("token_sweep_data: --length ≥ 2, --positions ≥ 1 and 1 ≤ --k ≤ 49152")
    data, cache, positions = make(args.bin, Path(args.out), args.positions, args.k, args.length)
    print(f"data {data}\ncache {cache}\npositions {positions}")


if __name__ == "__main__":
    main()
