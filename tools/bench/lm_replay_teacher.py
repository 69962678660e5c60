#!/usr/bin/env python3
"""kdcache's own cost on a SmolLM2-sized answer, without the model's time: a sequence teacher that
tokenizes each text with SmolLM2's tokenizer (llama.cpp, vocab only: the same ids and lengths as
smollm2_teacher.py) and answers each position with a real SmolLM2 logits row, cycled from a file
that tools/teachers/seq_harness.py saved (`--out X.npz` of a logits teacher: `X.npz.logits.npy`).
The ready message is smollm2_teacher.py's (same V, tokenizer and content hash), so `kdcache teach`
does exactly the work it does on the real teacher (read L × V f32, log_softmax, top-k or draws, tail
sums, encode, write) at the speed of the pipe.

    kdcache teach --exec '.build-venv-lm/bin/python tools/bench/lm_replay_teacher.py --rows X.npz' …
"""
import argparse
import json
import struct
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "teachers"))
from smollm2_teacher import find_gguf, sha256_file, tokenizer_fields, write_line  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", required=True, help="seq_harness.py --out X.npz of a logits teacher (its rows are X.npz.logits.npy)")
    p.add_argument("--max-tokens", type=int, default=256)
    args = p.parse_args()
    hello = json.loads(sys.stdin.buffer.readline())
    if hello.get("task") != "sequence":
        raise SystemExit(f"lm_replay_teacher: expected a sequence hello, got {hello}")
    from llama_cpp import Llama
    model = find_gguf()
    llm = Llama(model_path=model, vocab_only=True, verbose=False)
    kept = int(np.load(args.rows)["positions"])
    rows = np.ascontiguousarray(np.load(args.rows + ".logits.npy", mmap_mode="r")[:kept], dtype="<f4")
    if rows.ndim != 2 or rows.shape[1] != llm.n_vocab():
        raise SystemExit(f"lm_replay_teacher: {args.rows} has shape {rows.shape}, expected (n, {llm.n_vocab()})")
    out = sys.stdout.buffer
    write_line(out, {"type": "ready", "task": "sequence", "name": "smollm2-135m", "description": "replayed SmolLM2 rows",
                     "content_hash": sha256_file(model), "outputs": "logits", "temperature": 1.0, "vocab_size": int(rows.shape[1]),
                     "framing": "binary", "inputs": ["text"], "tokenizer": tokenizer_fields(model, "SmolLM2-135M-Instruct")})
    served = 0
    for line in sys.stdin.buffer:
        message = json.loads(line)
        if message.get("type") == "end":
            break
        samples = message["samples"]
        write_line(out, {"type": "sequences", "rows": len(samples), "outputs": "logits", "k": 0, "dtype": "f32"}, flush=False)
        for s in samples:
            ids = llm.tokenize(s["text"].encode("utf-8"), add_bos=True, special=False)[:args.max_tokens]
            out.write(struct.pack("<qi", s["index"], len(ids)) + np.asarray(ids, dtype="<i4").tobytes())
            for _ in ids:
                out.write(memoryview(rows[served % len(rows)]).cast("B"))
                served += 1
        out.flush()


if __name__ == "__main__":
    main()
