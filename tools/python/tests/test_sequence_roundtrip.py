"""Round trip: the Python writer → Swift `kdcache verify` → the Python reader, for a top-k and a
sampled teacher in f16 and f32. It needs a `kdcache` that reads v3 caches (the seq-store branch)."""
import numpy as np
import pytest

from _sequence_support import dataset, sequences, write_cache
from _support import run

import kdcache

CASES = [("top-k", "f16"), ("top-k", "f32"), ("sampled", "f16"), ("sampled", "f32")]


@pytest.mark.parametrize("mode,dtype", CASES, ids=[f"{m}-{d}" for m, d in CASES])
def test_python_writes_swift_verifies_python_reads(tmp_path, mode, dtype):
    data, seqs = dataset(tmp_path), sequences(21)
    path = write_cache(tmp_path / "c.lmdb", data, seqs, mode=mode, dtype=dtype, samples=12, sample_seed=5, retemper_at=[1.0, 2.0])
    with kdcache.open(str(path)) as c:
        before = [c.sequence(i) for i in range(len(seqs))]
    v = run("verify", path, "--data", data, check=False)
    assert v.returncode == 0, v.stdout + v.stderr
    assert "FAIL" not in v.stdout
    with kdcache.open(str(path)) as c:
        assert c.manifest["schema_version"] == 3
        for i, (tokens, _) in enumerate(seqs):
            after = c.sequence(i)
            assert after.tokens.tolist() == tokens.tolist()
            assert np.array_equal(after.ids, before[i].ids) and np.array_equal(after.log_p, before[i].log_p)
        batch = next(iter(kdcache.TokenDistillationDataset(c, temperature=2.0, batch_size=len(seqs))))
        assert batch["input_ids"].shape[0] == len(seqs) and bool(batch["position_mask"].any())
