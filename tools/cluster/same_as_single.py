#!/usr/bin/env python3
"""Do a cluster's outputs equal one process's? Used by tools/cluster/test_slurm.sh.

    same_as_single.py cache SINGLE.lmdb MERGED.lmdb      # every record, byte for byte
    same_as_single.py sweep SINGLE_DIR COLLECTED_DIR [SHARD_DIR…]   # results.jsonl, the best student

`cache`: every key and value of every database but `meta` must be equal, and in `meta` the
manifests' teachers must have the same identity and the same completed ranges (a merged manifest
also records where it came from, and its clock differs). `sweep`: results.jsonl as a multiset of
lines without the fields that measure time (tools/bench/same_outputs.py's TIMING_KEYS), and the
single sweep's best-student.json / .safetensors byte for byte in COLLECTED_DIR or one SHARD_DIR
(`sweep collect` writes no student; the shard that trained the best run holds it). Exit 0 when equal; 1 with the first differences.
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools/bench"))
from same_outputs import TIMING_KEYS, drop_keys  # noqa: E402


def read_store(path):
    """{database name: {key: value}} of an LMDB file (kdcache stores are single files)."""
    import lmdb
    env = lmdb.open(str(path), subdir=False, readonly=True, lock=False, max_dbs=64)
    try:
        with env.begin() as txn:
            names = [bytes(k) for k, _ in txn.cursor()]
        out = {}
        for name in names:
            db = env.open_db(name, create=False)
            with env.begin(db=db) as txn:
                out[name.decode(errors="replace")] = {bytes(k): bytes(v) for k, v in txn.cursor()}
        return out
    finally:
        env.close()


def compare_caches(single, merged):
    a, b = read_store(single), read_store(merged)
    problems = []
    if sorted(a) != sorted(b):
        problems.append(f"databases differ: {sorted(a)} in {single}, {sorted(b)} in {merged}")
    records = 0
    for name in sorted(set(a) & set(b) - {"meta"}):
        da, db = a[name], b[name]
        missing, extra = sorted(set(da) - set(db)), sorted(set(db) - set(da))
        differ = sorted(k for k in set(da) & set(db) if da[k] != db[k])
        for what, keys in (("missing from the merged cache", missing), ("only in the merged cache", extra),
                           ("with other bytes", differ)):
            if keys:
                problems.append(f"database {name}: {len(keys)} keys {what}, first {keys[0]!r}")
        records += len(da)
    teachers = [json.loads(s["meta"][b"manifest"])["teachers"] for s in (a, b)]
    for name in sorted(set(teachers[0]) | set(teachers[1])):
        ta, tb = teachers[0].get(name), teachers[1].get(name)
        if ta is None or tb is None:
            problems.append(f"teacher {name!r} is in only one of the caches")
            continue
        for field in ("identity", "completed"):
            if ta.get(field) != tb.get(field):
                problems.append(f"teacher {name!r}: manifest field {field} is {ta.get(field)!r} in {single}, "
                                f"{tb.get(field)!r} in {merged}")
    return problems, f"{records} records ({', '.join(sorted(set(a) - {'meta'}))}) equal byte for byte, same teachers {sorted(teachers[0])}"


def result_lines(path):
    return sorted(json.dumps(drop_keys(json.loads(line), TIMING_KEYS), sort_keys=True)
                  for line in Path(path).read_text().splitlines() if line.strip())


def compare_sweeps(single, collected, *shards):
    single, collected = Path(single), Path(collected)
    a, b = result_lines(single / "results.jsonl"), result_lines(collected / "results.jsonl")
    problems = []
    if a != b:
        only_a = sorted(set(a) - set(b))
        only_b = sorted(set(b) - set(a))
        problems.append(f"results.jsonl: {len(a)} runs in {single}, {len(b)} in {collected}; "
                        f"{len(only_a)} lines only in the first, {len(only_b)} only in the second"
                        + (f"; first: {only_a[0][:300]}" if only_a else ""))
    # `sweep collect` writes no student: the best one is the best of the shard that trained it.
    names = ("best-student.json", "best-student.safetensors")
    best = [single / n for n in names]
    if not all(f.exists() for f in best):
        problems.append(f"{single}: no best student")
        return problems, ""
    places = [Path(d) for d in (collected, *shards) if all((Path(d) / n).exists() for n in names)]
    same = [d for d in places if all((d / n).read_bytes() == f.read_bytes() for n, f in zip(names, best))]
    if not same:
        problems.append(f"the best student of {single} ({json.loads(best[0].read_text()).get('config', '?')}) is in "
                        f"none of {', '.join(map(str, places)) or 'the directories given'} byte for byte")
    return problems, (f"{len(a)} runs in results.jsonl equal (timing fields aside); its best student = "
                      f"{same[0] / names[0] if same else '?'} byte for byte")


def main(argv):
    if len(argv) < 4 or argv[1] not in ("cache", "sweep") or (argv[1] == "cache" and len(argv) != 4):
        print("usage: same_as_single.py cache|sweep SINGLE OTHER (see the top of this file)", file=sys.stderr)
        return 2
    problems, summary = (compare_caches if argv[1] == "cache" else compare_sweeps)(*argv[2:])
    if problems:
        print(f"{argv[3]} differs from the single-process {argv[2]}:", *problems, sep="\n  ", file=sys.stderr)
        return 1
    print(f"{argv[3]} = single-process {argv[2]}: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
