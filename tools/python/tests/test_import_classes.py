"""import --classes (and safetensors __metadata__): an array whose columns are in another class order
than the dataset's (scikit-learn's sorted classes_, a Hugging Face id2label) is mapped by name, so
the cache equals an import of the same logits in dataset order. Names missing on either side are
errors that list them."""
import json
import struct

import numpy as np
import pytest
from _support import ROOT, kdcache, run


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("classes")
    run("prep", ROOT / "fixtures/fortunes/fortunes.csv", "--out", d / "f.lmdb", "--text-column", "text",
        "--label-column", "label", "--id-column", "id", "--quiet")
    labels = kdcache.open(str(d / "f.lmdb")).manifest["labels"]
    assert labels != sorted(labels), "the fixture must number its labels in another order than sorted"
    n = len(kdcache.open(str(d / "f.lmdb")))
    logits = np.random.default_rng(3).normal(0, 2, (n, len(labels))).astype(np.float32)
    np.save(d / "dataset_order.npy", logits)
    run("import", d / "dataset_order.npy", "--data", d / "f.lmdb", "--out", d / "ref.lmdb", "--quiet")
    return d, labels, logits


def records(path):
    cache = kdcache.open(str(path))
    return np.stack([cache.log_probs(i) for i in range(len(cache))])


def sorted_columns(labels, logits):
    """The logits with columns in sorted-name order, as sklearn's predict_proba gives them."""
    names = sorted(labels)
    return names, logits[:, [labels.index(c) for c in names]]


def write_safetensors(path, array, metadata):
    header = {"logits": {"dtype": "F32", "shape": list(array.shape), "data_offsets": [0, array.nbytes]},
              "__metadata__": metadata}
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + np.ascontiguousarray(array, dtype="<f4").tobytes())


@pytest.mark.parametrize("how", ["list", "file"])
def test_npy_columns_mapped_by_name(setup, tmp_path, how):
    d, labels, logits = setup
    names, permuted = sorted_columns(labels, logits)
    np.save(tmp_path / "sk.npy", permuted)
    if how == "file":
        (tmp_path / "classes.txt").write_text("\n".join(names) + "\n")
        spec = str(tmp_path / "classes.txt")
    else:
        spec = ",".join(names)
    run("import", tmp_path / "sk.npy", "--data", d / "f.lmdb", "--out", tmp_path / "c.lmdb", "--classes", spec, "--quiet")
    assert np.array_equal(records(tmp_path / "c.lmdb"), records(d / "ref.lmdb"))
    # Without --classes the same file is read in dataset order: a different (permuted) cache.
    run("import", tmp_path / "sk.npy", "--data", d / "f.lmdb", "--out", tmp_path / "wrong.lmdb", "--quiet")
    assert not np.array_equal(records(tmp_path / "wrong.lmdb"), records(d / "ref.lmdb"))


@pytest.mark.parametrize("key", ["labels", "id2label"])
def test_safetensors_metadata_names_the_columns(setup, tmp_path, key):
    d, labels, logits = setup
    names, permuted = sorted_columns(labels, logits)
    value = json.dumps(names) if key == "labels" else json.dumps({str(i): n for i, n in enumerate(names)})
    write_safetensors(tmp_path / "t.safetensors", permuted, {key: value})
    run("import", tmp_path / "t.safetensors", "--data", d / "f.lmdb", "--out", tmp_path / "c.lmdb", "--quiet")
    assert np.array_equal(records(tmp_path / "c.lmdb"), records(d / "ref.lmdb"))


def test_mismatched_names_are_listed(setup, tmp_path):
    d, labels, logits = setup
    np.save(tmp_path / "x.npy", logits)
    wrong = list(labels[:-1]) + ["no-such-class"]
    r = run("import", tmp_path / "x.npy", "--data", d / "f.lmdb", "--out", tmp_path / "c.lmdb",
            "--classes", ",".join(wrong), check=False)
    assert r.returncode == 1
    assert "not labels of the dataset: 'no-such-class'" in r.stderr
    assert f"labels of the dataset with no column: '{labels[-1]}'" in r.stderr
    assert not (tmp_path / "c.lmdb").exists()
    r = run("import", tmp_path / "x.npy", "--data", d / "f.lmdb", "--out", tmp_path / "c.lmdb",
            "--classes", ",".join(labels[:1] + labels[:-1]), check=False)
    assert r.returncode == 1 and f"'{labels[0]}' more than once" in r.stderr
    r = run("import", tmp_path / "x.npy", "--data", d / "f.lmdb", "--out", tmp_path / "c.lmdb",
            "--classes", ",".join(labels) + ",", check=False)
    assert r.returncode == 1 and "is empty" in r.stderr


def test_classes_is_refused_for_csv(setup, tmp_path):
    d, labels, _ = setup
    (tmp_path / "x.csv").write_text("id," + ",".join(labels) + "\n")
    r = run("import", tmp_path / "x.csv", "--data", d / "f.lmdb", "--out", tmp_path / "c.lmdb",
            "--classes", ",".join(labels), check=False)
    assert r.returncode == 1 and "--classes applies to .npy and .safetensors" in r.stderr


def test_fortran_ordered_npy_reads_like_c_order(setup, tmp_path):
    d, _, logits = setup
    np.save(tmp_path / "f.npy", np.asfortranarray(logits))
    run("import", tmp_path / "f.npy", "--data", d / "f.lmdb", "--out", tmp_path / "c.lmdb", "--quiet")
    assert np.array_equal(records(tmp_path / "c.lmdb"), records(d / "ref.lmdb"))
