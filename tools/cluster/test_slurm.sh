#!/usr/bin/env bash
# `make test-slurm`: the shipped Slurm scripts on a real one-node Slurm cluster on this machine.
#
# Installs Debian's slurm-wlm and munge when missing (root, or sudo), writes a munge key and a
# slurm.conf into a temporary directory (one node: this host, 2 CPUs; its own ports, spool and
# state; no cgroups, no accounting), starts munged, slurmctld and slurmd there, and then submits,
# as README / the scripts' headers tell a user to:
#   1. tools/cluster/slurm_teach.sh as a 3-task array (teach --shard i/3), then the dependent merge;
#   2. tools/cluster/slurm_sweep.sh as a 3-task array over the merged cache, then `sweep collect`.
# It checks that every job completed, that the merged cache equals a single-process `teach`
# record for record and byte for byte, and that the collected sweep equals a single-process sweep
# (results.jsonl without its timing fields, and the best student), with
# tools/cluster/same_as_single.py. The daemons (and any job still running) are stopped on every
# exit; the temporary directory is removed on success and kept, with the daemons' logs printed,
# on failure. Prints its wall time at the end.
#
#   KDCACHE_BIN=.build/release/kdcache PYTHON=.build-venv/bin/python tools/cluster/test_slurm.sh
set -euo pipefail
start=$(date +%s.%N)
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$(realpath "${KDCACHE_BIN:-$root/.build/release/kdcache}")
py=${PYTHON:-$root/.build-venv/bin/python}
[[ $py = */* ]] && py=$(realpath -s "$py")
sudo=$([ "$(id -u)" = 0 ] || echo sudo)
[ -x "$bin" ] || { echo "test-slurm: no kdcache binary at $bin: build it (swift build -c release) or set KDCACHE_BIN" >&2; exit 2; }
"$py" -c 'import lmdb, numpy' 2>/dev/null || { echo "test-slurm: $py cannot import lmdb and numpy: run make venv or set PYTHON" >&2; exit 2; }
seconds() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# --- Debian packages -------------------------------------------------------------------------
missing=""
for p in slurm-wlm munge; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  t=$(date +%s.%N)
  echo "test-slurm: installing:$missing"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
  echo "test-slurm: installed in $(seconds "$t") s"
fi
for c in munged slurmctld slurmd sbatch squeue sinfo scontrol scancel; do
  command -v "$c" >/dev/null || { echo "test-slurm: $c is missing after installing slurm-wlm and munge" >&2; exit 2; }
done

# --- a cluster in a temporary directory -------------------------------------------------------
work=$(mktemp -d /tmp/kdcache-slurm.XXXXXX)
chmod 700 "$work"
mkdir -p "$work"/{munge,state,spool,log,bin,run}
pids=()         # the daemons this script started, newest last
jobs_submitted=()
ok=0
cleanup() {
  set +e
  if [ ${#jobs_submitted[@]} -gt 0 ] && [ -n "${SLURM_CONF:-}" ]; then
    scancel "${jobs_submitted[@]}" 2>/dev/null
    for _ in $(seq 50); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.2; done
  fi
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2>/dev/null; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  if [ "$ok" = 1 ]; then
    rm -rf "$work"
  else
    for f in "$work"/log/*; do [ -f "$f" ] && { echo "--- $f (last 30 lines)"; tail -n 30 "$f"; }; done >&2
    echo "test-slurm: FAILED; the cluster's directory is kept: $work" >&2
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

node=$(hostname -s)
free_port() {  # the first port from $1 on that nothing listens on (a system Slurm uses 6817/6818)
  local p=$1
  while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
  echo "$p"
}
ctld_port=$(free_port 16817)
slurmd_port=$(free_port $((ctld_port + 1)))

# munge: a fresh key, its own socket (slurm.conf's AuthInfo tells Slurm where it is).
dd if=/dev/urandom of="$work/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$work/munge/munge.key"
munged --foreground --force --key-file="$work/munge/munge.key" --socket="$work/munge/munge.socket" \
  --pid-file="$work/munge/munged.pid" --log-file="$work/log/munged.log" --seed-file="$work/munge/munged.seed" \
  >>"$work/log/munged.log" 2>&1 &
pids+=($!)

cat >"$work/slurm.conf" <<CONF
# Written by tools/cluster/test_slurm.sh: a one-node cluster for the test, removed afterwards.
ClusterName=kdcache-test
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$work/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/run/slurmctld.pid
SlurmdPidFile=$work/run/slurmd.pid
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=600
DependencyParameters=kill_invalid_depend
NodeName=$node NodeAddr=127.0.0.1 CPUs=2 RealMemory=2048 State=UNKNOWN
PartitionName=test Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$work/slurm.conf

for _ in $(seq 50); do [ -S "$work/munge/munge.socket" ] && break; sleep 0.1; done
[ -S "$work/munge/munge.socket" ] || { echo "test-slurm: munged did not start (log below)" >&2; exit 1; }
slurmctld -D -i -f "$SLURM_CONF" >>"$work/log/slurmctld.stderr" 2>&1 &
pids+=($!)
slurmd -D -N "$node" -f "$SLURM_CONF" >>"$work/log/slurmd.stderr" 2>&1 &
pids+=($!)
state=""
for _ in $(seq 120); do
  state=$(sinfo -h -N -n "$node" -o %T 2>/dev/null || true)
  [ "$state" = idle ] && break
  sleep 0.5
done
[ "$state" = idle ] || { echo "test-slurm: the node is '${state:-not registered}' after 60 s, not idle" >&2; exit 1; }
echo "test-slurm: cluster up in $(seconds "$start") s: node $node idle (slurmctld :$ctld_port, slurmd :$slurmd_port, $work)"

# --- the jobs, as a user submits them ---------------------------------------------------------
ln -s "$bin" "$work/bin/kdcache"      # the scripts call `kdcache` from PATH; sbatch exports PATH
export PATH=$work/bin:$PATH
cd "$work"
kdcache prep "$root/fixtures/fortunes/fortunes.csv" --out data.lmdb --text-column text --label-column label \
  --id-column id --seed 7 --quiet >/dev/null
TEACH=(--teacher linear --epochs 4 --ensemble 2 --temperature 2 --commit-every 128)
GRID=(--student linear,fasttext:dim=8 --temperature 2,4 --alpha 0,0.5,0.9 --lr 0.1 --epochs 3 --seeds 2)
SB=(--parsable --chdir="$work" --cpus-per-task=1 --mem=512M)

submit() {  # submit VAR SBATCH-ARGS…: sets VAR to the job id
  local id
  local out="$work/log/%x-%j.out"
  [[ " ${*:2} " = *" --array="* ]] && out="$work/log/%x-%A_%a.out"
  id=$(sbatch "${SB[@]}" --output="$out" "${@:2}")
  id=${id%%;*}
  jobs_submitted+=("$id")
  printf -v "$1" %s "$id"
}
submit teach --array=0-2 "$root/tools/cluster/slurm_teach.sh" data.lmdb caches "${TEACH[@]}"
submit merge --dependency=afterok:"$teach" --wrap 'kdcache merge caches/shard-*.lmdb --out teacher.lmdb --require-complete'
submit sweep --dependency=afterok:"$merge" --array=0-2 "$root/tools/cluster/slurm_sweep.sh" data.lmdb teacher.lmdb sweeps "${GRID[@]}"
submit collect --dependency=afterok:"$sweep" --wrap 'kdcache sweep collect sweeps/shard-* --out sweep'
echo "test-slurm: submitted teach array $teach, merge $merge, sweep array $sweep, collect $collect"

# Meanwhile, the same work in one process, for the comparison.
kdcache teach --data data.lmdb --out single.lmdb "${TEACH[@]}" --quiet >/dev/null
kdcache sweep --data data.lmdb --logits single.lmdb --out single-sweep "${GRID[@]}" --quiet >/dev/null

deadline=$(( $(date +%s) + 600 ))
while [ -n "$(squeue -h -o %i)" ]; do
  [ "$(date +%s)" -lt "$deadline" ] || { echo "test-slurm: jobs still queued after 600 s:" >&2; squeue >&2; exit 1; }
  sleep 0.5
done
# Every job and array task must have completed (no accounting: the controller keeps them MinJobAge).
failed=0
checked=0
for id in "${jobs_submitted[@]}"; do
  while read -r line; do
    [ -n "$line" ] || continue
    [[ $line =~ JobState=([A-Z_]+) ]] && st=${BASH_REMATCH[1]} || st=unknown
    name=$id
    [[ $line =~ ArrayTaskId=([0-9,-]+) ]] && name="$id, array task ${BASH_REMATCH[1]}"
    [ "$st" = COMPLETED ] || { echo "test-slurm: job $name is $st, not COMPLETED" >&2; failed=1; }
    checked=$((checked + 1))
  done < <(scontrol -o show job "$id")
done
[ "$failed" = 0 ] || exit 1     # the jobs' outputs are in the logs printed on exit
[ "$checked" = 8 ] || { echo "test-slurm: the controller lists $checked jobs and array tasks, not 3 + 1 + 3 + 1" >&2; exit 1; }
echo "test-slurm: all 8 jobs and array tasks completed"
# Each task did its own part: the shards overlap nowhere, and together they hold everything.
merged="teacher builtin: 1919 records from 3 shards (0 identical duplicates), complete"
grep -qxF "$merged" log/wrap-"$merge".out || { echo "test-slurm: the merge did not say '$merged':" >&2; cat log/wrap-"$merge".out >&2; exit 1; }
for i in 0 1 2; do
  n=$(wc -l <"sweeps/shard-$i/results.jsonl")
  [ "$n" -gt 0 ] && [ "$n" -lt 20 ] || { echo "test-slurm: sweep shard $i holds $n of the 20 runs" >&2; exit 1; }
done
[ "$(cat sweeps/shard-*/results.jsonl | wc -l)" = 20 ] || { echo "test-slurm: the sweep shards hold $(cat sweeps/shard-*/results.jsonl | wc -l) runs, not 20" >&2; exit 1; }
echo "test-slurm: the 3 teach shards hold disjoint parts of the 1919 samples, the sweep shards $(wc -l sweeps/shard-*/results.jsonl | head -3 | awk '{printf "%s%s", s, $1; s=" + "}') of the 20 runs"

"$py" "$root/tools/cluster/same_as_single.py" cache single.lmdb teacher.lmdb
"$py" "$root/tools/cluster/same_as_single.py" sweep single-sweep sweep sweeps/shard-*
ok=1
echo "test-slurm: passed in $(seconds "$start") s wall (load average $(cut -d' ' -f1-3 /proc/loadavg))"
