#!/usr/bin/env bash
# make fuzz: builds the libFuzzer binary of the fuzz targets (Sources/KDFuzz) and runs each target
# for FUZZ_SECONDS (default 60).
#
#   FUZZ_SECONDS=300 FUZZ_TARGETS="manifest npy" tools/fuzz/fuzz.sh
#
# - Build: `swift build --scratch-path .build-fuzz -Xswiftc -sanitize=fuzzer,address`, apart from
#   .build, so `swift build` / `make test` are untouched. Only Swift code is instrumented (our
#   modules, swift-crypto's Swift part); liblmdb, zlib and BoringSSL run uninstrumented.
# - Corpus: each target starts from fixtures/fuzz/TARGET/ (seeds and earlier crashes) and grows its
#   working corpus in .build-fuzz/corpus/TARGET (not committed).
# - Crashes (traps, oracle failures, ASan reports, OOMs over 2 GB, inputs over FUZZ_TIMEOUT s) go to
#   fixtures/fuzz/TARGET/crashes/, grouped by cause by tools/fuzz/triage.py, which keeps the
#   smallest input of each cause: those become regression inputs of `swift test`
#   (Tests/KDFuzzTests). libFuzzer runs in -fork mode so that it goes on after a crash.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SECONDS_PER_TARGET=${FUZZ_SECONDS:-60}
PER_INPUT_TIMEOUT=${FUZZ_TIMEOUT:-20}
SCRATCH=.build-fuzz
PY=${PYTHON:-python3}

flags=(-Xswiftc -sanitize=fuzzer,address -Xswiftc -DKDFUZZ_LIBFUZZER)
# The page-validator target needs PageValidator (the `pages` branch); switch it on when it exists.
if grep -qsE '(struct|enum|final class|class) PageValidator\b' Sources/LMDB/*.swift; then
  flags+=(-Xswiftc -DKDFUZZ_PAGE_VALIDATOR)
  page_validator=yes
else
  page_validator=no
fi
echo "fuzz: building the libFuzzer binary in $SCRATCH (page validator: $page_validator)"
swift build --scratch-path "$SCRATCH" "${flags[@]}" --product kdcache-fuzz 2>&1 \
  | grep -v "Cannot export local symbol" | grep -E "error|warning: unre|Compiling|Build" | grep -v "^\[" || true
BIN=$SCRATCH/debug/kdcache-fuzz
[ -x "$BIN" ] || { echo "fuzz: build failed"; exit 1; }

all_targets=(sample-record softlabel-record sequence-record manifest tabular gzip teacher-protocol npy safetensors page-validator)
targets=(${FUZZ_TARGETS:-${all_targets[@]}})
summary=()
for t in "${targets[@]}"; do
  if [ "$t" = page-validator ] && [ "$page_validator" = no ]; then
    summary+=("$(printf '%-17s skipped: PageValidator is not in Sources/LMDB yet' "$t")")
    continue
  fi
  corpus=$SCRATCH/corpus/$t
  crashes=fixtures/fuzz/$t/crashes
  log=$SCRATCH/logs/$t.log
  mkdir -p "$corpus" "$crashes" "$(dirname "$log")"
  before=$(ls "$crashes" | wc -l)
  echo "fuzz: $t for ${SECONDS_PER_TARGET}s"
  KDFUZZ_TARGET=$t KDFUZZ_ROOT=$ROOT SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=detect_leaks=0 \
    "$BIN" -fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1 \
      -max_total_time="$SECONDS_PER_TARGET" -timeout="$PER_INPUT_TIMEOUT" -rss_limit_mb=2048 \
      -artifact_prefix="$crashes/" -print_final_stats=1 "$corpus" "fixtures/fuzz/$t" >"$log" 2>&1 || true
  execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
  echo "fuzz: $t: triage of $crashes"
  triage=$($PY tools/fuzz/triage.py "$BIN" "$t" "$crashes")
  echo "$triage"
  after=$(ls "$crashes" | wc -l)
  causes=$(echo "$triage" | sed -n 's/.*distinct causes: //p')
  summary+=("$(printf '%-17s %9s executions, %3s new crash inputs kept, %s distinct causes in crashes/' \
    "$t" "${execs:-0}" "$((after - before))" "${causes:-0}")")
done
echo
echo "fuzz summary (${SECONDS_PER_TARGET}s per target; logs in $SCRATCH/logs):"
printf '  %s\n' "${summary[@]}"
