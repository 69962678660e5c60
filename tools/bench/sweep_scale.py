#!/usr/bin/env python3
"""The sweep at real scale (issue 14): Debian's package-description paragraphs by Section
(tools/fixtures/make_debian_paragraphs.py, ~160k texts, ~50 classes, 2^18 hashed word 1+2-grams),
side by side in one run:

  a. a 36-configuration KD sweep (linear student, SGD momentum 0.9, batch 64, T 1,2,4 × α 0.3,0.6,0.9
     × lr 3,10 × 2 seeds, 1 epoch by default: 5 take numpy and PyTorch over an hour here): `kdcache sweep` with 1 and 2 workers against the same sweep in
     numpy/scipy (sweep_numpy.py) and PyTorch (sweep_torch.py), each reading the same teacher cache
     through py-lmdb, end to end (process start to results); the mean test accuracies of each;
                                                          target: >= 10x numpy (floor 5x)
  b. K = 36 configurations in one run (one seed: T 1,2,4,8 × α 0.3,0.6,0.9 × lr 1,3,10, so one group
     of configurations sharing a pass) against 36 runs of one, end to end;   target: <= 0.25x
  c. µs per sample-step per configuration (the sweep's training time over configurations × epochs ×
     train samples) against a memory-latency estimate of its limit (see `latency_model`).

The CSV, the dataset store and the teacher cache (the built-in teacher, linear, one model, 2 epochs)
are kept under --work (default .build-bench/) keyed by their inputs, so a rerun skips them.

    python tools/bench/sweep_scale.py --bin .build/release/kdcache [--quick] [--reps N] [--work DIR]
                                      [--epochs E] [--baselines numpy,torch]

--quick: every 8th row of the CSV, 2 epochs, 8 configurations in (a) and (b): a smoke run of a few
minutes. --epochs and --baselines shorten a full-size run (numpy, the targets' baseline, stays).
Needs root (or sudo) once, to fetch Debian's Translation-en lists with apt.
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tools" / "python"))

FULL = {"epochs": 1, "temperature": "1,2,4", "alpha": "0.3,0.6,0.9", "lr": "3,10", "seeds": 2,
        "fused": {"temperature": "1,2,4,8", "alpha": "0.3,0.6,0.9", "lr": "1,3,10"}, "every": 1}
QUICK = {"epochs": 2, "temperature": "1,4", "alpha": "0.3,0.9", "lr": "10", "seeds": 2,
         "fused": {"temperature": "1,4", "alpha": "0.3,0.9", "lr": "3,10"}, "every": 8}
BATCH, MOMENTUM = 64, 0.9
PREP_ARGS = ["--text-column", "text", "--label-column", "label", "--id-column", "id", "--split-column", "split",
             "--hash-bits", "18", "--ngrams", "2"]
TEACH_ARGS = ["--teacher", "linear", "--ensemble", "1", "--epochs", "2", "--cross-fit", "1", "--temperature", "2"]


def log(msg):
    print(msg, flush=True)


def timed(cmd, **kw):
    """Runs cmd (check=True, output captured); returns (seconds, stdout)."""
    t0 = time.perf_counter()
    r = subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)
    return time.perf_counter() - t0, r.stdout


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def make_csv(work: Path, every: int) -> Path:
    """The dataset CSV (all rows, or every `every`-th), made once; Translation-en fetched into work/apt-lists."""
    full = work / "debian-paragraphs.csv"
    if not full.exists():
        lists = work / "apt-lists"
        fetch = [] if list(lists.glob("*_Translation-en.lz4")) else ["--fetch"]
        log(f"  making {full} ({'fetching Translation-en with apt, ' if fetch else ''}tools/fixtures/make_debian_paragraphs.py)")
        subprocess.run([sys.executable, str(ROOT / "tools/fixtures/make_debian_paragraphs.py"), str(full),
                        "--translations", str(lists), *fetch], check=True)
    if every == 1:
        return full
    part = work / f"debian-paragraphs-every{every}.csv"
    if not part.exists():
        import csv
        with open(full, newline="", encoding="utf-8") as src, open(str(part) + ".tmp", "w", newline="", encoding="utf-8") as dst:
            r, w = csv.reader(src), csv.writer(dst)
            w.writerow(next(r))
            for i, row in enumerate(r):
                if i % every == 0:
                    w.writerow(row)
        os.replace(str(part) + ".tmp", part)
    return part


def make_stores(kdcache: str, work: Path, csv_path: Path):
    """(data.lmdb, teacher.lmdb, seconds spent) under work/scale-KEY, KEY = sha256 of the CSV and both commands."""
    key = hashlib.sha256("\n".join([sha256_file(csv_path), *PREP_ARGS, *TEACH_ARGS]).encode()).hexdigest()[:16]
    d = work / f"scale-{key}"
    data, teacher, done = d / "data.lmdb", d / "teacher.lmdb", d / "done"
    if done.exists():
        log(f"  stores: {d} (cached)")
        return data, teacher, None
    shutil.rmtree(d, ignore_errors=True); d.mkdir(parents=True)
    t_prep, _ = timed([kdcache, "prep", str(csv_path), "--out", str(data), *PREP_ARGS, "--quiet"])
    t_teach, _ = timed([kdcache, "teach", "--data", str(data), "--out", str(teacher), *TEACH_ARGS, "--quiet"])
    done.write_text(f"prep {t_prep:.1f} s, teach {t_teach:.1f} s\n")
    log(f"  stores: {d}: prep {t_prep:.1f} s, teacher (built-in, linear, 1 model, 2 epochs) {t_teach:.1f} s")
    return data, teacher, (t_prep, t_teach)


def store_stats(data: Path):
    """Sizes from the store: rows per split, classes, buckets in use, mean nonzero features per sample."""
    import numpy as np
    import kdcache
    ds = kdcache.open(str(data))
    splits, nnz, buckets = {}, [], set()
    for _, r in ds:
        splits[r["split"]] = splits.get(r["split"], 0) + 1
        nnz.append(len(r["indices"]))
        buckets.update(r["indices"].tolist())
    return {"rows": len(ds), "splits": splits, "classes": len(ds.manifest["labels"]), "buckets": len(buckets),
            "nnz": float(np.mean(nnz)), "dimension": ds.manifest["featurizer"]["dimension"]}


def grid_args(g):
    return ["--temperature", g["temperature"], "--alpha", g["alpha"], "--lr", g["lr"]]


def count(g, seeds):
    return len(g["temperature"].split(",")) * len(g["alpha"].split(",")) * len(g["lr"].split(",")) * seeds


def kd_sweep(kdcache, data, teacher, out: Path, grid, epochs, seeds, workers):
    """`kdcache sweep` end to end; returns (seconds, {(lr, α, T, seed): test accuracy}, training seconds)."""
    shutil.rmtree(out, ignore_errors=True)
    t, _ = timed([kdcache, "sweep", "--data", str(data), "--logits", str(teacher), "--student", "linear", *grid_args(grid),
                  "--optimizer", "sgd", "--batch-size", str(BATCH), "--epochs", str(epochs), "--seeds", str(seeds),
                  "--workers", str(workers), "--out", str(out), "--quiet"])
    acc, train_seconds = {}, 0.0
    for line in (out / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        c = r["config"]
        if r.get("test") is None:
            raise SystemExit(f"sweep_scale: {out}/results.jsonl: {c} has no test accuracy (status {r.get('status')})")
        acc[(float(c["optimizer"]["learningRate"]), float(c["loss"]["alpha"]), float(c["loss"]["temperature"]), int(c["seed"]))] = r["test"]["accuracy"]
        train_seconds += r["wallSeconds"]
    return t, acc, train_seconds


def py_sweep(script, data, teacher, grid, epochs, seeds):
    """sweep_numpy.py / sweep_torch.py end to end; returns (seconds, {(lr, α, T, seed): test accuracy}).
    PyTorch runs one thread: on this 2-core machine, loaded, two OpenMP threads made its small
    per-batch operations 3–10× slower (measured), so one thread is its better configuration here."""
    extra = ["--threads", "1"] if script == "sweep_torch.py" else []
    t, out = timed([sys.executable, str(HERE / script), str(data), str(teacher), *grid_args(grid), "--epochs", str(epochs),
                    "--seeds", str(seeds), "--batch-size", str(BATCH), "--optimizer", "sgd", "--momentum", str(MOMENTUM), *extra])
    acc = {}
    for m in re.finditer(r"lr (\S+) alpha (\S+) T (\S+) seed (\d+): test accuracy (\S+)", out):
        acc[(float(m[1]), float(m[2]), float(m[3]), int(m[4]))] = float(m[5])
    return t, acc


def latency_model(latency_bin, stats, K):
    """The memory-latency limit of one sample-step of one configuration.

    Model: a sample with n nonzero features touches n scattered weight rows in the forward pass and,
    at the optimizer step, the same rows' weights and momentum: two rows of C floats per feature in
    tables of the student's size (buckets in use × C × 4 B each), each a dependent miss of latency L
    (the pointer chase, one chain) of which F can be in flight (F = L / the best ns per load over
    1–32 independent chains). Limit = 2·n·L / F per configuration unfused; fused ([bucket][config][class],
    one miss serving the K configurations of a group) it is that over K. Repeats within a batch
    (frequent words) hit the cache, so this is a bound on misses, not an exact count."""
    C = stats["classes"]
    row = (C * 4 + 7) // 8 * 8
    table = stats["buckets"] * row * 2
    out = subprocess.run([latency_bin, str(table), str(row)], check=True, capture_output=True, text=True).stdout
    ns = {int(k): float(v) for k, v in (line.split() for line in out.splitlines())}
    L = ns[1]
    best_k = min(ns, key=ns.get)
    F = L / ns[best_k]
    rows = 2 * stats["nnz"]
    limit_us = rows * L / F / 1e3
    return {"table_bytes": table, "row_bytes": row, "latency_ns": L, "in_flight": F, "best_chains": best_k,
            "rows": rows, "limit_us": limit_us, "serial_us": rows * L / 1e3, "fused_limit_us": limit_us / K, "ns": ns}


def means_by_point(acc):
    """Mean over seeds per (lr, α, T)."""
    by = {}
    for (lr, a, T, _), v in acc.items():
        by.setdefault((lr, a, T), []).append(v)
    return {k: statistics.mean(v) for k, v in by.items()}


def run(kdcache, latency_bin=None, work=ROOT / ".build-bench", quick=False, reps=1, epochs=None, baselines=("numpy", "torch")):
    """The whole section; prints its table and returns run_bench-style verdicts (name, value, target)."""
    p = dict(QUICK if quick else FULL)
    if epochs is not None:
        p["epochs"] = epochs
    if "numpy" not in baselines:
        raise SystemExit("sweep_scale: numpy is the baseline of the targets; keep it in --baselines")
    work = Path(work); work.mkdir(parents=True, exist_ok=True)
    if latency_bin is None:
        latency_bin = str(work / "latency")
        subprocess.run(["gcc", "-O2", "-o", latency_bin, str(HERE / "latency.c")], check=True)
    csv_path = make_csv(work, p["every"])
    data, teacher, _ = make_stores(kdcache, work, csv_path)
    s = store_stats(data)
    n_train = s["splits"].get("train", 0)
    E, seeds = p["epochs"], p["seeds"]
    K = count(p, seeds)
    Kf = count(p["fused"], 1)
    title = (f"{s['rows']:,} texts ({n_train:,} train), {s['classes']} classes, 2^18 hashed word 1+2-grams"
             f" ({s['buckets']:,} buckets in use, {s['nnz']:.1f} nonzero per sample)")
    log(f"9. Sweeps at scale: Debian package-description paragraphs by Section, {title}; load average {os.getloadavg()[0]:.1f}")
    log(f"  linear students, SGD momentum {MOMENTUM}, batch {BATCH}, {E} epoch{'s' if E != 1 else ''}; end to end = process start to results")
    runs = {"numpy": [], "kd1": [], "kd2": [], **({"torch": []} if "torch" in baselines else {})}
    acc = {}
    train_seconds = []
    sweeps = work / "scale-sweeps"
    for rep in range(reps):
        t, acc["numpy"] = py_sweep("sweep_numpy.py", data, teacher, p, E, seeds); runs["numpy"].append(t)
        log(f"    rep {rep + 1}: numpy {t:.1f} s")
        t, acc["kdcache"], tr = kd_sweep(kdcache, data, teacher, sweeps / "kd1", p, E, seeds, 1); runs["kd1"].append(t); train_seconds.append(tr)
        log(f"    rep {rep + 1}: kdcache 1 worker {t:.1f} s")
        if "torch" in runs:
            t, acc["torch"] = py_sweep("sweep_torch.py", data, teacher, p, E, seeds); runs["torch"].append(t)
            log(f"    rep {rep + 1}: PyTorch {t:.1f} s")
        t, acc2, _ = kd_sweep(kdcache, data, teacher, sweeps / "kd2", p, E, seeds, 2); runs["kd2"].append(t)
        log(f"    rep {rep + 1}: kdcache 2 workers {t:.1f} s")
        if acc2 != acc["kdcache"]:
            raise SystemExit("sweep_scale: kdcache with 2 workers gave other accuracies than with 1: results must not depend on --workers")

    def ratio(base, cand):
        return statistics.median(b / c for b, c in zip(runs[base], runs[cand]))

    med = {k: statistics.median(v) for k, v in runs.items()}
    log(f"  a. {K} configurations (T {p['temperature']} × α {p['alpha']} × lr {p['lr']} × {seeds} seeds), end to end:")
    log(f"      {'':<24} {'seconds':>8} {'kdcache 1w speed-up':>20} {'kdcache 2w speed-up':>20} {'mean test acc':>14}")
    for name, label in [(n, l) for n, l in [("numpy", "numpy/scipy + py-lmdb"), ("torch", "PyTorch (CPU, 1 thread)")] if n in runs]:
        log(f"      {label:<24} {med[name]:8.1f} {ratio(name, 'kd1'):19.2f}x {ratio(name, 'kd2'):19.2f}x {statistics.mean(acc[name].values()):14.4f}")
    log(f"      {'kdcache, 1 worker':<24} {med['kd1']:8.1f} {'':>20} {'':>20} {statistics.mean(acc['kdcache'].values()):14.4f}")
    log(f"      {'kdcache, 2 workers':<24} {med['kd2']:8.1f} {'':>20} {'':>20} {'(the same)':>14}")
    kd_points = means_by_point(acc["kdcache"])
    for name in [b for b in ("numpy", "torch") if b in runs]:
        if set(acc[name]) != set(acc["kdcache"]):
            raise SystemExit(f"sweep_scale: {name} ran other configurations than kdcache: {sorted(set(acc[name]) ^ set(acc['kdcache']))}")
        pts = means_by_point(acc[name])
        diffs = {k: pts[k] - kd_points[k] for k in kd_points}
        worst = max(diffs, key=lambda k: abs(diffs[k]))
        best_kd, best_base = max(kd_points, key=kd_points.get), max(pts, key=pts.get)
        log(f"      accuracy, {name} − kdcache (mean over seeds per point): mean {statistics.mean(diffs.values()):+.4f},"
            f" largest {diffs[worst]:+.4f} at lr {worst[0]:g} α {worst[1]:g} T {worst[2]:g};"
            f" best point kdcache lr {best_kd[0]:g} α {best_kd[1]:g} T {best_kd[2]:g} ({kd_points[best_kd]:.4f}),"
            f" {name} lr {best_base[0]:g} α {best_base[1]:g} T {best_base[2]:g} ({pts[best_base]:.4f})")
    seed_spread = statistics.mean(abs(acc["kdcache"][(lr, a, T, 0)] - acc["kdcache"][(lr, a, T, 1)]) for lr, a, T in kd_points)
    log(f"      (kdcache's own seed spread: mean |seed 0 − seed 1| {seed_spread:.4f})")

    # b. fusion: K configurations of one group in one run against K runs of one.
    f = p["fused"]
    one_grid = [{"temperature": T, "alpha": a, "lr": lr} for T in f["temperature"].split(",") for a in f["alpha"].split(",")
                for lr in f["lr"].split(",")]
    fused_t, sep_t, fused_train = [], [], []
    for rep in range(reps):
        t, _, tr = kd_sweep(kdcache, data, teacher, sweeps / "fused", f, E, 1, 1); fused_t.append(t); fused_train.append(tr)
        log(f"    rep {rep + 1}: {Kf} configurations in one run {t:.1f} s")
        total = 0.0
        for i, g in enumerate(one_grid):
            total += kd_sweep(kdcache, data, teacher, sweeps / f"one{i}", g, E, 1, 1)[0]
        sep_t.append(total)
        log(f"    rep {rep + 1}: {Kf} runs of one {total:.1f} s")
    for i in range(len(one_grid)):
        shutil.rmtree(sweeps / f"one{i}", ignore_errors=True)
    fusion = statistics.median(a / b for a, b in zip(fused_t, sep_t))
    log(f"  b. K = {Kf} configurations of one seed (T {f['temperature']} × α {f['alpha']} × lr {f['lr']}), 1 worker, end to end:"
        f" {Kf} runs of one {statistics.median(sep_t):.1f} s, one run of {Kf} {statistics.median(fused_t):.1f} s; ratio {fusion:.2f}x")

    # c. µs per sample-step per configuration against the memory-latency estimate.
    steps = n_train * E
    us_sweep = statistics.median(train_seconds) / (K * steps) * 1e6
    us_fused = statistics.median(fused_train) / (Kf * steps) * 1e6
    groups = seeds
    m = latency_model(latency_bin, s, K // groups)
    log(f"  c. µs per sample-step per configuration (training time in results.jsonl over configurations × epochs × {n_train:,} train samples):")
    log(f"      sweep (a), 1 worker, groups of {K // groups}: {us_sweep:.2f} µs;  one run of {Kf} (b): {us_fused:.2f} µs")
    log(f"      memory: a student is {s['buckets']:,} rows × {s['classes']} classes × 4 B = {m['table_bytes'] / 2 / 2**20:.0f} MiB of weights"
        f" + as much momentum; pointer chase over {m['table_bytes'] / 2**20:.0f} MiB in {m['row_bytes']} B rows (tools/bench/latency.c):"
        f" dependent load {m['latency_ns']:.0f} ns; best {m['ns'][m['best_chains']]:.0f} ns per load with {m['best_chains']} chains"
        f" → {m['in_flight']:.1f} rows in flight")
    log(f"      estimate: 2 rows (weights, momentum) × {s['nnz']:.1f} features × {m['latency_ns']:.0f} ns / {m['in_flight']:.1f} in flight ="
        f" {m['limit_us']:.2f} µs per sample-step per configuration unfused ({m['serial_us']:.1f} µs if no miss overlapped);"
        f" fused over a group of {K // groups}: {m['fused_limit_us']:.3f} µs")
    log(f"      measured / estimate: sweep {us_sweep / m['limit_us']:.2f}x, one run of {Kf} {us_fused / m['limit_us']:.2f}x")
    size = f"{s['rows']:,} texts, {K} configs, {E} epochs"
    return [(f"scale sweep ({size}): kdcache 1 worker speed-up over numpy (floor 5x)", ratio("numpy", "kd1"), -10),
            (f"scale sweep ({size}): kdcache 2 workers speed-up over numpy (floor 5x)", ratio("numpy", "kd2"), -10),
            *([(f"scale sweep ({size}): kdcache 1 worker speed-up over PyTorch", ratio("torch", "kd1"), None)] if "torch" in runs else []),
            (f"scale fusion ({s['rows']:,} texts): {Kf} configs in one run / {Kf} runs of one", fusion, 0.25),
            ("scale: µs per sample-step per configuration (sweep, 1 worker)", us_sweep, None),
            ("scale: memory-latency estimate of that, unfused, µs", m["limit_us"], None)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True, help="the kdcache binary (release)")
    ap.add_argument("--latency", help="tools/bench/latency.c built (default: built into --work with gcc)")
    ap.add_argument("--work", default=str(ROOT / ".build-bench"))
    ap.add_argument("--quick", action="store_true", help="every 8th row, 2 epochs, 8 configurations")
    ap.add_argument("--reps", type=int, default=1, help="interleaved repetitions (median of ratios)")
    ap.add_argument("--epochs", type=int, help="epochs per run (default 1; 2 with --quick)")
    ap.add_argument("--baselines", default="numpy,torch", help="comma-separated: numpy (required), torch")
    a = ap.parse_args()
    if a.reps < 1:
        raise SystemExit("sweep_scale: --reps must be at least 1")
    t0 = time.perf_counter()
    if a.epochs is not None and a.epochs < 1:
        raise SystemExit("sweep_scale: --epochs must be at least 1")
    verdicts = run(a.bin, a.latency, Path(a.work), a.quick, a.reps, a.epochs, tuple(a.baselines.split(",")))
    print("Targets:")
    for name, value, target in verdicts:
        if target is None:
            print(f"  INFO  {name} = {value:.2f}")
        elif target > 0:
            print(f"  {'PASS' if value <= target else 'MISS'}  {name} = {value:.2f} (target <= {target})")
        else:
            print(f"  {'PASS' if value >= -target else 'MISS'}  {name} = {value:.2f}x (target >= {-target}x)")
    print(f"sweep_scale: {time.perf_counter() - t0:.0f} s, load average now {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
