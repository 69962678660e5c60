#!/usr/bin/env python3
"""One sequence teacher, several `kdcache teach` runs: the model runs once and every run gets its
answers (`make demo-lm` writes six layouts from one pass of SmolLM2; no rows touch the disk).

    python tools/bench/lm_fanout_teacher.py serve --socket S --clients N --exec 'TEACHER COMMAND'
    kdcache teach … --exec 'python tools/bench/lm_fanout_teacher.py client --socket S'     (× N)

`serve` listens on the Unix socket S for N clients, starts TEACHER (TEACHERS.md, "Sequence
teachers"), and relays in lockstep: it reads one line from every client — their hellos, then their
batches — and requires the N batch lines to be equal as JSON (key order aside: the same dataset, --batch-size and
order: anything else is an error naming the first differing client, and every client is cut off, so
each `kdcache teach` fails instead of writing another teacher's rows); it sends that line to the
teacher once and copies the answer (its header line, then per sample `int64 index`, `int32 L`,
L × int32 ids and L × V float32 logits, or top-k blocks) to every client, a sample at a time. The
first client's hello goes to the teacher and its ready goes back to all. An `end` from every client
ends the teacher; `serve` exits with the teacher's status. The slowest client paces the relay.
`client` is a byte pipe between its stdin/stdout and the socket (kdcache's --exec runs it).
"""
import argparse
import json
import os
import shlex
import socket
import struct
import subprocess
import sys
import threading


def fail(message: str) -> None:
    print(f"lm_fanout_teacher: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def read_exact(stream, n: int, what: str) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        fail(f"the teacher stopped after {len(data)} of {n} bytes of {what}")
    return data


def client(args) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(args.socket)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer

    def up():
        while True:
            data = stdin.read1(1 << 16)
            if not data:
                break
            s.sendall(data)
        s.shutdown(socket.SHUT_WR)

    threading.Thread(target=up, daemon=True).start()
    while True:
        data = s.recv(1 << 20)
        if not data:
            break
        stdout.write(data)
        stdout.flush()
    stdout.flush()
    os._exit(0)   # the stdin thread may still be blocked in a read: end without waiting for it


def serve(args) -> None:
    if os.path.exists(args.socket):
        os.unlink(args.socket)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(args.socket)
    listener.listen(args.clients)
    print(f"lm_fanout_teacher: waiting for {args.clients} clients on {args.socket}", file=sys.stderr, flush=True)
    clients = [listener.accept()[0] for _ in range(args.clients)]
    readers = [c.makefile("rb") for c in clients]

    def lines(what: str) -> bytes:
        got = [r.readline() for r in readers]
        for i, line in enumerate(got):
            if not line:
                fail(f"client {i} closed before sending its {what}")
        return got

    def broadcast(data: bytes) -> None:
        for c in clients:
            c.sendall(data)

    hellos = lines("hello")
    teacher = subprocess.Popen(shlex.split(args.exec), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    teacher.stdin.write(hellos[0])
    teacher.stdin.flush()
    ready = teacher.stdout.readline()
    if not ready:
        fail("the teacher exited before its ready message")
    message = json.loads(ready)
    broadcast(ready)
    batches = 0
    while True:
        got = lines(f"batch {batches + 1}")
        first = json.loads(got[0])
        if first.get("type") == "end":
            if any(json.loads(g).get("type") != "end" for g in got):
                fail("client 0 ended while another sent a batch: the runs do not cover the same samples")
            teacher.stdin.write(got[0])
            teacher.stdin.close()
            break
        for i, g in enumerate(got[1:], 1):
            if json.loads(g) != first:      # key order differs between processes; the values must not
                fail(f"client {i}'s batch {batches + 1} differs from client 0's (other samples, --batch-size or dataset): "
                     "every run must send the same batches")
        teacher.stdin.write(got[0])
        teacher.stdin.flush()
        header = teacher.stdout.readline()
        if not header:
            fail(f"the teacher exited during batch {batches + 1}")
        h = json.loads(header)
        if "error" in h:
            broadcast(header)
            fail(f"the teacher reported an error: {h['error']}")
        broadcast(header)
        V, k = int(message["vocab_size"]), int(h.get("k", 0))
        for _ in range(int(h["rows"])):
            head = read_exact(teacher.stdout, 12, "a sample header")
            _, L = struct.unpack("<qi", head)
            width = (V * 4) if h["outputs"] == "logits" else (k * 8)
            broadcast(head + read_exact(teacher.stdout, L * 4 + L * width, "a sample's rows"))
        batches += 1
    status = teacher.wait()
    for c in clients:
        c.close()
    print(f"lm_fanout_teacher: {batches} batches relayed to {args.clients} clients; teacher exit status {status}", file=sys.stderr)
    raise SystemExit(status)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="role", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--socket", required=True)
    s.add_argument("--clients", type=int, required=True)
    s.add_argument("--exec", required=True, help="the real sequence teacher's command")
    c = sub.add_parser("client")
    c.add_argument("--socket", required=True)
    args = ap.parse_args()
    if args.role == "serve":
        if args.clients < 1:
            ap.error("--clients must be ≥ 1")
        serve(args)
    else:
        client(args)


if __name__ == "__main__":
    main()
