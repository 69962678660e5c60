"""The format-v1 golden stores read exactly as recorded when they were written (FORMAT.md §4)."""
import json
import shutil

import numpy as np
from _support import ROOT, kdcache


GOLDEN = ROOT / "fixtures/format-v1"


def test_v1_golden_stores_read_identically(tmp_path):
    for name in ("dataset.lmdb", "softlabels.lmdb"):
        shutil.copy(GOLDEN / name, tmp_path / name)
    expected = json.loads((GOLDEN / "expected.json").read_text())
    ds, sl = kdcache.open(str(tmp_path / "dataset.lmdb")), kdcache.open(str(tmp_path / "softlabels.lmdb"))
    assert ds.fingerprint() == expected["dataset"]["fingerprint"] == ds.manifest["fingerprint"]
    for i, e in enumerate(expected["dataset"]["samples"]):
        r = ds.record(i)
        assert (ds.id(i), r["label"], r["split"], ds.text(i)) == (e["id"], e["label"], e["split"], e["text"])
        assert r["indices"].tolist() == e["indices"] and r["values"].tolist() == e["values"]
    for name, rows in expected["softlabels"].items():
        for i, row in enumerate(rows):
            assert sl.log_probs(i, teacher=name).astype(np.float32).tolist() == row
