#!/usr/bin/env python3
"""A teacher that answers instantly with seeded random logits: what `make bench` uses to measure
the cost of the teacher protocol itself (TEACHERS.md), in either framing.

    null_teacher.py --classes C --framing json|binary [--seed S] [--inputs text,features]
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "teachers"))
from protocol import serve  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--classes", type=int, required=True)
    p.add_argument("--framing", choices=["json", "binary"], required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--inputs", default="text", help="what to ask for: text, features or text,features")
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)

    def predict(samples):
        rows = rng.standard_normal((len(samples), args.classes)).astype(np.float32)
        return rows if args.framing == "binary" else rows.tolist()

    serve(predict, {"name": "null", "description": "seeded random logits", "content_hash": f"seed:{args.seed}",
                    "kind": "logits", "framing": args.framing, "inputs": args.inputs.split(",")})


if __name__ == "__main__":
    main()
