"""One LMDB environment per file per process: a SoftLabelWriter and the readers of its file share
it (closing one leaves the others working); a writer refuses to resume a teacher whose layout,
augmentation included, differs from its own."""
import json

import lmdb
import numpy as np
import pytest
from _support import kdcache, prep_three_classes, run

N = 60


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return kdcache.open(str(prep_three_classes(tmp_path_factory.mktemp("registry"), N)))


def logits(seed):
    return np.random.default_rng(seed).normal(0, 2, (N, 3))


def expected_log_probs(z, row):
    return z[row] - z[row].max() - np.log(np.exp(z[row] - z[row].max()).sum())


def writer(path, data, **layout):
    return kdcache.SoftLabelWriter(path, data, name="t", write_temperature=1.0, dtype="f32", **layout)


def test_a_reader_opened_first_reads_what_a_writer_then_adds(data, tmp_path):
    out, z = str(tmp_path / "c.lmdb"), logits(1)
    with writer(out, data) as w:
        w.write(0, z[:20])
    reader = kdcache.open(out)
    before = reader.log_probs(5)
    w = writer(out, data)
    assert w.env is reader.env, "the writer reuses the reader's environment"
    w.write(20, z[20:])
    np.testing.assert_allclose(reader.log_probs(40), expected_log_probs(z, 40), atol=1e-5)
    w.close()
    np.testing.assert_array_equal(reader.log_probs(5), before)
    np.testing.assert_allclose(reader.log_probs(N - 1), expected_log_probs(z, N - 1), atol=1e-5)
    assert sum(1 for _ in reader) == N, "the reader iterates after the writer closed"
    reader.close()


def test_a_writer_opened_first_shares_its_environment_with_a_later_reader(data, tmp_path):
    out, z = str(tmp_path / "c.lmdb"), logits(2)
    w = writer(out, data)
    w.write(0, z[:30])
    reader = kdcache.open(out)
    assert reader.env is w.env
    w.write(30, z[30:])
    np.testing.assert_allclose(reader.log_probs(50), expected_log_probs(z, 50), atol=1e-5)
    w.close()
    np.testing.assert_allclose(reader.log_probs(10), expected_log_probs(z, 10), atol=1e-5)
    reader.close()


def test_closing_the_reader_leaves_the_writer_working(data, tmp_path):
    out, z = str(tmp_path / "c.lmdb"), logits(3)
    w = writer(out, data)
    w.write(0, z[:10])
    kdcache.open(out).close()
    w.write(10, z[10:])
    assert w.pending() == []
    w.close()
    with kdcache.open(out) as reader:
        assert reader.manifest["teachers"]["t"]["completed"] == [[0, N]]
    assert run("verify", out, "--data", data.path).returncode == 0


def test_a_writer_is_refused_while_a_reader_iterates_the_file(data, tmp_path):
    """Reopening the environment writable would invalidate the cursor under the iteration."""
    out = str(tmp_path / "c.lmdb")
    with writer(out, data) as w:
        w.write(0, logits(4))
    reader = kdcache.open(out)
    walk = iter(reader)
    next(walk)
    with pytest.raises(kdcache.FormatError, match="is iterating over this file"):
        writer(out, data)
    assert sum(1 for _ in walk) == N - 1, "the iteration goes on"
    with writer(out, data) as w:            # once it is finished, a writer opens
        assert w.pending() == []
    reader.close()


def _set_teacher_fields(path, **fields):
    """Edits teacher t's manifest entry as another tool would, with a matching checksum."""
    env = lmdb.open(path, subdir=False, max_dbs=64)
    meta = env.open_db(b"meta")
    with env.begin(write=True, db=meta) as txn:
        m = json.loads(bytes(txn.get(b"manifest")))
        m["teachers"]["t"].update(fields)
        raw = json.dumps(m, sort_keys=True, separators=(",", ":")).encode()
        txn.put(b"manifest", raw)
        txn.put(b"manifest_crc32", kdcache.manifest_checksum(raw))
    env.close()


def test_resuming_a_teacher_with_another_augmentation_is_refused(data, tmp_path):
    out = str(tmp_path / "c.lmdb")
    with writer(out, data) as w:
        w.write(0, logits(5)[:10])
    _set_teacher_fields(out, augmentation="token-dropout:p=0.25", augmentation_seed=0)
    with kdcache.open(out) as cache:        # a valid cache: readers accept it
        assert cache.manifest["teachers"]["t"]["augmentation"] == "token-dropout:p=0.25"
    with pytest.raises(kdcache.FormatError, match=r"teacher 't' exists with another layout \(augmentation 'token-dropout:p=0.25' vs None, "
                                                  r"augmentation_seed 0 vs None"):
        writer(out, data)
    _set_teacher_fields(out, augmentation=None, augmentation_seed=None)   # JSON null: the same as absent
    with writer(out, data) as w:
        assert w.pending() == [(10, N)]


def test_every_layout_field_counts_and_nothing_else_does():
    from kdcache.manifest import LAYOUT_FIELDS, layout_differences
    base = {"identity": {"name": "t"}, "write_temperature": 2.0, "dtype": "f16", "top_k": 0, "views": 3,
            "augmentation": "token-dropout:p=0.25", "augmentation_seed": 7, "completed": [[0, 5]], "metrics": {}, "created": "x",
            "sequence": {"mode": "top-k"}}
    for field in LAYOUT_FIELDS:
        changed = dict(base, **{field: "other"})
        assert [d.split()[0] for d in layout_differences(base, changed)] == [field]
        missing = {k: v for k, v in base.items() if k != field}
        assert [d.split()[0] for d in layout_differences(base, missing)] == [field]
    other_progress = dict(base, completed=[], metrics={"valid_accuracy": 0.5}, created="y", tool_version="z")
    assert layout_differences(base, other_progress) == []
    assert set(LAYOUT_FIELDS) >= {"augmentation", "augmentation_seed", "views", "top_k", "dtype", "write_temperature"}


def test_a_writer_given_a_cache_for_its_dataset_says_so(data, tmp_path):
    out = str(tmp_path / "c.lmdb")
    with writer(out, data) as w:
        w.write(0, logits(6))
    with pytest.raises(kdcache.FormatError, match="is not a dataset store"):
        kdcache.SoftLabelWriter(tmp_path / "other.lmdb", out, name="t")
