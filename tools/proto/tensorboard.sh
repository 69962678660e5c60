#!/usr/bin/env bash
# Regenerates Sources/KDProto/TensorBoard/*.pb.swift: the Swift code of the TensorBoard messages
# `sweep` writes (Event, Summary and what they import; the hparams plugin's HParamsPluginData and
# api.proto). The .proto sources are not in the PyPI wheel; it ships their compiled descriptors
# (the *_pb2.py modules), which are the same files, so they are read from there into a
# FileDescriptorSet and protoc compiles that (--descriptor_set_in). Comments are not in
# descriptors, so the generated code has none.
#
#   TensorBoard  2.21.0 (PyPI `tensorboard`, pinned in tools/requirements.txt)
#   protoc       3.21.12 (Debian `protobuf-compiler`)
#   swift-protobuf 1.39.0 (its protoc-gen-swift; the same version Package.swift pins)
#
# Usage: tools/proto/tensorboard.sh [PYTHON] [PROTOC_GEN_SWIFT]
#   PYTHON            a Python with tensorboard==2.21.0 (default .build-venv/bin/python)
#   PROTOC_GEN_SWIFT  default /work/protoc-gen-swift/.build/release/protoc-gen-swift, else
#                     `swift build -c release --product protoc-gen-swift` in a swift-protobuf 1.39.0 checkout
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${1:-.build-venv/bin/python}
PLUGIN=${2:-/work/protoc-gen-swift/.build/release/protoc-gen-swift}
OUT=Sources/KDProto/TensorBoard
WANT=2.21.0

have=$("$PYTHON" -c 'import tensorboard; print(tensorboard.__version__)')
[ "$have" = "$WANT" ] || { echo "tensorboard $have in $PYTHON; this script is pinned to $WANT" >&2; exit 1; }
"$PLUGIN" --version | grep -q ' 1\.39\.0$' || { echo "$PLUGIN is not protoc-gen-swift 1.39.0" >&2; exit 1; }

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# The descriptors of the wanted files and of everything they import, dependencies first.
"$PYTHON" - "$tmp/tensorboard.pb" > "$tmp/files" <<'PY'
import sys
from google.protobuf import descriptor_pb2
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
out, seen = descriptor_pb2.FileDescriptorSet(), set()
def add(fd):
    if fd.name in seen: return
    for d in fd.dependencies: add(d)
    seen.add(fd.name)
    out.file.add().MergeFromString(fd.serialized_pb)
for m in (event_pb2, summary_pb2, api_pb2, plugin_data_pb2): add(m.DESCRIPTOR)
open(sys.argv[1], "wb").write(out.SerializeToString())
# google/protobuf/*.proto are SwiftProtobuf's own (Google_Protobuf_ListValue …): not generated.
print("\n".join(f.name for f in out.file if not f.name.startswith("google/")))
PY
rm -f "$OUT"/*.pb.swift
protoc --plugin=protoc-gen-swift="$PLUGIN" --descriptor_set_in="$tmp/tensorboard.pb" \
  --swift_opt=Visibility=Public --swift_opt=FileNaming=PathToUnderscores --swift_out="$OUT" $(cat "$tmp/files")
ls "$OUT"
