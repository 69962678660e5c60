"""tools/bench/lm_fanout_teacher.py (make demo-lm): one teacher serving several `kdcache teach
--sequence` runs writes, for each, the same records a run with its own teacher writes; runs that
send different batches are refused."""
import dataclasses
import shlex
import subprocess
import sys

import numpy as np

from _support import BIN, ROOT, kdcache, prep_three_classes, run

TEACHER = f"{shlex.quote(sys.executable)} {shlex.quote(str(ROOT / 'tools/teachers/tiny_lm_teacher.py'))}"
FANOUT = ROOT / "tools/bench/lm_fanout_teacher.py"
LAYOUTS = [("top-k:8", []), ("sampled:6", ["--sample-seed", "3"])]


def teach_command(data, out, layout, extra, teacher, batch_size=16):
    return [BIN, "teach", "--data", str(data), "--out", str(out), "--exec", teacher, "--sequence", layout,
            "--retemper-at", "1,2", "--temperature", "1", "--dtype", "f16", "--batch-size", str(batch_size), "--quiet", *extra]


def fanout(tmp, data, runs):
    """Runs `runs` [(out, layout, extra, batch size)] concurrently against one fan-out teacher; (statuses, server status, outputs)."""
    sock = tmp / "t.sock"
    server = subprocess.Popen([sys.executable, str(FANOUT), "serve", "--socket", str(sock), "--clients", str(len(runs)),
                               "--exec", TEACHER], stderr=subprocess.PIPE, text=True)
    import time
    for _ in range(200):
        if sock.exists():
            break
        time.sleep(0.05)
    client = f"{shlex.quote(sys.executable)} {shlex.quote(str(FANOUT))} client --socket {shlex.quote(str(sock))}"
    procs = [subprocess.Popen(teach_command(data, out, layout, extra, client, batch), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for out, layout, extra, batch in runs]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    server_err = server.communicate(timeout=60)[1]
    return [p.returncode for p in procs], server.returncode, outputs, server_err


def records(path):
    with kdcache.open(str(path)) as c:
        return [c.sequence(i).copy() for i in range(len(c))]


def test_every_run_gets_the_records_of_its_own_teacher(tmp_path):
    prep_three_classes(tmp_path, 40)
    data = tmp_path / "d.lmdb"
    statuses, server, outputs, err = fanout(tmp_path, data, [(tmp_path / f"fan{i}.lmdb", layout, extra, 16) for i, (layout, extra) in enumerate(LAYOUTS)])
    assert statuses == [0, 0] and server == 0, "\n".join(outputs) + err
    assert "3 batches relayed to 2 clients" in err
    for i, (layout, extra) in enumerate(LAYOUTS):
        direct = tmp_path / f"direct{i}.lmdb"
        subprocess.run(teach_command(data, direct, layout, extra, TEACHER), check=True, capture_output=True)
        run("verify", tmp_path / f"fan{i}.lmdb", "--data", data)
        got, want = records(tmp_path / f"fan{i}.lmdb"), records(direct)
        assert len(got) == len(want) == 40
        for a, b in zip(got, want):
            assert a.kind == b.kind
            for f in dataclasses.fields(a):
                x, y = getattr(a, f.name), getattr(b, f.name)
                assert (x is None) == (y is None), f.name
                if isinstance(x, np.ndarray):
                    assert np.array_equal(x, y), f"{layout}: {f.name} differs"


def test_runs_that_send_different_batches_are_refused(tmp_path):
    prep_three_classes(tmp_path, 40)
    statuses, server, outputs, err = fanout(tmp_path, tmp_path / "d.lmdb",
                                            [(tmp_path / "a.lmdb", "top-k:8", [], 16), (tmp_path / "b.lmdb", "top-k:8", [], 8)])
    assert server == 1 and statuses[0] != 0 and statuses[1] != 0
    assert "client 1's batch 1 differs from client 0's" in err
