#!/usr/bin/env python3
"""Successive halving against the full grid, side by side in one run, on the bundled fortunes
(hashed text) and digits (dense) fixtures: 81 grid points (3 students × 3 T × 3 α × 3 lr), each
with --seeds seeds, --epochs epochs; halving with --eta (3) and --min-epochs (1).

For each dataset it prints the best configuration of each search (chosen on mean valid accuracy
over seeds, as `kdcache sweep` ranks), that configuration's numbers in the full grid, whether it is
the grid's best or within the grid's best's seed spread (|Δ valid| ≤ its sd over seeds), and the
compute: epochs trained (Σ epochs_run over runs) and wall time, with their grid / halving ratios.

Usage: halving_bench.py [--bin .build/release/kdcache] [--epochs 27] [--seeds 2] [--eta 3] [--min-epochs 1] [--workers 2] [--keep DIR]
"""
import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

DATASETS = {
    "fortunes": dict(csv=ROOT / "fixtures/fortunes/fortunes.csv",
                     prep=["--text-column", "text", "--label-column", "label", "--id-column", "id"],
                     students="linear,fasttext:dim=16,fasttext:dim=32"),
    "digits": dict(csv=ROOT / "fixtures/digits/digits.csv",
                   prep=["--feature-columns", "px*", "--label-column", "label", "--id-column", "id"],
                   students="linear,mlp:hidden=16,mlp:hidden=32"),
}
ETA = ["3", "1"]  # --eta, --min-epochs (set from the flags)
GRID = ["--temperature", "1,2,4", "--alpha", "0.3,0.6,0.9", "--lr", "0.03,0.1,0.3"]


def run(args, **kw):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, args))}\n{r.stdout}{r.stderr}")
    return r


def point_key(config):
    """A grid point across rungs: the configuration without seed, epochs and the rung's early stop."""
    c = json.loads(json.dumps(config))
    c.pop("seed"), c.pop("epochs"), c.pop("stopAfterEpochs", None)
    return json.dumps(c, sort_keys=True)


def describe(config):
    loss, opt = config["loss"], config["optimizer"]
    a = config["architecture"]
    arch = a["kind"] + (f":{a['width']}" if a["kind"] != "linear" else "")
    return f"{arch} T={loss['temperature']:g} a={loss['alpha']:g} lr={opt['learningRate']:g}"


def points(results_path):
    """Each point's final runs (its last rung in a halving sweep): {key: (config, [valid], [test], epochs trained)}."""
    runs = [json.loads(line) for line in Path(results_path).read_text().splitlines()]
    halving = any("rung" in r for r in runs)
    out = {}
    for r in runs:
        if halving and "stoppedAtEpoch" not in r:
            continue
        k = point_key(r["config"])
        cfg, v, t, rung = out.get(k, (r["config"], [], [], r.get("stoppedAtEpoch", r["config"]["epochs"])))
        if r.get("valid"):
            v.append(r["valid"]["accuracy"]); t.append(r["test"]["accuracy"])
        out[k] = (cfg, v, t, rung)
    epochs = sum(r["epochsRun"] for r in runs)
    return out, epochs, len(runs)


def best(pts):
    """The ranking of `kdcache sweep`: more epochs trained first, then mean valid accuracy (ties: file order)."""
    order = {k: i for i, k in enumerate(pts)}
    ok = [k for k, (_, v, _, _) in pts.items() if v]
    return min(ok, key=lambda k: (-pts[k][3], -statistics.mean(pts[k][1]), order[k]))


def sweep(binary, d, name, search, epochs, seeds, workers, students):
    out = d / f"{name}-{search}"
    args = [binary, "sweep", "--data", d / f"{name}.lmdb", "--logits", d / f"{name}-t.lmdb", "--student", students, *GRID,
            "--epochs", epochs, "--seeds", seeds, "--workers", workers, "--out", out, "--force", "--quiet"]
    if search == "halving":
        args += ["--search", "halving", "--eta", ETA[0], "--min-epochs", ETA[1]]
    t0 = time.perf_counter()
    run(args)
    return out, time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", default=str(ROOT / ".build/release/kdcache"))
    p.add_argument("--epochs", type=int, default=27)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--eta", type=int, default=3)
    p.add_argument("--min-epochs", type=int, default=1)
    p.add_argument("--keep", help="work in this directory and keep it")
    a = p.parse_args()
    ETA[:] = [str(a.eta), str(a.min_epochs)]
    d = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="halving-bench-"))
    if a.keep and d.exists() and any(d.iterdir()):
        sys.exit(f"halving_bench: --keep {d} is not empty; name a new or empty directory (nothing is removed)")
    d.mkdir(parents=True, exist_ok=True)
    print(f"81 grid points × {a.seeds} seeds, {a.epochs} epochs; halving η = {a.eta}, min {a.min_epochs} epochs; --workers {a.workers}; {a.bin}")
    for name, spec in DATASETS.items():
        run([a.bin, "prep", spec["csv"], "--out", d / f"{name}.lmdb", *spec["prep"], "--force", "--quiet"])
        run([a.bin, "teach", "--data", d / f"{name}.lmdb", "--out", d / f"{name}-t.lmdb", "--teacher", "linear", "--epochs", "10",
             "--ensemble", "1", "--temperature", "2", "--quiet"])
        grid_dir, grid_s = sweep(a.bin, d, name, "grid", a.epochs, a.seeds, a.workers, spec["students"])
        half_dir, half_s = sweep(a.bin, d, name, "halving", a.epochs, a.seeds, a.workers, spec["students"])
        g_pts, g_epochs, g_runs = points(grid_dir / "results.jsonl")
        h_pts, h_epochs, h_runs = points(half_dir / "results.jsonl")
        gb, hb = best(g_pts), best(h_pts)
        g_cfg, g_v, g_t, _ = g_pts[gb]
        _, hv_in_grid, ht_in_grid, _ = g_pts[hb]
        sd = statistics.stdev(g_v) if len(g_v) > 1 else 0.0
        gap = statistics.mean(g_v) - statistics.mean(hv_in_grid)
        verdict = "the grid's best" if hb == gb else ("within the grid best's seed spread" if gap <= sd else "outside the seed spread")
        print(f"\n{name} ({len(g_pts)} points, {g_runs} grid runs, {h_runs} halving runs)")
        print(f"  grid    best: {describe(g_cfg)}: valid {statistics.mean(g_v):.4f} ± {sd:.4f}, test {statistics.mean(g_t):.4f}")
        print(f"  halving best: {describe(h_pts[hb][0])}: in the grid valid {statistics.mean(hv_in_grid):.4f}, test {statistics.mean(ht_in_grid):.4f} → {verdict} (Δ valid {gap:+.4f})")
        print(f"  compute: epochs trained {g_epochs} vs {h_epochs} ({g_epochs / h_epochs:.1f}× less); "
              f"wall {grid_s:.1f} s vs {half_s:.1f} s ({grid_s / half_s:.1f}× less)")
    if not a.keep:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
