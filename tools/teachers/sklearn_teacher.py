#!/usr/bin/env python3
"""An external teacher built on scikit-learn: TF-IDF of word 1-2-grams and character 2-5-grams of
the raw text kdcache keeps in the dataset store, and a logistic regression trained on the train
split. Answers with log-probabilities at T = 1.

    kdcache teach --exec 'python3 tools/teachers/sklearn_teacher.py --data data.lmdb' --data data.lmdb --out t.lmdb
"""
import argparse
import hashlib
import pickle
import sys
from pathlib import Path

import numpy as np
from scipy.sparse import hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import kdcache  # noqa: E402
from protocol import serve  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--C", type=float, default=10.0)
    args = p.parse_args()
    store = kdcache.open(args.data)
    if not store.manifest["has_text"]:
        raise SystemExit("this teacher needs a text dataset store (prep --text-column)")
    texts, labels = [], []
    for i, record in store:
        if record["split"] == "train":
            texts.append(store.text(i))
            labels.append(record["label"])
    words = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)
    x = hstack([words.fit_transform(texts), chars.fit_transform(texts)]).tocsr()
    model = LogisticRegression(C=args.C, max_iter=2000).fit(x, labels)
    classes = len(store.manifest["labels"])
    digest = hashlib.sha256(pickle.dumps((model.coef_, model.intercept_))).hexdigest()

    def predict(samples):
        batch = [s["text"] for s in samples]
        xb = hstack([words.transform(batch), chars.transform(batch)]).tocsr()
        lp = np.full((len(batch), classes), -1e9)
        lp[:, model.classes_] = model.predict_log_proba(xb)
        return lp  # float32 rows, sent as binary framing

    serve(predict, {"name": "sklearn-tfidf-lr", "description": f"scikit-learn TF-IDF word+char n-grams, logistic regression C={args.C}",
                    "content_hash": "sha256:" + digest, "kind": "logprobs", "temperature": 1.0,
                    "framing": "binary", "inputs": ["text"]})


if __name__ == "__main__":
    main()
