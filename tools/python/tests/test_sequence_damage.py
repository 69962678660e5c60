"""The damage campaign of test_damage_campaign.py over sequence caches (issue 12): a top-k f16 and a
sampled f32 cache (FORMAT.md §3.6–3.8), written by the Python writer over a prepped dataset.

Damage: the byte-level damage of the class campaign over the whole file (every page zeroed, used
bytes flipped, pages copied, truncations); record edits with the CRC recomputed (every §1.2 check of
a sequence record, and swaps, copies, deletions); manifest edits of the `sequence` object, each twice
(checksum recomputed, and left stale). Each damaged copy goes through `verify --data`, `info`,
`export --jsonl` and the Python reader (`kdcache.open`, then every record of every teacher decoded,
in a long-lived child: a damaged file may crash liblmdb), each under a 20 s timeout. Asserted as in
the class campaign: no crash (a native exit other than 0/1, or the Python reader raising anything but
`kdcache.FormatError`), no hang, no altered file passing `verify`. In-range edits no check can catch
(FORMAT.md §1.1, "undetectable by design") are counted apart. Whether a byte-damaged file that
passes verify is altered: `ContentOracle`. The Python reader walks a file's pages before liblmdb
maps it (kdcache/pages.py), so a SIGBUS of liblmdb inside py-lmdb is a failure like any crash.

`make test` runs a small campaign (30 samples per cache, 1 flip per page, 6 page copies, stale-checksum
manifests of the top-k cache only; about 260 files); KDCACHE_DAMAGE_BIG=1 runs 200 samples per
cache, 8 flips per page, 60 page copies and every manifest edit both ways. The tally goes to
.build/sequence-damage-campaign.txt.
"""
import concurrent.futures
import json
import os
import random
import select
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from _sequence_support import toy_tokenizer, zipf_logits
from _support import ROOT, kdcache, prep_three_classes
from test_damage_campaign import (ENV, SEED, TIMEOUT, WORKERS, Damaged, Edit, byte_damage, campaign_report, content_digest,
                                  run_command)

BIG = os.environ.get("KDCACHE_DAMAGE_BIG") == "1"
SAMPLES = 200 if BIG else 30
V = 50
TOPK = dict(name="lm", mode="top-k", top_k=6, retemper_at=[0.5, 1.0, 2.0], write_temperature=1.0, dtype="f16")
SAMPLED = dict(name="lm", mode="sampled", samples=8, sample_seed=11, retemper_at=[0.5, 1.0, 2.0], write_temperature=1.0, dtype="f32")
# name: (kind, dataset, cache, teachers), as test_damage_campaign.BASES.
SEQ_BASES = {"seqtopk": ("cache", "data", None, ["lm"]), "seqsampled": ("cache", "data", None, ["lm"])}


def _sequences(rng, n):
    """n (tokens, logits) pairs of lengths 0 … 24 (0 and 1 included: records without positions)."""
    lengths = [0, 1] + [int(x) for x in rng.integers(2, 25, size=n - 2)]
    return [(rng.integers(0, V, size=L), zipf_logits(rng, L, V)) for L in lengths]


@pytest.fixture(scope="module")
def seq_intact(tmp_path_factory):
    d = tmp_path_factory.mktemp("seqcampaign")
    prep_three_classes(d, SAMPLES).rename(d / "data.lmdb")
    rng = np.random.default_rng(SEED)
    seqs = _sequences(rng, SAMPLES)
    for base, options in (("seqtopk", TOPK), ("seqsampled", SAMPLED)):
        with kdcache.SequenceWriter(d / f"{base}.lmdb", d / "data.lmdb", tokenizer=toy_tokenizer(), **options) as w:
            w.write_logits(0, seqs)
    for p in d.glob("*.lmdb-lock"):
        p.unlink()
    return d


# ─── record edits (CRC recomputed) ─────────────────────────────────────────────────────────────


class Fields:
    """Byte offsets of a sequence record's sections (FORMAT.md §3.7), from its header."""

    def __init__(self, r):
        self.kind, code, self.R = r[1], r[2], r[3]
        self.L, self.D, self.kn = struct.unpack_from("<IIH", r, 8)
        self.w = 4 if code == 1 else 2
        self.P = max(self.L - 1, 0)
        self.tokens = 20
        after = 20 + 3 * self.L
        if self.kind == 3:
            self.ids, self.lp = after, after + 3 * self.D
            self.tail = self.lp + self.w * self.D
            self.sums = self.tail + self.w * self.P
        else:
            self.d, self.ids = after, after + self.P
            self.counts = self.ids + 3 * self.D
            self.lp = self.counts + self.D
            self.sums = self.lp + self.w * self.D

    def float_bytes(self, v):
        return np.array([v], "<f4" if self.w == 4 else "<f2").tobytes()


def _put(r, at, data):
    return r[:at] + data + r[at + len(data):]


def _u24(v):
    return struct.pack("<I", v)[:3]


def _key(i, view=0):
    return struct.pack(">II", i, view)


LONG = 5   # a sample of the intact caches with L ≥ 2: _sequences gives samples 2… lengths ≥ 2


def _common_edits():
    """(name, what, change(record, fields) -> record) edits valid for both kinds."""
    return [
        ("version-2", "record version 2 in a v3 cache", lambda r, f: _put(r, 0, b"\x02")),
        ("kind-flipped", "kind 3 ↔ 4", lambda r, f: _put(r, 1, bytes([7 - f.kind]))),
        ("dtype-flipped", "dtype 1 ↔ 2", lambda r, f: _put(r, 2, bytes([3 - (4 // f.w)]))),
        ("R-2", "R = 2 of 3", lambda r, f: _put(r, 3, b"\x02")),
        ("L-plus-1", "L one larger than the record", lambda r, f: _put(r, 8, struct.pack("<I", f.L + 1))),
        ("L-2e20plus1", "L = 2^20 + 1", lambda r, f: _put(r, 8, struct.pack("<I", (1 << 20) + 1))),
        ("L-max", "L = 2^32 − 1", lambda r, f: _put(r, 8, struct.pack("<I", 0xFFFFFFFF))),
        ("D-plus-1", "D one larger", lambda r, f: _put(r, 12, struct.pack("<I", f.D + 1))),
        ("D-max", "D = 2^32 − 1", lambda r, f: _put(r, 12, struct.pack("<I", 0xFFFFFFFF))),
        ("kn-plus-1", "k/N one larger than the teacher's", lambda r, f: _put(r, 16, struct.pack("<H", f.kn + 1))),
        ("kn-0", "k/N = 0", lambda r, f: _put(r, 16, struct.pack("<H", 0))),
        ("reserved", "reserved field 1", lambda r, f: _put(r, 18, struct.pack("<H", 1))),
        ("token-eq-V", "a token id = V", lambda r, f: _put(r, f.tokens + 3, _u24(V))),
        ("token-max", "a token id 2^24 − 1", lambda r, f: _put(r, f.tokens, _u24(0xFFFFFF))),
        ("id-eq-V", "a stored id = V", lambda r, f: _put(r, f.ids + 3, _u24(V))),
        ("id-max", "a stored id 2^24 − 1", lambda r, f: _put(r, f.ids, _u24(0xFFFFFF))),
        ("lp-nan", "a stored log p NaN", lambda r, f: _put(r, f.lp, f.float_bytes(np.nan))),
        ("lp-inf", "a stored log p +inf", lambda r, f: _put(r, f.lp, f.float_bytes(np.inf))),
        ("lp-neg-inf", "a stored log p −inf (k < V)", lambda r, f: _put(r, f.lp, f.float_bytes(-np.inf))),
        ("lp-positive", "a stored log p of +0.5", lambda r, f: _put(r, f.lp, f.float_bytes(0.5))),
        ("sum-nan", "a log-sum NaN", lambda r, f: _put(r, f.sums, f.float_bytes(np.nan))),
        ("sum-inf", "a log-sum +inf", lambda r, f: _put(r, f.sums, f.float_bytes(np.inf))),
        ("sum-huge", "a log-sum at T_r = 0.5 T_w of 100 (above (1 − a)·ln V)", lambda r, f: _put(r, f.sums, f.float_bytes(100.0))),
        ("truncated", "the last byte cut", lambda r, f: r[:-1]),
        ("appended", "a byte appended", lambda r, f: r + b"\x00"),
        ("header-only", "only the 20-byte header", lambda r, f: r[:20]),
        ("short", "7 bytes", lambda r, f: r[:7]),
    ]


def _top_k_edits():
    return [
        ("dup-id", "a kept id repeated within a position", lambda r, f: _put(r, f.ids + 3, r[f.ids:f.ids + 3])),
        ("lp-rising", "kept log p rising within a position",
         lambda r, f: _put(_put(r, f.lp, r[f.lp + f.w:f.lp + 2 * f.w]), f.lp + f.w, r[f.lp:f.lp + f.w])),
        ("lp-shifted", "every kept log p lowered by 1 (Σp + r ≠ 1)",
         lambda r, f: _put(r, f.lp, (np.frombuffer(r, "<f2", f.D, f.lp) - np.float16(1)).astype("<f2").tobytes())),
        ("tail-nan", "a log tail NaN", lambda r, f: _put(r, f.tail, f.float_bytes(np.nan))),
        ("tail-neg-inf", "a log tail −inf while k < V", lambda r, f: _put(r, f.tail, f.float_bytes(-np.inf))),
        ("tail-zero", "a log tail of 0 (tail mass 1: Σp + r > 1)", lambda r, f: _put(r, f.tail, f.float_bytes(0.0))),
        ("sum-neg-inf", "a tail sum −inf while k < V", lambda r, f: _put(r, f.sums, f.float_bytes(-np.inf))),
    ]


def _sampled_edits():
    return [
        ("d-0", "d_0 = 0", lambda r, f: _put(r, f.d, b"\x00")),
        ("d-gt-N", "d_0 = N + 1", lambda r, f: _put(r, f.d, bytes([f.kn + 1]))),
        ("d-plus-1", "d_0 one larger (the d_j no longer sum to D)", lambda r, f: _put(r, f.d, bytes([r[f.d] % f.kn + 1]))),
        ("ids-descending", "ids of position 0 reversed", lambda r, f: _put(r, f.ids, r[f.ids + 3:f.ids + 6] + r[f.ids:f.ids + 3])),
        ("count-0", "a count of 0", lambda r, f: _put(r, f.counts, b"\x00")),
        ("count-plus-1", "a count one larger (counts sum to N + 1)", lambda r, f: _put(r, f.counts, bytes([r[f.counts] + 1]))),
        ("logsum-Tw", "the log-sum at T_r = T_w set to −1 (it is 0)", lambda r, f: _put(r, f.sums + f.w, f.float_bytes(-1.0))),
        ("sum-neg-inf", "a log-sum −inf", lambda r, f: _put(r, f.sums, f.float_bytes(-np.inf))),
    ]


def record_edits(intact, out):
    """Every edit of _common_edits and the kind's own on sample LONG of each cache, CRC recomputed;
    then swaps, copies, deletions, extra records and an in-range token change (forged, in range)."""
    files = []

    def edit(base, name, what, change, altered=True):
        p = out / f"{base}-{name}.lmdb"
        with Edit(intact / f"{base}.lmdb", p) as e:
            change(e)
        files.append(Damaged(p, base, "record", what, altered=altered, bases=SEQ_BASES))

    def field_edit(change):
        def apply(e):
            r = e.get("teacher/lm", _key(LONG))
            e.put_record("teacher/lm", _key(LONG), change(r, Fields(r)), 4)
        return apply

    def swap(e, a, b):
        ra, rb = e.get("teacher/lm", _key(a)), e.get("teacher/lm", _key(b))
        e.put("teacher/lm", _key(a), rb)
        e.put("teacher/lm", _key(b), ra)

    for base, own in (("seqtopk", _top_k_edits()), ("seqsampled", _sampled_edits())):
        for name, what, change in _common_edits() + own:
            edit(base, name, what, field_edit(change))
        edit(base, "swap", "records of samples 3 and 7 swapped", lambda e: swap(e, 3, 7))
        edit(base, "copy", "sample 9's record copied to sample 4", lambda e: e.put("teacher/lm", _key(4), e.get("teacher/lm", _key(9))))
        edit(base, "deleted", "sample 6's record deleted", lambda e: e.delete("teacher/lm", _key(6)))
        edit(base, "extra-sample", f"an extra record for sample {SAMPLES}", lambda e: e.put("teacher/lm", _key(SAMPLES), e.get("teacher/lm", _key(2))))
        edit(base, "extra-view", "an extra view 1 record", lambda e: e.put("teacher/lm", _key(2, 1), e.get("teacher/lm", _key(2))))
        edit(base, "drop-teacher", "teacher/lm dropped", lambda e: e.drop("teacher/lm"))
        edit(base, "token-in-range", "a token id changed to another id < V (CRC recomputed)",
             field_edit(lambda r, f: _put(r, f.tokens, _u24((r[f.tokens] + 1) % V))), altered="forged")
    return files


# ─── manifest edits ────────────────────────────────────────────────────────────────────────────


def _seq(m):
    return m["teachers"]["lm"]["sequence"]


def _refingerprint(tok):
    tok["fingerprint"] = kdcache.hashing.tokenizer_fingerprint_of(tok["vocab_size"], tok["vocab_sha256"], tok["merges_sha256"], tok["model_sha256"])


def _vocab(v, fingerprint=True):
    def change(m):
        s = _seq(m)
        s["vocab_size"] = s["tokenizer"]["vocab_size"] = v
        if fingerprint:
            _refingerprint(s["tokenizer"])
    return change


def _tokenizer_field(field, value, fingerprint):
    def change(m):
        tok = _seq(m)["tokenizer"]
        tok[field] = value
        if fingerprint:
            _refingerprint(tok)
    return change


def _set(path, value):
    def change(m):
        node = m["teachers"]["lm"]
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    return change


def _mode_flip(m):
    t = m["teachers"]["lm"]
    if t["sequence"]["mode"] == "top-k":
        t["sequence"].update(mode="sampled", samples=t["top_k"], sample_seed=1)
        t["top_k"] = 0
    else:
        t["top_k"], t["sequence"]["samples"], t["sequence"]["sample_seed"] = t["sequence"]["samples"], 0, 0
        t["sequence"]["mode"] = "top-k"


def _without_sequence(m):
    del m["teachers"]["lm"]["sequence"]


SHA = "sha256:" + "ab" * 32
# (name, what, change(manifest), forgeable: an in-range edit no check can catch once the checksum is recomputed)
MANIFEST_ATTACKS = [
    ("vocab-10", "vocab_size 10, below the stored ids (fingerprint recomputed)", _vocab(10), False),
    ("vocab-10-stale-fp", "vocab_size 10, tokenizer fingerprint left", _vocab(10, fingerprint=False), False),
    ("vocab-1", "vocab_size 1", _vocab(1), False),
    ("vocab-2e24plus1", "vocab_size 2^24 + 1", _vocab((1 << 24) + 1), False),
    ("vocab-mismatch", "vocab_size ≠ tokenizer.vocab_size", _set(["sequence", "vocab_size"], V + 1), False),
    ("retemper-R2", "retemper_at with 2 of 3 temperatures (R ≠ the records')", _set(["sequence", "retemper_at"], [0.5, 1.0]), False),
    ("retemper-R4", "retemper_at with 4 temperatures", _set(["sequence", "retemper_at"], [0.5, 1.0, 2.0, 4.0]), False),
    ("retemper-values", "retemper_at values changed, R kept ([0.5, 1, 2] → [0.25, 1, 3])",
     _set(["sequence", "retemper_at"], [0.25, 1.0, 3.0]), True),
    ("retemper-unsorted", "retemper_at not ascending", _set(["sequence", "retemper_at"], [2.0, 1.0, 0.5]), False),
    ("retemper-zero", "retemper_at holding 0", _set(["sequence", "retemper_at"], [0.0, 1.0, 2.0]), False),
    ("retemper-17", "17 temperatures", _set(["sequence", "retemper_at"], [0.5 * (i + 1) for i in range(17)]), False),
    ("tokenizer-vocab-sha", "tokenizer.vocab_sha256 edited, fingerprint left", _tokenizer_field("vocab_sha256", SHA, False), False),
    ("tokenizer-vocab-sha-fp", "tokenizer.vocab_sha256 edited, fingerprint recomputed", _tokenizer_field("vocab_sha256", SHA, True), True),
    ("tokenizer-fingerprint", "tokenizer.fingerprint edited", _tokenizer_field("fingerprint", SHA, False), False),
    ("tokenizer-merges-null", "tokenizer.merges_sha256 null, fingerprint left", _tokenizer_field("merges_sha256", None, False), False),
    ("tokenizer-name", "tokenizer.name edited", _tokenizer_field("name", "another", False), True),
    ("mode-flipped", "mode flipped alone", lambda m: _seq(m).update(mode="sampled" if _seq(m)["mode"] == "top-k" else "top-k"), False),
    ("mode-flipped-consistent", "mode flipped with samples / top_k / sample_seed made consistent", _mode_flip, False),
    ("mode-bogus", "mode 'beam'", lambda m: _seq(m).update(mode="beam"), False),
    ("top-k-changed", "top_k / samples one smaller", lambda m: _change_width(m, -1), False),
    ("top-k-larger", "top_k / samples one larger", lambda m: _change_width(m, +1), False),
    ("top-k-over-V", "top_k / samples 2000", lambda m: _change_width(m, 2000 - _width(m)), False),
    ("schema-2", "schema_version 3 → 2", lambda m: m.update(schema_version=2), False),
    ("schema-4", "schema_version 4", lambda m: m.update(schema_version=4), False),
    ("sequence-dropped", "the sequence object removed (a class teacher in a v3 cache)", _without_sequence, False),
    ("views-2", "views 2", _set(["views"], 2), False),
    ("augmentation", "an augmentation on a sequence teacher", _set(["augmentation"], "token-dropout:p=0.25"), False),
    ("dtype-flipped", "dtype flipped", lambda m: _set(["dtype"], "f32" if m["teachers"]["lm"]["dtype"] == "f16" else "f16")(m), False),
    # In range, but a_r = T_w / T_r changes: the stored log-sum at T_r = 2 exceeds (1 − a_r)·ln V.
    ("write-temperature", "write_temperature 1 → 1.5 (in range)", _set(["write_temperature"], 1.5), False),
]


def _width(m):
    t = m["teachers"]["lm"]
    return t["top_k"] if t["sequence"]["mode"] == "top-k" else t["sequence"]["samples"]


def _change_width(m, delta):
    t = m["teachers"]["lm"]
    if t["sequence"]["mode"] == "top-k":
        t["top_k"] += delta
    else:
        t["sequence"]["samples"] += delta


def write_manifest(src, dst, change, checksum=True):
    """A copy of `src` whose manifest `change` edited, with its checksum recomputed or left stale."""
    with Edit(src, dst) as e:
        m = e.manifest()
        change(m)
        e.put_manifest(json.dumps(m, sort_keys=True, separators=(",", ":")).encode(), checksum)
    return dst


def manifest_edits(intact, out):
    files = []
    for base in SEQ_BASES:
        for name, what, change, forgeable in MANIFEST_ATTACKS:
            for checksum in (True, False) if BIG or base == "seqtopk" else (True,):
                p = write_manifest(intact / f"{base}.lmdb", out / f"{base}-m-{name}-{'forged' if checksum else 'stale'}.lmdb", change, checksum)
                files.append(Damaged(p, base, "manifest", what + (" (checksum recomputed)" if checksum else " (checksum left)"),
                                     altered="forged" if forgeable and checksum else True, bases=SEQ_BASES))
    return files


# ─── the Python reader, in long-lived children ─────────────────────────────────────────────────

READER = r"""
import sys
sys.path.insert(0, sys.argv[1])
import kdcache
def read(path):
    s = kdcache.open(path)
    try:
        n = 0
        for name, entry in s.manifest["teachers"].items():
            with s.sequence_reader(name) as get:
                for a, b in entry["completed"]:
                    for i in range(a, b):
                        get(i); n += 1
        return n
    finally:
        s.close()
for line in sys.stdin:
    try:
        out = f"0 {read(line.strip())} records"
    except kdcache.FormatError as e:
        out = "1 " + str(e)
    except BaseException as e:
        out = f"3 Python reader: {type(e).__name__}: {e}"
    print(out.replace("\n", " ")[:2000], flush=True)
"""


class PythonReader:
    """One child running READER; `read(path)` → (code, output, seconds): 0 read, 1 FormatError,
    3 another exception, a negative signal number when the child died, "hang" after TIMEOUT s."""

    def __init__(self):
        self.child = None

    def _start(self):
        self.child = subprocess.Popen([sys.executable, "-c", READER, str(ROOT / "tools/python")], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV)

    def read(self, path):
        if self.child is None or self.child.poll() is not None:
            self._start()
        start = time.monotonic()
        self.child.stdin.write(f"{path}\n")
        self.child.stdin.flush()
        ready, _, _ = select.select([self.child.stdout], [], [], TIMEOUT)
        line = self.child.stdout.readline() if ready else None
        Path(str(path) + "-lock").unlink(missing_ok=True)
        if not line:
            code = "hang" if not ready else self.child.wait()
            if code == "hang":
                self.child.kill()
                self.child.wait()
            self.child = None
            return code, "", time.monotonic() - start
        code, _, message = line.rstrip("\n").partition(" ")
        return int(code), message, time.monotonic() - start

    def close(self):
        if self.child is not None:
            self.child.stdin.close()
            self.child.wait()


# ─── the campaign ──────────────────────────────────────────────────────────────────────────────


def commands(f, intact, scratch):
    data = intact / "data.lmdb"
    return {"verify": ["verify", f.path, "--data", data], "info": ["info", f.path],
            "export": ["export", f.path, "--jsonl", "--out", scratch / f"{f.path.stem}.jsonl"], "python": None}


def _run_all(files, intact, scratch):
    local = threading.local()
    readers = []

    def run(job):
        f, name, args = job
        if args is not None:
            return run_command(args)
        if not hasattr(local, "reader"):
            local.reader = PythonReader()
            readers.append(local.reader)
        return local.reader.read(f.path)

    jobs = [(f, name, args) for f in files for name, args in commands(f, intact, scratch).items()]
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        for (f, name, _), result in zip(jobs, pool.map(run, jobs)):
            f.results[name] = result
    for r in readers:
        r.close()
    return len(jobs)


class ContentOracle:
    """Whether a byte-damaged file that passed verify holds other content than its intact base: the
    py-lmdb dump of every database (test_damage_campaign.content_digest); when py-lmdb cannot read
    the file, the file's `export --jsonl` (every record decoded by kdcache) against the intact
    file's. py-lmdb bundles LMDB 0.9.36, stricter than Debian's 0.9.24 that kdcache links: it
    refuses a leaf page with P_DIRTY set, or meta flags 0.9.24 ignores, where the records are intact."""

    def __init__(self, intact, scratch):
        self.intact, self.scratch, self.by_export = intact, scratch, []
        self.original = {b: content_digest(intact / f"{b}.lmdb") for b in SEQ_BASES}

    def _export(self, path, out):
        run_command(["export", path, "--jsonl", "--out", out, "--force"])
        return out.read_bytes() if out.exists() else None

    def __call__(self, f):
        digest = content_digest(f.path)
        if digest is not None:
            return digest != self.original[f.base]
        mine = self._export(f.path, self.scratch / f"oracle-{f.path.stem}.jsonl")
        theirs = self._export(self.intact / f"{f.base}.lmdb", self.scratch / f"oracle-{f.base}.jsonl")
        if mine is None or mine != theirs:
            return True
        self.by_export.append(f.path.stem)
        return False

    def notes(self):
        return [f"  passed, records intact by export though py-lmdb (LMDB 0.9.36) refuses the file: {len(self.by_export)}"
                + (f" ({', '.join(self.by_export)})" if self.by_export else "")]


def test_sequence_damage_campaign(seq_intact, tmp_path, capsys):
    rng = random.Random(SEED)
    out = tmp_path / "damaged"
    out.mkdir()
    files = (byte_damage(seq_intact, out, rng, bases=SEQ_BASES, flips=8 if BIG else 1, copies=60 if BIG else 6)
             + record_edits(seq_intact, out) + manifest_edits(seq_intact, out))
    assert len(files) >= (1200 if BIG else 250), len(files)
    started = time.monotonic()
    jobs = _run_all(files, seq_intact, tmp_path)
    altered = ContentOracle(seq_intact, tmp_path)
    accepted = [f.path.stem for f in files if f.altered is True and f.results["python"][0] == 0]
    report, failed = campaign_report("sequence damage campaign", files, jobs, started, altered,
                                     lambda f, name: commands(f, seq_intact, tmp_path)[name], "sequence-damage-campaign.txt", capsys,
                                     notes=altered.notes)
    with capsys.disabled():
        print(f"  Python reader: read every record of {len(accepted)} files altered by construction, which verify refuses "
              f"(the reader does not make verify's Σp = 1, log-sum at T_w and extra-record checks): {', '.join(accepted)}")
    assert not failed, report


# ─── forged manifests: one test per attack, both readers ───────────────────────────────────────


def _python_read_all(path):
    """Opens `path` with the Python reader and decodes every record of every teacher's completed
    ranges; returns the number of records read."""
    with kdcache.open(str(path)) as s:
        n = 0
        for name, entry in s.manifest["teachers"].items():
            with s.sequence_reader(name) as get:
                for a, b in entry["completed"]:
                    for i in range(a, b):
                        get(i)
                        n += 1
        return n


@pytest.mark.parametrize("base", list(SEQ_BASES))
@pytest.mark.parametrize("name,what,change,forgeable", MANIFEST_ATTACKS, ids=[a[0] for a in MANIFEST_ATTACKS])
def test_forged_sequence_manifest(seq_intact, tmp_path, base, name, what, change, forgeable):
    """A manifest edit with its checksum recomputed: `verify` exits 1 naming the manifest field or
    the record field it contradicts, and the Python reader raises FormatError naming the same; the
    in-range edits FORMAT.md §1.1 lists as undetectable by design pass both (and are counted so)."""
    path = write_manifest(seq_intact / f"{base}.lmdb", tmp_path / f"{name}.lmdb", change)
    r = subprocess.run([kdcache_bin(), "verify", str(path), "--data", str(seq_intact / "data.lmdb")],
                       capture_output=True, text=True, env=ENV, timeout=60)
    Path(str(path) + "-lock").unlink(missing_ok=True)
    if forgeable:
        assert r.returncode == 0, f"{what}: verify refuses an edit listed as undetectable:\n{r.stdout}{r.stderr}"
        assert _python_read_all(path) == SAMPLES
        return
    words = EXPECTED[name]
    assert r.returncode == 1, f"{what}: verify exit {r.returncode}\n{r.stdout}{r.stderr}"
    text = r.stdout + r.stderr
    assert str(path) in text and any(w in text for w in words), f"{what}: verify's message names none of {words}:\n{text}"
    with pytest.raises(kdcache.FormatError) as e:
        _python_read_all(path)
    assert str(path) in str(e.value) and any(w in str(e.value) for w in words), f"{what}: Python says {e.value}"


def kdcache_bin():
    from _support import BIN
    return BIN


# What each refusal must name (any one of the words), for both readers.
EXPECTED = {
    "vocab-10": ["vocabulary size 10", "< V", "V = 10", "vocab"],
    "vocab-10-stale-fp": ["fingerprint"],
    "vocab-1": ["vocab_size"],
    "vocab-2e24plus1": ["vocab_size"],
    "vocab-mismatch": ["vocab_size"],
    "retemper-R2": ["R "], "retemper-R4": ["R "],
    "retemper-unsorted": ["retemper_at"], "retemper-zero": ["retemper_at"], "retemper-17": ["retemper_at"],
    "tokenizer-vocab-sha": ["fingerprint"], "tokenizer-fingerprint": ["fingerprint"], "tokenizer-merges-null": ["fingerprint"],
    "mode-flipped": ["samples", "top_k", "mode"], "mode-flipped-consistent": ["kind"], "mode-bogus": ["mode"],
    "top-k-changed": ["k/N"], "top-k-larger": ["k/N"], "top-k-over-V": ["top_k", "samples"],
    "schema-2": ["schema_version", "schema version"], "schema-4": ["schema_version", "schema version"], "sequence-dropped": ["sequence", "schema_version"],
    "views-2": ["views"], "augmentation": ["augmentation"], "dtype-flipped": ["dtype"],
    "write-temperature": ["log-sum", "tail sum"],
}


def test_a_truncated_cache_is_refused_at_open(seq_intact, tmp_path):
    """Cut to a whole number of pages, below what its meta page says: FormatError, not a SIGBUS."""
    raw = (seq_intact / "seqtopk.lmdb").read_bytes()
    path = tmp_path / "cut.lmdb"
    path.write_bytes(raw[:len(raw) // 2 // 4096 * 4096])
    with pytest.raises(kdcache.FormatError, match="truncated: its meta page says"):
        _python_read_all(path)


def test_a_missing_record_that_completed_covers_is_a_format_error(seq_intact, tmp_path):
    path = tmp_path / "deleted.lmdb"
    with Edit(seq_intact / "seqsampled.lmdb", path) as e:
        e.delete("teacher/lm", _key(6))
    with pytest.raises(kdcache.FormatError, match=rf"sample 6: no record, though its completed ranges \[\[0, {SAMPLES}\]\] cover it"):
        _python_read_all(path)
    with kdcache.open(str(path)) as s, s.sequence_reader() as get, pytest.raises(KeyError):
        get(SAMPLES)      # past sample_count: a plain KeyError, as for any mapping


def test_a_missing_teacher_database_is_a_format_error(seq_intact, tmp_path):
    path = tmp_path / "dropped.lmdb"
    with Edit(seq_intact / "seqtopk.lmdb", path) as e:
        e.drop("teacher/lm")
    with pytest.raises(kdcache.FormatError, match="lists teacher lm but the file has no database teacher/lm"):
        kdcache.open(str(path))


def test_every_attack_has_an_expectation():
    missing = [a[0] for a in MANIFEST_ATTACKS if not a[3] and a[0] not in EXPECTED]
    assert not missing, missing


# ─── decode_sequence on random and mutated bytes ───────────────────────────────────────────────

PROPERTY_LAYOUTS = [
    kdcache.tokens.SequenceLayout(3, "f16", 4, 2, 40, (2.0, 0.5)),
    kdcache.tokens.SequenceLayout(3, "f32", 8, 1, 8, (1.0,)),        # k = V: tails −inf
    kdcache.tokens.SequenceLayout(4, "f32", 4, 2, 40, (1.0, 0.25)),
    kdcache.tokens.SequenceLayout(4, "f16", 3, 0, 40, ()),
]


def _valid_record(rng, layout, sample):
    """A record `layout` accepts, from random logits through the writer's own routines."""
    from kdcache.writer import _log_softmax, draw_entries, top_k_entries
    L = int(rng.integers(0, 9))
    P = max(L - 1, 0)
    tokens = rng.integers(0, layout.vocab, size=L)
    lp = _log_softmax(rng.normal(size=(P, layout.vocab)) * 2)
    if layout.kind == 3:
        ids, kept, tail, sums = top_k_entries(lp, layout.width, layout.alphas)
        return kdcache.tokens.encode_top_k(tokens, ids, kept, tail, np.asarray(sums).reshape(P, layout.retemper), layout.dtype, sample)
    d, ids, counts, drawn, sums = draw_entries(lp, layout.width, 5, sample, layout.alphas)
    return kdcache.tokens.encode_sampled(tokens, d, ids, counts, drawn, np.asarray(sums).reshape(P, layout.retemper),
                                         layout.width, layout.dtype, sample)


def _recrc(b, sample):
    key = struct.pack(">II", sample, 0)
    struct.pack_into("<I", b, 4, zlib.crc32(bytes(b[8:]), zlib.crc32(bytes(b[:4]), zlib.crc32(key))))
    return bytes(b)


def _mutated(rng, record, sample):
    """`record` with 1…4 random bytes changed, or cut, or grown, then its CRC recomputed (half the
    time: else the CRC check alone refuses it)."""
    b = bytearray(record)
    how = int(rng.integers(4))
    if how == 0 or len(b) < 24:
        b += bytes(rng.integers(0, 256, size=int(rng.integers(1, 8)), dtype=np.uint8))
    elif how == 1:
        del b[int(rng.integers(20, len(b))):]
    else:
        for at in rng.integers(0, len(b), size=int(rng.integers(1, 5))):
            b[at] = int(rng.integers(256)) if how == 2 else b[at] ^ (1 << int(rng.integers(8)))
    return _recrc(b, sample) if len(b) >= 8 and rng.random() < 0.9 else bytes(b)


def _random_bytes(rng, layout, sample):
    """Random bytes; half of them behind a header the layout accepts (CRC recomputed), so that the
    body checks are reached."""
    b = bytearray(rng.integers(0, 256, size=int(rng.integers(0, 160)), dtype=np.uint8).tobytes())
    if len(b) >= 20 and rng.random() < 0.5:
        L = int(rng.integers(0, 6))
        P = max(L - 1, 0)
        D = P * layout.width if layout.kind == 3 else int(rng.integers(P, P * layout.width + 1))
        w = 2 if layout.dtype == "f16" else 4
        n = kdcache.tokens.record_length(layout.kind, w, L, D, layout.retemper)
        b = b[:n] + bytes(max(0, n - len(b)))
        struct.pack_into("<BBBBIIIHH", b, 0, 3, layout.kind, 1 if w == 4 else 2, layout.retemper, 0, L, D, layout.width, 0)
        return _recrc(b, sample)
    return bytes(b)


def _reencoded(rec, layout, sample):
    if layout.kind == 3:
        return kdcache.tokens.encode_top_k(rec.tokens, rec.ids, rec.log_p, rec.log_tail, rec.sums.reshape(rec.positions, layout.retemper),
                                           layout.dtype, sample)
    return kdcache.tokens.encode_sampled(rec.tokens, rec.distinct, rec.ids, rec.counts, rec.log_p,
                                         rec.sums.reshape(rec.positions, layout.retemper), layout.width, layout.dtype, sample)


def test_decode_sequence_refuses_bad_bytes_with_its_own_error_only():
    """20k inputs (seeded): random bytes, random bytes behind an accepted header, valid records
    (64 per layout, written by the writer's routines) and mutations of them. decode_sequence raises kdcache.FormatError or returns a record that re-encodes to the
    exact input bytes; any other exception fails the test. Valid records all pass."""
    rng = np.random.default_rng(SEED)
    started, counts, others = time.monotonic(), {"passed": 0, "refused": 0}, []
    pool = [[(s, _valid_record(rng, layout, s)) for s in rng.integers(0, 1 << 32, size=64).tolist()] for layout in PROPERTY_LAYOUTS]
    for case in range(20_000):
        layout = PROPERTY_LAYOUTS[case % len(PROPERTY_LAYOUTS)]
        sample, valid = pool[case % len(PROPERTY_LAYOUTS)][int(rng.integers(64))]
        kind = case % 5
        buf = _random_bytes(rng, layout, sample) if kind < 2 else valid if kind == 2 else _mutated(rng, valid, sample)
        try:
            rec = kdcache.tokens.decode_sequence(buf, sample, layout)
        except kdcache.FormatError:
            counts["refused"] += 1
            assert kind != 2, f"case {case}: a valid record refused"
            continue
        except Exception as e:      # noqa: BLE001 - the property: nothing but FormatError
            others.append(f"case {case} ({layout}): {type(e).__name__}: {e}; input {buf.hex()}")
            continue
        counts["passed"] += 1
        assert _reencoded(rec, layout, sample) == bytes(buf), f"case {case}: a passing record does not re-encode to its bytes: {buf.hex()}"
    seconds = time.monotonic() - started
    assert not others, f"{len(others)} inputs raised something else than FormatError:\n" + "\n".join(others[:10])
    assert counts["passed"] >= 4000 and counts["refused"] >= 10_000, counts
    assert seconds < 20, f"20k cases took {seconds:.1f} s"
