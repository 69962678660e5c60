#!/usr/bin/env python3
"""Write a synthetic JSONL dataset for prep benchmarks: N rows of id, label, text.

Texts are 8-40 words drawn (seeded) from the fortunes fixture's vocabulary, so token and n-gram
statistics resemble real short texts. Labels are the fixture's 8 unless --classes K asks for K
synthetic ones (c0 … cK-1). Usage: make_jsonl.py OUT N [--seed S] [--classes K]
"""
import argparse
import csv
import json
import random
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(out: str, n: int, seed: int = 1, classes: int = 0) -> None:
    with open(ROOT / "fixtures/fortunes/fortunes.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    vocab = sorted({w for r in rows for w in re.findall(r"\w+", r["text"])})
    labels = [f"c{k}" for k in range(classes)] if classes else sorted({r["label"] for r in rows})
    rng = random.Random(seed)
    with open(out, "w", encoding="utf-8") as f:
        for i in range(n):
            words = rng.choices(vocab, k=rng.randint(8, 40))
            f.write(json.dumps({"id": f"r{i}", "label": rng.choice(labels), "text": " ".join(words)}) + "\n")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("n", type=int)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--classes", type=int, default=0)
    a = p.parse_args()
    main(a.out, a.n, a.seed, a.classes)
