"""`kdcache export-student --onnx`: the exported model, run in onnxruntime on inputs rebuilt from the
ONNX metadata alone (featurizer JSON → kdcache.TextFeaturizer), gives `kdcache predict --json`'s
probabilities within 1e-5 on the fixtures (fortunes: text; digits: dense), for every student kind."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from _support import ROOT, kdcache, run

TOLERANCE = 1e-5
KINDS = ["linear", "fasttext:dim=8", "mlp:hidden=16"]
TEACH = ["--teacher", "linear", "--epochs", "2", "--ensemble", "1", "--text-bits", "14", "--quiet"]
SWEEP = ["--alpha", "0.5", "--temperature", "2", "--lr", "0.3", "--epochs", "6", "--seeds", "1", "--quiet"]
MAX_DELTA = {}   # student → max |Δp| measured, printed at the end of the module (pytest -s)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx")
    run("prep", ROOT / "fixtures/fortunes/fortunes.csv", "--out", d / "text.lmdb", "--text-column", "text", "--label-column", "label",
        "--id-column", "id", "--hash-bits", "14", "--quiet")
    run("prep", ROOT / "fixtures/digits/digits.csv", "--out", d / "dense.lmdb", "--feature-columns", "px*", "--label-column", "label", "--quiet")
    for name in ("text", "dense"):
        run("teach", "--data", d / f"{name}.lmdb", "--out", d / f"{name}-t.lmdb", *TEACH)
    yield d
    print("\nONNX agreement, max |Δp| against kdcache predict:", json.dumps(MAX_DELTA, indent=1))


def exported(d, data, kind):
    """Sweeps one student of `kind` on `data`, exports it; (card, onnx path, ModelProto)."""
    out = d / f"runs-{data}-{kind.split(':')[0]}"
    if not (out / "best-student.json").exists():
        run("sweep", "--data", d / f"{data}.lmdb", "--logits", d / f"{data}-t.lmdb", "--student", kind, *SWEEP, "--out", out)
    path = out / "student.onnx"
    r = run("export-student", out / "best-student.json", "--onnx", path, "--force")
    assert f"wrote {path}" in r.stdout
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    return json.loads((out / "best-student.json").read_text()), path, model


def predicted(student, *args):
    """`kdcache predict --json` lines: [(id or text, probabilities)]."""
    lines = run("predict", student, "--json", *args).stdout.splitlines()
    return [(o.get("id", o.get("text")), np.array(o["probabilities"], dtype=np.float64)) for o in map(json.loads, lines)]


def bags(featurizer, texts):
    ids, weights, offsets = [], [], []
    for t in texts:
        offsets.append(sum(len(i) for i in ids))
        i, c = featurizer.features(t)
        ids.append(i.astype(np.int64)); weights.append(c)
    return {"ids": np.concatenate(ids), "weights": np.concatenate(weights).astype(np.float32), "offsets": np.array(offsets, dtype=np.int64)}


@pytest.mark.parametrize("kind", KINDS)
def test_text_student_equals_predict(stores, kind):
    card, path, model = exported(stores, "text", kind)
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["kdcache.labels"]) == card["labels"]
    assert meta["kdcache.student_key"].startswith(kind.split(":")[0]) and meta["kdcache.version"]
    f = json.loads(meta["kdcache.featurizer"])
    assert f["signature"] == card["featurizer"]["signature"] == kdcache.hashing.hashed_signature(f["bits"], f["ngrams"])
    assert meta["kdcache.input_normalization"] == ("sum" if kind.startswith("fasttext") else "l2")
    featurizer = kdcache.TextFeaturizer(f["bits"], f["ngrams"])      # from the metadata alone
    data = kdcache.open(str(stores / "text.lmdb"))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_modelmeta().custom_metadata_map == meta and [i.name for i in session.get_inputs()] == ["ids", "weights", "offsets"]

    rows = predicted(path.parent / "best-student.json", "--data", stores / "text.lmdb", "--split", "test")
    assert len(rows) > 100
    texts = [data.text(data.index_of(i)) for i, _ in rows]
    free = ["", "zzzz qqqq", "The compiler crashed again!", "Ça marche, naïve café 2026"]   # empty, unseen words, punctuation, non-ASCII
    rows += predicted(path.parent / "best-student.json", *free)
    texts += free
    expected = np.stack([p for _, p in rows])

    (batch,) = session.run(["probabilities"], bags(featurizer, texts))             # one batch of every text
    singles = np.concatenate([session.run(None, bags(featurizer, [t]))[0] for t in texts[-8:]])   # one sample at a time
    assert batch.shape == (len(texts), len(card["labels"])) and batch.dtype == np.float32
    delta = max(np.abs(batch - expected).max(), np.abs(singles - expected[-8:]).max())
    MAX_DELTA[f"fortunes {kind}"] = float(delta)
    assert delta <= TOLERANCE, f"{kind}: max |Δp| {delta:.3g}"
    assert np.allclose(batch.sum(axis=1), 1, atol=1e-5)
    # The empty text is an empty bag between others: softmax of the bias alone, as predict says.
    assert np.abs(batch[len(texts) - 4] - expected[-4]).max() <= TOLERANCE


@pytest.mark.parametrize("kind", KINDS)
def test_dense_student_equals_predict(stores, kind):
    card, path, model = exported(stores, "dense", kind)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["kdcache.input_normalization"] == "standardize"
    assert json.loads(meta["kdcache.featurizer"])["columns"] == [f"px{i}" for i in range(64)]
    assert [i.name for i in model.graph.input] == ["features"]
    data = kdcache.open(str(stores / "dense.lmdb"))
    rows = predicted(path.parent / "best-student.json", "--data", stores / "dense.lmdb", "--split", "test")
    assert len(rows) > 100
    x = np.stack([data.features(data.index_of(i)) for i, _ in rows]).astype(np.float32)
    (p,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["probabilities"], {"features": x})
    delta = float(np.abs(p - np.stack([q for _, q in rows])).max())
    MAX_DELTA[f"digits (dense) {kind}"] = delta
    assert delta <= TOLERANCE, f"{kind}: max |Δp| {delta:.3g}"


def test_malformed_bags_give_nan_not_numbers(stores):
    _, path, _ = exported(stores, "text", "mlp:hidden=16")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ok = {"ids": np.array([1, 2, 3], np.int64), "weights": np.ones(3, np.float32), "offsets": np.array([0, 2], np.int64)}
    assert np.isfinite(session.run(None, ok)[0]).all()
    for bad in ({"ids": np.array([1, -2, 3], np.int64)},          # a negative id would wrap to the last row
                {"offsets": np.array([1, 2], np.int64)},          # the first bag must start at 0
                {"offsets": np.array([0, 2, 1], np.int64)}):      # offsets must ascend
        (p,) = session.run(None, {**ok, **bad})
        assert np.isnan(p).all(), bad
    for bad in ({"ids": np.array([1, 2, 1 << 14], np.int64)},    # past the 2^14 buckets
                {"offsets": np.array([0, 4], np.int64)}):         # past the N = 3 ids
        with pytest.raises(Exception, match="(?i)out of (data )?bounds|invalid indice"):
            session.run(None, {**ok, **bad})


def test_export_refuses_to_overwrite_and_bad_cards(stores, tmp_path):
    _, path, _ = exported(stores, "text", "linear")
    r = run("export-student", path.parent / "best-student.json", "--onnx", path, check=False)
    assert r.returncode != 0 and "already exists" in r.stderr and "--force" in r.stderr
    (tmp_path / "x.json").write_text("{}")
    r = run("export-student", tmp_path / "x.json", "--onnx", tmp_path / "x.onnx", check=False)
    assert r.returncode != 0 and "x.json" in r.stderr and not (tmp_path / "x.onnx").exists()
