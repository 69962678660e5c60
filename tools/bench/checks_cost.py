"""Cost of the integrity checks (issue 9): the same 100,000-sample data through two release
binaries, one built before the checks (format v1, no page walk, no manifest or value checks) and
one after; commands interleaved after a warm-up, medians of per-repetition times and ratios.

Usage: checks_cost.py OLD_BIN NEW_BIN WORKDIR   (REPS=N for more repetitions; default 7)
Build OLD_BIN from commit 0d06a02 in a worktree: `git worktree add /tmp/base 0d06a02 &&
(cd /tmp/base && swift build -c release --product kdcache)`."""
import json, os, statistics, subprocess, sys, time
import numpy as np
OLD, NEW, D = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(D, exist_ok=True)
def run(*a):
    r = subprocess.run([str(x) for x in a], capture_output=True, text=True)
    if r.returncode: raise SystemExit(r.stdout + r.stderr)
    return r
src = f"{D}/rows.jsonl"
if not os.path.exists(src):
    run(sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "make_jsonl.py"), src, 100000)
for tag, b in (("old", OLD), ("new", NEW)):
    if not os.path.exists(f"{D}/{tag}-data.lmdb"):
        run(b, "prep", src, "--out", f"{D}/{tag}-data.lmdb", "--text-column", "text", "--label-column", "label", "--id-column", "id", "--quiet")
        np.save(f"{D}/logits.npy", np.random.default_rng(0).normal(0, 2, (100000, 8)).astype("f4"))
        run(b, "import", f"{D}/logits.npy", "--data", f"{D}/{tag}-data.lmdb", "--out", f"{D}/{tag}-cache.lmdb", "--quiet")
cmds = {
    "info dataset": lambda t, b: [b, "info", f"{D}/{t}-data.lmdb"],
    "info cache": lambda t, b: [b, "info", f"{D}/{t}-cache.lmdb"],
    "verify dataset": lambda t, b: [b, "verify", f"{D}/{t}-data.lmdb"],
    "verify cache --data": lambda t, b: [b, "verify", f"{D}/{t}-cache.lmdb", "--data", f"{D}/{t}-data.lmdb"],
    "sweep 1 config, 1 epoch": lambda t, b: [b, "sweep", "--data", f"{D}/{t}-data.lmdb", "--logits", f"{D}/{t}-cache.lmdb", "--student", "linear",
                                   "--temperature", "2", "--alpha", "0.5", "--lr", "0.1", "--epochs", "1", "--seeds", "1", "--out", f"{D}/{t}-sweep", "--quiet", "--force"],
}
reps = int(os.environ.get("REPS", "7"))
print(f"file sizes: dataset old {os.path.getsize(D+'/old-data.lmdb')/2**20:.1f} MiB, new {os.path.getsize(D+'/new-data.lmdb')/2**20:.1f} MiB; cache old {os.path.getsize(D+'/old-cache.lmdb')/2**20:.1f} MiB, new {os.path.getsize(D+'/new-cache.lmdb')/2**20:.1f} MiB")
for name, make in cmds.items():
    times = {"old": [], "new": []}
    for rep in range(reps + 1):
        for t, b in (("old", OLD), ("new", NEW)) if rep % 2 == 0 else (("new", NEW), ("old", OLD)):
            c = make(t, b)
            if "sweep" in name:
                subprocess.run(["rm", "-rf", f"{D}/{t}-sweep"])
                c = [x for x in c if x != "--force"]
            s = time.perf_counter(); r = subprocess.run(c, capture_output=True, text=True); e = time.perf_counter() - s
            if r.returncode: print(name, t, "FAILED", r.stdout[-300:], r.stderr[-300:]); break
            if rep: times[t].append(e)
    if times["old"] and times["new"]:
        o, n = statistics.median(times["old"]), statistics.median(times["new"])
        ratios = statistics.median([b / a for a, b in zip(times["old"], times["new"])])
        print(f"| {name} | {o*1000:.0f} ms | {n*1000:.0f} ms | {ratios:.2f}× |")
