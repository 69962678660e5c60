"""`sweep` writes TensorBoard events (OUT/tensorboard/): read back with TensorBoard's own reader
(EventAccumulator), its record framing checked with TensorBoard's own CRC-32C, its hparams
summaries parsed by the hparams plugin and listed by the plugin's backend (what the HParams tab
shows), every value checked against results.jsonl. Also: a rerun writes nothing twice, a kill
leaves no torn event file, shards + `sweep collect`, halving, --no-tensorboard.

Wall times differ between runs, so values are compared, not bytes (except a resumed sweep's own
files, which it must not rewrite)."""
import json
import os
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from _support import BIN, prep_three_classes, run

from tensorboard import context as tb_context
from tensorboard.backend.event_processing import data_provider as tb_data_provider
from tensorboard.backend.event_processing import plugin_event_multiplexer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups, metadata

GRID = ["--student", "linear,fasttext:dim=8", "--temperature", "2", "--alpha", "0,0.5", "--lr", "0.1",
        "--epochs", "3", "--seeds", "2", "--batch-size", "32", "--quiet"]


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    d = tmp_path_factory.mktemp("tb")
    prep_three_classes(d, 240)
    run("teach", "--data", d / "d.lmdb", "--out", d / "t.lmdb", "--teacher", "linear", "--epochs", "2", "--ensemble", "1", "--quiet")
    return d


def sweep(d, out, *extra, grid=GRID):
    return run("sweep", "--data", d / "d.lmdb", "--logits", d / "t.lmdb", *grid, "--out", out, *extra)


def results(out):
    return [json.loads(line) for line in (Path(out) / "results.jsonl").read_text().splitlines() if line]


def key(c):
    """StudentConfig.key, from a results.jsonl config (the sweep's identity of a run)."""
    a, loss, o = c["architecture"], c["loss"], c["optimizer"]
    return "|".join([student(c), loss["kind"], f"T={float(loss['temperature'])}", f"a={float(loss['alpha'])}", o["kind"],
                     f"lr={float(o['learningRate'])}", f"wd={float(o['weightDecay'])}", o["schedule"], f"bs={c['batchSize']}",
                     f"ep={c['epochs']}", f"pat={c['patience']}", f"seed={c['seed']}"]
                    + ([f"stop={c['stopAfterEpochs']}"] if c.get("stopAfterEpochs") is not None else []))


def student(c):
    a = c["architecture"]
    return {"linear": "linear", "fasttext": f"fasttext:dim={a['width']}", "mlp": f"mlp:hidden={a['width']}"}[a["kind"]]


def run_name(k):
    """The documented rule: `|` → `,`, bytes outside A-Z a-z 0-9 . _ = : + - as %XX."""
    safe = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._=:+-")
    return "".join("," if b == ord("|") else chr(b) if b in safe else f"%{b:02X}" for b in k.encode())


def expected_hparams(r):
    c = r["config"]
    h = {"student": student(c), "loss": c["loss"]["kind"], "temperature": float(c["loss"]["temperature"]),
         "alpha": float(c["loss"]["alpha"]), "optimizer": c["optimizer"]["kind"], "lr": float(c["optimizer"]["learningRate"]),
         "weight_decay": float(c["optimizer"]["weightDecay"]), "schedule": c["optimizer"]["schedule"],
         "batch_size": float(c["batchSize"]), "epochs": float(c["epochs"]), "patience": float(c["patience"]), "seed": str(c["seed"])}
    if r.get("rung") is not None:
        h["rung"] = float(r["rung"])
        h["trained_epochs"] = float(min(c.get("stopAfterEpochs") or c["epochs"], c["epochs"]))
    return h


def expected_finals(r):
    out = {}
    for split in ("valid", "test"):
        for name, field in [("accuracy", "accuracy"), ("macro_f1", "macroF1"), ("teacher_agreement", "teacherAgreement"),
                            ("teacher_kl", "teacherKL"), ("ece", "ece")]:
            if r.get(split) and r[split].get(field) is not None:
                out[f"final/{split}_{name}"] = r[split][field]
    return out


def f32(x):
    return float(np.float32(x))


def strict_events(path):
    """Every record of an event file, its framing and both masked CRC-32Cs checked (TensorBoard's
    own reader stops quietly at a torn record; this one refuses it)."""
    data, at, events = path.read_bytes(), 0, []
    while at < len(data):
        assert len(data) - at >= 12, f"{path}: torn header at {at}"
        header = data[at:at + 8]
        (length,), (crc,) = struct.unpack("<Q", header), struct.unpack("<I", data[at + 8:at + 12])
        assert crc == masked_crc32c(header), f"{path}: length CRC at {at}"
        body = data[at + 12:at + 12 + length]
        assert len(body) == length and len(data) >= at + 16 + length, f"{path}: torn record at {at}"
        assert struct.unpack("<I", data[at + 12 + length:at + 16 + length])[0] == masked_crc32c(body), f"{path}: data CRC at {at}"
        events.append(event_pb2.Event.FromString(body))
        at += 16 + length
    return events


def hparam_value(v):
    kind = v.WhichOneof("kind")
    return v.number_value if kind == "number_value" else v.string_value


def event_files(d):
    return sorted(p for p in d.iterdir() if p.name.startswith("events.out.tfevents."))


def check_tensorboard(out, valid_curve=True):
    """Checks OUT/tensorboard against OUT/results.jsonl: one run directory per result holding one
    whole event file, every scalar and hparam, the experiment, and the HParams backend's table."""
    rs, tb = results(out), Path(out) / "tensorboard"
    names = {run_name(key(r["config"])): r for r in rs}
    assert len(names) == len(rs)
    assert sorted(p.name for p in tb.iterdir() if p.is_dir()) == sorted(names)
    for name, r in names.items():
        d = tb / name
        files = sorted(p.name for p in d.iterdir())
        assert len(files) == 1 and files[0].startswith("events.out.tfevents."), f"{name}: {files}"
        events = strict_events(d / files[0])
        assert events[0].file_version == "brain.Event:2"
        acc = EventAccumulator(str(d))
        acc.Reload()
        scalars = acc.Tags()["scalars"]
        loss = acc.Scalars("train/loss")
        assert [(s.step, s.value) for s in loss] == [(e + 1, f32(v)) for e, v in enumerate(r["trainLoss"])]
        if valid_curve:
            curve = acc.Scalars("valid/accuracy")
            assert [(s.step, s.value) for s in curve] == [(e + 1, f32(v)) for e, v in enumerate(r["curve"])]
        else:
            assert "valid/accuracy" not in scalars
        finals = expected_finals(r)
        assert sorted(t for t in scalars if t.startswith("final/")) == sorted(finals)
        for tag, v in finals.items():
            assert [(s.step, s.value) for s in acc.Scalars(tag)] == [(r["epochsRun"], f32(v))], tag
        start = metadata.parse_session_start_info_plugin_data(acc.SummaryMetadata(metadata.SESSION_START_INFO_TAG).plugin_data.content)
        assert {k: hparam_value(v) for k, v in start.hparams.items()} == expected_hparams(r)
        end = metadata.parse_session_end_info_plugin_data(acc.SummaryMetadata(metadata.SESSION_END_INFO_TAG).plugin_data.content)
        assert end.status == (api_pb2.STATUS_FAILURE if r.get("divergence") else api_pb2.STATUS_SUCCESS)
    # The experiment: each hyper-parameter with the values the runs took, and the metric columns.
    top = event_files(tb)
    assert len(top) == 1, top
    strict_events(top[0])
    acc = EventAccumulator(str(tb))
    acc.Reload()
    experiment = metadata.parse_experiment_plugin_data(acc.SummaryMetadata(metadata.EXPERIMENT_TAG).plugin_data.content)
    domains = {}
    for r in rs:
        for k, v in expected_hparams(r).items():
            domains.setdefault(k, set()).add(v)
    assert {h.name: sorted(hparam_value(v) for v in h.domain_discrete.values) for h in experiment.hparam_infos} == \
        {k: sorted(v) for k, v in domains.items()}
    tags = {m.name.tag for m in experiment.metric_infos}
    assert tags == {"train/loss"} | ({"valid/accuracy"} if valid_curve else set()) | {t for r in rs for t in expected_finals(r)}
    # What the HParams tab lists: one session per run, its hparams and its last metric values.
    groups = hparams_table(tb, experiment)
    assert sorted(groups) == sorted(names)
    for name, (hp, metrics) in groups.items():
        r = names[name]
        assert hp == expected_hparams(r)
        assert metrics["train/loss"] == f32(r["trainLoss"][-1])
        for tag, v in expected_finals(r).items():
            assert metrics[tag] == f32(v), tag


def hparams_table(logdir, experiment):
    """{session name: (hparams, {metric tag: value})} as TensorBoard's hparams backend lists them."""
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = tb_data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    context = backend_context.Context(base_plugin.TBContext(logdir=str(logdir), data_provider=provider, multiplexer=multiplexer))
    request = api_pb2.ListSessionGroupsRequest(start_index=0, slice_size=10_000, aggregation_type=api_pb2.AGGREGATION_AVG,
                                               allowed_statuses=[api_pb2.STATUS_SUCCESS, api_pb2.STATUS_FAILURE,
                                                                 api_pb2.STATUS_RUNNING, api_pb2.STATUS_UNKNOWN])
    for h in experiment.hparam_infos:
        request.col_params.add(hparam=h.name)
    for m in experiment.metric_infos:
        request.col_params.add(metric=m.name)
    response = list_session_groups.Handler(tb_context.RequestContext(), context, "", request).run()
    assert response.total_size == len(response.session_groups)
    return {g.name: ({k: hparam_value(v) for k, v in g.hparams.items()}, {m.name.tag: m.value for m in g.metric_values})
            for g in response.session_groups}


def tensorboard_files(out):
    """{path under OUT/tensorboard: bytes} (a run's file has a `/` in its path, the experiment not)."""
    tb = Path(out) / "tensorboard"
    return {str(p.relative_to(tb)): p.read_bytes() for p in sorted(tb.rglob("*")) if p.is_file()}


def test_a_sweeps_events_match_its_results_and_a_rerun_writes_nothing_twice(stores, tmp_path):
    out = tmp_path / "s"
    sweep(stores, out)
    assert len(results(out)) == 8
    check_tensorboard(out)
    before, lines = tensorboard_files(out), results(out)
    sweep(stores, out)
    assert results(out) == lines, "a finished sweep rerun trains nothing"
    after = tensorboard_files(out)
    assert sorted(after) == sorted(before), "the same files, under the same names"
    runs = [k for k in before if "/" in k]
    assert len(runs) == 8 and all(after[k] == before[k] for k in runs), "no run's events are written again"
    check_tensorboard(out)


def test_a_kill_leaves_no_torn_event_file_and_the_rerun_completes_it(stores, tmp_path):
    out = tmp_path / "k"
    grid = ["--student", "linear,fasttext:dim=8,fasttext:dim=16", "--temperature", "1,2", "--alpha", "0,0.5,0.9", "--lr", "0.1",
            "--epochs", "3", "--seeds", "2", "--quiet"]
    args = [BIN, "sweep", "--data", stores / "d.lmdb", "--logits", stores / "t.lmdb", *grid, "--workers", "1", "--out", out]
    p = subprocess.Popen([str(a) for a in args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    # Killed once the first group's events are there (while the next group trains, most likely).
    while p.poll() is None and time.time() < deadline:
        if (out / "tensorboard").exists() and any(event_files(d) for d in (out / "tensorboard").iterdir() if d.is_dir()):
            break
        time.sleep(0.005)
    p.kill()
    p.wait()
    assert p.returncode == -9, "the sweep ended before it was killed: make the grid larger"
    done = {run_name(key(r["config"])) for r in results(out)}
    tb = out / "tensorboard"
    if tb.exists():
        for d in (x for x in tb.iterdir() if x.is_dir()):
            files = event_files(d)
            assert not files or d.name in done, f"{d.name} has events but no result"
            for f in files:
                strict_events(f)  # whole, or not there at all
    run("sweep", "--data", stores / "d.lmdb", "--logits", stores / "t.lmdb", *grid, "--out", out)
    assert len(results(out)) == 30, "3 students × (α 0 at one T, α 0.5 and 0.9 at two) × 2 seeds"
    check_tensorboard(out)


def test_shards_and_collect(stores, tmp_path):
    for i in range(2):
        sweep(stores, tmp_path / f"s{i}", "--shard", f"{i}/2")
        check_tensorboard(tmp_path / f"s{i}")
    shard_runs = [len(results(tmp_path / f"s{i}")) for i in range(2)]
    assert sum(shard_runs) == 8 and min(shard_runs) > 0
    run("sweep", "collect", tmp_path / "s0", tmp_path / "s1", "--out", tmp_path / "all")
    assert len(results(tmp_path / "all")) == 8
    check_tensorboard(tmp_path / "all")
    # Collecting again writes no run's events twice.
    once = tensorboard_files(tmp_path / "all")
    run("sweep", "collect", tmp_path / "s0", tmp_path / "s1", "--out", tmp_path / "all")
    again = tensorboard_files(tmp_path / "all")
    assert sorted(again) == sorted(once) and all(again[k] == v for k, v in once.items() if "/" in k)
    check_tensorboard(tmp_path / "all")


def test_halving_records_each_rung_as_a_run(stores, tmp_path):
    out = tmp_path / "h"
    grid = ["--student", "linear,fasttext:dim=8", "--temperature", "2", "--alpha", "0,0.5", "--lr", "0.1,0.3",
            "--epochs", "4", "--seeds", "1", "--quiet", "--search", "halving", "--eta", "2"]
    sweep(stores, out, grid=grid)
    rs = results(out)
    assert {r["rung"] for r in rs} == {0, 1, 2}, sorted({r["rung"] for r in rs})
    check_tensorboard(out)


def test_no_valid_split_writes_no_validation_curve(tmp_path):
    rows = ["id,label,text"] + [f"r{i},{'abc'[i % 3]},{['red apple', 'blue sky', 'green tree'][i % 3]} n{i % 17}" for i in range(150)]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    run("prep", tmp_path / "d.csv", "--out", tmp_path / "d.lmdb", "--text-column", "text", "--label-column", "label",
        "--hash-bits", "8", "--valid-fraction", "0", "--test-fraction", "0.2", "--quiet")
    run("teach", "--data", tmp_path / "d.lmdb", "--out", tmp_path / "t.lmdb", "--teacher", "linear", "--epochs", "1", "--ensemble", "1", "--quiet")
    sweep(tmp_path, tmp_path / "s", grid=["--student", "linear", "--temperature", "2", "--alpha", "0,0.5", "--lr", "0.1",
                                          "--epochs", "2", "--seeds", "1", "--quiet"])
    assert all(r.get("valid") is None for r in results(tmp_path / "s"))
    check_tensorboard(tmp_path / "s", valid_curve=False)


def test_no_tensorboard_writes_none(stores, tmp_path):
    sweep(stores, tmp_path / "n", "--no-tensorboard")
    assert len(results(tmp_path / "n")) == 8 and not (tmp_path / "n" / "tensorboard").exists()
    run("sweep", "collect", tmp_path / "n", "--out", tmp_path / "c", "--no-tensorboard")
    assert not (tmp_path / "c" / "tensorboard").exists()
