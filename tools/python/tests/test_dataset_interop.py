"""Swift writes a dataset store; Python, written from FORMAT.md alone, reads it identically."""
import csv
import subprocess

import numpy as np
import pytest
from _support import BIN, ROOT, kdcache


def prep(tmp_path, *args):
    out = tmp_path / "store.lmdb"
    subprocess.run([BIN, "prep", *map(str, args), "--out", str(out), "--quiet"], check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def fortunes(tmp_path_factory):
    out = prep(tmp_path_factory.mktemp("f"), ROOT / "fixtures/fortunes/fortunes.csv", "--text-column", "text",
               "--label-column", "label", "--id-column", "id", "--seed", "3", "--hash-bits", "16")
    return kdcache.open(str(out))


def test_opens_as_a_dataset_store(fortunes):
    assert isinstance(fortunes, kdcache.DatasetStore)
    assert len(fortunes) == 1919
    assert fortunes.manifest["featurizer"]["bits"] == 16


def test_every_record_matches_the_csv_and_the_python_featurizer(fortunes):
    with open(ROOT / "fixtures/fortunes/fortunes.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    m = fortunes.manifest
    featurizer = kdcache.TextFeaturizer(m["featurizer"]["bits"], m["featurizer"]["ngrams"])
    seen = 0
    for i, record in fortunes:
        row = rows[i]
        assert fortunes.id(i) == row["id"]
        assert fortunes.index_of(row["id"]) == i
        assert fortunes.text(i) == row["text"]
        assert m["labels"][record["label"]] == row["label"]
        indices, values = featurizer.features(row["text"])
        np.testing.assert_array_equal(record["indices"], indices)
        np.testing.assert_array_equal(record["values"], values)
        assert record["split"] == kdcache.hash_split(row["id"], 0.1, 0.1, 3)
        seen += 1
    assert seen == len(rows)


def test_fingerprint_recomputes_from_format_md(fortunes):
    assert fortunes.fingerprint() == fortunes.manifest["fingerprint"]


def test_split_and_class_counts_agree_with_the_records(fortunes):
    counts = {"train": 0, "valid": 0, "test": 0}
    for _, record in fortunes:
        counts[record["split"]] += 1
    assert counts == fortunes.manifest["split_counts"]


def test_dense_digits_round_trip(tmp_path):
    out = prep(tmp_path, ROOT / "fixtures/digits/digits.csv", "--feature-columns", "px*", "--label-column", "label",
               "--id-column", "id")
    store = kdcache.open(str(out))
    with open(ROOT / "fixtures/digits/digits.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    train = []
    for i, record in store:
        expected = np.array([float(rows[i][f"px{j}"]) for j in range(64)], dtype=np.float32)
        np.testing.assert_array_equal(record["values"], expected)
        assert store.manifest["labels"][record["label"]] == rows[i]["label"]
        if record["split"] == "train":
            train.append(expected)
    mean = np.mean(np.array(train, dtype=np.float64), axis=0)
    np.testing.assert_allclose(store.manifest["featurizer"]["mean"], mean, rtol=1e-9, atol=1e-9)
    assert store.fingerprint() == store.manifest["fingerprint"]


@pytest.mark.parametrize("text", ["Hello, WORLD!", "ÇA VA? Ελληνικά naïve", "it's 3rd-rate ½ ² ⅷ", "日本語のテキスト", "e\u0301cole"])
def test_unicode_tokenization_matches_swift(tmp_path, text):
    src = tmp_path / "one.jsonl"
    import json
    src.write_text(json.dumps({"label": "x", "text": text}) + "\n", encoding="utf-8")
    store = kdcache.open(str(prep(tmp_path, src, "--text-column", "text", "--label-column", "label", "--hash-bits", "20")))
    record = store.record(0)
    indices, values = kdcache.TextFeaturizer(20, [1, 2]).features(text)
    np.testing.assert_array_equal(record["indices"], indices)
    np.testing.assert_array_equal(record["values"], values)


def test_a_flipped_byte_is_a_format_error(tmp_path):
    out = prep(tmp_path, ROOT / "fixtures/digits/digits.csv", "--feature-columns", "px*", "--label-column", "label")
    store = kdcache.open(str(out))
    with store.env.begin(db=store._samples) as txn:
        record = bytes(txn.get((5).to_bytes(8, "big")))
    store.close()
    data = bytearray(out.read_bytes())
    at = data.find(record)
    data[at + 40] ^= 0xFF
    out.write_bytes(bytes(data))
    with pytest.raises(kdcache.FormatError, match="CRC-32"):
        kdcache.open(str(out)).record(5)
