#!/usr/bin/env python3
"""`make demo-lm` (issue 13): the SmolLM2-135M teacher over the bundled Python-docs corpus (224k
tokens), six sequence caches from ONE pass of the model, then a token sweep and its verdict.

    python tools/bench/demo_lm.py --kdcache .build/release/kdcache --work .build-demo-lm [--texts N]

1. `kdcache prep` of fixtures/python-docs/python-docs.jsonl.gz (its `split` column: by section),
   or of every ⌈rows/N⌉-th row with --texts N (a quick slice that still has all three splits);
2. tools/bench/lm_fanout_teacher.py serves the teacher to six concurrent `kdcache teach --sequence`
   runs — top-k 8/32/128, sampled 12/32/64 (f16, T_w = 1, --retemper-at 1,2,4, --sample-seed 0) —
   so the model evaluates each text once; each cache is then verified against the dataset;
3. `kdcache sweep` over the six caches (a token sweep: --temperature, --alpha, --lr, --seeds,
   --epochs, --workers below), which writes results.jsonl, results.csv and report.html and prints
   the verdict; then the report's path. Wall time of each step and the load average are printed.
Dense KD (record kind 5, `--dense`) is off by default: at V = 49,152 a dense f16 position is 96 KB,
so the whole corpus would be ~21 GB. With --texts N (a slice) it is cheap: `--texts 300 --dense`.
The default grid (T 1,2 × α 0,0.5 × 2 seeds, the first --max-positions 60,000 training positions)
keeps the sweep to minutes; pass the flags below for more.
"""
import argparse
import gzip
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "fixtures/python-docs/python-docs.jsonl.gz"
LAYOUTS = ["top-k:8", "top-k:32", "top-k:128", "sampled:12", "sampled:32", "sampled:64"]


def step(what: str, started: float) -> None:
    print(f"demo-lm: {what} in {time.perf_counter() - started:.1f} s (load average {os.getloadavg()[0]:.2f})", flush=True)


def run(command: list, what: str) -> str:
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"demo-lm: {what} failed (status {proc.returncode}):\n  {shlex.join(command)}\n{proc.stdout}{proc.stderr}")
    return proc.stdout + proc.stderr


def cache_name(layout: str) -> str:
    if layout == "dense":
        return "dense.lmdb"
    mode, n = layout.split(":")
    return f"{'topk' if mode == 'top-k' else 'sampled'}{n}.lmdb"


def corpus(work: Path, texts: int) -> Path:
    """The corpus, or every ⌈rows/texts⌉-th row of it (gzip JSON lines, as bundled)."""
    if not texts:
        return CORPUS
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        rows = f.readlines()
    every = max(1, -(-len(rows) // texts))
    out = work / "corpus-slice.jsonl"
    out.write_text("".join(rows[::every][:texts]), encoding="utf-8")
    return out


def teach_all(args, data: Path, layouts: list) -> list:
    """The six `teach` runs against one fan-out teacher; their cache paths."""
    sock = args.work / "teacher.sock"
    server = subprocess.Popen([sys.executable, str(ROOT / "tools/bench/lm_fanout_teacher.py"), "serve", "--socket", str(sock),
                               "--clients", str(len(layouts)), "--exec", args.teacher])
    for _ in range(600):                      # the server binds before it waits for clients
        if sock.exists() or server.poll() is not None:
            break
        time.sleep(0.1)
    client = f"{shlex.quote(sys.executable)} {shlex.quote(str(ROOT / 'tools/bench/lm_fanout_teacher.py'))} client --socket {shlex.quote(str(sock))}"
    runs, caches = [], []
    for layout in layouts:
        out = args.work / cache_name(layout)
        for p in (out, Path(str(out) + "-lock")):
            p.unlink(missing_ok=True)
        command = [args.kdcache, "teach", "--data", str(data), "--out", str(out), "--exec", client, "--sequence", layout,
                   "--retemper-at", "1,2,4", "--temperature", "1", "--dtype", "f16", "--batch-size", "32",
                   "--timeout", "3600", "--quiet"] + (["--sample-seed", "0"] if layout.startswith("sampled") else [])
        log = open(args.work / f"teach-{cache_name(layout)[:-5]}.log", "w+")   # a file, not a pipe nobody reads meanwhile
        runs.append((layout, command, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True), log))
        caches.append(out)
    # One run that fails (before connecting, say) would leave the others waiting on the relay: stop
    # the relay then, which ends every other run with an error instead of a hang.
    while any(p.poll() is None for _, _, p, _ in runs):
        if any(p.returncode not in (None, 0) for _, _, p, _ in runs) or server.poll() not in (None, 0):
            server.terminate()
            break
        time.sleep(0.5)
    failed = []
    for layout, command, proc, log in runs:
        proc.wait()
        log.seek(0)
        output = log.read()
        log.close()
        if proc.returncode != 0:
            failed.append(f"teach {layout} failed (status {proc.returncode}):\n  {shlex.join(command)}\n{output}")
    if server.wait() != 0 and not failed:
        failed.append(f"the fan-out teacher failed (status {server.returncode})")
    if failed:
        sys.exit("demo-lm: " + "\n".join(failed))
    return caches


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kdcache", required=True)
    ap.add_argument("--work", type=Path, default=Path(".build-demo-lm"))
    ap.add_argument("--texts", type=int, default=0, help="a slice of this many texts (0: the whole corpus)")
    ap.add_argument("--teacher", default=f"{ROOT / '.build-venv-lm/bin/python'} {ROOT / 'tools/teachers/smollm2_teacher.py'}")
    ap.add_argument("--dense", action="store_true", help="also a dense cache (record kind 5; 96 KB per position at V = 49,152)")
    ap.add_argument("--temperature", default="1,2")
    ap.add_argument("--alpha", default="0,0.5")
    ap.add_argument("--lr", default="0.1")
    ap.add_argument("--seeds", default="2")
    ap.add_argument("--max-positions", default="60000", help="train on the first N training positions (0: all)")
    ap.add_argument("--epochs", default="1")
    ap.add_argument("--workers", default="2")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    layouts = LAYOUTS + (["dense"] if args.dense else [])

    t = time.perf_counter()
    data = args.work / "docs.lmdb"
    for p in (data, Path(str(data) + "-lock")):
        p.unlink(missing_ok=True)
    source = corpus(args.work, args.texts)
    run([args.kdcache, "prep", str(source), "--out", str(data), "--text-column", "text", "--label-column", "part",
         "--id-column", "id", "--split-column", "split", "--quiet"], "prep")
    step(f"prep of {source.name}", t)

    t = time.perf_counter()
    caches = teach_all(args, data, layouts)
    step(f"one teacher pass, {len(caches)} caches ({', '.join(layouts)})", t)
    t = time.perf_counter()
    for c in caches:
        run([args.kdcache, "verify", str(c), "--data", str(data)], f"verify {c}")
    step("verify of every cache", t)

    t = time.perf_counter()
    sweep = args.work / "sweep"
    command = [args.kdcache, "sweep", "--data", str(data)] + [a for c in caches for a in ("--logits", str(c))] + [
        "--out", str(sweep), "--temperature", args.temperature, "--alpha", args.alpha, "--lr", args.lr,
        "--seeds", args.seeds, "--epochs", args.epochs, "--workers", args.workers] + (
        ["--max-positions", args.max_positions] if int(args.max_positions) > 0 else [])
    proc = subprocess.run(command, text=True)
    if proc.returncode != 0:
        sys.exit(f"demo-lm: the token sweep failed (status {proc.returncode}): {shlex.join(command)}\n"
                 "(a kdcache without the token-level student refuses sequence caches; the caches above are written and verified)")
    step("token sweep", t)
    print(f"demo-lm: {time.perf_counter() - started:.0f} s in all")
    print(f"report: {(sweep / 'report.html').resolve()}")


if __name__ == "__main__":
    main()
