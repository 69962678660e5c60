#!/usr/bin/env python3
"""A tiny byte-level language-model teacher for `kdcache teach --exec … --sequence` (TEACHERS.md
"Sequence teachers"); numpy only, deterministic, for tests.

Vocabulary: the 256 bytes as "<0x00>" … "<0xFF>", then "<bos>", "<eos>", "<unk>", "<pad>" (V = 260).
A text is tokenized as <bos> followed by its UTF-8 bytes. The model is an interpolated trigram over
those tokens, fit on the texts of the first batch or on `--train FILE` (one text per line):
  p(x | a, b) = 0.6·tri + 0.25·bi + 0.1·uni + 0.05/V   (each term's empty counts give 0)
and the logits are log p (so log_softmax(logits) = log p at T = 1).

  --outputs logits          full rows: per sample int64 index, int32 L, L int32 tokens, L×V float32
  --outputs top-k --k K     the K best ids as int32 (L×K) then their log-probabilities at --temperature
  --misbehave MODE          nan | wrong-vocab | short-block | bad-index | exit | bad-ready (failure tests)
  --die-after B             exit abruptly (os._exit) after answering B batches (resume tests)
  --alt-vocab               spell the byte tokens in lower case: another vocab_sha256 (tokenizer tests)
"""
import argparse
import hashlib
import json
import os
import struct
import sys

import numpy as np

SPECIALS = ["<bos>", "<eos>", "<unk>", "<pad>"]
TOKENS = [f"<0x{b:02X}>" for b in range(256)] + SPECIALS
V = len(TOKENS)
BOS = 256


def lp(b: bytes) -> bytes:
    return struct.pack("<I", len(b)) + b


def vocab_sha256(tokens=TOKENS) -> str:
    return "sha256:" + hashlib.sha256(b"".join(lp(t.encode()) for t in tokens)).hexdigest()


def tokenize(text: str) -> list:
    return [BOS] + list(text.encode("utf-8"))


class Trigram:
    def __init__(self, texts):
        self.uni = np.zeros(V)
        self.bi = {}
        self.tri = {}
        for text in texts:
            t = tokenize(text)
            for j, x in enumerate(t):
                self.uni[x] += 1
                if j >= 1:
                    self.bi.setdefault(t[j - 1], np.zeros(V))[x] += 1
                if j >= 2:
                    self.tri.setdefault((t[j - 2], t[j - 1]), np.zeros(V))[x] += 1

    @staticmethod
    def _norm(counts):
        if counts is None or counts.sum() == 0:
            return np.zeros(V)
        return counts / counts.sum()

    def logits(self, tokens) -> np.ndarray:
        """Row j: log p(· | tokens[:j+1])."""
        rows = np.empty((len(tokens), V), dtype=np.float64)
        uni = self._norm(self.uni)
        for j in range(len(tokens)):
            bi = self._norm(self.bi.get(tokens[j]))
            tri = self._norm(self.tri.get((tokens[j - 1], tokens[j]))) if j >= 1 else np.zeros(V)
            rows[j] = np.log(0.6 * tri + 0.25 * bi + 0.1 * uni + 0.05 / V)
        return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--outputs", choices=["logits", "top-k"], default="logits")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--train")
    ap.add_argument("--name", default="tiny-lm")
    ap.add_argument("--die-after", type=int)
    ap.add_argument("--alt-vocab", action="store_true")
    ap.add_argument("--misbehave", choices=["nan", "wrong-vocab", "short-block", "bad-index", "exit", "bad-ready"])
    args = ap.parse_args()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    hello = json.loads(stdin.readline())
    if hello.get("type") != "hello" or hello.get("task") != "sequence":
        raise SystemExit(f"expected a sequence hello, got {hello}")
    model = None
    if args.train:
        with open(args.train, encoding="utf-8") as f:
            model = Trigram([line.rstrip("\n") for line in f])
    source = open(args.train, "rb").read() if args.train else b"first-batch"
    spelled = [t.lower() for t in TOKENS] if args.alt_vocab else TOKENS
    tokenizer = {"vocab_sha256": vocab_sha256(spelled), "merges_sha256": None, "model_sha256": None, "name": "tiny-lm-bytes-v1"}
    if args.misbehave == "bad-ready":
        tokenizer = {"name": "tiny-lm-bytes-v1"}
    ready = {"type": "ready", "task": "sequence", "name": args.name, "description": "interpolated byte trigram",
             "content_hash": "sha256:" + hashlib.sha256(b"tiny-lm-teacher-1;" + source).hexdigest(),
             "outputs": args.outputs, "temperature": args.temperature, "vocab_size": V, "framing": "binary",
             "inputs": ["text"], "tokenizer": tokenizer}
    stdout.write(json.dumps(ready).encode() + b"\n"); stdout.flush()
    answered = 0
    for line in stdin:
        message = json.loads(line)
        if message["type"] == "end":
            return
        if args.die_after is not None and answered >= args.die_after:
            os._exit(9)
        answered += 1
        samples = message["samples"]
        if model is None:
            model = Trigram([s["text"] for s in samples])
        if args.misbehave == "exit":
            sys.stderr.write("tiny_lm_teacher: exiting on purpose\n"); sys.exit(3)
        answer(stdout, samples, model, args)


def answer(stdout, samples, model, args):
    k = args.k if args.outputs == "top-k" else 0
    header = {"type": "sequences", "rows": len(samples), "outputs": args.outputs, "k": k, "dtype": "f32"}
    stdout.write(json.dumps(header).encode() + b"\n")
    for n, s in enumerate(samples):
        tokens = tokenize(s["text"])
        z = model.logits(tokens)
        index = s["index"] + (1000 if args.misbehave == "bad-index" and n == 0 else 0)
        if args.misbehave == "wrong-vocab" and n == 0:
            tokens = tokens[:-1] + [V]
        if args.misbehave == "nan" and n == 0 and len(tokens) > 1:
            z[min(1, len(tokens) - 2), 7] = np.nan
        stdout.write(struct.pack("<qi", index, len(tokens)) + np.asarray(tokens, dtype="<i4").tobytes())
        if args.outputs == "logits":
            block = z.astype("<f4").tobytes()
        else:
            scaled = z / args.temperature
            logp = scaled - np.logaddexp.reduce(scaled, axis=1, keepdims=True)
            ids = np.argsort(-logp, axis=1, kind="stable")[:, :k]
            block = ids.astype("<i4").tobytes() + np.take_along_axis(logp, ids, axis=1).astype("<f4").tobytes()
        if args.misbehave == "short-block":
            stdout.write(block[: len(block) // 2]); stdout.flush()
            sys.stderr.write("tiny_lm_teacher: stopping inside a block on purpose\n"); sys.exit(4)
        stdout.write(block)
    stdout.flush()


if __name__ == "__main__":
    main()
