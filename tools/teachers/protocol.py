"""The teacher side of kdcache's JSON-lines protocol (TEACHERS.md): a loop that any Python teacher
can reuse. `serve(predict, ready)` answers hello / batch / end; `predict(samples)` returns one list
of numbers per sample."""
import json
import sys


def serve(predict, ready: dict, stdin=sys.stdin, stdout=sys.stdout):
    hello = json.loads(stdin.readline())
    if hello.get("type") != "hello" or hello.get("protocol") != 1:
        raise SystemExit(f"unexpected first message: {hello}")
    stdout.write(json.dumps({"type": "ready", **ready}) + "\n")
    stdout.flush()
    for line in stdin:
        message = json.loads(line)
        if message["type"] == "end":
            return
        if message["type"] != "batch":
            raise SystemExit(f"unexpected message type {message['type']!r}")
        samples = message["samples"]
        outputs = predict(samples)
        stdout.write(json.dumps({"type": "outputs", "outputs": [
            {"index": s["index"], "values": [float(v) for v in values]} for s, values in zip(samples, outputs)]}) + "\n")
        stdout.flush()
