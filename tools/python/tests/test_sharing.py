"""Sharing commands: export (compact, gzip, SHA-256), diff and fidelity, on real caches."""
import gzip
import os
import subprocess
import hashlib
import sys

import pytest
from _support import BIN, ROOT, kdcache, run


TEACHER = f"{sys.executable} {ROOT}/tools/teachers/centroid_teacher.py"


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    d = tmp_path_factory.mktemp("share")
    rows = ["id,label,text"] + [f"r{i},{['x', 'y'][i % 2]},{['alpha beta', 'gamma delta'][i % 2]} t{i % 13}" for i in range(300)]
    (d / "d.csv").write_text("\n".join(rows) + "\n")
    run("prep", d / "d.csv", "--out", d / "d.lmdb", "--text-column", "text", "--label-column", "label", "--hash-bits", "8", "--quiet")
    run("teach", "--exec", f"{TEACHER} --data {d / 'd.lmdb'}", "--data", d / "d.lmdb", "--out", d / "t.lmdb", "--dtype", "f32",
        "--temperature", "1", "--quiet")
    return d


def test_export_is_compact_readable_and_hashed(stores, tmp_path):
    r = run("export", stores / "t.lmdb", "--out", tmp_path / "e.lmdb")
    digest = r.stdout.split("sha256 ")[1].strip()
    assert digest == hashlib.sha256((tmp_path / "e.lmdb").read_bytes()).hexdigest()
    assert run("verify", tmp_path / "e.lmdb", "--data", stores / "d.lmdb").returncode == 0
    z = run("export", stores / "t.lmdb", "--out", tmp_path / "e.lmdb.gz", "--compress")
    assert z.stdout.split("sha256 ")[1].strip() == hashlib.sha256((tmp_path / "e.lmdb.gz").read_bytes()).hexdigest()
    (tmp_path / "plain.lmdb").write_bytes(gzip.decompress((tmp_path / "e.lmdb.gz").read_bytes()))
    a, b = kdcache.open(str(tmp_path / "plain.lmdb")), kdcache.open(str(stores / "t.lmdb"))
    for i in (0, 150, 299):
        assert a.log_probs(i).tolist() == b.log_probs(i).tolist()
    assert run("info", tmp_path / "plain.lmdb").returncode == 0


def test_diff_of_a_cache_with_itself_and_with_another_temperature(stores, tmp_path):
    same = run("diff", stores / "t.lmdb", stores / "t.lmdb")
    assert "300 samples compared at T = 1: argmax agreement 1.0000, KL(a‖b) mean 0.000000 max 0.000000, max |Δp| 0.000000" in same.stdout
    run("teach", "--exec", f"{TEACHER} --data {stores / 'd.lmdb'}", "--data", stores / "d.lmdb", "--out", tmp_path / "t4.lmdb",
        "--dtype", "f16", "--temperature", "4", "--quiet")
    other = run("diff", stores / "t.lmdb", tmp_path / "t4.lmdb")
    # The same teacher at another T_w, stored in f16: re-tempered to T = 1 it agrees up to rounding.
    assert "argmax agreement 1.0000" in other.stdout
    kl = float(other.stdout.split("mean ")[1].split()[0])
    max_dp = float(other.stdout.split("max |Δp| ")[1].split()[0])
    assert kl < 1e-3 and 0 < max_dp < 5e-3, other.stdout


def test_fidelity_accepts_a_fresh_cache_and_flags_a_stale_one(stores, tmp_path):
    ok = run("fidelity", stores / "t.lmdb", "--data", stores / "d.lmdb", "--exec", f"{TEACHER} --data {stores / 'd.lmdb'}", "--samples", "40")
    assert "40 samples rerun: argmax agreement 1.0000" in ok.stdout and "fresh" in ok.stdout
    # A "new model": the teacher trained on another dataset store (other centroids) disagrees.
    rows = ["id,label,text"] + [f"r{i},{['x', 'y'][i % 2]},{['gamma delta', 'alpha beta'][i % 2]} t{i % 13}" for i in range(300)]
    (tmp_path / "o.csv").write_text("\n".join(rows) + "\n")
    run("prep", tmp_path / "o.csv", "--out", tmp_path / "o.lmdb", "--text-column", "text", "--label-column", "label", "--hash-bits", "8", "--quiet")
    stale = run("fidelity", stores / "t.lmdb", "--data", stores / "d.lmdb", "--exec", f"{TEACHER} --data {tmp_path / 'o.lmdb'}",
                "--samples", "40", check=False)
    assert stale.returncode == 1
    assert "STALE: mean KL" in stale.stdout


def test_stores_open_from_a_read_only_directory(stores, tmp_path):
    """No lock file can be created there: kdcache falls back to MDB_NOLOCK, Python never uses one."""
    import shutil
    import stat
    import tempfile
    from pathlib import Path
    tmp_path = Path(tempfile.mkdtemp(dir="/tmp"))   # pytest's own tmp root is private to its user
    ro = tmp_path / "ro"
    ro.mkdir()
    shutil.copy(stores / "t.lmdb", ro / "t.lmdb")
    shutil.copy(stores / "d.lmdb", ro / "d.lmdb")
    for f in ro.iterdir():
        f.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    tmp_path.chmod(0o755)
    # As root permissions are not enforced: drop to an unprivileged user for the real test.
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
    r = subprocess.run(prefix + [BIN, "verify", str(ro / "t.lmdb"), "--data", str(ro / "d.lmdb")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(p.name for p in ro.iterdir()) == ["d.lmdb", "t.lmdb"], "no lock file was created"
    assert kdcache.open(str(ro / "t.lmdb")).log_probs(0).shape == (2,)
    denied = subprocess.run(prefix + [BIN, "info", str(stores / "t.lmdb")], capture_output=True, text=True) if prefix else None
    if denied is not None:   # the pytest directory itself is private: a clear message, not "no such file"
        assert denied.returncode == 1 and "permission denied" in denied.stderr, denied.stderr
    ro.chmod(0o755)
    shutil.rmtree(tmp_path)
