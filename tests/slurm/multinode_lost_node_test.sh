#!/usr/bin/env bash
# A node lost mid-run inside a SLURM allocation: on a real SLURM whose 3 nodes
# are test hosts (cluster/local-slurm/start.sh --hosts 3),
# cluster/slurm/train.sbatch runs fmnist_mlp on 3 nodes x 1 rank through
# `holdfast launch --min-np 2`. Once a checkpoint exists, the third node's
# cable is cut (cluster/hosts/link.sh). mpirun must end the attempt within the
# keepalive time + a margin, naming that node; the launcher must find it gone
# (its probe, a one-task job step there, gets no answer), restart on the 2
# nodes that answer from the last checkpoint, and finish there, with no srun
# of the first attempt left behind. Meanwhile the node is set DOWN, as
# slurmctld does after SlurmdTimeout (or an admin, or a health check): the job,
# submitted with --no-kill, goes on without it and ends COMPLETED. stop.sh
# leaves nothing behind. Must run as root.
#
#   tests/slurm/multinode_lost_node_test.sh BUILD_DIR
#
# Exit 0 on success; 1 with a "FAIL: ..." line otherwise; 77 (skip) when not
# root or a tool is missing.
set -euo pipefail

NAME=slurm-lost-node
BUILD=$(cd "${1:?usage: $0 BUILD_DIR}" && pwd)
PREFIX=msl # this test's own hosts: msl1 msl2 msl3
NODES=3
LOST=${PREFIX}3
STATE_DIR=/tmp/holdfast-slurm-$PREFIX
JOBS=$STATE_DIR/jobs
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_root
require_host_tools
export OMP_NUM_THREADS=1

FMNIST=$BUILD/examples/fmnist_mlp
# 30000 samples, batch 50: 600 steps an epoch, 1800 in all (~9 s on 3 hosts
# here); a checkpoint every 100.
TRAINING=(--epochs 3 --train-samples 30000 --threads 1 --quiet --save-freq 100)
STEPS=1800
# Open MPI's daemons notice a dead link after keepalive time 5 s + 3 probes
# 2 s apart (holdfast launch's settings); mpirun then needs a few seconds to end.
KEEPALIVE=11
MARGIN=10
PROBE_TIMEOUT=5

START_ARGS=(--hosts "$NODES" --prefix "$PREFIX")
start_cluster
WORK=$JOBS/work
mkdir -p "$WORK"
OUT=$JOBS/train.out

job=$(HOLDFAST=$BUILD/launcher/holdfast \
  HOLDFAST_LAUNCH_ARGS="--min-np 2 --max-restarts 2 --probe-timeout $PROBE_TIMEOUT" \
  timeout 10 "${CLIENT[@]}" sbatch --parsable -J train -p low -N "$NODES" -n "$NODES" --no-kill \
  -o "$OUT" "$ROOT/cluster/slurm/train.sbatch" \
  "$FMNIST" "${TRAINING[@]}" --backup-dir "$WORK/backup" --summary-json "$WORK/summary.json") ||
  fail "sbatch of the training job failed"
job=${job%%;*}
wait_for 60 has_checkpoint "$job" "$WORK/backup" || fail "job $job committed no checkpoint within 60 s"
"$ROOT/cluster/hosts/link.sh" "$LOST" down
cut=$(now_ms)
say "job $job on $(job_field "$job" NodeList): cut $LOST's link once $(cat "$WORK/backup/LATEST") existed"

wait_for $((KEEPALIVE + MARGIN + 5)) has_line "$OUT" "attempt 1 of at most 3: failed" ||
  fail "the attempt did not end within $((KEEPALIVE + MARGIN + 5)) s of the cut"
detected=$(seconds_since "$cut")
saved=$(cat "$WORK/backup/LATEST")
saved=${saved#ckpt-}
grep -q "Remote daemon: .* on node $LOST" "$OUT" || fail "mpirun's message did not name $LOST"
wait_for $((PROBE_TIMEOUT + 10)) has_line "$OUT" "running 2 rank(s) on ${PREFIX}1 ${PREFIX}2 (asked for 3)" ||
  fail "the launcher did not restart on ${PREFIX}1 ${PREFIX}2"
restarted=$(seconds_since "$cut")
grep -q "host $LOST does not answer" "$OUT" || fail "the launcher did not name $LOST"
# SLURM declares the node DOWN (here at once; by itself after SlurmdTimeout):
# without --no-kill that would end the job.
timeout 10 "${CLIENT[@]}" scontrol update NodeName="$LOST" State=DOWN Reason=link-cut ||
  fail "scontrol could not set $LOST down"
wait_for 60 has_line "$OUT" "resuming from step $saved " ||
  fail "the restarted job did not resume from step $saved"
resumed=$(seconds_since "$cut")
# The first attempt's daemons ran in a job step on ${PREFIX}2 and $LOST; its
# srun could not end it on $LOST and would hang on after mpirun.
left=$(pgrep -af -- "--nodelist=${PREFIX}2,$LOST" || true)
[ -z "$left" ] || fail "the first attempt's srun is still running: $left"
wait_for 120 has_line "$OUT" "attempt 2 of at most 3: done (exit 0) .* on 2 rank(s); resumed from step $saved" ||
  fail "the job did not finish on 2 ranks"
finished=$(seconds_since "$cut")
[ "${detected%.*}" -lt $((KEEPALIVE + MARGIN)) ] ||
  fail "the attempt took $detected s to end, more than $KEEPALIVE + $MARGIN"
got=$(json "$WORK/summary.json" world_size resumed_from.step steps)
[ "$got" = "2 $saved $STEPS" ] ||
  fail "the job ended with '$got' (world size, resumed from, steps), expected '2 $saved $STEPS'"
say "cut -> attempt ended: $detected s; -> restart on 2 nodes: $restarted s;" \
  "-> resumed from step $saved: $resumed s; -> done, $STEPS steps: $finished s"
wait_for 30 job_state_is "$job" COMPLETED ||
  fail "job $job did not complete (state $(job_field "$job" JobState))"
nodes=$(job_field "$job" NodeList)
[ "$nodes" = "${PREFIX}[1-2]" ] || fail "job $job ended on $nodes, not without $LOST"
say "job $job COMPLETED on $nodes, $LOST DOWN"
"$ROOT/cluster/hosts/link.sh" "$LOST" up
show_log "$OUT"
stop_cluster_and_check
say "stop.sh took $STOP_MS ms and left no daemon, rank, host or namespace behind"
say "all checks passed in $(elapsed)"
