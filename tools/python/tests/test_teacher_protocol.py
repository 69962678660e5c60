"""kdcache teach --exec with real Python teacher processes: values, every failure message, resume
after a failure and after kill -9 (the content equals an uninterrupted run's)."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from _support import BIN, ROOT, kdcache, run, wait_for_committed  # noqa: E402,F401


TEACHER = f"{sys.executable} {ROOT}/tools/teachers/centroid_teacher.py"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("teach")
    rows = ["id,label,text"] + [f"r{i},{['food', 'code', 'law'][i % 3]},{['apple pie', 'kernel bug', 'court order'][i % 3]} word{i % 11}" for i in range(900)]
    (d / "d.csv").write_text("\n".join(rows) + "\n")
    run("prep", d / "d.csv", "--out", d / "d.lmdb", "--text-column", "text", "--label-column", "label", "--id-column", "id",
        "--hash-bits", "8", "--quiet")
    return d / "d.lmdb"


def records(path):
    store = kdcache.open(str(path))
    name = next(iter(store.manifest["teachers"]))
    with store.env.begin(db=store._dbs[name]) as txn:
        out = {bytes(k): bytes(v) for k, v in txn.cursor()}
    store.close()
    return out


def teach(data, out, *extra, check=True):
    return run("teach", "--exec", f"{TEACHER} --data {data} " + " ".join(extra), "--data", data, "--out", out,
               "--batch-size", "100", "--commit-every", "200", "--quiet", check=check)


@pytest.fixture(scope="module")
def clean(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "t.lmdb"
    teach(data, out)
    return out


def test_values_are_the_teachers_logits_softened(data, clean):
    store, ds = kdcache.open(str(clean)), kdcache.open(str(data))
    teacher = store.manifest["teachers"]["centroid"]
    assert teacher["write_temperature"] == 2.0 and teacher["completed"] == [[0, 900]]
    assert run("verify", clean, "--data", data).returncode == 0
    # Recompute the centroid teacher's logits in numpy for a few samples.
    dim = ds.manifest["featurizer"]["dimension"]
    def vec(r):
        v = np.zeros(dim); v[r["indices"]] = r["values"]; return v / max(np.linalg.norm(v), 1e-12)
    cent = np.zeros((3, dim))
    for _, r in ds:
        if r["split"] == "train":
            cent[r["label"]] += vec(r)
    cent /= np.linalg.norm(cent, axis=1, keepdims=True)
    for i in (0, 1, 450, 899):
        z = 10 * cent @ vec(ds.record(i)) / 2.0
        expected = z - z.max() - np.log(np.exp(z - z.max()).sum())
        np.testing.assert_allclose(store.log_probs(i), expected, atol=2e-3)


@pytest.mark.parametrize("framing,mode,message", [
    ("json", "nan", "sample 650: NaN or infinity among the values"),
    ("json", "count", "sample 650: 2 values, the dataset has 3 classes"),
    ("json", "unknown", "sample 1000000000 was not in samples 600..<700"),
    ("json", "skip", "sample 650 is missing from the teacher's answer"),
    ("json", "garbage", "answered samples 600..<700 with a line that is not a JSON object: this is not json. "
                        "Standard output carries protocol messages only"),
    ("json", "die", "exited with status 3 before answering samples 600..<700"),
    ("binary", "nan", "sample 650: NaN or infinity among the values"),
    ("binary", "count", "samples 600..<700: 2 values per sample, the dataset has 3 classes"),
    ("binary", "unknown", "sample 1000000000 was not in samples 600..<700"),
    ("binary", "skip", "sample 650 is missing from the teacher's answer"),
    ("binary", "garbage", "answered samples 600..<700 with a line that is not a JSON object: this is not json"),
    ("binary", "truncate", "exited with status 3 before answering samples 600..<700"),
])
def test_bad_teacher_output_names_the_sample_and_keeps_committed_batches(data, clean, tmp_path, framing, mode, message):
    out = tmp_path / "t.lmdb"
    r = teach(data, out, f"--framing {framing} --misbehave {mode} --at 650", check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    assert message in r.stderr, r.stderr
    assert f"stopped with 600 of 900 samples committed to {out}; they are kept" in r.stderr, r.stderr
    if mode == "die":
        assert "dying on purpose" in r.stderr, "the teacher's stderr is shown"
    partial = kdcache.open(str(out))
    assert partial.manifest["teachers"]["centroid"]["completed"] == [[0, 600]]
    partial.close()
    teach(data, out, f"--framing {framing}")  # resumes after the committed batches
    assert records(out) == records(clean)


def test_binary_framing_gives_the_same_cache_as_json(data, clean, tmp_path):
    out = tmp_path / "b.lmdb"
    teach(data, out, "--framing binary")
    assert records(out) == records(clean)


def test_a_silent_teacher_times_out(data, tmp_path):
    r = run("teach", "--exec", f"{TEACHER} --data {data} --misbehave hang --at 5", "--data", data, "--out", tmp_path / "t.lmdb",
            "--timeout", "2", "--quiet", check=False)
    assert r.returncode == 1
    assert "timed out after 2 s waiting for samples 0..<256. Raise --timeout" in r.stderr, r.stderr
    time.sleep(0.5)
    leftovers = subprocess.run(["pgrep", "-f", f"centroid_teacher.py --data {data} --misbehave hang"], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", "the silent teacher was terminated, not left running"


def test_kill_9_then_rerun_equals_an_uninterrupted_run(data, clean, tmp_path):
    out = tmp_path / "t.lmdb"
    proc = subprocess.Popen([BIN, "teach", "--exec", f"{TEACHER} --data {data} --slow 0.15", "--data", str(data), "--out", str(out),
                             "--batch-size", "100", "--commit-every", "200", "--quiet"], start_new_session=True)
    done = wait_for_committed(out, "centroid", 400, poll=0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 400 <= done < 900, f"killed after {done} samples"
    assert run("verify", out).returncode == 0, "what was committed before the kill is intact"
    teach(data, out)
    assert records(out) == records(clean)


def test_sklearn_teacher_end_to_end(data, tmp_path):
    out = tmp_path / "t.lmdb"
    run("teach", "--exec", f"{sys.executable} {ROOT}/tools/teachers/sklearn_teacher.py --data {data}", "--data", data, "--out", out, "--quiet")
    store, ds = kdcache.open(str(out)), kdcache.open(str(data))
    assert store.manifest["teachers"]["sklearn-tfidf-lr"]["completed"] == [[0, 900]]
    accuracy = np.mean([store.log_probs(i).argmax() == ds.label(i) for i in range(len(ds))])
    assert accuracy > 0.9


def test_an_external_teacher_labels_augmented_views(data, tmp_path):
    out = tmp_path / "v.lmdb"
    run("teach", "--exec", f"{TEACHER} --data {data}", "--data", data, "--out", out, "--views", "3",
        "--augment", "token-dropout:p=0.5", "--dtype", "f32", "--quiet")
    cache = kdcache.open(str(out))
    assert cache.manifest["teachers"]["centroid"]["views"] == 3
    assert cache.manifest["teachers"]["centroid"]["augmentation"] == "token-dropout:p=0.5"
    differs = sum(not np.allclose(cache.log_probs(i, view=0), cache.log_probs(i, view=2)) for i in range(0, 900, 9))
    assert differs > 10, "augmented views change the teacher's answers"
    assert run("verify", out, "--data", data).returncode == 0


KEYS_TEACHER = """
import json, sys
sys.path.insert(0, {teachers!r})
from protocol import serve
inputs = {inputs!r}
def predict(samples):
    keys = sorted(samples[0])
    if keys != {expected!r}:
        raise SystemExit(f"samples carry {{keys}}")
    return [[0.0, 1.0, 2.0] for _ in samples]
serve(predict, {{"name": "keys", "kind": "logits", "framing": "binary", **({{"inputs": inputs}} if inputs is not None else {{}})}})
"""


@pytest.mark.parametrize("inputs,expected", [
    (None, ["features", "id", "index", "text", "view"]),
    (["text"], ["id", "index", "text", "view"]),
    (["features"], ["features", "id", "index", "view"]),
    ([], ["id", "index", "view"]),
])
def test_samples_carry_what_the_teacher_asks_for(data, tmp_path, inputs, expected):
    script = tmp_path / "keys.py"
    script.write_text(KEYS_TEACHER.format(teachers=str(ROOT / "tools/teachers"), inputs=inputs, expected=expected))
    r = run("teach", "--exec", f"{sys.executable} {script}", "--data", data, "--out", tmp_path / "k.lmdb", "--quiet", check=False)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("inputs,message", [
    (["pixels"], "unknown input 'pixels' in the ready message (text, features)"),
    ("text", '"inputs" in the ready message must be a list such as ["text"]'),
])
def test_a_ready_message_asking_for_unknown_inputs_is_refused(data, tmp_path, inputs, message):
    script = tmp_path / "keys.py"
    script.write_text(KEYS_TEACHER.format(teachers=str(ROOT / "tools/teachers"), inputs=inputs, expected=[]))
    r = run("teach", "--exec", f"{sys.executable} {script}", "--data", data, "--out", tmp_path / "k.lmdb", "--quiet", check=False)
    assert r.returncode == 1
    assert message in r.stderr, r.stderr
    assert not (tmp_path / "k.lmdb").exists(), "nothing is written for a teacher that cannot be served"


def test_a_teacher_no_better_than_chance_is_flagged(data, tmp_path):
    """The keys teacher always answers the third class: agreement equals that class's frequency."""
    script = tmp_path / "keys.py"
    script.write_text(KEYS_TEACHER.format(teachers=str(ROOT / "tools/teachers"), inputs=None,
                                          expected=["features", "id", "index", "text", "view"]))
    r = run("teach", "--exec", f"{sys.executable} {script}", "--data", data, "--out", tmp_path / "k.lmdb", "--quiet",
            "--batch-size", "100", "--commit-every", "200")
    assert "warning: teacher 'keys' agrees with the dataset's labels no better than chance (0.333; chance 0.333" in r.stderr, r.stderr
    assert "over 600 committed samples)" in r.stderr and "The run goes on" in r.stderr, "an early warning, before the run ends"
    assert "over 900 samples)" in r.stderr, "and the final one"
    assert "--ids" not in r.stderr, "the row-order hint is for imports"
    good = run("teach", "--exec", f"{TEACHER} --data {data}", "--data", data, "--out", tmp_path / "c.lmdb", "--quiet")
    assert "no better than chance" not in good.stderr
    assert "agreement with the dataset's labels: train 1.000" in good.stdout, good.stdout
