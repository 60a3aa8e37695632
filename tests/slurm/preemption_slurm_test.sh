#!/usr/bin/env bash
# SLURM preemption end to end, on a real local SLURM: cluster/slurm/train.sbatch
# runs fmnist_mlp on 2 ranks through `holdfast launch` in the preemptible `low`
# partition; a `high` job that needs every CPU preempts it. The job must get
# USR1, commit a checkpoint on every rank, exit 75, requeue itself, come back
# with SLURM_RESTART_COUNT=1, resume from that checkpoint and finish with the
# weights of the same run never preempted. Must run as root.
#
#   tests/slurm/preemption_slurm_test.sh BUILD_DIR [STATE_DIR]
#
# Exit 0 on success; 1 with a "FAIL: ..." line otherwise; 77 (skip) when not root.
set -euo pipefail

NAME=slurm-preemption
BUILD=$(cd "${1:?usage: $0 BUILD_DIR [STATE_DIR]}" && pwd)
STATE_DIR=${2:-/tmp/holdfast-slurm-preempt}
JOBS=$STATE_DIR/jobs
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_root

FMNIST=$BUILD/examples/fmnist_mlp
# 2 epochs of the full data on 2 ranks: long enough (~15 s) to be preempted
# mid-run; a checkpoint every 100 steps.
TRAINING=(--epochs 2 --threads 1 --quiet --save-freq 100)

start_cluster
WORK=$JOBS/work
mkdir -p "$WORK"

# ------------------------------------------------------------------ reference
t=$(now_ms)
OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 300 \
  mpirun --oversubscribe -np 2 "$FMNIST" "${TRAINING[@]}" --summary-json "$WORK/straight.json" \
  >"$JOBS/straight.out" 2>&1 || fail "the uninterrupted reference run failed"
expected=$(json "$WORK/straight.json" weights_xxh64)
say "reference run: weights $expected in $(($(now_ms) - t)) ms"

# ------------------------------------------------------------------ the job
job=$(HOLDFAST=$BUILD/launcher/holdfast HOLDFAST_LAUNCH_ARGS="--max-restarts 1 --grace 30" \
  timeout 10 sbatch --parsable -J train -p low -n 2 --requeue --signal=B:USR1@5 \
  --open-mode=append -o "$JOBS/train.out" "$ROOT/cluster/slurm/train.sbatch" \
  "$FMNIST" "${TRAINING[@]}" --backup-dir "$WORK/backup" --summary-json "$WORK/summary.json") ||
  fail "sbatch of the training job failed"
job=${job%%;*}
wait_for 60 test -f "$WORK/backup/LATEST" ||
  fail "job $job committed no checkpoint within 60 s"
say "job $job is training and has a checkpoint ($(elapsed))"

t=$(now_ms)
cpus=$(timeout 5 sinfo -h -N -o %c | head -n1)
high=$(timeout 10 sbatch --parsable -J high -p high -n "$cpus" -o "$JOBS/high.out" \
  --wrap 'echo "high ran"; sleep 2') || fail "sbatch of the high job failed"
high=${high%%;*}

wait_for 60 has_line "$JOBS/train.out" 'preempted with a committed checkpoint: requeueing' ||
  fail "job $job did not stop with a committed checkpoint within 60 s of the high job"
say "job $job saved and requeued itself $(($(now_ms) - t)) ms after the high job was submitted"
grep -q 'got USR1' "$JOBS/train.out" || fail "the batch script never got USR1"
saved=$(sed -n 's/.*preempted: checkpoint committed at step \([0-9]*\).*/\1/p' "$JOBS/train.out" |
  head -n1)
[ -n "$saved" ] || fail "no rank reported the committed step"
grep -q "attempt 1 of at most 2: preempted (exit 75)" "$JOBS/train.out" ||
  fail "holdfast launch did not report the preemption"

wait_for 120 job_state_is "$job" COMPLETED ||
  fail "job $job did not complete after its requeue (state $(job_field "$job" JobState))"
[ "$(job_field "$job" Restarts)" = 1 ] || fail "job $job has Restarts=$(job_field "$job" Restarts)"
grep -q "restart 1 on" "$JOBS/train.out" || fail "the second run did not see SLURM_RESTART_COUNT=1"
grep -q "resumed from step $saved" "$JOBS/train.out" ||
  fail "the second run did not resume from step $saved"

got=$(json "$WORK/summary.json" weights_xxh64 resumed_from.step)
[ "$got" = "$expected $saved" ] ||
  fail "resumed run ended with '$got', expected weights $expected resumed from $saved"
say "preempted at step $saved, requeued, resumed, weights $expected as the uninterrupted run"
show_log "$JOBS/train.out"
say "all checks passed in $(elapsed)"
