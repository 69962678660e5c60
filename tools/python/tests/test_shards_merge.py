"""N local processes each write --shard i/N; kdcache merge yields the single-process cache."""
import os
import subprocess

import pytest
from _support import BIN, kdcache, run


def records(path):
    store = kdcache.open(str(path))
    out = {}
    for name, db in store._dbs.items():
        with store.env.begin(db=db) as txn:
            out[name] = {bytes(k): bytes(v) for k, v in txn.cursor()}
    manifest = store.manifest
    store.close()
    return out, manifest


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("shards")
    rows = ["id,label,text"] + [f"r{i},{['a', 'b', 'c'][i % 3]},{['red apple', 'blue sky', 'green tree'][i % 3]} n{i % 17}" for i in range(500)]
    (d / "d.csv").write_text("\n".join(rows) + "\n")
    run("prep", d / "d.csv", "--out", d / "d.lmdb", "--text-column", "text", "--label-column", "label", "--hash-bits", "8", "--quiet")
    return d


TEACH = ["--teacher", "linear", "--epochs", "2", "--ensemble", "2", "--quiet", "--commit-every", "64"]


def test_parallel_shards_merge_into_the_single_process_cache(data):
    single = data / "single.lmdb"
    run("teach", "--data", data / "d.lmdb", "--out", single, *TEACH)
    procs = [subprocess.Popen([BIN, "teach", "--data", str(data / "d.lmdb"), "--out", str(data / f"s{i}.lmdb"), "--shard", f"{i}/3", *TEACH])
             for i in range(3)]
    assert all(p.wait() == 0 for p in procs)
    r = run("merge", *(data / f"s{i}.lmdb" for i in range(3)), "--out", data / "merged.lmdb")
    assert "builtin: 500 records from 3 shards (0 identical duplicates), complete" in r.stdout
    merged, manifest = records(data / "merged.lmdb")
    expected, single_manifest = records(single)
    assert merged == expected
    assert manifest["teachers"]["builtin"]["completed"] == [[0, 500]]
    assert manifest["teachers"]["builtin"]["identity"] == single_manifest["teachers"]["builtin"]["identity"]
    assert run("verify", data / "merged.lmdb", "--data", data / "d.lmdb").returncode == 0


def test_slurm_variables_choose_the_shard_and_gaps_are_reported(data):
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="1", SLURM_ARRAY_TASK_COUNT="4")
    run("teach", "--data", data / "d.lmdb", "--out", data / "slurm1.lmdb", *TEACH, env=env)
    _, manifest = records(data / "slurm1.lmdb")
    assert manifest["teachers"]["builtin"]["completed"] == [[125, 250]]
    r = run("merge", data / "slurm1.lmdb", "--out", data / "partial.lmdb", "--require-complete", check=False)
    assert r.returncode == 1
    assert "375 samples missing: 0..<125, 250..<500" in r.stdout


def test_disagreeing_shards_are_refused(data):
    run("teach", "--data", data / "d.lmdb", "--out", data / "x0.lmdb", "--shard", "0/2", *TEACH)
    run("teach", "--data", data / "d.lmdb", "--out", data / "y0.lmdb", "--shard", "0/2", *TEACH, "--seed", "9", "--name", "builtin")
    r = run("merge", data / "x0.lmdb", data / "y0.lmdb", "--out", data / "bad.lmdb", check=False)
    assert r.returncode == 1
    assert "teacher 'builtin' has another identity than in" in r.stderr, r.stderr
    assert not (data / "bad.lmdb").exists()


def test_plan_estimates_the_size(data):
    r = run("plan", "--data", data / "d.lmdb", "--dtype", "f16", "--views", "4")
    assert "2000 records (500 samples × 4 views) of 14 bytes" in r.stdout
    run("teach", "--data", data / "d.lmdb", "--out", data / "planned.lmdb", *TEACH)
    estimate = int(run("plan", "--data", data / "d.lmdb").stdout.split("estimated size on disk: ")[1].split()[0])
    actual = (data / "planned.lmdb").stat().st_size
    assert 0.5 * actual <= estimate <= 2 * actual, (estimate, actual)


def test_teach_and_import_refuse_a_file_system_too_small_for_the_plan(data, tmp_path):
    """A real small file system: a tmpfs mounted in a private user and mount namespace."""
    estimate = int(run("plan", "--data", data / "d.lmdb", "--dtype", "f32", "--views", "8").stdout
                   .split("estimated size on disk: ")[1].split()[0])
    size_kib = max(4, estimate // 1024 // 4 // 4 * 4)   # a quarter of the estimate, in whole pages
    import numpy as np
    np.save(tmp_path / "l.npy", np.zeros((500, 3), dtype=np.float32))
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    script = (f"mount -t tmpfs -o size={size_kib}k none {tiny} || exit 99; "
              f"{BIN} teach --data {data / 'd.lmdb'} --out {tiny}/t.lmdb --dtype f32 --views 8 --augment token-dropout:p=0.2 {' '.join(TEACH)}; "
              f"echo teach=$?; "
              f"{BIN} import {tmp_path / 'l.npy'} --data {data / 'd.lmdb'} --out {tiny}/i.lmdb --dtype f32 --quiet; echo import=$?; "
              f"echo left=$(ls -A {tiny})")
    # A private mount namespace: through a user namespace, or directly when running as root.
    for prefix in (["unshare", "--user", "--map-root-user", "--mount"], ["unshare", "--mount"]):
        r = subprocess.run([*prefix, "sh", "-c", script], capture_output=True, text=True)
        if r.returncode == 0:
            break
    assert r.returncode == 0, "no private mount namespace for the small file system: " + r.stdout + r.stderr
    assert "teach=1" in r.stdout and "import=1" in r.stdout, r.stdout + r.stderr
    assert f"{tiny}/t.lmdb: no space left on the file system of {tiny}/t.lmdb: need " in r.stderr, r.stderr
    assert f", have {size_kib}.0 KiB. Free space, write elsewhere" in r.stderr, r.stderr
    assert "left=\n" in r.stdout, "nothing is written when the plan does not fit"


def test_the_builtin_teacher_writes_the_same_bytes_for_any_worker_count(data):
    """Issue 3: same seed, same cache, whatever the thread count (MLP ensemble with cross-fitting)."""
    outs = []
    for workers in (1, 2):
        out = data / f"w{workers}.lmdb"
        run("teach", "--data", data / "d.lmdb", "--out", out, "--teacher", "mlp", "--hidden", "16", "--epochs", "2",
            "--ensemble", "2", "--cross-fit", "2", "--seed", "5", "--workers", str(workers), "--quiet")
        outs.append(records(out))
    (one, m1), (two, m2) = outs
    assert one == two
    assert m1["teachers"]["builtin"]["metrics"] == m2["teachers"]["builtin"]["metrics"]


def test_two_processes_writing_one_cache_keep_each_others_teachers(data, tmp_path):
    """teach --exec and import into the same file at the same time: each commit updates the
    manifest as stored, so neither process drops the other's teacher or its progress."""
    import sys

    import numpy as np
    from _support import ROOT, wait_for_committed
    np.save(tmp_path / "l.npy", np.random.default_rng(4).normal(0, 1, (500, 3)).astype(np.float32))
    out = tmp_path / "shared.lmdb"
    teacher = f"{sys.executable} {ROOT}/tools/teachers/centroid_teacher.py --data {data / 'd.lmdb'} --slow 0.4"
    slow = subprocess.Popen([BIN, "teach", "--exec", teacher, "--data", str(data / "d.lmdb"), "--out", str(out),
                             "--batch-size", "25", "--commit-every", "25", "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert wait_for_committed(out, "centroid", 25) >= 25
    run("import", tmp_path / "l.npy", "--data", data / "d.lmdb", "--out", out, "--commit-every", "20", "--quiet")
    assert slow.poll() is None, "the import ran while teach was still writing"
    _, stderr = slow.communicate(timeout=120)
    assert slow.returncode == 0, stderr
    teachers = kdcache.open(str(out)).manifest["teachers"]
    assert sorted(teachers) == ["centroid", "imported"]
    assert teachers["centroid"]["completed"] == [[0, 500]] and teachers["imported"]["completed"] == [[0, 500]]
    assert run("verify", out, "--data", data / "d.lmdb").returncode == 0
