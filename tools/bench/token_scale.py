#!/usr/bin/env python3
"""A sequence cache of ≥ 10 M tokens on this machine (issue 12 §5): write, kill -9 and resume, shard
and merge, verify, read back into PyTorch batches; memory measured at two sizes to show it is flat.

    python tools/bench/token_scale.py --bin .build/release/kdcache [--repeat 4] [--small-tokens 1000000]
                                      [--kills 3] [--seed 7] [--work .build/bench-scale] [--outputs logits]

Corpus: Debian's package descriptions (tools/fixtures/make_debian_descriptions.py), one text per
package labelled with its Section, written `--repeat` times with distinct ids (the lists hold ~3 M
byte-level tokens); the small run is the first rows of the same CSV up to `--small-tokens` tokens.
Teacher: tools/teachers/tiny_lm_teacher.py (V = 260, byte tokens + <bos>), fit once on one copy of
the corpus (`--train`, so every run, resume and shard has the same model); cache `--sequence top-k:32
--retemper-at 1,2,4 --dtype f16`. Tokens counted as the teacher's (L = 1 + UTF-8 bytes per text).

Peak RSS: /proc/PID/status VmHWM of kdcache and of its teacher (polled every 50 ms; the high-water
mark is monotonic), and the largest RssAnon seen (VmHWM also counts pages of the LMDB map it touched).
kill -9: `--kills` instants drawn from Random(seed), each after a (re)start a fraction in [0.1, 0.4]
of the time the uninterrupted run would take for the records not yet committed; then a run to the end. Equality: every (key, value)
of the teacher's database compared byte for byte, and `kdcache diff` printed.
"""
import argparse
import csv
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
TEACHER_NAME = "tiny-lm"


class Peaks:
    """Polls a process tree's /proc status: VmHWM and the largest RssAnon, per role (root / children)."""

    def __init__(self, pid: int):
        self.pid, self.done = pid, False
        self.peak = {"kdcache": [0, 0], "teacher": [0, 0]}   # [VmHWM kB, max RssAnon kB]
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    @staticmethod
    def _status(pid: int) -> dict:
        try:
            with open(f"/proc/{pid}/status") as f:
                return {k: int(v.split()[0]) for k, _, v in (line.partition(":") for line in f) if k in ("VmHWM", "RssAnon")}
        except (OSError, ValueError):
            return {}

    @staticmethod
    def _descendants(pid: int) -> list:
        out, todo = [], [pid]
        while todo:
            p = todo.pop()
            try:
                kids = [int(c) for t in os.listdir(f"/proc/{p}/task") for c in open(f"/proc/{p}/task/{t}/children").read().split()]
            except OSError:
                kids = []
            out += kids
            todo += kids
        return out

    def _poll(self):
        while not self.done:
            for role, pids in (("kdcache", [self.pid]), ("teacher", self._descendants(self.pid))):
                for p in pids:
                    s = self._status(p)
                    self.peak[role][0] = max(self.peak[role][0], s.get("VmHWM", 0))
                    self.peak[role][1] = max(self.peak[role][1], s.get("RssAnon", 0))
            time.sleep(0.05)

    def stop(self) -> dict:
        self.done = True
        self.thread.join()
        return {role: {"hwm_mb": v[0] / 1024, "anon_mb": v[1] / 1024} for role, v in self.peak.items()}


def run(cmd, **kw):
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True, **kw)


def corpus(work: Path, repeat: int, small_tokens: int, max_rows: int = 0):
    """big.csv (the corpus × repeat), small.csv (its first rows up to small_tokens tokens), train.txt
    (one copy, one text per line); returns their token counts and row counts."""
    big = work / "big.csv"
    run([PY, ROOT / "tools/fixtures/make_debian_descriptions.py", big, "--repeat", repeat])
    with open(big, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    if max_rows:
        rows = rows[:max_rows]
        with open(big, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([["id", "label", "text"]] + rows)
    lengths = [1 + len(r[2].encode("utf-8")) for r in rows]
    copy = min(len(rows), len(rows) // repeat if not max_rows else len(rows))
    (work / "train.txt").write_text("".join(r[2].replace("\n", " ") + "\n" for r in rows[:copy]), encoding="utf-8")
    n_small, total = 0, 0
    while total < small_tokens and n_small < len(rows):
        total += lengths[n_small]; n_small += 1
    with open(work / "small.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["id", "label", "text"]] + rows[:n_small])
    return {"big": (sum(lengths), len(rows)), "small": (total, n_small), "copy_rows": copy}


def prep(binary, work: Path, name: str) -> tuple:
    started = time.monotonic()
    run([binary, "prep", work / f"{name}.csv", "--out", work / f"{name}.lmdb", "--text-column", "text", "--label-column", "label",
         "--id-column", "id", "--seed", "7", "--quiet"])
    return work / f"{name}.lmdb", time.monotonic() - started


def teach_cmd(binary, data, out, work, outputs, extra=()):
    teacher = f"{PY} {ROOT / 'tools/teachers/tiny_lm_teacher.py'} --train {work / 'train.txt'}"
    retemper = "1,2,4"
    if outputs == "top-k":
        teacher += " --outputs top-k --k 32"
        retemper = "1"
    return [str(c) for c in [binary, "teach", "--data", data, "--out", out, "--exec", teacher, "--sequence", "top-k:32",
                             "--retemper-at", retemper, "--temperature", "1", "--dtype", "f16", "--quiet", *extra]]


def teach(cmd, kill_after=None) -> dict:
    """Runs (or kills -9 after kill_after s) one teach; wall time, peaks, exit status."""
    started = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peaks = Peaks(p.pid)
    if kill_after is not None:
        try:
            p.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            teachers = Peaks._descendants(p.pid)
            os.kill(p.pid, signal.SIGKILL)
            reap(teachers)
    out, err = p.communicate()
    wall = time.monotonic() - started
    result = {"wall": wall, "rc": p.returncode, "peaks": peaks.stop(), "stderr": err.strip()[-400:]}
    if kill_after is None and p.returncode != 0:
        raise SystemExit(f"teach failed ({p.returncode}): {' '.join(cmd)}\n{err}")
    return result


def reap(pids, grace=10.0):
    """Waits for a killed kdcache's teacher processes to exit (EOF on stdin), SIGKILL after grace s."""
    deadline = time.monotonic() + grace
    for pid in pids:
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.05)
        if os.path.exists(f"/proc/{pid}"):
            os.kill(pid, signal.SIGKILL)


def records(path: Path):
    """(key, value) of every record of the teacher's database, in key order."""
    import lmdb
    env = lmdb.open(str(path), readonly=True, lock=False, max_dbs=16, subdir=path.is_dir())
    db = env.open_db(f"teacher/{TEACHER_NAME}".encode(), create=False)
    with env.begin(db=db) as txn:
        yield from txn.cursor().iternext(keys=True, values=True)
    env.close()


def same_records(a: Path, b: Path) -> tuple:
    """(equal, records, value bytes): every key and value compared byte for byte."""
    n = size = 0
    ia, ib = records(a), records(b)
    for ra, rb in zip(ia, ib):
        if ra != rb:
            return False, n, size
        n += 1; size += len(ra[1])
    rest = next(ia, None) is None and next(ib, None) is None
    return rest, n, size


def committed(path: Path) -> int:
    """Records committed in the teacher's database (0 before the first commit)."""
    import lmdb
    if not path.exists():
        return 0
    env = lmdb.open(str(path), readonly=True, lock=False, max_dbs=16, subdir=path.is_dir())
    try:
        with env.begin() as txn:
            return txn.stat(env.open_db(f"teacher/{TEACHER_NAME}".encode(), txn=txn, create=False))["entries"]
    except lmdb.NotFoundError:
        return 0
    finally:
        env.close()


READER = """
import sys, time, resource
sys.path.insert(0, {pkg!r})
import kdcache
tokens = positions = batches = 0
started = time.monotonic()
with kdcache.open({cache!r}) as c:
    for b in kdcache.TokenDistillationDataset(c, batch_size={batch}):
        tokens += int(b["attention_mask"].sum()); positions += int(b["position_mask"].sum()); batches += 1
wall = time.monotonic() - started
status = dict(l.split(":", 1) for l in open("/proc/self/status"))
print(tokens, positions, batches, wall, int(status["VmHWM"].split()[0]), int(status["RssAnon"].split()[0]))
"""


def read_back(cache: Path, batch: int) -> dict:
    out = run([PY, "-c", READER.format(pkg=str(ROOT / "tools/python"), cache=str(cache), batch=batch)]).stdout.split()
    tokens, positions, batches, wall, hwm, anon = int(out[0]), int(out[1]), int(out[2]), float(out[3]), int(out[4]), int(out[5])
    return {"tokens": tokens, "positions": positions, "batches": batches, "wall": wall, "rate": tokens / wall,
            "hwm_mb": hwm / 1024, "anon_mb": anon / 1024}


def file_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir()) if path.is_dir() else path.stat().st_size


def fmt_peaks(p: dict) -> str:
    return (f"kdcache VmHWM {p['kdcache']['hwm_mb']:.0f} MB (RssAnon ≤ {p['kdcache']['anon_mb']:.0f} MB), "
            f"teacher VmHWM {p['teacher']['hwm_mb']:.0f} MB (RssAnon ≤ {p['teacher']['anon_mb']:.0f} MB)")


def write_runs(args, work, sizes):
    """The uninterrupted runs at both sizes: wall, tokens/s, peaks."""
    out = {}
    for name in ("small", "big"):
        data, prep_s = prep(args.bin, work, name)
        tokens, rows = sizes[name]
        cache = work / f"{name}-seq.lmdb"
        r = teach(teach_cmd(args.bin, data, cache, work, args.outputs))
        out[name] = {"data": data, "cache": cache, "tokens": tokens, "rows": rows, **r}
        print(f"write {name}: {rows} texts, {tokens} tokens: prep {prep_s:.1f} s; teach {r['wall']:.1f} s = "
              f"{tokens / r['wall']:,.0f} tokens/s; {fmt_peaks(r['peaks'])}", flush=True)
    return out


def kill_resume(args, work, big):
    """`--kills` kill -9 at random instants, then a run to the end; byte-compared to the uninterrupted cache."""
    rng = random.Random(args.seed)
    cache = work / "killed-seq.lmdb"
    cmd = teach_cmd(args.bin, big["data"], cache, work, args.outputs)
    killed = 0
    for n in range(args.kills):
        left = (big["rows"] - committed(cache)) / big["rows"]
        after = rng.uniform(0.1, 0.4) * left * big["wall"]
        r = teach(cmd, kill_after=after)
        killed += r["rc"] == -signal.SIGKILL
        print(f"kill -9 #{n + 1} after {after:.1f} s (exit {r['rc']}): {committed(cache)} of {big['rows']} records committed", flush=True)
    r = teach(cmd)
    equal, n, size = same_records(cache, big["cache"])
    print(f"resume to the end: {r['wall']:.1f} s; {n} records ({size / 1e6:.1f} MB) byte-identical to the uninterrupted cache: {equal}", flush=True)
    print("  kdcache diff: " + run([args.bin, "diff", cache, big["cache"]]).stdout.strip(), flush=True)
    return equal and killed == args.kills, cache


def shards(args, work, big):
    """Shards 0/2 and 1/2 written at once, merged, compared to the single run."""
    started = time.monotonic()
    procs = [subprocess.Popen(teach_cmd(args.bin, big["data"], work / f"shard{i}.lmdb", work, args.outputs, ["--shard", f"{i}/2"]),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"shard failed: {err}")
    wall = time.monotonic() - started
    merged = work / "merged-seq.lmdb"
    m0 = time.monotonic()
    merge_out = run([args.bin, "merge", work / "shard0.lmdb", work / "shard1.lmdb", "--out", merged, "--require-complete"]).stdout.strip()
    merge_s = time.monotonic() - m0
    equal, n, size = same_records(merged, big["cache"])
    print(f"shards 0/2 + 1/2 side by side: {wall:.1f} s; merge {merge_s:.1f} s ({merge_out}); "
          f"{n} records byte-identical to the single run: {equal}", flush=True)
    return equal, [work / "shard0.lmdb", work / "shard1.lmdb", merged]


def verify_and_size(args, run_):
    started = time.monotonic()
    p = subprocess.run([args.bin, "verify", str(run_["cache"]), "--data", str(run_["data"])], capture_output=True, text=True)
    wall = time.monotonic() - started
    n = size = 0
    for _, value in records(run_["cache"]):
        n += 1; size += len(value)
    on_disk = file_bytes(run_["cache"])
    print(f"verify ({run_['tokens']} tokens): {wall:.1f} s, exit {p.returncode}: {(p.stdout + p.stderr).strip()}", flush=True)
    print(f"bytes per token ({run_['tokens']} tokens, {n} records): records {size / run_['tokens']:.1f} B, file {on_disk / run_['tokens']:.1f} B "
          f"({on_disk / 1e6:.0f} MB on disk)", flush=True)
    return p.returncode


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=str(ROOT / ".build/release/kdcache"))
    ap.add_argument("--repeat", type=int, default=4)
    ap.add_argument("--small-tokens", type=int, default=1_000_000)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--outputs", choices=["logits", "top-k"], default="logits")
    ap.add_argument("--max-rows", type=int, default=0, help="keep only the first N texts (a smoke run)")
    ap.add_argument("--work", default=str(ROOT / ".build/bench-scale"))
    args = ap.parse_args()
    work = Path(args.work)
    subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir(parents=True)
    t0 = time.monotonic()
    sizes = corpus(work, args.repeat, args.small_tokens, args.max_rows)
    print(f"corpus: {sizes['copy_rows']} Debian package descriptions × {args.repeat} (distinct ids) = {sizes['big'][1]} texts, "
          f"{sizes['big'][0]} tokens; small: first {sizes['small'][1]} texts, {sizes['small'][0]} tokens; teacher outputs: {args.outputs}", flush=True)
    runs = write_runs(args, work, sizes)
    ok = verify_and_size(args, runs["big"]) == 0
    for name in ("small", "big"):
        r = read_back(runs[name]["cache"], args.batch)
        print(f"read {name} ({r['tokens']} tokens, {r['positions']} positions, {r['batches']} batches of {args.batch}): "
              f"{r['wall']:.1f} s = {r['rate']:,.0f} tokens/s; VmHWM {r['hwm_mb']:.0f} MB, RssAnon {r['anon_mb']:.0f} MB", flush=True)
        ok &= r["tokens"] == runs[name]["tokens"]
    equal, killed = kill_resume(args, work, runs["big"])
    ok &= equal
    subprocess.run(["rm", "-rf", str(killed)], check=True)
    equal, _ = shards(args, work, runs["big"])
    ok &= equal
    print(f"total {time.monotonic() - t0:.0f} s; {'all checks passed' if ok else 'SOME CHECKS FAILED'}", flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
