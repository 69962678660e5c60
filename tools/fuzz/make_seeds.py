#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fixtures/fuzz/<target>/seed-*.

Deterministic: the same files on every run (rerun after changing a format). Seeds are small,
well-formed inputs of each kind, taken from the format-v1 golden stores where a store is needed;
libFuzzer mutates them. Found crashes live beside them in fixtures/fuzz/<target>/crashes/ and are
never touched here.

    .build-venv/bin/python tools/fuzz/make_seeds.py
"""
import gzip
import io
import json
import struct
import sys
import zlib
from pathlib import Path

import lmdb
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "fixtures/fuzz"
GOLDEN = ROOT / "fixtures/format-v1"
GOLDEN_V2 = ROOT / "fixtures/format-v2"


def write(target, name, data):
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{name}").write_bytes(data)


def write_crash(target, name, data):
    """A hand-made input known to crash when written (a regression input, not a seed: libFuzzer
    would stop at it)."""
    d = OUT / target / "crashes"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"manual-{name}").write_bytes(data)


def records(path, db_name, limit):
    env = lmdb.open(str(path), subdir=False, readonly=True, lock=False, max_dbs=64)
    with env.begin() as txn:
        db = env.open_db(db_name.encode(), txn=txn)
        out = [(bytes(k), bytes(v)) for k, v in txn.cursor(db=db)][:limit]
    env.close()
    return out


def manifest(path):
    env = lmdb.open(str(path), subdir=False, readonly=True, lock=False, max_dbs=64)
    with env.begin() as txn:
        m = bytes(txn.get(b"manifest", db=env.open_db(b"meta", txn=txn)))
    env.close()
    return m


def sample_record(split, label, kind, indices, values):
    n = len(values)
    body = (struct.pack(f"<{n}I", *indices) if kind == 0 else b"") + struct.pack(f"<{n}f", *values)
    head = struct.pack("<BBBBII", 1, kind, split, 0, label, n)
    return head + struct.pack("<I", zlib.crc32(head + body)) + body


def softlabel_record(dtype, k, body):
    head = struct.pack("<BBH", 1, dtype, k)
    return head + struct.pack("<I", zlib.crc32(head + body)) + body


def u24(ids):
    return b"".join(struct.pack("<I", i)[:3] for i in ids)


def floats(values, dtype):
    return np.array(values, dtype="<f2" if dtype == 2 else "<f4").tobytes()


def sequence_record(kind, dtype, tokens, width, entries, temperatures=(1.0, 4.0), write_temperature=2.0, seed=0):
    """A valid FORMAT.md §3.7 record for sample 0 view 0: kind 3 (top-k, width k), 4 (sampled,
    width N) or 5 (dense, width 0: every id), over V = 40 ids, with `entries` distinct ids per
    position, from seeded logits."""
    rng = np.random.default_rng(seed)
    L, P, V = len(tokens), max(len(tokens) - 1, 0), 40
    alphas = [write_temperature / t for t in temperatures]
    distinct, ids, counts, lps, tails, sums = [], [], [], [], [], []
    for _ in range(P):
        z = rng.normal(size=V) * 2 / write_temperature
        lp = z - np.logaddexp.reduce(z)
        if kind == 5:
            lps += lp.tolist()
            sums += [np.logaddexp.reduce(a * lp) for a in alphas]
        elif kind == 3:
            order = np.argsort(-lp, kind="stable")
            kept, rest = order[:width], lp[order[width:]]
            ids += kept.tolist(); lps += lp[kept].tolist()
            tails.append(np.logaddexp.reduce(rest))
            sums += [np.logaddexp.reduce(a * rest) for a in alphas]
        else:
            kept = np.sort(rng.choice(V, size=entries, replace=False))
            c = [1] * entries; c[0] += width - entries
            distinct.append(entries); ids += kept.tolist(); counts += c; lps += lp[kept].tolist()
            sums += [np.logaddexp.reduce(a * lp) for a in alphas]
    D = len(lps) if kind == 5 else len(ids)
    body = u24(tokens)
    if kind == 5:
        body += floats(lps + sums, dtype)
    elif kind == 3:
        body += u24(ids) + floats(lps + tails + sums, dtype)
    else:
        body += bytes(distinct) + u24(ids) + bytes(counts) + floats(lps + sums, dtype)
    head = struct.pack("<BBBB", 3, kind, dtype, len(temperatures))
    rest = struct.pack("<IIHH", L, D, width, 0) + body
    key = struct.pack(">II", 0, 0)
    return head + struct.pack("<I", zlib.crc32(key + head + rest)) + rest


def sequence_manifest(class_manifest, mode):
    """A v3 manifest (FORMAT.md §3.6) over the golden v2 cache's dataset: its three teachers become
    sequence teachers of `mode` over V = 40 (their records, v2, are then refused: the record path of
    a v3 store is reached too)."""
    import hashlib
    m = json.loads(class_manifest)
    sha = lambda s: "sha256:" + hashlib.sha256(s.encode()).hexdigest()  # noqa: E731
    vocab, merges = sha("vocab"), sha("merges")
    fingerprint = sha(f"kdcache-tokenizer-1;40;{vocab};{merges};")
    tokenizer = {"fingerprint": fingerprint, "vocab_size": 40, "vocab_sha256": vocab, "merges_sha256": merges,
                 "model_sha256": None, "name": "fuzz"}
    m["schema_version"] = 3
    for t in m["teachers"].values():
        t["top_k"] = 4 if mode == "top-k" else 0
        t["sequence"] = {"mode": mode, "samples": 0 if mode == "top-k" else 4, "sample_seed": 0 if mode == "top-k" else 7,
                         "retemper_at": [1.0, 4.0], "vocab_size": 40, "tokenizer": tokenizer}
    return json.dumps(m, sort_keys=True).encode()


def npy(array, version=1):
    buf = io.BytesIO()
    if version == 1:
        np.save(buf, array)
        return buf.getvalue()
    np.lib.format.write_array(buf, array, version=(version, 0))
    return buf.getvalue()


def safetensors(tensors, metadata=None):
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, array in tensors.items():
        raw = array.tobytes()
        dtype = {np.float32: "F32", np.float16: "F16", np.float64: "F64"}[array.dtype.type]
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def main():
    # Record decoders: the golden records, and hand-made edge cases.
    for i, (_, v) in enumerate(records(GOLDEN / "dataset.lmdb", "samples", 4)):
        write("sample-record", f"golden-{i}", v)
    write_crash("sample-record", "dense-record-in-text-store", sample_record(0, 2, 1, [], [0.5, -1.0, 3.0, 0.0]))
    write("sample-record", "sparse-empty", sample_record(1, 0, 0, [], []))
    for name in ("dense16", "topk32"):
        for i, (_, v) in enumerate(records(GOLDEN / "softlabels.lmdb", f"teacher/{name}", 3)):
            write("softlabel-record", f"{name}-{i}", v)
    if GOLDEN_V2.exists():   # v2 records (version byte 2) and manifests, once format v2 is in
        for i, (_, v) in enumerate(records(GOLDEN_V2 / "dataset.lmdb", "samples", 2)):
            write("sample-record", f"golden-v2-{i}", v)
        for i, (_, v) in enumerate(records(GOLDEN_V2 / "dense.lmdb", "samples", 2)):
            write("sample-record", f"golden-v2-dense-{i}", v)
        for name in ("dense16", "topk32"):
            for i, (_, v) in enumerate(records(GOLDEN_V2 / "softlabels.lmdb", f"teacher/{name}", 2)):
                write("softlabel-record", f"v2-{name}-{i}", v)
        for name in ("dataset", "dense", "softlabels"):
            write("manifest", f"golden-v2-{name}", manifest(GOLDEN_V2 / f"{name}.lmdb"))
        for mode in ("top-k", "sampled"):
            write("manifest", f"sequence-{mode}", sequence_manifest(manifest(GOLDEN_V2 / "softlabels.lmdb"), mode))
    lp = np.log(np.array([0.7, 0.2, 0.1]))
    write("softlabel-record", "dense-f32", softlabel_record(1, 0, struct.pack("<3f", *lp)))
    write("softlabel-record", "top1-f16", softlabel_record(2, 1, struct.pack("<I", 0) + np.float16(lp[0]).tobytes()
                                                           + struct.pack("<f", float(np.log(0.3)))))

    # Sequence records (FORMAT.md §3.7): top-k and sampled, f16 and f32, and the edge lengths.
    for dtype, dname in ((1, "f32"), (2, "f16")):
        write("sequence-record", f"topk4-{dname}", sequence_record(3, dtype, [1, 7, 3, 39, 0], 4, 4, seed=dtype))
        write("sequence-record", f"sampled4-{dname}", sequence_record(4, dtype, [2, 5, 5, 11], 4, 3, seed=dtype))
        write("sequence-record", f"dense-{dname}", sequence_record(5, dtype, [3, 1, 4, 1, 5], 0, 40, seed=dtype))
    write("sequence-record", "topk-one-token", sequence_record(3, 1, [9], 4, 4))
    write("sequence-record", "sampled-empty", sequence_record(4, 2, [], 4, 1, temperatures=()))
    write("sequence-record", "topk-no-temperatures", sequence_record(3, 2, [4, 8, 15], 2, 2, temperatures=()))

    # Manifests: both golden ones, and variants that reach other branches of the readers.
    dm, sm = manifest(GOLDEN / "dataset.lmdb"), manifest(GOLDEN / "softlabels.lmdb")
    write("manifest", "golden-dataset", dm)
    write("manifest", "golden-softlabels", sm)
    m = json.loads(sm)
    m["teachers"]["dense16"].update(views=2, augmentation="token-dropout:p=0.25", augmentation_seed=3,
                                    completed=[[0, 6]])
    write("manifest", "softlabels-views", json.dumps(m, sort_keys=True).encode())
    m = json.loads(dm)
    m["featurizer"] = {"kind": "dense", "signature": "dense;columns=a,b", "dimension": 2, "columns": ["a", "b"],
                       "mean": [0.0, 1.0], "std": [1.0, 2.0]}
    write_crash("manifest", "dense-featurizer-on-text-store", json.dumps(m, sort_keys=True).encode())

    # Input readers.
    csv = (GOLDEN / "source.csv").read_bytes()
    write("tabular", "golden.csv", csv)
    write("tabular", "quoted.csv", b'id,label,text\n1,a,"x, ""y""\nz"\n2,b,plain\n\n3,a,\n')
    write("tabular", "small.tsv", b"label\ttext\tx\na\thello world\t1.5\nb\tbye\t-2\n")
    write("tabular", "small.jsonl", b'{"label": "a", "text": "hi there", "v": [1, 2.5]}\n\n{"label": "b", "text": "yo", "v": [0, 1]}\n')
    write("tabular", "dense.csv", b"label,p0,p1,p2\n1,0,0.5,1\n0,1e3,-4,7\n")
    write("gzip", "golden", gzip.compress(csv, mtime=0))
    write("gzip", "two-members", gzip.compress(csv[:200], mtime=0) + gzip.compress(csv[200:], mtime=0))
    write("gzip", "plain-text", b"label,text\na,not compressed\n")

    # Teacher protocol transcripts for a batch of samples 0…3 over 3 labels.
    ready = {"type": "ready", "name": "t", "description": "seed", "kind": "logits", "temperature": 1}
    rows = [[0.1 * i, -0.2, 1.5] for i in range(4)]
    out_json = {"type": "outputs", "outputs": [{"index": i, "values": r} for i, r in enumerate(rows)]}
    write("teacher-protocol", "json", (json.dumps(ready) + "\n" + json.dumps(out_json) + "\n").encode())
    write("teacher-protocol", "json-nan-token", (json.dumps(ready) + "\n"
          + '{"type": "outputs", "outputs": [{"index": 0, "values": [NaN, 1, 2]}]}\n').encode())
    r = dict(ready, kind="logprobs", temperature=2, inputs=["text"])
    lp_rows = [list(np.log([0.5, 0.25, 0.25])) for _ in range(4)]
    out_lp = {"type": "outputs", "outputs": [{"index": i, "values": v} for i, v in enumerate(lp_rows)]}
    write("teacher-protocol", "json-logprobs", (json.dumps(r) + "\n" + json.dumps(out_lp) + "\n").encode())
    r = dict(ready, framing="binary", kind="probs")
    payload = np.array([3, 1, 0, 2], "<i8").tobytes() + np.array([[0.2, 0.3, 0.5]] * 4, "<f4").tobytes()
    write("teacher-protocol", "binary", (json.dumps(r) + "\n" + json.dumps({"type": "outputs", "rows": 4, "classes": 3, "dtype": "f32"})
                                         + "\n").encode() + payload)
    write("teacher-protocol", "error", (json.dumps(ready) + "\n" + '{"error": "out of memory"}\n').encode())

    # Importers: [12 samples, 3 classes].
    x = np.arange(36, dtype=np.float64).reshape(12, 3) / 7 - 2
    write("npy", "f32", npy(x.astype("<f4")))
    write("npy", "f16", npy(x.astype("<f2")))
    write("npy", "f64-v2", npy(x.astype("<f8"), version=2))
    write("safetensors", "f32", safetensors({"logits": x.astype("<f4")}))
    write("safetensors", "f16-metadata", safetensors({"logits": x.astype("<f2")}, {"source": "seed"}))
    write("safetensors", "two-tensors", safetensors({"a": x.astype("<f4"), "b": x[:, :1].astype("<f8")}))

    # Page validator: whole LMDB files.
    write("page-validator", "golden-dataset.lmdb", (GOLDEN / "dataset.lmdb").read_bytes())
    write("page-validator", "golden-softlabels.lmdb", (GOLDEN / "softlabels.lmdb").read_bytes())
    print(f"seeds written under {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
