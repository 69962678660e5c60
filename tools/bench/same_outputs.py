#!/usr/bin/env python3
"""Does a refactor change what kdcache writes? Runs one fixed pipeline with each binary given and
compares every output byte for byte.

    python tools/bench/same_outputs.py --bin OLD/kdcache --bin NEW/kdcache

The pipeline covers each writer and each sweep path on the bundled fixtures, every random choice
seeded: prep of a text and a dense dataset; the built-in teacher (views, augmentation, cross-fit,
top-k, shards); `merge`; `import` of .npy and JSONL; `teach --exec` with the centroid teacher in both
framings; `export`; sweeps (kd and mse-logits, several students, early stopping, random search,
ensembles of two teachers, a sharded sweep and `sweep collect`). It hashes the content of every store
(each database's keys and values; manifests without their `created` clock) and the sweep's
results.jsonl / results.csv (rows sorted, the fields that measure time removed) / best student.

Exit status 0 when every output of every binary is identical, 1 with the differing outputs listed.
With a single --bin it prints the hashes only.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools/python"))
import kdcache  # noqa: E402
FORTUNES = ROOT / "fixtures/fortunes/fortunes.csv"
DIGITS = ROOT / "fixtures/digits/digits.csv"
CENTROID = ROOT / "tools/teachers/centroid_teacher.py"
# Fields of a result line that measure the machine, not the computation.
TIMING_KEYS = {"seconds", "wall_seconds", "wallSeconds", "samples_per_second", "samplesPerSecond"}
# Manifest fields that hold the wall clock, and the checksum that covers them.
CLOCK_KEYS = {"created"}


def lmdb_digest(path):
    """SHA-256 over every (database, key, value) of an LMDB file in key order, with the manifests'
    clock fields removed (and so their CRC): the file's content, not its page layout or date."""
    import lmdb
    h = hashlib.sha256()
    env = lmdb.open(str(path), subdir=False, readonly=True, lock=False, max_dbs=64)
    try:
        with env.begin() as txn:
            names = [bytes(k) for k, _ in txn.cursor()]
        for name in names:
            db = env.open_db(name, create=False)
            with env.begin(db=db) as txn:
                for k, v in txn.cursor():
                    k, v = bytes(k), bytes(v)
                    if name == b"meta" and k == b"manifest_crc32":
                        continue
                    if name == b"meta" and k == b"manifest":
                        v = json.dumps(drop_keys(json.loads(v), CLOCK_KEYS), sort_keys=True).encode()
                    for part in (name, k, v):
                        h.update(len(part).to_bytes(8, "little"))
                        h.update(part)
    finally:
        env.close()
    return h.hexdigest()


def drop_keys(value, keys):
    if isinstance(value, dict):
        return {k: drop_keys(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [drop_keys(v, keys) for v in value]
    return value


def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def jsonl_digest(path):
    """Lines in sorted order (workers finish in any order), timing fields removed."""
    lines = sorted(json.dumps(drop_keys(json.loads(line), TIMING_KEYS), sort_keys=True)
                   for line in Path(path).read_text().splitlines() if line.strip())
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def csv_digest(path):
    rows = Path(path).read_text().splitlines()
    header = rows[0].split(",")
    keep = [i for i, name in enumerate(header) if name not in TIMING_KEYS]
    text = "\n".join([",".join(header[i] for i in keep)] + sorted(",".join(r.split(",")[i] for i in keep) for r in rows[1:]))
    return hashlib.sha256(text.encode()).hexdigest()


def pipeline(binary, work):
    """Runs the pipeline with `binary` in `work` and returns {output name: digest}."""
    out = {}
    env = dict(os.environ, SLURM_PROCID="", SLURM_NTASKS="", JOB_COMPLETION_INDEX="")
    for key in ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT",
                "JOB_COMPLETION_INDEX", "KDCACHE_SHARD"):
        env.pop(key, None)

    def kd(*args, ok=True):
        r = subprocess.run([binary, *map(str, args)], cwd=work, env=env, capture_output=True, text=True)
        if ok and r.returncode != 0:
            raise SystemExit(f"{binary} {' '.join(map(str, args))} failed ({r.returncode}):\n{r.stderr}")
        return r

    def store(name):
        path = work / name
        if name.endswith(".gz"):
            import gzip
            plain = work / (name + ".plain")
            plain.write_bytes(gzip.decompress(path.read_bytes()))
            path = plain
        out[name] = lmdb_digest(path)

    kd("prep", FORTUNES, "--out", "text.lmdb", "--text-column", "text", "--label-column", "label",
       "--id-column", "id", "--seed", 7, "--test-fraction", 0.1, "--quiet")
    store("text.lmdb")
    kd("prep", DIGITS, "--out", "dense.lmdb", "--feature-columns", "px*", "--label-column", "label", "--id-column", "id",
       "--seed", 3, "--quiet")
    store("dense.lmdb")

    kd("teach", "--data", "text.lmdb", "--out", "t-views.lmdb", "--temperature", 2, "--views", 3,
       "--augment", "token-dropout:p=0.25", "--cross-fit", 2, "--ensemble", 1, "--epochs", 3,
       "--seed", 5, "--quiet")
    store("t-views.lmdb")
    kd("teach", "--data", "text.lmdb", "--out", "t-topk.lmdb", "--temperature", 1, "--top-k", 3,
       "--dtype", "f32", "--teacher", "linear", "--epochs", 3, "--ensemble", 2, "--name", "lin",
       "--seed", 1, "--quiet")
    store("t-topk.lmdb")
    kd("teach", "--data", "dense.lmdb", "--out", "t-dense.lmdb", "--temperature", 3, "--views", 2,
       "--augment", "gaussian:sigma=0.5", "--epochs", 3, "--ensemble", 1, "--seed", 2, "--quiet")
    store("t-dense.lmdb")
    for i in range(2):
        kd("teach", "--data", "text.lmdb", "--out", f"shard{i}.lmdb", "--shard", f"{i}/2",
           "--epochs", 2, "--ensemble", 1, "--seed", 9, "--quiet")
        store(f"shard{i}.lmdb")
    kd("merge", "shard0.lmdb", "shard1.lmdb", "--out", "merged.lmdb", "--require-complete")
    store("merged.lmdb")

    # Imports: logits from .npy (seeded) and from JSONL.
    n, classes = read_shape(work / "text.lmdb")
    rng = np.random.default_rng(11)
    logits = (rng.standard_normal((n, classes)) * 3).astype(np.float32)
    np.save(work / "logits.npy", logits)
    kd("import", "logits.npy", "--data", "text.lmdb", "--out", "imp-npy.lmdb", "--write-temperature", 2,
       "--name", "npy", "--quiet")
    store("imp-npy.lmdb")
    ids = read_ids(work / "text.lmdb")
    with open(work / "logits.jsonl", "w") as f:
        for i, row in zip(ids, logits[:, ::-1]):
            f.write(json.dumps({"id": i, "logits": [float(x) for x in row]}) + "\n")
    kd("import", "logits.jsonl", "--data", "text.lmdb", "--out", "imp-jsonl.lmdb", "--kind", "logits",
       "--top-k", 4, "--name", "jsonl", "--quiet")
    store("imp-jsonl.lmdb")

    py = sys.executable
    for framing in ("json", "binary"):
        kd("teach", "--exec", f"{py} {CENTROID} --data dense.lmdb --framing {framing}", "--data", "dense.lmdb",
           "--out", f"t-exec-{framing}.lmdb", "--batch-size", 100, "--quiet")
        store(f"t-exec-{framing}.lmdb")

    kd("export", "t-views.lmdb", "--out", "t-views.export")
    store("t-views.export")
    kd("export", "text.lmdb", "--out", "text.export.gz", "--compress")
    store("text.export.gz")

    def sweep(name, *args):
        kd("sweep", *args, "--out", name, "--workers", 2, "--quiet")
        out[f"{name}/results.jsonl"] = jsonl_digest(work / name / "results.jsonl")
        if (work / name / "results.csv").exists():
            out[f"{name}/results.csv"] = csv_digest(work / name / "results.csv")
        for f in ("sweep.json", "best-student.json"):
            if (work / name / f).exists():
                value = drop_keys(json.loads((work / name / f).read_text()), TIMING_KEYS)
                out[f"{name}/{f}"] = hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
        for f in sorted((work / name).rglob("*.safetensors")):
            out[str(f.relative_to(work))] = sha(f)

    sweep("sw-text", "--data", "text.lmdb", "--logits", "t-views.lmdb", "--student", "linear,fasttext:dim=8",
          "--temperature", "1,2", "--alpha", "0,0.5", "--lr", "0.1", "--epochs", 3, "--seeds", 2)
    sweep("sw-mse", "--data", "text.lmdb", "--logits", "t-topk.lmdb", "--student", "linear", "--loss", "mse-logits",
          "--alpha", "0.5,1", "--epochs", 3, "--optimizer", "sgd", "--lr", "0.3", "--schedule", "cosine")
    sweep("sw-dense", "--data", "dense.lmdb", "--logits", "t-dense.lmdb", "--student", "mlp:hidden=16,linear",
          "--temperature", "3", "--alpha", "0.5,0.9", "--epochs", 4, "--patience", 2, "--weight-decay", "0.001",
          "--seeds", 2)
    sweep("sw-search", "--data", "dense.lmdb", "--logits", "t-dense.lmdb", "--student", "linear,mlp:hidden=8",
          "--temperature", "1,2,4", "--alpha", "0,0.3,0.6,0.9", "--lr", "0.01,0.1", "--trials", 5,
          "--search-seed", 4, "--epochs", 2)
    # Two teachers in one cache, averaged.
    kd("teach", "--data", "dense.lmdb", "--out", "t-dense.lmdb", "--name", "second", "--temperature", 3,
       "--views", 2, "--augment", "gaussian:sigma=0.5", "--epochs", 2, "--ensemble", 1, "--seed", 8, "--quiet")
    store("t-dense.lmdb")
    sweep("sw-ensemble", "--data", "dense.lmdb", "--logits", "t-dense.lmdb", "--ensemble", "builtin,second",
          "--student", "linear", "--alpha", "0.5", "--epochs", 2)
    for i in range(2):
        kd("sweep", "--data", "text.lmdb", "--logits", "t-views.lmdb", "--student", "linear",
           "--temperature", "1,2", "--alpha", "0,0.5", "--epochs", 2, "--shard", f"{i}/2",
           "--out", f"sw-shard{i}", "--quiet")
        out[f"sw-shard{i}/results.jsonl"] = jsonl_digest(work / f"sw-shard{i}" / "results.jsonl")
    kd("sweep", "collect", "sw-shard0", "sw-shard1", "--out", "sw-collected")
    out["sw-collected/results.jsonl"] = jsonl_digest(work / "sw-collected" / "results.jsonl")
    return out


def read_shape(path):
    with kdcache.open(str(path)) as s:
        return len(s), len(s.manifest["labels"])


def read_ids(path):
    with kdcache.open(str(path)) as s:
        return [s.id(i) for i in range(len(s))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", action="append", required=True, help="a kdcache binary (give two to compare)")
    ap.add_argument("--keep", help="keep the work directories under this path")
    args = ap.parse_args()
    digests = []
    for k, binary in enumerate(args.bin):
        binary = str(Path(binary).resolve())
        base = Path(args.keep).resolve() if args.keep else Path(tempfile.mkdtemp(prefix="kdcache-same-"))
        work = base / f"run{k}"
        work.mkdir(parents=True, exist_ok=True)
        d = pipeline(binary, work)
        digests.append(d)
        print(f"{binary}: {len(d)} outputs")
    if len(digests) == 1:
        for name, h in digests[0].items():
            print(f"  {h}  {name}")
        return 0
    first = digests[0]
    bad = 0
    for other, binary in zip(digests[1:], args.bin[1:]):
        for name in sorted(set(first) | set(other)):
            if first.get(name) != other.get(name):
                bad += 1
                print(f"DIFFERS: {name}: {first.get(name)} vs {other.get(name)} ({binary})")
    print(f"{len(first)} outputs compared: {'all identical' if not bad else f'{bad} differ'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
