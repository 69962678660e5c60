"""The teacher side of kdcache's protocol (TEACHERS.md): a loop that any Python teacher can reuse.

`serve(predict, ready)` answers hello / batch / end; `predict(samples)` returns one row of numbers
per sample (a list of lists or a 2-D numpy array), row k for samples[k]. With `"framing": "binary"`
in `ready` the rows go back as bytes after a one-line header (the samples' indices as int64, then
the rows as float32), which costs next to nothing even for thousands of classes; JSON is the
default and needs nothing but the standard library.
"""
import json
import sys


def serve(predict, ready: dict, stdin=None, stdout=None):
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    hello = json.loads(stdin.readline())
    if hello.get("type") != "hello" or hello.get("protocol") != 1:
        raise SystemExit(f"unexpected first message: {hello}")
    framing = ready.get("framing", "json")
    if framing not in hello.get("framings", ["json"]):
        framing = "json"  # a kdcache that does not offer binary outputs
    write_line(stdout, {"type": "ready", **ready, "framing": framing})
    for line in stdin:
        message = json.loads(line)
        if message["type"] == "end":
            return
        if message["type"] != "batch":
            raise SystemExit(f"unexpected message type {message['type']!r}")
        samples = message["samples"]
        outputs = predict(samples)
        if framing == "binary":
            import numpy as np
            rows = np.ascontiguousarray(outputs, dtype="<f4")
            if rows.ndim != 2:
                raise SystemExit(f"predict returned an array of shape {rows.shape}; expected (samples, classes)")
            indices = np.array([s["index"] for s in samples], dtype="<i8")
            if len(indices) != rows.shape[0]:
                raise SystemExit(f"predict returned {rows.shape[0]} rows for {len(indices)} samples")
            header = {"type": "outputs", "rows": rows.shape[0], "classes": rows.shape[1], "dtype": "f32"}
            stdout.write(json.dumps(header).encode() + b"\n" + indices.tobytes() + rows.tobytes())
            stdout.flush()
        else:
            write_line(stdout, {"type": "outputs", "outputs": [
                {"index": s["index"], "values": [float(v) for v in values]} for s, values in zip(samples, outputs)]})


def write_line(stdout, message: dict):
    stdout.write(json.dumps(message).encode() + b"\n")
    stdout.flush()
