#!/usr/bin/env bash
# Run a teacher over a dataset store as a Slurm job array: task i of N writes shard i/N, then one
# dependent job merges the shards. kdcache reads SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT itself.
#
#   sbatch --array=0-7 tools/cluster/slurm_teach.sh data.lmdb caches/
#   sbatch --dependency=afterok:<array job id> --wrap 'kdcache merge caches/shard-*.lmdb --out teacher.lmdb --require-complete'
#
# Flags after OUTDIR go to `kdcache teach` (e.g. --teacher linear --temperature 2, or --exec '…').
# sbatch's own flags override the #SBATCH lines below (e.g. --cpus-per-task=1 --mem=1G); the task
# uses the CPUs it was given. A task that fails or is preempted can simply be resubmitted: it
# resumes after its committed batches. `make test-slurm` runs these two lines on a one-node cluster.
#SBATCH --job-name=kdcache-teach
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --time=04:00:00
set -euo pipefail
data=${1:?usage: slurm_teach.sh DATA.lmdb OUTDIR [extra kdcache teach flags]}
outdir=${2:?usage: slurm_teach.sh DATA.lmdb OUTDIR [extra kdcache teach flags]}
shift 2
for v in SLURM_ARRAY_TASK_ID SLURM_ARRAY_TASK_COUNT SLURM_ARRAY_TASK_MIN SLURM_ARRAY_TASK_MAX; do
  [ -n "${!v:-}" ] || { echo "slurm_teach.sh: $v is not set: submit this job array script with sbatch --array=0-N" >&2; exit 2; }
done
# kdcache takes shard ID − MIN of COUNT: only a contiguous array (no :step, no list with gaps) covers every shard.
if [ $((SLURM_ARRAY_TASK_MAX - SLURM_ARRAY_TASK_MIN + 1)) != "$SLURM_ARRAY_TASK_COUNT" ]; then
  echo "slurm_teach.sh: array task ids $SLURM_ARRAY_TASK_MIN…$SLURM_ARRAY_TASK_MAX with gaps ($SLURM_ARRAY_TASK_COUNT tasks):" \
    "submit a contiguous --array=0-N (a throttle such as %4 is fine)" >&2
  exit 2
fi
mkdir -p "$outdir"
exec kdcache teach --data "$data" --out "$outdir/shard-${SLURM_ARRAY_TASK_ID}.lmdb" \
  --workers "${SLURM_CPUS_PER_TASK:-2}" --quiet "$@"
