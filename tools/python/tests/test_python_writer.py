"""A PyTorch-style team writes a cache from Python; kdcache verifies it and sweeps from it.
Readers survive fork (DataLoader workers) and feed a Dataset adapter."""
import multiprocessing

import numpy as np
import pytest
from _support import ROOT, kdcache, run


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("pyw")
    run("prep", ROOT / "fixtures/digits/digits.csv", "--out", d / "d.lmdb", "--feature-columns", "px*", "--label-column", "label", "--quiet")
    return d


def teacher_logits(store):
    """A 'PyTorch team's model': logits that favour the true label (a stand-in for a real network)."""
    rng = np.random.default_rng(0)
    labels = np.array([store.label(i) for i in range(len(store))])
    z = rng.normal(0, 1, (len(store), 10))
    z[np.arange(len(store)), labels] += 4
    return z


def test_python_writer_resumes_from_the_records_not_the_claim(data, tmp_path):
    """A record the manifest claims but that is gone is pending again (FORMAT.md §3.1)."""
    import lmdb
    import struct
    store = kdcache.open(str(data / "d.lmdb"))
    z = teacher_logits(store)
    out = tmp_path / "claim.lmdb"
    with kdcache.SoftLabelWriter(out, store, name="t", write_temperature=1.0) as w:
        w.write(0, z)
        assert w.pending() == []
    env = lmdb.open(str(out), subdir=False, max_dbs=64)
    with env.begin(write=True) as txn:
        assert txn.delete(struct.pack(">II", 700, 0), db=env.open_db(b"teacher/t", txn=txn))
    env.close()
    with kdcache.SoftLabelWriter(out, store, name="t", write_temperature=1.0) as w:
        assert w.pending() == [(700, 701)]
        w.write(700, z[700:701])
        assert w.pending() == []
    assert "1797/1797 samples" in run("verify", out, "--data", data / "d.lmdb").stdout


def test_python_written_cache_verifies_and_sweeps(data):
    store = kdcache.open(str(data / "d.lmdb"))
    z = teacher_logits(store)
    out = data / "py.lmdb"
    with kdcache.SoftLabelWriter(out, store, name="torchnet", description="a stand-in network", content_hash="sha256:0",
                                 write_temperature=2.0, dtype="f16") as w:
        assert w.pending() == [(0, 1797)]
        for start in range(0, 1000, 500):
            w.write(start, z[start:start + 500])
        assert w.pending() == [(1000, 1797)]
    with kdcache.SoftLabelWriter(out, store, name="torchnet", description="a stand-in network", content_hash="sha256:0",
                                 write_temperature=2.0, dtype="f16") as w:  # resume
        w.write(1000, z[1000:])
        assert w.pending() == []
    r = run("verify", out, "--data", data / "d.lmdb")
    assert "1797/1797 samples" in r.stdout
    cache = kdcache.open(str(out))
    z0 = z[0] / 2 - np.log(np.exp(z[0] / 2 - (z[0] / 2).max()).sum()) - (z[0] / 2).max()
    np.testing.assert_allclose(cache.log_probs(0), z0, atol=2e-3)
    s = run("sweep", "--data", data / "d.lmdb", "--logits", out, "--student", "linear", "--alpha", "0,0.9", "--temperature", "2",
            "--epochs", "3", "--seeds", "1", "--lr", "0.05", "--out", data / "runs", "--quiet")
    assert "\nverdict: " in s.stdout and "\nbest overall: linear " in s.stdout


def _child(path, queue):
    store = kdcache.open(path) if isinstance(path, str) else path
    queue.put(store.record(7)["values"].tolist())


def test_a_store_opened_before_fork_reads_in_the_child(data):
    store = kdcache.open(str(data / "d.lmdb"))
    expected = store.record(7)["values"].tolist()
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    p = ctx.Process(target=_child, args=(store, queue))
    p.start()
    got = queue.get(timeout=30)
    p.join(timeout=30)
    assert p.exitcode == 0 and got == expected
    assert store.record(7)["values"].tolist() == expected, "the parent still reads after the child"


def test_distillation_dataset_adapter(data):
    store = kdcache.open(str(data / "d.lmdb"))
    out = data / "adapter.lmdb"
    with kdcache.SoftLabelWriter(out, store, name="t", write_temperature=1.0, dtype="f32") as w:
        w.write(0, teacher_logits(store))
    ds = kdcache.DistillationDataset(store, kdcache.open(str(out)), split="test", temperature=2.0)
    assert len(ds) == store.manifest["split_counts"]["test"]
    x, y, p = ds[0]
    assert x.shape == (64,) and p.shape == (10,) and abs(p.sum() - 1) < 1e-5
    assert y == store.label(ds.indices[0])


def test_many_threads_read_concurrently(data):
    from concurrent.futures import ThreadPoolExecutor
    store = kdcache.open(str(data / "d.lmdb"))
    expected = [store.label(i) for i in range(0, 1797, 7)]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(store.label, range(0, 1797, 7)))
    assert got == expected


def test_a_python_writer_keeps_a_teacher_another_process_adds_meanwhile(data, tmp_path):
    """The writer updates the manifest as stored at each commit, not its own copy from open time."""
    store = kdcache.open(str(data / "d.lmdb"))
    z = teacher_logits(store)
    out = tmp_path / "both.lmdb"
    np.save(tmp_path / "z.npy", z.astype(np.float32))
    with kdcache.SoftLabelWriter(out, store, name="torchnet", write_temperature=2.0) as w:
        w.write(0, z[:900])
        run("import", tmp_path / "z.npy", "--data", data / "d.lmdb", "--out", out, "--quiet")   # while w is open
        w.write(900, z[900:])
    teachers = kdcache.open(str(out)).manifest["teachers"]
    assert sorted(teachers) == ["imported", "torchnet"]
    assert teachers["imported"]["completed"] == [[0, 1797]] and teachers["torchnet"]["completed"] == [[0, 1797]]
    assert run("verify", out, "--data", data / "d.lmdb").returncode == 0
