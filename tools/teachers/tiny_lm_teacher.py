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
import time

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
    """The interpolated trigram, counted with numpy: the same counts and float64 operations, in the same
    order, as a loop over positions. A row of log p depends only on the context (a, b) when (a, b) was
    seen, else only on b, so every row is computed once: `table` holds one row per seen context (keys
    a·V + b, sorted, in `contexts`) then one per b; `table32` is the same as float32."""

    def __init__(self, texts):
        flat, pos = self._tokens(texts)
        uni = np.bincount(flat, minlength=V).astype(np.float64)
        j = np.flatnonzero(pos >= 1)
        bi = self._rows(np.bincount(flat[j - 1] * V + flat[j], minlength=V * V).reshape(V, V).astype(np.float64))
        j = np.flatnonzero(pos >= 2)
        key = flat[j - 2] * V + flat[j - 1]
        self.contexts = np.flatnonzero(np.bincount(key, minlength=V * V))   # sorted, as np.unique, without a sort
        inverse = np.searchsorted(self.contexts, key)
        tri = self._rows(np.bincount(inverse * V + flat[j], minlength=len(self.contexts) * V).reshape(-1, V).astype(np.float64))
        uni = uni / uni.sum() if uni.sum() > 0 else np.zeros(V)
        seen = 0.6 * tri + 0.25 * bi[self.contexts % V] + 0.1 * uni + 0.05 / V
        unseen = 0.6 * np.zeros((V, V)) + 0.25 * bi + 0.1 * uni + 0.05 / V
        self.table = np.log(np.vstack([seen, unseen]))
        self.table32 = self.table.astype("<f4")

    @staticmethod
    def _tokens(texts):
        """All texts tokenized end to end, and each token's position within its text."""
        encoded = [text.encode("utf-8") for text in texts]
        lengths = np.array([len(e) + 1 for e in encoded], dtype=np.int64)
        starts = np.cumsum(lengths) - lengths
        flat = np.empty(int(lengths.sum()), dtype=np.int64)
        flat[starts] = BOS
        body = np.ones(len(flat), dtype=bool)
        body[starts] = False
        flat[body] = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        return flat, np.arange(len(flat)) - np.repeat(starts, lengths)

    @staticmethod
    def _rows(counts):
        """Each row divided by its sum (exact: integer counts), rows without counts left at 0."""
        sums = counts.sum(axis=1, keepdims=True)
        return np.divide(counts, sums, out=np.zeros_like(counts), where=sums > 0)

    def rows(self, tokens) -> np.ndarray:
        """Row j's index in `table`: its context (t[j−1], t[j]) when seen, else V-row t[j]."""
        t = np.asarray(tokens, dtype=np.int64)
        key = np.concatenate(([-1], t[:-1] * V + t[1:]))[: len(t)]
        row = np.minimum(np.searchsorted(self.contexts, key), max(len(self.contexts) - 1, 0))
        found = self.contexts[row] == key if len(self.contexts) else np.zeros(len(t), dtype=bool)
        return np.where(found, row, len(self.contexts) + t)

    def logits(self, tokens) -> np.ndarray:
        """Row j: log p(· | tokens[:j+1])."""
        return self.table[self.rows(tokens)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--outputs", choices=["logits", "top-k"], default="logits")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--train")
    ap.add_argument("--name", default="tiny-lm")
    ap.add_argument("--die-after", type=int)
    ap.add_argument("--pace", type=float, default=0.0, help="seconds to wait before each answer (tests that kill a run mid-way)")
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
        if args.pace > 0:
            time.sleep(args.pace)
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
        rows = model.rows(tokens)
        z = model.table[rows] if args.outputs == "top-k" or args.misbehave == "nan" else None
        index = s["index"] + (1000 if args.misbehave == "bad-index" and n == 0 else 0)
        if args.misbehave == "wrong-vocab" and n == 0:
            tokens = tokens[:-1] + [V]
        if args.misbehave == "nan" and n == 0 and len(tokens) > 1:
            z[min(1, len(tokens) - 2), 7] = np.nan
        stdout.write(struct.pack("<qi", index, len(tokens)) + np.asarray(tokens, dtype="<i4").tobytes())
        if args.outputs == "logits":
            block = z.astype("<f4").tobytes() if args.misbehave == "nan" else model.table32[rows].tobytes()
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
