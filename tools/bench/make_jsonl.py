#!/usr/bin/env python3
"""Write a synthetic JSONL dataset for prep benchmarks: N rows of id, label, text.

Texts are 8-40 words drawn (seeded) from the fortunes fixture's vocabulary, so token and n-gram
statistics resemble real short texts. Usage: make_jsonl.py OUT N [SEED]
"""
import csv
import json
import random
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(out: str, n: int, seed: int = 1) -> None:
    with open(ROOT / "fixtures/fortunes/fortunes.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    vocab = sorted({w for r in rows for w in re.findall(r"\w+", r["text"])})
    labels = sorted({r["label"] for r in rows})
    rng = random.Random(seed)
    with open(out, "w", encoding="utf-8") as f:
        for i in range(n):
            words = rng.choices(vocab, k=rng.randint(8, 40))
            f.write(json.dumps({"id": f"r{i}", "label": rng.choice(labels), "text": " ".join(words)}) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 1)
