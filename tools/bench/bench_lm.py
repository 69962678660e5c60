#!/usr/bin/env python3
"""The SmolLM2 teacher through kdcache, measured (issue 12; `make bench-lm` runs it).

1. the first `--texts` rows of the fortunes CSV → a CSV → `kdcache prep` (the flags of `make demo`);
2. the teacher alone: tools/teachers/seq_harness.py --null (checks and hashes every logits row,
   keeps nothing), wall time from launch, so model loading counts as it does in `teach`;
3. six `kdcache teach --exec … --sequence` runs (top-k 8/32/128, sampled 12/32/64; f16, T_w = 1,
   --retemper-at 1,2,4, --sample-seed 0), each timed, then `kdcache verify` and `kdcache info`;
4. a Markdown table: teacher-only vs teach wall time, tokens/s, and what kdcache adds;
5. with --replay X.npz (seq_harness --out of the real teacher on a few texts): the same six runs and
   the harness alone with tools/bench/lm_replay_teacher.py, which answers SmolLM2's own ids with
   those real rows at pipe speed, so kdcache's cost shows without the model's (and its load noise).

    .build-venv/bin/python tools/bench/bench_lm.py --kdcache .build/release/kdcache --work .build-bench-lm
"""
import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time

LAYOUTS = [("top-k", 8), ("top-k", 32), ("top-k", 128), ("sampled", 12), ("sampled", 32), ("sampled", 64)]
TEACHER = ".build-venv-lm/bin/python tools/teachers/smollm2_teacher.py"
REPLAY = ".build-venv-lm/bin/python tools/bench/lm_replay_teacher.py"


def cache_name(mode: str, n: int) -> str:
    return f"{'topk' if mode == 'top-k' else 'sampled'}{n}.lmdb"


def first_rows(source: str, out: str, count: int) -> int:
    """Copies the header and the first `count` rows of a CSV (quoted multi-line fields kept whole)."""
    with open(source, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        rows = [next(reader)] + [row for _, row in zip(range(count), reader)]
    with open(out, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    return len(rows) - 1


def run(command: list, what: str) -> tuple[float, str, str]:
    """Runs a command; (wall seconds, stdout, stderr); stops with its output when it fails."""
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"bench_lm: {what} failed (status {proc.returncode}):\n{' '.join(command)}\n{proc.stdout}\n{proc.stderr}")
    return seconds, proc.stdout, proc.stderr


def load_average() -> float:
    return os.getloadavg()[0]


def teacher_only(args, csv_path: str, teacher: str) -> dict:
    seconds, out, err = run([sys.executable, "tools/teachers/seq_harness.py", "--exec", teacher, "--csv", csv_path,
                             "--texts", "0", "--batch-size", "32", "--null"], "the teacher alone")
    figures = json.loads(out)
    figures["process_seconds"] = seconds
    figures["teacher_stderr"] = err.strip().splitlines()[-1] if err.strip() else ""
    return figures


def teach(args, data: str, mode: str, n: int, teacher: str, prefix: str = "") -> dict:
    out = os.path.join(args.work, prefix + cache_name(mode, n))
    sampling = f"{mode}:{n}"
    command = [args.kdcache, "teach", "--data", data, "--out", out, "--exec", teacher, "--sequence", sampling,
               "--retemper-at", "1,2,4", "--temperature", "1", "--dtype", "f16", "--batch-size", "32"]
    if mode == "sampled":
        command += ["--sample-seed", "0"]
    load = load_average()
    seconds, stdout, stderr = run(command, f"teach {sampling}")
    _, verify, verify_err = run([args.kdcache, "verify", out, "--data", data], f"verify {sampling}")
    _, info, _ = run([args.kdcache, "info", out], f"info {sampling}")
    return {"layout": sampling, "cache": out, "seconds": seconds, "load_before": load, "bytes": du(out),
            "teach_output": (stdout + stderr).strip(), "verify": (verify + verify_err).strip(), "info": info.strip()}


def du(path: str) -> int:
    """Bytes the cache takes on disk (a sparse LMDB file counts only its written blocks)."""
    paths = [os.path.join(path, n) for n in os.listdir(path)] if os.path.isdir(path) else [path]
    return sum(os.stat(p).st_blocks * 512 for p in paths)


def top1_rate(verify: str) -> str:
    """The share `kdcache verify` prints: "the most probable id is the next token at X % of N positions"."""
    found = re.search(r"the next token at ([0-9.]+ %) of ([0-9]+) positions", verify)
    return f"{found.group(1)} of {found.group(2)}" if found else "not printed"


def eval_rate(output: str) -> str:
    """The teacher's own figure on stderr: "(N tokens/s in llama.cpp's eval)" (smollm2_teacher.py)."""
    found = re.search(r"\(([0-9]+) tokens/s in llama.cpp's eval\)", output)
    return found.group(1) if found else "—"


def report(texts: int, alone: dict, runs: list, what: str) -> None:
    tokens, positions = alone["tokens"], alone["positions"]
    print(f"## {what}\n\ndata: the first {texts} texts of fixtures/fortunes/fortunes.csv, {tokens} teacher tokens "
          f"({positions} positions), one process each run, 2 llama.cpp threads\n")
    base = alone["process_seconds"]
    print(f"teacher alone (seq_harness --null, logits rows read, checked and dropped): {base:.1f} s from launch, "
          f"{tokens / base:.0f} tokens/s ({eval_rate(alone['teacher_stderr'])} tokens/s in llama.cpp's eval)\n")
    print("| layout (f16, T_w = 1, R = 3) | teach wall s | tokens/s | teacher alone s | kdcache adds s | adds % | "
          "teacher's eval tokens/s | cache on disk MB | verify: top-1 = next token | load before |\n"
          "|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        extra = r["seconds"] - base
        print(f"| {r['layout']} | {r['seconds']:.1f} | {tokens / r['seconds']:.0f} | {base:.1f} | {extra:+.1f} | "
              f"{100 * extra / base:+.0f}% | {eval_rate(r['teach_output'])} | {r['bytes'] / 1e6:.2f} | {top1_rate(r['verify'])} | {r['load_before']:.2f} |")
    print()
    for r in runs:
        print(f"### {r['layout']}\nverify: {r['verify']}\n\ninfo:\n{r['info']}\n")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--kdcache", default=".build/release/kdcache")
    p.add_argument("--work", default=".build-bench-lm")
    p.add_argument("--csv", default="fixtures/fortunes/fortunes.csv")
    p.add_argument("--texts", type=int, default=400)
    p.add_argument("--exec", dest="teacher", default=TEACHER, help="the sequence teacher's command")
    p.add_argument("--replay", help="seq_harness.py --out X.npz of the real teacher: also time kdcache on its rows replayed")
    p.add_argument("--json", help="also write every figure here")
    args = p.parse_args()
    os.makedirs(args.work, exist_ok=True)
    subset = os.path.join(args.work, f"fortunes-{args.texts}.csv")
    texts = first_rows(args.csv, subset, args.texts)
    data = os.path.join(args.work, "fortunes.lmdb")
    for path in [data] + [os.path.join(args.work, x + cache_name(m, n)) for m, n in LAYOUTS for x in ("", "replay-")]:
        subprocess.run(["rm", "-rf", path], check=True)
    run([args.kdcache, "prep", subset, "--out", data, "--text-column", "text", "--label-column", "label",
         "--id-column", "id", "--seed", "7", "--quiet"], "prep")
    alone = teacher_only(args, subset, args.teacher)
    runs = [teach(args, data, m, n, args.teacher) for m, n in LAYOUTS]
    report(texts, alone, runs, "the real teacher")
    figures = {"texts": texts, "teacher_alone": alone, "runs": runs}
    if args.replay:
        replay = f"{REPLAY} --rows {args.replay}"
        figures["replay_alone"] = teacher_only(args, subset, replay)
        figures["replay_runs"] = [teach(args, data, m, n, replay, prefix="replay-") for m, n in LAYOUTS]
        report(texts, figures["replay_alone"], figures["replay_runs"], "kdcache's own cost: real SmolLM2 rows replayed at pipe speed")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)


if __name__ == "__main__":
    main()
