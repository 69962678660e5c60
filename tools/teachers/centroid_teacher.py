#!/usr/bin/env python3
"""A small external teacher for tests and as a template: nearest class centroid on the dataset
store's own features (numpy only), answering with logits = 10 · cosine similarity.

    kdcache teach --exec 'python3 tools/teachers/centroid_teacher.py --data data.lmdb' --data data.lmdb --out t.lmdb

--framing binary answers with float32 rows instead of JSON (TEACHERS.md).

--misbehave MODE --at INDEX makes it fail on the batch holding sample INDEX, for kdcache's tests:
nan, count (a value too few), unknown (an index not asked for), skip (leave a sample out), garbage
(a line that is not JSON), die (exit 3), truncate (binary: half the block, then exit 3), hang
(never answer). --slow S sleeps S seconds per batch.
"""
import argparse
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import kdcache  # noqa: E402
from protocol import serve  # noqa: E402


def vector(features, dim):
    v = np.zeros(dim, dtype=np.float64)
    if "indices" in features:
        v[np.array(features["indices"], dtype=np.int64)] = features["values"]
    else:
        v[:] = features["values"]
    n = np.linalg.norm(v)
    return v / n if n > 0 else v


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--framing", choices=["json", "binary"], default="json")
    p.add_argument("--misbehave", choices=["nan", "count", "unknown", "skip", "garbage", "die", "truncate", "hang"])
    p.add_argument("--at", type=int, default=0)
    p.add_argument("--slow", type=float, default=0)
    args = p.parse_args()

    store = kdcache.open(args.data)
    dim = store.manifest["featurizer"]["dimension"]
    classes = len(store.manifest["labels"])
    centroids = np.zeros((classes, dim))
    for _, record in store:
        if record["split"] == "train":
            f = {"indices": record["indices"], "values": record["values"]} if record["kind"] == "sparse" else {"values": record["values"]}
            centroids[record["label"]] += vector(f, dim)
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    digest = hashlib.sha256(centroids.tobytes()).hexdigest()

    def predict(samples):
        if args.slow:
            time.sleep(args.slow)
        out = np.stack([10 * centroids @ vector(s["features"], dim) for s in samples])
        if any(s["index"] == args.at for s in samples) and args.misbehave:
            k = [s["index"] for s in samples].index(args.at)
            mode = args.misbehave
            if mode == "nan":
                out[k, 0] = math.nan
            elif mode == "count":
                rows = out.tolist()
                rows[k] = rows[k][:-1]
                return rows if args.framing == "json" else out[:, :-1]
            elif mode == "unknown":
                samples[k] = dict(samples[k], index=10 ** 9)
            elif mode == "skip":
                del samples[k]
                out = np.delete(out, k, axis=0)
            elif mode == "garbage":
                sys.stdout.write("this is not json\n"); sys.stdout.flush()
                time.sleep(5)
            elif mode == "die":
                print("centroid teacher: dying on purpose", file=sys.stderr)
                os._exit(3)
            elif mode == "truncate":
                header = {"type": "outputs", "rows": len(out), "classes": out.shape[1], "dtype": "f32"}
                block = np.array([s["index"] for s in samples], dtype="<i8").tobytes() + out.astype("<f4").tobytes()
                sys.stdout.buffer.write(json.dumps(header).encode() + b"\n" + block[:len(block) // 2])
                sys.stdout.flush()
                os._exit(3)
            elif mode == "hang":
                time.sleep(3600)
        return out

    serve(predict, {"name": "centroid", "description": "nearest class centroid (cosine) on the store's features",
                    "content_hash": "sha256:" + digest, "kind": "logits", "temperature": 1.0, "framing": args.framing,
                    "inputs": ["features"]})


if __name__ == "__main__":
    main()
