"""The cluster examples in tools/cluster, checked offline (`make test-slurm` runs this file, then
test_slurm.sh on a real Slurm cluster).

k8s_teach_job.yaml: valid against the batch/v1 Job schema of each Kubernetes release that has
`backoffLimitPerIndex` on by default (1.29, beta, to the newest that kubernetes-validate ships),
strictly (no unknown field); its Indexed Job gives every shard to one pod; and its pods' command,
run as processes for each JOB_COMPLETION_INDEX with the manifest's environment and /data mounted
read-only, writes shards whose merge, by the command in the manifest's header, equals one
`teach` process byte for byte. No Kubernetes API server or kubelet runs here.
same_as_single.py: it notices a cache or a sweep that differs.
"""
import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import kubernetes_validate
import yaml
from kubernetes_validate import utils as kv_utils

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
import same_as_single  # noqa: E402

BIN = os.environ.get("KDCACHE_BIN", str(ROOT / ".build/release/kdcache"))
MANIFEST = HERE / "k8s_teach_job.yaml"
CENTROID = ROOT / "tools/teachers/centroid_teacher.py"
FORTUNES = ROOT / "fixtures/fortunes/fortunes.csv"
FIRST_RELEASE = (1, 29)    # backoffLimitPerIndex: alpha (feature gate off) in 1.28, beta in 1.29, GA in 1.33


def job():
    return yaml.safe_load(MANIFEST.read_text())


def releases():
    versions = {kv_utils.major_minor(v) for v in kv_utils.all_versions()}
    return sorted((v for v in versions if tuple(map(int, v.split("."))) >= FIRST_RELEASE), key=lambda v: tuple(map(int, v.split("."))))


def container(manifest):
    (c,) = manifest["spec"]["template"]["spec"]["containers"]
    return c


def test_the_manifest_is_a_valid_job_for_every_release_since_1_29():
    assert len(releases()) >= 9, releases()          # 1.29 … 1.37 in kubernetes-validate 1.37.0
    for version in releases():
        kubernetes_validate.validate(job(), version, strict=True)


def test_the_schema_check_rejects_what_a_cluster_would():
    """The validation really bites: a mistyped field, a string count, an unknown mode."""
    bad = []
    m = job(); container(m)["volumeMount"] = container(m).pop("volumeMounts"); bad.append(m)
    m = job(); m["spec"]["completions"] = "8"; bad.append(m)
    m = job(); m["spec"]["template"]["spec"]["containers"][0]["env"] = {"KDCACHE_SHARD_COUNT": "8"}; bad.append(m)
    for m in bad:
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(m, releases()[-1], strict=True)
    with pytest.raises(kubernetes_validate.ValidationError, match="backoffLimitPerIndex"):
        kubernetes_validate.validate(job(), "1.27", strict=True)    # before the field existed


def test_the_indexed_job_runs_each_shard_once_in_a_pod():
    m = job()
    spec = m["spec"]
    assert m["apiVersion"] == "batch/v1" and m["kind"] == "Job"
    assert spec["completionMode"] == "Indexed", "JOB_COMPLETION_INDEX is only set for an Indexed Job"
    env = {e["name"]: e["value"] for e in container(m)["env"]}
    shards = int(env["KDCACHE_SHARD_COUNT"])
    assert spec["completions"] == shards, "one completion per shard: indexes 0 … N-1 are the shards"
    assert spec["parallelism"] <= shards
    assert spec["template"]["spec"]["restartPolicy"] == "Never", "backoffLimitPerIndex needs restartPolicy Never"
    command = " ".join(container(m)["command"] + container(m)["args"])
    assert "${JOB_COMPLETION_INDEX}" in command and "--shard" not in command, "kdcache reads the shard from the environment"
    merge = merge_command()
    assert "/cache/shard-*.lmdb" in merge and "--require-complete" in merge


def merge_command():
    """The `kdcache merge` line of the manifest's header comment."""
    lines = [line.lstrip("# ").strip() for line in MANIFEST.read_text().splitlines() if line.startswith("#")]
    (merge,) = [line for line in lines if line.startswith("kdcache merge")]
    return merge


def test_the_pods_commands_write_shards_that_merge_into_one_process_cache(tmp_path):
    """Each pod, as a process: the container's command with the manifest's env and
    JOB_COMPLETION_INDEX, its volumes as directories (/data bind-mounted read-only in a private
    mount namespace, as `readOnly: true` mounts it), the teacher the image would hold replaced by
    tools/teachers/centroid_teacher.py. Then the header's merge command."""
    m = job()
    c = container(m)
    mounts = {v["mountPath"]: v for v in c["volumeMounts"]}
    host = {path: tmp_path / path.strip("/") for path in mounts}
    for d in host.values():
        d.mkdir()
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/kdcache").symlink_to(BIN)
    teacher = f"{sys.executable} {CENTROID}"

    def local(text):
        assert "python3 /teachers/my_teacher.py" in text or "kdcache merge" in text
        text = text.replace("python3 /teachers/my_teacher.py", teacher)
        for path in sorted(host, key=len, reverse=True):
            text = re.sub(re.escape(path) + r"(?=/|\s|$|')", str(host[path]), text)
        return text

    data = host["/data"] / "data.lmdb"
    r = subprocess.run([BIN, "prep", str(FORTUNES), "--out", str(data), "--text-column", "text", "--label-column", "label",
                        "--id-column", "id", "--seed", "7", "--hash-bits", "10", "--quiet"], capture_output=True, text=True)  # 2^10: a fast teacher
    assert r.returncode == 0, r.stderr
    assert c["command"] == ["/bin/sh", "-c"]
    script = local(c["args"][0])
    env = dict(os.environ, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}", **{e["name"]: e["value"] for e in c["env"]})
    ro = [str(host[p]) for p, v in mounts.items() if v.get("readOnly")]
    assert ro == [str(host["/data"])]
    # Mount /data read-only in a private mount namespace; only then run the pod's command.
    namespace = next((p for p in (["unshare", "--mount"], ["unshare", "--user", "--map-root-user", "--mount"])
                      if subprocess.run([*p, "true"], capture_output=True).returncode == 0), None)
    assert namespace, "no private mount namespace (root, or unprivileged user namespaces) to mount /data read-only"
    pod = [*namespace, "sh", "-c", 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" "$1" && exec /bin/sh -c "$2"',
           "pod", ro[0], script]
    shards = m["spec"]["completions"]
    parallel = min(m["spec"]["parallelism"], 2)      # this machine's two cores, not the cluster's 8 pods
    for first in range(0, shards, parallel):
        procs = [subprocess.Popen(pod, env=dict(env, JOB_COMPLETION_INDEX=str(i)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(first, min(first + parallel, shards))]
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, out + err
    written = sorted(f.name for f in host["/cache"].glob("shard-*.lmdb"))
    assert written == sorted(f"shard-{i}.lmdb" for i in range(shards))
    r = subprocess.run(pod[:-1] + [f"touch {ro[0]}/probe"], capture_output=True, text=True)
    assert r.returncode != 0 and "Read-only file system" in r.stderr, "the pods really saw /data read-only"
    r = subprocess.run(["sh", "-c", local(merge_command())], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"records from {shards} shards (0 identical duplicates), complete" in r.stdout, r.stdout
    single = tmp_path / "single.lmdb"
    r = subprocess.run([BIN, "teach", "--data", str(data), "--out", str(single), "--quiet", "--exec", local("python3 /teachers/my_teacher.py --data /data/data.lmdb")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    problems, summary = same_as_single.compare_caches(single, host["/cache"] / "teacher.lmdb")
    assert problems == [], problems
    assert summary.startswith("1919 records (teacher/centroid)"), summary


def test_same_as_single_notices_differences(tmp_path):
    """The comparison of test_slurm.sh can fail: another teacher's cache, a changed result line."""
    data = tmp_path / "d.lmdb"
    subprocess.run([BIN, "prep", str(FORTUNES), "--out", str(data), "--text-column", "text", "--label-column", "label", "--quiet"],
                   check=True, capture_output=True)
    for name, epochs in (("a", "2"), ("b", "2"), ("c", "3")):
        subprocess.run([BIN, "teach", "--data", str(data), "--out", str(tmp_path / f"{name}.lmdb"), "--teacher", "linear", "--epochs", epochs,
                        "--ensemble", "1", "--quiet"], check=True, capture_output=True)
    assert same_as_single.compare_caches(tmp_path / "a.lmdb", tmp_path / "b.lmdb")[0] == []
    problems, _ = same_as_single.compare_caches(tmp_path / "a.lmdb", tmp_path / "c.lmdb")
    assert any("1919 keys with other bytes" in p for p in problems), problems
    assert any("manifest field identity" in p for p in problems), problems

    sweep = [BIN, "sweep", "--data", str(data), "--logits", str(tmp_path / "a.lmdb"), "--temperature", "2", "--alpha", "0,0.5",
             "--epochs", "2", "--seeds", "1", "--quiet"]
    for name in ("s1", "s2"):
        subprocess.run(sweep + ["--out", str(tmp_path / name)], check=True, capture_output=True)
    assert same_as_single.compare_sweeps(tmp_path / "s1", tmp_path / "s2")[0] == []
    lines = (tmp_path / "s2/results.jsonl").read_text().splitlines()
    row = json.loads(lines[0])
    row["wallSeconds"] = row["wallSeconds"] + 1                  # timing fields do not count …
    (tmp_path / "s2/results.jsonl").write_text("\n".join([json.dumps(row)] + lines[1:]) + "\n")
    assert same_as_single.compare_sweeps(tmp_path / "s1", tmp_path / "s2")[0] == []
    row["test"]["accuracy"] += 1e-9                                # … a result does
    (tmp_path / "s2/results.jsonl").write_text("\n".join([json.dumps(row)] + lines[1:]) + "\n")
    problems, _ = same_as_single.compare_sweeps(tmp_path / "s1", tmp_path / "s2")
    assert len(problems) == 1 and "1 lines only in the first, 1 only in the second" in problems[0], problems
    shutil.rmtree(tmp_path / "s2")
    (tmp_path / "s2").mkdir()
    (tmp_path / "s2/results.jsonl").write_text((tmp_path / "s1/results.jsonl").read_text())
    problems, _ = same_as_single.compare_sweeps(tmp_path / "s1", tmp_path / "s2")
    assert any("best student" in p for p in problems), problems


@pytest.mark.parametrize("script,args", [("slurm_teach.sh", ["d.lmdb"]), ("slurm_sweep.sh", ["d.lmdb", "t.lmdb"])])
def test_the_slurm_scripts_refuse_what_would_leave_shards_out(tmp_path, script, args):
    """kdcache takes shard ID − MIN of COUNT, so an array with gaps (--array=0-4:2: ids 0, 2, 4 of 3)
    would ask for shards 2/3 and 4/3 and never 1/3; and outside an array there is no shard at all."""
    out = tmp_path / "out"
    base = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    stepped = dict(base, SLURM_ARRAY_TASK_ID="2", SLURM_ARRAY_TASK_MIN="0", SLURM_ARRAY_TASK_MAX="4", SLURM_ARRAY_TASK_COUNT="3")
    r = subprocess.run(["bash", HERE / script, *args, out], env=stepped, capture_output=True, text=True)
    assert r.returncode == 2 and f"{script}: array task ids 0…4 with gaps (3 tasks): submit a contiguous --array=0-N" in r.stderr, r.stderr
    r = subprocess.run(["bash", HERE / script, *args, out], env=dict(base, SLURM_ARRAY_TASK_ID="1"), capture_output=True, text=True)
    assert r.returncode == 2 and f"{script}: SLURM_ARRAY_TASK_COUNT is not set" in r.stderr, r.stderr
    assert not out.exists(), "nothing is written before the checks"
