#!/usr/bin/env bash
# Smoke test of cluster/local-slurm: start a real single-node SLURM, run a trivial batch
# job, then check preemption end to end: a `low` job gets USR1 when a `high` job needs
# every CPU, requeues itself, and runs again with SLURM_RESTART_COUNT=1. Stops the cluster
# on every exit path. Must run as root.
#
#   tests/slurm/local_slurm_smoke.sh [STATE_DIR]   (default /tmp/holdfast-slurm-smoke)
#
# Exit 0 on success; 1 with a "FAIL: ..." line otherwise; 77 (skip) when not root.
set -euo pipefail

NAME=smoke
STATE_DIR=${1:-${HOLDFAST_SLURM_STATE_DIR:-/tmp/holdfast-slurm-smoke}}
JOBS=$STATE_DIR/jobs
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_root

# ------------------------------------------------------------------ start
start_cluster
cd "$JOBS"

# ------------------------------------------------------------------ trivial job
t=$(now_ms)
# shellcheck disable=SC2016  # expanded by the job's shell
timeout 60 sbatch --wait --quiet -J hello -o "$JOBS/hello.out" \
  --wrap 'echo "hello job=$SLURM_JOB_ID host=$(hostname) partition=$SLURM_JOB_PARTITION"' ||
  fail "trivial sbatch --wait job failed or timed out"
grep -q '^hello job=[0-9]* host=.* partition=low$' "$JOBS/hello.out" ||
  fail "trivial job output unexpected: $(cat "$JOBS/hello.out" 2>/dev/null)"
say "trivial job ok in $(($(now_ms) - t)) ms: $(cat "$JOBS/hello.out")"

# ------------------------------------------------------------------ preemption
# The low job: on its first run, wait for USR1 (sent at preemption because of
# --signal=B:USR1@5 and preempt_send_user_signal), log it, requeue itself and exit.
# SLURM does not requeue a job that ends by itself within GraceTime, so the script does.
# Never trap CONT: bash then drops signals.
cat >"$JOBS/low.sbatch" <<'EOF'
#!/bin/bash
echo "start job=$SLURM_JOB_ID restart=${SLURM_RESTART_COUNT:-0}"
if [ "${SLURM_RESTART_COUNT:-0}" -ge 1 ]; then
  echo "second run done restart=$SLURM_RESTART_COUNT"
  exit 0
fi
on_usr1() {
  echo "got USR1 restart=${SLURM_RESTART_COUNT:-0}"
  trap '' TERM  # the requeue's own TERM must not cut this handler short
  scontrol requeue "$SLURM_JOB_ID" && echo "requeue requested"
  exit 0
}
trap on_usr1 USR1
for _ in $(seq 600); do
  sleep 1 &
  wait $! || true
done
echo "never preempted"
exit 3
EOF

low=$(timeout 10 sbatch --parsable -J low -p low -n 1 --requeue --signal=B:USR1@5 \
  --open-mode=append -o "$JOBS/low.out" "$JOBS/low.sbatch") || fail "sbatch of the low job failed"
low=${low%%;*}
wait_for 30 has_line "$JOBS/low.out" '^start job=.* restart=0$' ||
  fail "low job $low did not start within 30 s"
say "low job $low running ($(elapsed))"

t=$(now_ms)
cpus=$(timeout 5 sinfo -h -N -o %c | head -n1)
[[ $cpus =~ ^[0-9]+$ ]] || fail "cannot read the node's CPU count from sinfo: '$cpus'"
# shellcheck disable=SC2016  # expanded by the job's shell
high=$(timeout 10 sbatch --parsable -J high -p high -n "$cpus" \
  -o "$JOBS/high.out" --wrap 'echo "high ran job=$SLURM_JOB_ID cpus=$SLURM_CPUS_ON_NODE"; sleep 3') ||
  fail "sbatch of the high job failed"
high=${high%%;*}

wait_for 30 has_line "$JOBS/low.out" '^got USR1 restart=0$' ||
  fail "low job $low did not get USR1 within 30 s of the high job $high"
say "low job got USR1 $(($(now_ms) - t)) ms after the high job was submitted"

wait_for 60 job_state_is "$high" COMPLETED ||
  fail "high job $high did not complete within 60 s (state $(job_field "$high" JobState))"
has_line "$JOBS/high.out" '^high ran' || fail "high job output unexpected"
say "high job $high completed after $(($(now_ms) - t)) ms: $(cat "$JOBS/high.out")"

wait_for 90 has_line "$JOBS/low.out" '^start job=.* restart=1$' ||
  fail "low job $low did not run again with SLURM_RESTART_COUNT=1 within 90 s"
say "low job restarted with SLURM_RESTART_COUNT=1 $(($(now_ms) - t)) ms after the high job was submitted"

wait_for 30 job_state_is "$low" COMPLETED ||
  fail "low job $low did not complete after its restart (state $(job_field "$low" JobState))"
restarts=$(job_field "$low" Restarts)
[ "$restarts" = 1 ] || fail "low job $low has Restarts=$restarts, expected 1"
grep -q '^second run done restart=1$' "$JOBS/low.out" || fail "low job's second run did not finish"
if grep -q 'never preempted' "$JOBS/low.out"; then fail "low job was never preempted"; fi

say "low job log:"
sed 's/^/  | /' "$JOBS/low.out"
say "all checks passed in $(elapsed)"
echo "1 passed, 0 failed"
