#!/usr/bin/env bash
# Run a sweep's grid as a Slurm job array: task i of N trains configurations i/N into
# OUTDIR/shard-i, then one dependent job collects the shards into one table, report and best
# student. kdcache reads SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT itself.
#
#   sbatch --array=0-7 tools/cluster/slurm_sweep.sh data.lmdb teacher.lmdb sweeps/ --student linear,fasttext:dim=16 --seeds 3
#   sbatch --dependency=afterok:<array job id> --wrap 'kdcache sweep collect sweeps/shard-* --out sweep'
#
# Flags after OUTDIR go to `kdcache sweep` (the grid: --temperature, --alpha, --lr, --student, …;
# or --config sweep.yaml); every task must get the same ones. sbatch's own flags override the
# #SBATCH lines below; the task uses the CPUs it was given (results do not depend on it). A task
# that fails or is preempted can be resubmitted: it keeps its finished runs. `make test-slurm` runs
# these two lines on a one-node cluster.
#SBATCH --job-name=kdcache-sweep
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --time=04:00:00
set -euo pipefail
usage="usage: slurm_sweep.sh DATA.lmdb CACHE.lmdb OUTDIR [kdcache sweep flags]"
data=${1:?$usage}
logits=${2:?$usage}
outdir=${3:?$usage}
shift 3
for v in SLURM_ARRAY_TASK_ID SLURM_ARRAY_TASK_COUNT SLURM_ARRAY_TASK_MIN SLURM_ARRAY_TASK_MAX; do
  [ -n "${!v:-}" ] || { echo "slurm_sweep.sh: $v is not set: submit this job array script with sbatch --array=0-N" >&2; exit 2; }
done
# kdcache takes shard ID − MIN of COUNT: only a contiguous array (no :step, no list with gaps) covers every shard.
if [ $((SLURM_ARRAY_TASK_MAX - SLURM_ARRAY_TASK_MIN + 1)) != "$SLURM_ARRAY_TASK_COUNT" ]; then
  echo "slurm_sweep.sh: array task ids $SLURM_ARRAY_TASK_MIN…$SLURM_ARRAY_TASK_MAX with gaps ($SLURM_ARRAY_TASK_COUNT tasks):" \
    "submit a contiguous --array=0-N (a throttle such as %4 is fine)" >&2
  exit 2
fi
mkdir -p "$outdir"
exec kdcache sweep --data "$data" --logits "$logits" --out "$outdir/shard-${SLURM_ARRAY_TASK_ID}" \
  --workers "${SLURM_CPUS_PER_TASK:-2}" --quiet "$@"
