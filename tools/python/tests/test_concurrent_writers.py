"""Writers that meet in one file: two imports racing to create the same new cache both keep their
teacher; a cache whose teacher database was dropped is written again rather than called complete;
info and merge count the records, not the manifest's claim."""
import json
import subprocess

import numpy as np
import pytest
from _support import BIN, kdcache, prep_three_classes, run

N = 120


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("concurrent")
    prep_three_classes(d, N)
    rng = np.random.default_rng(3)
    for name in ("A", "B"):
        np.save(d / f"{name}.npy", rng.normal(0, 1, (N, 3)).astype(np.float32))
    return d


def records(path, teacher):
    store = kdcache.open(str(path))
    with store.env.begin(db=store._dbs[teacher]) as txn:
        out = {bytes(k): bytes(v) for k, v in txn.cursor()}
    manifest = store.manifest
    store.close()
    return out, manifest


def test_two_imports_racing_to_create_one_cache_both_keep_their_teachers(data, tmp_path):
    """Before the fix, the loser of the race saw the winner's file before its first commit (an LMDB
    file without `meta`) and stopped with "not a kdcache store": about half the trials kept one
    teacher. Now the file appears under its name only with its manifest inside (built as a
    temporary, then link(2)ed), and the loser of the link adds its teacher to the winner's cache."""
    expected = {}
    for name in ("A", "B"):
        run("import", data / f"{name}.npy", "--data", data / "d.lmdb", "--out", tmp_path / f"alone-{name}.lmdb", "--name", name, "--quiet")
        expected[name] = records(tmp_path / f"alone-{name}.lmdb", name)[0]
    trials = 20
    for trial in range(trials):
        out = tmp_path / f"shared-{trial}.lmdb"
        procs = [subprocess.Popen([BIN, "import", str(data / f"{name}.npy"), "--data", str(data / "d.lmdb"), "--out", str(out),
                                   "--name", name, "--commit-every", "40", "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for name in ("A", "B")]
        errors = [p.communicate(timeout=60)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], f"trial {trial}: {errors}"
        assert not any(".tmp-" in e for e in errors), errors
        manifest = kdcache.open(str(out)).manifest
        assert sorted(manifest["teachers"]) == ["A", "B"], f"trial {trial}: {sorted(manifest['teachers'])}"
        for name in ("A", "B"):
            assert manifest["teachers"][name]["completed"] == [[0, N]]
            assert records(out, name)[0] == expected[name], f"trial {trial}: teacher {name}'s records differ from a lone import"
        assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name], "no temporary is left behind"
    assert run("verify", tmp_path / f"shared-{trials - 1}.lmdb", "--data", data / "d.lmdb").returncode == 0


def test_a_dropped_teacher_database_is_written_again_not_called_complete(data, tmp_path):
    import lmdb
    out = tmp_path / "c.lmdb"
    run("import", data / "A.npy", "--data", data / "d.lmdb", "--out", out, "--name", "A", "--quiet")
    expected, _ = records(out, "A")
    env = lmdb.open(str(out), subdir=False, max_dbs=64)
    with env.begin(write=True) as txn:
        txn.drop(env.open_db(b"teacher/A", txn=txn), delete=True)
        claimed = json.loads(txn.get(b"manifest", db=env.open_db(b"meta", txn=txn)))["teachers"]["A"]["completed"]
    env.close()
    assert claimed == [[0, N]], "the manifest still claims every sample"
    r = run("info", out, check=False)
    assert r.returncode == 1 and "teacher 'A' is in the manifest but its records are missing" in r.stderr, r.stdout + r.stderr
    r = run("import", data / "A.npy", "--data", data / "d.lmdb", "--out", out, "--name", "A", "--quiet")
    assert f"imported {N} samples" in r.stdout, r.stdout
    assert f"the manifest claims {N} samples of teacher 'A' complete whose records are missing (0..<{N}); they are written again" in r.stderr
    got, manifest = records(out, "A")
    assert got == expected
    assert manifest["teachers"]["A"]["completed"] == [[0, N]]
    assert run("verify", out, "--data", data / "d.lmdb").returncode == 0


def test_info_and_merge_require_complete_count_records(data, tmp_path):
    import lmdb
    import struct
    shard = tmp_path / "s.lmdb"
    run("import", data / "A.npy", "--data", data / "d.lmdb", "--out", shard, "--name", "A", "--quiet")
    env = lmdb.open(str(shard), subdir=False, max_dbs=64)
    with env.begin(write=True, db=env.open_db(b"teacher/A")) as txn:
        assert txn.delete(struct.pack(">II", 7, 0))
    env.close()
    info = json.loads(run("info", shard, "--json").stdout)
    assert info["soft_labels"]["teachers"]["A"]["completed"] == [[0, N]], "the manifest still claims every sample"
    assert info["coverage"]["A"] == {"complete_samples": N - 1, "claimed_samples": N, "claimed_without_records": [[7, 8]]}
    assert f"coverage:  {N - 1}/{N} samples" in run("info", shard).stdout
    assert f"warning:   the manifest claims {N} samples complete, but 1 of them lack records (7..<8)" in run("info", shard).stdout
    r = run("merge", shard, "--out", tmp_path / "m.lmdb", "--require-complete", check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 samples missing: 7..<8" in r.stdout, r.stdout
    assert "the manifest claims 1 samples of teacher 'A' complete whose records are missing (7..<8); they count as missing" in r.stderr
    assert records(tmp_path / "m.lmdb", "A")[1]["teachers"]["A"]["completed"] == [[0, 7], [8, N]]
