#!/usr/bin/env python3
"""A stand-in for `kdcache teach --sequence` (until the Swift side lands): runs a sequence teacher
(TEACHERS.md "Sequence teachers") on the texts of a CSV, checks every answer against the spec and
saves what came back, so that a teacher can be tested and measured on its own.

    python tools/teachers/seq_harness.py --exec '.build-venv-lm/bin/python tools/teachers/smollm2_teacher.py' \\
        --csv fixtures/fortunes/fortunes.csv --texts 60 --out /tmp/lm.npz

Saves (`--out`, an .npz, plus `--out`.logits.npy for logits teachers): `tokens` (all token ids,
concatenated), `offsets` ([n + 1], sample i = tokens[offsets[i]:offsets[i+1]]) and the kept rows —
for logits, [Σ P, V] float32, row L−1 of each sample dropped (it has no target); for top-k, `ids`
and `logp` [Σ L, K]. Prints tokens/s, the next-token agreement and a SHA-256 of every byte read. `--null` checks and
hashes every answer but keeps nothing (the teacher's own rate, with no writing: `--out` unused).
"""
import argparse
import csv
import hashlib
import json
import shlex
import subprocess
import sys
import time

import numpy as np


def read_exact(stream, n: int, what: str) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise SystemExit(f"harness: the teacher stopped after {len(data)} of {n} bytes of {what}")
    return data


def read_json_line(stream, what: str) -> dict:
    line = stream.readline()
    if not line:
        raise SystemExit(f"harness: the teacher exited before sending {what}")
    message = json.loads(line)
    if "error" in message:
        raise SystemExit(f"harness: the teacher reported an error: {message['error']}")
    return message


def start_teacher(command: str):
    """Starts a sequence teacher with `command` and does the hello / ready exchange (TEACHERS.md,
    "Sequence teachers"); returns (process, checked ready message)."""
    proc = subprocess.Popen(shlex.split(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    hello = {"type": "hello", "protocol": 1, "task": "sequence", "labels": [], "features": "hashed-ngrams",
             "has_text": True, "framings": ["binary"]}
    proc.stdin.write(json.dumps(hello).encode() + b"\n")
    proc.stdin.flush()
    ready = read_json_line(proc.stdout, "ready")
    check_ready(ready)
    return proc, ready


def check_ready(ready: dict) -> None:
    """The ready fields TEACHERS.md requires of a sequence teacher."""
    need = {"type": "ready", "task": "sequence", "framing": "binary"}
    for key, value in need.items():
        if ready.get(key) != value:
            raise SystemExit(f"harness: ready.{key} is {ready.get(key)!r}, expected {value!r}")
    if ready.get("outputs") not in ("logits", "top-k"):
        raise SystemExit(f"harness: ready.outputs {ready.get('outputs')!r} is not logits or top-k")
    tok = ready.get("tokenizer") or {}
    for key in ("vocab_sha256", "merges_sha256", "model_sha256", "name"):
        if key not in tok:
            raise SystemExit(f"harness: ready.tokenizer lacks {key}")
    if not 2 <= int(ready.get("vocab_size", 0)) <= 1 << 24:
        raise SystemExit(f"harness: ready.vocab_size {ready.get('vocab_size')} is not in 2…2^24")


class NullSink:
    """Checks and hashes the answers, keeps only the token counts: what a teacher costs by itself."""

    def __init__(self):
        self.offsets, self.lengths, self.filled = [0], [], 0
        self.digest = hashlib.sha256()

    def add(self, ids: np.ndarray, body: bytes, k: int) -> None:
        self.digest.update(ids.tobytes() + body)
        self.offsets.append(self.offsets[-1] + len(ids))
        self.lengths.append(len(ids))
        self.filled += max(len(ids) - 1, 0)

    def save(self) -> None:
        pass


class Sink:
    """Collects the answers: token ids, and the rows either in memory or in a .npy on disk."""

    def __init__(self, out: str, vocab: int, outputs: str, capacity: int):
        self.out, self.vocab, self.outputs = out, vocab, outputs
        self.tokens, self.offsets, self.ids, self.logp = [], [0], [], []
        self.rows = None
        if outputs == "logits":
            self.rows = np.lib.format.open_memmap(out + ".logits.npy", mode="w+", dtype="<f4", shape=(capacity, vocab))
        self.filled = 0
        self.digest = hashlib.sha256()

    def add(self, ids: np.ndarray, body: bytes, k: int) -> None:
        self.digest.update(ids.tobytes() + body)
        self.tokens.append(ids)
        self.offsets.append(self.offsets[-1] + len(ids))
        if self.outputs == "logits":
            rows = np.frombuffer(body, dtype="<f4").reshape(len(ids), self.vocab)
            if not np.isfinite(rows).all():
                raise SystemExit(f"harness: sample {len(self.offsets) - 2}: a logit is NaN or infinite")
            kept = rows[:-1]
            self.rows[self.filled:self.filled + len(kept)] = kept
            self.filled += len(kept)
        else:
            self.ids.append(np.frombuffer(body[:4 * k * len(ids)], dtype="<i4").reshape(len(ids), k))
            self.logp.append(np.frombuffer(body[4 * k * len(ids):], dtype="<f4").reshape(len(ids), k))

    def save(self) -> None:
        extra = {}
        if self.outputs == "top-k":
            extra = {"ids": np.concatenate(self.ids), "logp": np.concatenate(self.logp)}
        else:
            self.rows.flush()
        np.savez(self.out, tokens=np.concatenate(self.tokens), offsets=np.array(self.offsets, dtype=np.int64),
                 positions=self.filled, **extra)


def read_answer(proc, batch: list, ready: dict, sink: Sink) -> None:
    header = read_json_line(proc.stdout, "a sequences header")
    if header.get("type") != "sequences" or header.get("rows") != len(batch) or header.get("outputs") != ready["outputs"]:
        raise SystemExit(f"harness: bad sequences header {header} for a batch of {len(batch)}")
    vocab, k = int(ready["vocab_size"]), int(header.get("k", 0))
    width = vocab * 4 if ready["outputs"] == "logits" else k * 8
    expected = {s["index"] for s in batch}
    for _ in batch:
        index, length = np.frombuffer(read_exact(proc.stdout, 12, "a row header"), dtype=np.dtype([("i", "<i8"), ("l", "<i4")]))[0]
        if int(index) not in expected:
            raise SystemExit(f"harness: index {index} is not in the batch (or came twice)")
        expected.discard(int(index))
        ids = np.frombuffer(read_exact(proc.stdout, 4 * int(length), f"sample {index}'s ids"), dtype="<i4")
        if ids.size and (ids.min() < 0 or ids.max() >= vocab):
            raise SystemExit(f"harness: sample {index}: a token id is outside 0…{vocab - 1}")
        sink.add(ids, read_exact(proc.stdout, width * int(length), f"sample {index}'s rows"), k)


def load_texts(path: str, column: str, count: int) -> list:
    with open(path, newline="", encoding="utf-8") as f:
        texts = [row[column] for row in csv.DictReader(f)]
    return texts[:count] if count else texts


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--exec", required=True, dest="command")
    p.add_argument("--csv", default="fixtures/fortunes/fortunes.csv")
    p.add_argument("--text-column", default="text")
    p.add_argument("--texts", type=int, default=60, help="the first N texts (0: all)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-positions", type=int, default=200_000, help="room for the logits file")
    p.add_argument("--out", help="where to save the answers (required unless --null)")
    p.add_argument("--null", action="store_true", help="keep nothing: time the teacher alone")
    args = p.parse_args()
    if not args.null and not args.out:
        p.error("--out is required unless --null")
    texts = load_texts(args.csv, args.text_column, args.texts)
    launched = time.perf_counter()
    proc, ready = start_teacher(args.command)
    capacity = min(args.max_positions, 512 * len(texts))
    sink = NullSink() if args.null else Sink(args.out, int(ready["vocab_size"]), ready["outputs"], capacity)
    started = time.perf_counter()
    for start in range(0, len(texts), args.batch_size):
        batch = [{"index": i, "id": str(i), "view": 0, "text": texts[i]} for i in range(start, min(start + args.batch_size, len(texts)))]
        proc.stdin.write(json.dumps({"type": "batch", "samples": batch}).encode() + b"\n")
        proc.stdin.flush()
        read_answer(proc, batch, ready, sink)
    seconds = time.perf_counter() - started
    proc.stdin.write(b'{"type": "end"}\n')
    proc.stdin.close()
    if proc.wait(timeout=60) != 0:
        raise SystemExit(f"harness: the teacher exited with status {proc.returncode}")
    wall = time.perf_counter() - launched
    sink.save()
    tokens = sink.offsets[-1]
    print(json.dumps({"texts": len(texts), "tokens": tokens, "positions": sink.filled if args.null else
                      sum(max(len(t) - 1, 0) for t in sink.tokens), "seconds": round(seconds, 2),
                      "wall_seconds_with_start": round(wall, 2), "tokens_per_s": round(tokens / seconds, 1),
                      "sha256": sink.digest.hexdigest(), "content_hash": ready["content_hash"],
                      "tokenizer": ready["tokenizer"]}, indent=1))


if __name__ == "__main__":
    main()
