#!/usr/bin/env python3
"""The Python baseline for prep throughput: the same work as `kdcache prep` on a JSONL file,
written the way a careful Python user would (json + the documented hashing + zlib + py-lmdb with
MDB_APPEND in 20k-record transactions). It writes the FORMAT.md sample record, text and id
databases, so both sides do the same work. Usage: prep_python.py IN.jsonl OUT.lmdb
"""
import json
import struct
import sys
import zlib
from pathlib import Path

import lmdb

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
from kdcache import TextFeaturizer, hash_split  # noqa: E402

SPLIT = {"train": 0, "valid": 1, "test": 2}


def record(split, label, indices, values):
    n = len(indices)
    head = struct.pack("<BBBBII", 1, 0, split, 0, label, n)
    body = struct.pack(f"<{n}I", *indices) + struct.pack(f"<{n}f", *values)
    crc = zlib.crc32(body, zlib.crc32(head))
    return head + struct.pack("<I", crc) + body


def main(src, out):
    env = lmdb.open(out, subdir=False, map_size=64 << 30, max_dbs=8, sync=False)
    samples, texts = env.open_db(b"samples"), env.open_db(b"texts")
    i2id, id2i = env.open_db(b"index_to_id"), env.open_db(b"id_to_index")
    featurizer = TextFeaturizer(18, [1, 2])
    labels = {}
    index = 0
    txn = env.begin(write=True)
    with open(src, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            label = labels.setdefault(row["label"], len(labels))
            idx, vals = featurizer.features(row["text"])
            split = SPLIT[hash_split(row["id"], 0.1, 0.1, 0)]
            key = struct.pack(">Q", index)
            txn.put(key, record(split, label, idx.tolist(), vals.tolist()), db=samples, append=True)
            txn.put(key, zlib.compress(row["text"].encode(), 1), db=texts, append=True)
            txn.put(key, row["id"].encode(), db=i2id, append=True)
            if not txn.put(row["id"].encode(), key, db=id2i, overwrite=False):
                raise SystemExit(f"{src}:{index + 1}: duplicate id")
            index += 1
            if index % 20000 == 0:
                txn.commit()
                txn = env.begin(write=True)
    txn.commit()
    env.sync(True)
    env.close()
    print(index)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
