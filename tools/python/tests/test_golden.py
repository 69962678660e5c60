"""The golden stores of every format version read exactly as recorded when they were written
(FORMAT.md §4); the v2 files also byte for byte: records, checksums, and what both encoders write."""
import json
import shutil
import struct

import numpy as np
import pytest
from _support import ROOT, kdcache, run


def copies(version, tmp_path):
    golden = ROOT / f"fixtures/format-v{version}"
    for path in golden.glob("*.lmdb"):
        shutil.copy(path, tmp_path / path.name)
    return json.loads((golden / "expected.json").read_text())


@pytest.mark.parametrize("version", [1, 2])
def test_golden_stores_read_identically(tmp_path, version):
    expected = copies(version, tmp_path)
    ds, sl = kdcache.open(str(tmp_path / "dataset.lmdb")), kdcache.open(str(tmp_path / "softlabels.lmdb"))
    assert ds.manifest["schema_version"] == sl.manifest["schema_version"] == version
    assert ds.fingerprint() == expected["dataset"]["fingerprint"] == ds.manifest["fingerprint"]
    for i, e in enumerate(expected["dataset"]["samples"]):
        r = ds.record(i)
        assert (ds.id(i), r["label"], r["split"], ds.text(i)) == (e["id"], e["label"], e["split"], e["text"])
        assert r["indices"].tolist() == e["indices"] and r["values"].tolist() == e["values"]
    for name, rows in expected["softlabels"].items():
        for i, row in enumerate(rows):
            assert sl.log_probs(i, teacher=name).astype(np.float32).tolist() == row
    v = run("verify", tmp_path / "softlabels.lmdb", "--data", tmp_path / "dataset.lmdb")
    assert ("note  format v1 store" in v.stdout) == (version == 1), v.stdout


def test_v2_golden_bytes_checksums_and_both_encoders(tmp_path):
    expected = copies(2, tmp_path)
    ds, dense, sl = (kdcache.open(str(tmp_path / n)) for n in ("dataset.lmdb", "dense.lmdb", "softlabels.lmdb"))
    for store, name in ((ds, "dataset.lmdb"), (dense, "dense.lmdb"), (sl, "softlabels.lmdb")):
        with store.env.begin(db=store.env.open_db(b"meta", create=False)) as txn:
            raw, crc = bytes(txn.get(b"manifest")), bytes(txn.get(b"manifest_crc32"))
        assert crc == kdcache.manifest_checksum(raw) and f"0x{struct.unpack('<I', crc)[0]:08x}" == expected["manifest_crc32"][name]
    for i, e in enumerate(expected["dataset"]["samples"]):
        assert ds._get(ds._samples, i).hex() == e["record_hex"]
        assert kdcache.encode_sample("sparse", e["split"], e["label"], e["values"], e["indices"], index=i).hex() == e["record_hex"]
    d = expected["dense_dataset"]
    assert dense.manifest["featurizer"]["mean"] == d["mean"] and dense.manifest["featurizer"]["std"] == d["std"]
    for i, e in enumerate(d["samples"]):
        assert dense.record(i)["values"].tolist() == e["values"]
        assert kdcache.encode_sample("dense", e["split"], e["label"], e["values"], index=i).hex() == d["record_hex"][i]
    for name, hexes in expected["softlabel_records"].items():
        with sl.env.begin(db=sl._dbs[name]) as txn:
            assert [bytes(v).hex() for _, v in txn.cursor()] == hexes
    # The Python encoder writes kdcache's dense records (and its own) byte for byte.
    for name in ("dense16", "python16"):
        for i, row in enumerate(expected["softlabels"][name]):
            assert kdcache.encode_soft_label(np.array(row, dtype=np.float32), "f16", i).hex() == expected["softlabel_records"][name][i]
    # A record under another key fails: the CRC covers the key.
    record = bytes.fromhex(expected["softlabel_records"]["dense16"][0])
    kdcache.decode_soft_label(record, 3, sample=0, view=0)
    with pytest.raises(kdcache.FormatError, match="CRC-32 mismatch"):
        kdcache.decode_soft_label(record, 3, sample=1, view=0)
    with pytest.raises(kdcache.FormatError, match="record version 2 in a format v1 store"):
        kdcache.decode_soft_label(record, 3, sample=0, view=0, version=1)


def test_the_fingerprint_does_not_depend_on_the_format(tmp_path):
    """The v2 store of the v1 golden source has the v1 fingerprint (FORMAT.md §2.6), recomputed by
    this reader too, and the v1 golden cache verifies against it."""
    v1 = json.loads((ROOT / "fixtures/format-v1/expected.json").read_text())
    expected = copies(2, tmp_path)
    assert expected["dataset"]["fingerprint"] == v1["dataset"]["fingerprint"]
    assert kdcache.open(str(tmp_path / "dataset.lmdb")).fingerprint() == v1["dataset"]["fingerprint"]
    shutil.copy(ROOT / "fixtures/format-v1/softlabels.lmdb", tmp_path / "v1-cache.lmdb")
    assert run("verify", tmp_path / "v1-cache.lmdb", "--data", tmp_path / "dataset.lmdb").returncode == 0
