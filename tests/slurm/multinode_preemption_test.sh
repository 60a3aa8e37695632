#!/usr/bin/env bash
# SLURM preemption on several nodes: a real SLURM whose 3 nodes are test hosts
# (cluster/local-slurm/start.sh --hosts 3: one slurmd in each host's network
# namespace). cluster/slurm/train.sbatch runs fmnist_mlp on 3 nodes x 1 rank
# through `holdfast launch --min-np 3` in the preemptible `low` partition; a
# `high` job that needs every CPU of the 3 nodes preempts it. The job must get
# USR1, commit a checkpoint on every rank, exit 75, requeue itself, come back
# with SLURM_RESTART_COUNT=1 once the nodes are free, resume from that
# checkpoint (not from scratch) and finish with the weights of an
# uninterrupted 3-rank run, bit for bit. Every run must have had its 3 ranks on
# the 3 hosts (by hostname and network namespace), ranks 1 and 2 started by
# SLURM (orted under slurmstepd), and mpirun run with holdfast's keepalive
# settings. stop.sh must leave nothing behind. Must run as root.
#
#   tests/slurm/multinode_preemption_test.sh BUILD_DIR
#
# Exit 0 on success; 1 with a "FAIL: ..." line otherwise; 77 (skip) when not
# root or a tool is missing.
set -euo pipefail

NAME=slurm-multinode
BUILD=$(cd "${1:?usage: $0 BUILD_DIR}" && pwd)
PREFIX=msp # this test's own hosts: msp1 msp2 msp3
NODES=3
STATE_DIR=/tmp/holdfast-slurm-$PREFIX
JOBS=$STATE_DIR/jobs
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_root
require_host_tools
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1

FMNIST=$BUILD/examples/fmnist_mlp
# 2 epochs of the full data, batch 50: 2400 steps (~12 s on 3 hosts here); a
# checkpoint every 100. Long enough to be preempted mid-run (the preemption
# lands ~1 s after the first checkpoint), short enough for a quick test.
TRAINING=(--epochs 2 --threads 1 --quiet --save-freq 100)

START_ARGS=(--hosts "$NODES" --prefix "$PREFIX")
start_cluster
WORK=$JOBS/work
mkdir -p "$WORK"

# Each rank logs where it runs and what started it, then becomes fmnist_mlp.
cat >"$JOBS/rank.sh" <<'EOF'
#!/bin/sh
log=$1
shift
gp=$(ps -o ppid= -p "$PPID" | tr -d ' ')
echo "rank ${OMPI_COMM_WORLD_RANK:-?} restart ${SLURM_RESTART_COUNT:-0} host $(hostname)" \
  "netns $(ip netns identify $$) parent $(cat /proc/$PPID/comm) grandparent $(cat /proc/$gp/comm)" \
  "parent_args $(tr '\0' ' ' </proc/$PPID/cmdline)" >>"$log"
exec "$@"
EOF
chmod +x "$JOBS/rank.sh"
RANKS=$JOBS/ranks.log

# ------------------------------------------------------------------ the job
job=$(HOLDFAST=$BUILD/launcher/holdfast HOLDFAST_LAUNCH_ARGS="--min-np $NODES --max-restarts 1 --grace 30" \
  timeout 10 "${CLIENT[@]}" sbatch --parsable -J train -p low -N "$NODES" -n "$NODES" \
  --requeue --signal=B:USR1@5 --open-mode=append -o "$JOBS/train.out" \
  "$ROOT/cluster/slurm/train.sbatch" "$JOBS/rank.sh" "$RANKS" \
  "$FMNIST" "${TRAINING[@]}" --backup-dir "$WORK/backup" --summary-json "$WORK/summary.json") ||
  fail "sbatch of the training job failed"
job=${job%%;*}
wait_for 60 has_checkpoint "$job" "$WORK/backup" || fail "job $job committed no checkpoint within 60 s"
say "job $job is training on $(job_field "$job" NodeList) and has a checkpoint ($(elapsed))"

t=$(now_ms)
cpus=$(timeout 5 "${CLIENT[@]}" sinfo -h -N -o %c | head -n1)
[[ $cpus =~ ^[0-9]+$ ]] || fail "cannot read the nodes' CPU count from sinfo: '$cpus'"
high=$(timeout 10 "${CLIENT[@]}" sbatch --parsable -J high -p high -N "$NODES" \
  --ntasks-per-node="$cpus" -o "$JOBS/high.out" --wrap "srun -N $NODES -n $NODES hostname; sleep 2") ||
  fail "sbatch of the high job failed"
high=${high%%;*}

wait_for 60 has_line "$JOBS/train.out" 'preempted: checkpoint committed at step' ||
  fail "job $job committed no checkpoint within 60 s of the high job"
committed=$(($(now_ms) - t))
wait_for 60 has_line "$JOBS/train.out" 'preempted with a committed checkpoint: requeueing' ||
  fail "job $job did not stop with a committed checkpoint within 60 s of the high job"
say "job $job committed its checkpoint $committed ms and requeued itself $(($(now_ms) - t)) ms" \
  "after the high job was submitted"
grep -q 'got USR1' "$JOBS/train.out" || fail "the batch script never got USR1"
saved=$(sed -n 's/.*preempted: checkpoint committed at step \([0-9]*\).*/\1/p' "$JOBS/train.out" |
  head -n1)
[ -n "$saved" ] || fail "no rank reported the committed step"
[ "$saved" -gt 0 ] || fail "the preemption checkpoint is at step $saved"
grep -q "attempt 1 of at most 2: preempted (exit 75)" "$JOBS/train.out" ||
  fail "holdfast launch did not report the preemption"

# The uninterrupted reference, 3 ranks on one host, while the job waits.
OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo timeout 300 \
  mpirun --oversubscribe -np "$NODES" "$FMNIST" "${TRAINING[@]}" \
  --summary-json "$WORK/straight.json" >"$JOBS/straight.out" 2>&1 &
reference=$!

wait_for 120 job_state_is "$high" COMPLETED ||
  fail "high job $high did not complete (state $(job_field "$high" JobState))"
[ "$(sort "$JOBS/high.out" | tr '\n' ' ')" = "$(seq -f "$PREFIX%g" 1 "$NODES" | tr '\n' ' ')" ] ||
  fail "the high job did not run on all $NODES nodes: $(tr '\n' ' ' <"$JOBS/high.out")"
wait_for 120 has_line "$JOBS/train.out" "restart 1 on" ||
  fail "job $job did not run again with SLURM_RESTART_COUNT=1"
restarted=$(($(now_ms) - t))
wait_for 120 job_state_is "$job" COMPLETED ||
  fail "job $job did not complete after its requeue (state $(job_field "$job" JobState))"
done_ms=$(($(now_ms) - t))
wait "$reference" || fail "the uninterrupted reference run (mpirun -np $NODES, one host) failed"
expected=$(json "$WORK/straight.json" weights_xxh64)

[ "$(job_field "$job" Restarts)" = 1 ] || fail "job $job has Restarts=$(job_field "$job" Restarts)"
grep -q "resumed from step $saved" "$JOBS/train.out" ||
  fail "the second run did not resume from step $saved"
got=$(json "$WORK/summary.json" weights_xxh64 resumed_from.step world_size)
[ "$got" = "$expected $saved $NODES" ] ||
  fail "resumed run ended with '$got' (weights, resumed from, world size), expected '$expected $saved $NODES'"
say "preempted at step $saved; ran again $restarted ms and ended $done_ms ms after the high job" \
  "was submitted; weights $expected as the uninterrupted run"

# Where the ranks ran, in each of the 2 runs.
for restart in 0 1; do
  for rank in $(seq 0 $((NODES - 1))); do
    line=$(grep "^rank $rank restart $restart " "$RANKS") ||
      fail "rank $rank of run $restart did not log where it ran"
    [ "$(wc -l <<<"$line")" = 1 ] || fail "rank $rank of run $restart started more than once"
    read -r _ _ _ _ _ host _ netns _ parent _ grandparent _ <<<"$line"
    if [ "$host" != "$PREFIX$((rank + 1))" ] || [ "$netns" != "$host" ]; then
      fail "rank $rank of run $restart ran on host '$host' in network namespace '$netns'"
    fi
    if [ "$rank" = 0 ]; then
      [ "$parent" = mpirun ] || fail "rank 0's parent is $parent, not mpirun"
      for mca in "oob_tcp_keepalive_time 5" "oob_tcp_keepalive_intvl 2" "oob_tcp_keepalive_probes 3"; do
        [[ $line == *"--mca $mca "* ]] || fail "mpirun of run $restart ran without --mca $mca: $line"
      done
    else
      [ "$parent $grandparent" = "orted slurmstepd" ] ||
        fail "rank $rank of run $restart was started by $parent under $grandparent, not by SLURM"
    fi
  done
done
say "both runs: ranks 0 1 2 on ${PREFIX}1 ${PREFIX}2 ${PREFIX}3 (hostname and network namespace)," \
  "ranks 1 and 2 through srun; mpirun with the keepalive settings"
show_log "$JOBS/train.out"

# ------------------------------------------------------------------ clean up
stop_cluster_and_check
say "stop.sh took $STOP_MS ms and left no daemon, rank, host or namespace behind"
say "all checks passed in $(elapsed)"
