#!/usr/bin/env python3
"""`make bench`: kdcache's storage layer against named baselines, measured side by side in one run.

Every figure is a ratio against a baseline run in the same invocation, interleaved
(baseline, candidate, baseline, candidate, ...) after a warm-up, reported as the median of the
per-repetition ratios (PERF-NOTES.md: absolute numbers drift up to 1.5x between runs here).

  1. LMDB layer: bulk write (MDB_APPEND), cursor scan, random get+copy, for 64 B and 2000 B
     values: Swift wrapper vs LMDB's C API vs py-lmdb.        targets: Swift <= 1.25x C; >= 20x py-lmdb on scans
  2. Soft-label writes: 10-class float16 records through SoftLabelWriter vs the C API writing
     records of the same size.                                  target: <= 1.25x C
  3. prep: rows/s of `kdcache prep` vs tools/bench/prep_python.py on the same JSONL.
  4. Peak memory (max RSS) of `kdcache prep` on 1,000,000 JSONL rows.   target: < 500 MB
  5. Sweeps on the fortunes fixture: kdcache vs the same sweep in numpy reading the same cache
     through py-lmdb (target >= 5x); K configurations in one run vs K runs of one (the sharing);
     the sweep vs rerunning the teacher every epoch (the reason the cache exists).
  6. Teacher stage: cache-writing time over a cheap teacher's own compute (target <= 10 %).
  7. Reading a cache from Python: the kdcache reader (py-lmdb + numpy) vs Hugging Face `datasets`
     (Arrow, memory-mapped) holding the same log-probabilities as a column — random access and scan.
  8. External teachers: `kdcache teach --exec` with a teacher that answers instantly, JSON vs
     binary framing, against `kdcache import` of the same logits from .npy (the protocol's floor).
  9. Sweeps at scale (tools/bench/sweep_scale.py): Debian's package-description paragraphs (~160k
     texts, ~50 classes): a 36-configuration sweep, kdcache (1 and 2 workers) vs numpy and PyTorch
     (target >= 10x numpy, floor 5x); 36 configurations in one run vs 36 runs of one (target <= 0.25x);
     µs per sample-step per configuration against a memory-latency estimate (tools/bench/latency.c).
     Its stores are kept in .build-bench/ keyed by their inputs; --scale-quick runs it small.
 10. Token-level student (tools/bench/token_sweep_torch.py): positions/s of `kdcache sweep` (one
     configuration, 1 worker) against the same student and loss in PyTorch at 1 and 2 threads, on a
     synthetic V = 49,152 top-k:32 cache of 100k positions kept in .build-bench/token-sweep
     (target >= 5x PyTorch at 1 thread); skipped with a message while kdcache has no token sweep.
"""
import argparse
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lmdb

HERE = Path(__file__).resolve().parent
REPS = int(os.environ.get("BENCH_REPS", "5"))


def run(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()
    return float(out[0]), out[1]


def py_write(path, n, size):
    if os.path.exists(path):
        os.unlink(path)
    env = lmdb.open(path, subdir=False, map_size=64 << 30, max_dbs=4)
    db = env.open_db(b"bench")
    t0 = time.perf_counter()
    i = 0
    while i < n:
        end = min(n, i + 100_000)
        with env.begin(write=True, db=db) as txn:
            for j in range(i, end):
                txn.put(struct.pack(">Q", j), bytes([j & 0xFF]) * size, append=True)
        i = end
    env.close()
    return time.perf_counter() - t0, str(n)


def py_scan(path, buffers=False):
    """py-lmdb's cursor loop; by default values arrive as bytes (a copy), as most code uses it."""
    env = lmdb.open(path, subdir=False, readonly=True, lock=False, max_dbs=4)
    t0 = time.perf_counter()
    db = env.open_db(b"bench", create=False)
    total = 0
    with env.begin(db=db, buffers=buffers) as txn:
        for _, v in txn.cursor():
            total += v[len(v) - 1] + len(v)
    env.close()
    return time.perf_counter() - t0, str(total)


def py_decode(path):
    """The scan a Python trainer does: each record to numpy (np.frombuffer), then reduced."""
    import numpy as np
    env = lmdb.open(path, subdir=False, readonly=True, lock=False, max_dbs=4)
    t0 = time.perf_counter()
    db = env.open_db(b"bench", create=False)
    total = 0
    with env.begin(db=db, buffers=True) as txn:
        for _, v in txn.cursor():
            total += int(np.frombuffer(v, dtype="<u4").sum(dtype=np.uint64))
    env.close()
    return time.perf_counter() - t0, str(total)


def py_get(path, n, count, seed):
    env = lmdb.open(path, subdir=False, readonly=True, lock=False, max_dbs=4)
    mask = (1 << 64) - 1
    state = (seed * 0x9E3779B97F4A7C15 + 1) & mask
    batch = bytearray(1 << 20)
    t0 = time.perf_counter()
    db = env.open_db(b"bench", create=False)
    total = 0
    with env.begin(db=db, buffers=True) as txn:
        get = txn.get
        for i in range(count):
            state ^= (state << 13) & mask
            state ^= state >> 7
            state ^= (state << 17) & mask
            v = get(struct.pack(">Q", state % n))
            m = min(len(v), 4096)
            row = (i % 256) * 4096
            batch[row:row + m] = v[:m]
            total += batch[row] + len(v)
    env.close()
    return time.perf_counter() - t0, str(total)


def median_ratio(pairs):
    return statistics.median(c / b for b, c in pairs)


def side_by_side(name, baseline, candidates, reps=REPS):
    """Warm up once, then interleave; returns {candidate: median(candidate_time / baseline_time)}."""
    baseline()
    for c in candidates.values():
        c()
    times = {k: [] for k in candidates}
    base_times = []
    for _ in range(reps):
        b, bsum = baseline()
        base_times.append(b)
        for k, c in candidates.items():
            t, csum = c()
            if csum != bsum:
                raise SystemExit(f"{name}: {k} computed {csum}, the baseline {bsum}: not the same work")
            times[k].append(t)
    return statistics.median(base_times), {k: (statistics.median(v), median_ratio(zip(base_times, v))) for k, v in times.items()}


def report(title, unit_count, unit, base_name, base, results):
    print(f"  {title}: {base_name} {unit_count / base / 1e3:,.0f} k{unit}/s")
    for k, (t, ratio) in results.items():
        print(f"      {k:<16} {unit_count / t / 1e3:>10,.0f} k{unit}/s   time ratio vs {base_name}: {ratio:5.2f}x")


def lmdb_section(args, tmp):
    print("1. LMDB layer, 8-byte big-endian keys (ratio = time / C time; < 1 is faster than C)")
    verdicts = []
    for n, size in [(1_000_000, 64), (200_000, 2000)]:
        c_path, s_path, p_path = (str(tmp / f"{k}-{size}.lmdb") for k in "csp")
        base, res = side_by_side("write", lambda: run([args.c, "write", c_path, str(n), str(size)]), {
            "swift": lambda: run([args.swift, "write", s_path, str(n), str(size)]),
            "py-lmdb": lambda: py_write(p_path, n, size)})
        report(f"bulk write {n:,} x {size} B, MDB_APPEND", n, "rec", "C", base, res)
        verdicts.append((f"write {size} B: Swift/C", res["swift"][1], 1.25))
        base, res = side_by_side("scan", lambda: run([args.c, "scan", c_path]), {
            "swift": lambda: run([args.swift, "scan", c_path]), "py-lmdb": lambda: py_scan(c_path),
            "py-lmdb buffers": lambda: py_scan(c_path, buffers=True)})
        report(f"cursor scan {n:,} x {size} B", n, "rec", "C", base, res)
        verdicts.append((f"scan {size} B: Swift/C", res["swift"][1], 1.25))
        verdicts.append((f"scan {size} B: py-lmdb/Swift", res["py-lmdb"][1] / res["swift"][1], -20))
        verdicts.append((f"scan {size} B: py-lmdb (buffers=True)/Swift", res["py-lmdb buffers"][1] / res["swift"][1], -20))
        base, res = side_by_side("decode", lambda: run([args.c, "decode", c_path]), {
            "swift": lambda: run([args.swift, "decode", c_path]), "py-lmdb+numpy": lambda: py_decode(c_path)})
        report(f"scan + decode {n:,} x {size} B (values as u32 words, summed)", n, "rec", "C", base, res)
        verdicts.append((f"scan+decode {size} B: Swift/C", res["swift"][1], 1.25))
        verdicts.append((f"scan+decode {size} B: py-lmdb+numpy/Swift", res["py-lmdb+numpy"][1] / res["swift"][1], -20))
        count = 1_000_000
        base, res = side_by_side("get", lambda: run([args.c, "get", c_path, str(n), str(count), "7"]), {
            "swift": lambda: run([args.swift, "get", c_path, str(n), str(count), "7"]),
            "py-lmdb": lambda: py_get(c_path, n, count, 7)})
        report(f"random get + copy, {count:,} of {n:,} x {size} B", count, "get", "C", base, res)
        verdicts.append((f"get {size} B: Swift/C", res["swift"][1], 1.25))
    return verdicts


def softlabel_section(args, tmp):
    print("2. Soft-label cache writes: 10-class float16 dense records (28 B) through SoftLabelWriter")
    n = 1_000_000
    size = 8 + 10 * 2
    base, res = side_by_side("softlabels", lambda: run([args.c, "write", str(tmp / "c-sl.lmdb"), str(n), str(size)]), {
        "swift": lambda: run([args.swift, "softlabels", str(tmp / "s-sl.lmdb"), str(n), "10"])})
    report(f"{n:,} records (encode + CRC + put + manifest per 100k)", n, "rec", "C put of same-size values", base, res)
    return [("soft-label write: Swift/C", res["swift"][1], 1.25)]


def prep_section(args, tmp):
    print("3. prep throughput on synthetic JSONL (fortunes vocabulary), hashed uni+bigrams, 2^18 buckets")
    rows = 50_000
    src = tmp / "prep.jsonl"
    subprocess.run([sys.executable, str(HERE / "make_jsonl.py"), str(src), str(rows)], check=True)

    def swift():
        t0 = time.perf_counter()
        subprocess.run([args.kdcache, "prep", str(src), "--out", str(tmp / "prep-swift.lmdb"), "--text-column", "text",
                        "--label-column", "label", "--id-column", "id", "--force", "--quiet"], check=True, capture_output=True)
        return time.perf_counter() - t0, "same"

    def python():
        out = tmp / "prep-python.lmdb"
        if out.exists():
            out.unlink()
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(HERE / "prep_python.py"), str(src), str(out)], check=True, capture_output=True)
        return time.perf_counter() - t0, "same"

    base, res = side_by_side("prep", python, {"kdcache": swift}, reps=3)
    report(f"{rows:,} rows", rows, "rows", "Python", base, res)
    return [("prep: kdcache speed-up over Python", 1 / res["kdcache"][1], -1)]


def memory_section(args, tmp):
    print("4. Peak memory of kdcache prep on 1,000,000 JSONL rows")
    src = tmp / "million.jsonl"
    subprocess.run([sys.executable, str(HERE / "make_jsonl.py"), str(src), "1000000"], check=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen([args.kdcache, "prep", str(src), "--out", str(tmp / "million.lmdb"), "--text-column", "text",
                             "--label-column", "label", "--id-column", "id", "--force", "--quiet"], stdout=subprocess.DEVNULL)
    # VmHWM counts the store's memory-mapped pages (page cache, reclaimable) as well as the heap;
    # RssAnon, sampled, is the process's own memory: the part that must not grow with the input.
    peak_anon, samples = 0, []
    while proc.poll() is None:
        try:
            fields = dict(line.split(":", 1) for line in open(f"/proc/{proc.pid}/status"))
            anon = int(fields["RssAnon"].split()[0]) / 1024
            peak_anon = max(peak_anon, anon)
            samples.append(anon)
        except (OSError, KeyError, ValueError):
            pass
        time.sleep(0.05)
    _, status, usage = os.wait4(proc.pid, 0) if proc.returncode is None else (0, proc.returncode, None)
    if proc.returncode not in (0, None) or status != 0:
        raise SystemExit("prep of 1M rows failed")
    quarter = len(samples) // 4
    early, late = (max(samples[:quarter]), max(samples[-quarter:])) if quarter else (peak_anon, peak_anon)
    print(f"  {src.stat().st_size / 1e6:,.0f} MB input, {time.perf_counter() - t0:.1f} s")
    print(f"  peak anonymous memory (heap) {peak_anon:,.0f} MB; first quarter of the run {early:,.0f} MB, last quarter {late:,.0f} MB")
    return [("prep 1M rows: peak anonymous memory MB", peak_anon, 500)]


def sweep_section(args, tmp):
    print("5. Sweeps on fortunes (1,919 texts, 8 classes, 2^18 hashed features): linear students, Adam, batch 32")
    root = HERE.parents[1]
    data, cache = tmp / "f.lmdb", tmp / "t.lmdb"
    subprocess.run([args.kdcache, "prep", str(root / "fixtures/fortunes/fortunes.csv"), "--out", str(data), "--text-column", "text",
                    "--label-column", "label", "--id-column", "id", "--seed", "7", "--quiet", "--force"], check=True, capture_output=True)
    subprocess.run([args.kdcache, "teach", "--data", str(data), "--out", str(cache), "--quiet"], check=True, capture_output=True)
    grid = ["--student", "linear", "--temperature", "2,4", "--alpha", "0,0.5,0.9", "--lr", "0.1", "--epochs", "10", "--seeds", "2"]

    def kd():
        out = tmp / "sweep-kd"
        subprocess.run(["rm", "-rf", str(out)])
        t0 = time.perf_counter()
        subprocess.run([args.kdcache, "sweep", "--data", str(data), "--logits", str(cache), *grid, "--out", str(out), "--quiet"], check=True, capture_output=True)
        return time.perf_counter() - t0, "10"

    def numpy_sweep():
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, str(HERE / "sweep_numpy.py"), str(data), str(cache), "--temperature", "2,4", "--alpha", "0,0.5,0.9",
                            "--lr", "0.1", "--epochs", "10", "--seeds", "2"], check=True, capture_output=True, text=True)
        return time.perf_counter() - t0, str(r.stdout.count("test accuracy"))

    def torch_sweep():
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, str(HERE / "sweep_torch.py"), str(data), str(cache), "--temperature", "2,4", "--alpha", "0,0.5,0.9",
                            "--lr", "0.1", "--epochs", "10", "--seeds", "2"], check=True, capture_output=True, text=True)
        return time.perf_counter() - t0, str(r.stdout.count("test accuracy"))

    base, res = side_by_side("sweep", numpy_sweep, {"kdcache": kd}, reps=3)
    print("  10 configurations x 10 epochs, end to end (process start, reading both stores, training, evaluation):")
    print(f"      numpy + py-lmdb  {base:6.2f} s")
    print(f"      kdcache          {res['kdcache'][0]:6.2f} s   time ratio vs numpy: {res['kdcache'][1]:5.2f}x")
    verdicts = [("sweep: kdcache speed-up over numpy", 1 / res["kdcache"][1], -5)]
    base, res = side_by_side("sweep-torch", torch_sweep, {"kdcache": kd}, reps=3)
    print(f"      PyTorch (EmbeddingBag + SparseAdam, CPU) {base:6.2f} s; kdcache time ratio vs PyTorch: {res['kdcache'][1]:5.2f}x")
    verdicts.append(("sweep: kdcache speed-up over PyTorch", 1 / res["kdcache"][1], -5))

    points = [(a, t) for a in ("0.5", "0.9") for t in ("1", "2", "4", "8", "16")]
    one = ["--student", "linear", "--lr", "0.1", "--epochs", "10", "--seeds", "1", "--workers", "1", "--quiet"]

    def shared():
        out = tmp / "shared"
        subprocess.run(["rm", "-rf", str(out)])
        t0 = time.perf_counter()
        subprocess.run([args.kdcache, "sweep", "--data", str(data), "--logits", str(cache), "--alpha", "0.5,0.9", "--temperature", "1,2,4,8,16",
                        *one, "--out", str(out)], check=True, capture_output=True)
        return time.perf_counter() - t0, "same"

    def separate():
        t0 = time.perf_counter()
        for k, (a, t) in enumerate(points):
            out = tmp / f"single{k}"
            subprocess.run(["rm", "-rf", str(out)])
            subprocess.run([args.kdcache, "sweep", "--data", str(data), "--logits", str(cache), "--alpha", a, "--temperature", t, *one,
                            "--out", str(out)], check=True, capture_output=True)
        return time.perf_counter() - t0, "same"

    base, res = side_by_side("sharing", separate, {"one run of K": shared}, reps=3)
    print(f"  K = 10 configurations (α 0.5/0.9 x T 1..16), one worker: 10 separate runs {base:.2f} s, one shared run {res['one run of K'][0]:.2f} s,"
          f" time ratio {res['one run of K'][1]:.2f}x")
    verdicts.append(("sharing: K configs in one run / K runs", res["one run of K"][1], 1.0))

    pass_time = statistics.median(float(run([args.swift, "teacher-pass", str(data)])[0]) for _ in range(3))
    sweep_time = statistics.median(kd()[0] for _ in range(2))
    groups, epochs, configs = 2, 10, 10
    shared_rerun = sweep_time + groups * epochs * pass_time
    naive_rerun = sweep_time + configs * epochs * pass_time
    print(f"  teacher inference over the train split (featurize + 3 MLPs): {pass_time:.3f} s per epoch")
    print(f"  the 10-configuration sweep: {sweep_time:.2f} s from the cache; rerunning the teacher every epoch would add"
          f" {groups * epochs * pass_time:.1f} s even when configurations share passes ({shared_rerun / sweep_time:.1f}x),"
          f" {configs * epochs * pass_time:.1f} s when each run calls it ({naive_rerun / sweep_time:.1f}x)")
    verdicts.append(("cache vs rerunning the teacher (shared passes): speed-up", shared_rerun / sweep_time, -1))
    return verdicts


def teach_overhead_section(args, tmp):
    print("6. Teacher stage: writing a cheap teacher's outputs (linear, 1 epoch, store features) into the cache")
    src, data = tmp / "ov.jsonl", tmp / "ov.lmdb"
    subprocess.run([sys.executable, str(HERE / "make_jsonl.py"), str(src), "200000"], check=True)
    subprocess.run([args.kdcache, "prep", str(src), "--out", str(data), "--text-column", "text", "--label-column", "label",
                    "--id-column", "id", "--quiet", "--force"], check=True, capture_output=True)
    ratios = []
    for _ in range(3):
        out = subprocess.run([args.swift, "teach-overhead", str(data), str(tmp / "ov-cache.lmdb")], check=True, capture_output=True, text=True).stdout.split()
        compute, write = float(out[0]), float(out[1])
        ratios.append(write / compute)
    print(f"  200,000 samples, 8 classes, f16: teacher compute {compute:.2f} s, cache writing {write:.2f} s; overhead {statistics.median(ratios) * 100:.1f} %")
    return [("teacher stage: cache-writing overhead", statistics.median(ratios), 0.10)]


def python_reader_section(args, tmp):
    print("7. Python: the kdcache reader vs Hugging Face datasets (Arrow) on the same 200,000 x 8 log-probabilities")
    import numpy as np
    try:
        import datasets
    except ImportError:
        raise SystemExit("datasets is not installed: make bench installs tools/requirements-bench.txt")
    sys.path.insert(0, str(HERE.parent / "python"))
    import kdcache
    cache = tmp / "ov-cache.lmdb"
    if not cache.exists():
        teach_overhead_section(args, tmp)
    store = kdcache.open(str(cache))
    n = len(store)
    values = np.array([store.log_probs(i) for i in range(n)], dtype=np.float32)
    hf = datasets.Dataset.from_dict({"log_probs": values}).with_format("numpy")
    hf.save_to_disk(str(tmp / "hf"))
    hf = datasets.load_from_disk(str(tmp / "hf")).with_format("numpy")
    rng = np.random.default_rng(0)
    idx = rng.integers(0, n, 20000)

    def kd_random():
        t0 = time.perf_counter()
        s = 0.0
        for i in idx:
            s += float(store.log_probs(int(i))[0])
        return time.perf_counter() - t0, f"{s:.1f}"

    def hf_random():
        t0 = time.perf_counter()
        s = 0.0
        for i in idx:
            s += float(hf[int(i)]["log_probs"][0])
        return time.perf_counter() - t0, f"{s:.1f}"

    def kd_scan():
        t0 = time.perf_counter()
        s = 0.0
        for _, lp in store:
            s += float(lp[0])
        return time.perf_counter() - t0, f"{s:.0f}"

    def hf_scan():
        t0 = time.perf_counter()
        s = 0.0
        for batch in hf.iter(batch_size=1):
            s += float(batch["log_probs"][0][0])
        return time.perf_counter() - t0, f"{s:.0f}"

    base, res = side_by_side("random", hf_random, {"kdcache": kd_random}, reps=3)
    print(f"  random access, 20,000 records: datasets {len(idx) / base / 1e3:.1f} k/s, kdcache {len(idx) / res['kdcache'][0] / 1e3:.1f} k/s,"
          f" time ratio {res['kdcache'][1]:.3f}x")
    verdicts = [("python random access: kdcache / datasets time", res["kdcache"][1], 1.0)]
    base, res = side_by_side("scan", hf_scan, {"kdcache": kd_scan}, reps=3)
    print(f"  full scan, record by record, {n:,} records: datasets {n / base / 1e3:.1f} k/s, kdcache {n / res['kdcache'][0] / 1e3:.1f} k/s,"
          f" time ratio {res['kdcache'][1]:.3f}x")
    verdicts.append(("python scan: kdcache / datasets time", res["kdcache"][1], 1.0))
    return verdicts


def protocol_section(args, tmp):
    print("8. External-teacher protocol: an instant teacher (tools/bench/null_teacher.py), 20,000 samples x 1,000 classes, f16")
    import numpy as np
    src, data = tmp / "proto.jsonl", tmp / "proto.lmdb"
    n, classes = 20_000, 1000
    subprocess.run([sys.executable, str(HERE / "make_jsonl.py"), str(src), str(n), "--classes", str(classes)], check=True)
    subprocess.run([args.kdcache, "prep", str(src), "--out", str(data), "--text-column", "text", "--label-column", "label",
                    "--id-column", "id", "--quiet", "--force"], check=True, capture_output=True)
    # The logits the null teacher sends, as a file: its generator draws one batch of 256 at a time.
    rng = np.random.default_rng(0)
    logits = np.concatenate([rng.standard_normal((min(256, n - i), classes)).astype(np.float32) for i in range(0, n, 256)])
    np.save(tmp / "proto.npy", logits)

    def timed(cmd, out):
        for p in (out, Path(str(out) + "-lock")):
            p.unlink(missing_ok=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        return time.perf_counter() - t0, "same"

    def teach(framing):
        out = tmp / f"proto-{framing}.lmdb"
        return timed([args.kdcache, "teach", "--exec", f"{sys.executable} {HERE / 'null_teacher.py'} --classes {classes} --framing {framing}",
                      "--data", str(data), "--out", str(out), "--temperature", "1", "--quiet"], out)

    base, res = side_by_side("protocol", lambda: timed([args.kdcache, "import", str(tmp / "proto.npy"), "--data", str(data),
                                                         "--out", str(tmp / "proto-import.lmdb")], tmp / "proto-import.lmdb"),
                             {"binary": lambda: teach("binary"), "json": lambda: teach("json")}, reps=3)
    report(f"{n:,} samples (process start, hello, batches of 256, cache writes)", n, "samples", "import .npy", base, res)
    same = subprocess.run([args.kdcache, "diff", str(tmp / "proto-import.lmdb"), str(tmp / "proto-binary.lmdb")],
                          capture_output=True, text=True).stdout.splitlines()[0]
    print(f"  import vs binary teach: {same}")
    return [("teacher protocol, binary framing: time / import", res["binary"][1], None),
            ("teacher protocol, JSON / binary framing time", res["json"][1] / res["binary"][1], None)]


def scale_section(args, tmp):
    import sweep_scale
    return sweep_scale.run(args.kdcache, args.latency, HERE.parents[1] / ".build-bench", quick=args.scale_quick)


def token_section(args, tmp):
    import token_sweep_torch
    print("10. Token-level student: kdcache sweep vs PyTorch, positions/s")
    r = token_sweep_torch.run(token_sweep_torch.parse(["--kdcache", args.kdcache, "--work", str(HERE.parents[1] / ".build-bench" / "token-sweep")]))
    if r["kdcache"] is None:
        return []
    return [(f"token student positions/s, kdcache / PyTorch {t['threads']} thread{'s' if t['threads'] > 1 else ''}", t["ratio"],
             -5 if t["threads"] == 1 else None) for t in r["torch"]]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--swift", required=True)
    p.add_argument("--c", required=True)
    p.add_argument("--kdcache", required=True)
    p.add_argument("--latency", help="tools/bench/latency.c built (section 9; default: built by sweep_scale.py)")
    p.add_argument("--scale-quick", action="store_true", help="section 9 on every 8th text, 2 epochs, 8 configurations")
    p.add_argument("--only", choices=["lmdb", "softlabels", "prep", "memory", "sweep", "teach", "python", "protocol", "scale", "token"])
    args = p.parse_args()
    sections = {"lmdb": lmdb_section, "softlabels": softlabel_section, "prep": prep_section, "memory": memory_section,
                "sweep": sweep_section, "teach": teach_overhead_section, "python": python_reader_section,
                "protocol": protocol_section, "scale": scale_section, "token": token_section}
    verdicts = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as d:
        for name, section in sections.items():
            if args.only in (None, name):
                verdicts += section(args, Path(d))
                print()
    print("Targets (median ratio of interleaved runs):")
    for name, value, target in verdicts:
        if target is None:
            print(f"  INFO  {name} = {value:.2f} (no target; measured for the record)")
        elif target > 0:
            ok = value <= target
            print(f"  {'PASS' if ok else 'MISS'}  {name} = {value:.2f} (target <= {target})")
        else:
            ok = value >= -target
            print(f"  {'PASS' if ok else 'MISS'}  {name} = {value:.2f}x (target >= {-target}x)")


if __name__ == "__main__":
    main()
