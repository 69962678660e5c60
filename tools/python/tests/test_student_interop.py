"""The best student a sweep saves is plain safetensors + JSON: numpy reproduces kdcache predict."""
import json
import struct
from pathlib import Path

import numpy as np
from _support import kdcache, run


def load_safetensors(path):
    raw = Path(path).read_bytes()
    (n,) = struct.unpack_from("<Q", raw, 0)
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype="<f4").reshape(info["shape"])
    return out


def test_numpy_forward_matches_kdcache_predict(tmp_path):
    rows = ["id,label,text"] + [f"r{i},{['pets', 'tech'][i % 2]},{['the cat and the dog', 'the cpu and the gpu'][i % 2]} w{i % 7}" for i in range(200)]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    run("prep", tmp_path / "d.csv", "--out", tmp_path / "d.lmdb", "--text-column", "text", "--label-column", "label", "--hash-bits", "10", "--quiet")
    run("teach", "--data", tmp_path / "d.lmdb", "--out", tmp_path / "t.lmdb", "--teacher", "linear", "--epochs", "2", "--ensemble", "1", "--quiet")
    run("sweep", "--data", tmp_path / "d.lmdb", "--logits", tmp_path / "t.lmdb", "--student", "mlp:hidden=8", "--alpha", "0.5",
        "--temperature", "2", "--epochs", "3", "--seeds", "1", "--out", tmp_path / "runs", "--quiet")
    card = json.loads((tmp_path / "runs/best-student.json").read_text())
    w = load_safetensors(tmp_path / "runs/best-student.safetensors")
    assert w["first"].shape == (1024, 8) and w["output"].shape == (8, 2)
    text = "a dog and a gpu and a cat"
    f = card["featurizer"]
    idx, counts = kdcache.TextFeaturizer(f["bits"], f["ngrams"]).features(text)
    x = counts / np.linalg.norm(counts)                     # mlp / linear inputs are L2-normalized
    h = np.maximum(x @ w["first"][idx] + w["first_bias"], 0)
    z = h @ w["output"] + w["output_bias"]
    p = np.exp(z - z.max()); p /= p.sum()
    line = run("predict", tmp_path / "runs/best-student.json", text, "--top", "2").stdout
    shown = {part.rsplit(" ", 1)[0]: float(part.rsplit(" ", 1)[1]) for part in line.split("\t")[0].split(", ")}
    for c, label in enumerate(card["labels"]):
        assert abs(shown[label] - p[c]) < 1e-3
