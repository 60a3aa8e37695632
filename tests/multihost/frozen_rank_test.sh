#!/usr/bin/env bash
# A frozen rank, then a killed one, across hosts: fmnist_mlp runs under
# `holdfast launch --hostfile --max-restarts 2` on 3 test hosts (cluster/hosts)
# x 1 rank with `--watchdog-seconds 6` and a checkpoint every 20 steps.
#  1. Once a checkpoint exists, the rank on the third host is frozen
#     (SIGSTOP). The others' watchdog must end the attempt within the
#     watchdog time + a margin, with its one-line message naming a rank and
#     its host; the launcher restarts from the last committed checkpoint.
#  2. Once the restarted job has committed a checkpoint, the rank on the
#     third host is killed (SIGKILL); mpirun must end the attempt naming that
#     host, and the launcher restarts again from the last checkpoint.
# The job must finish with the same weights (weights_xxh64), bit for bit, as
# an uninterrupted run of 3 ranks. Reports the times from the freeze and the
# kill to the end of the attempt, the resume and the end of the job, and the
# steps lost. Must run as root.
#
#   tests/multihost/frozen_rank_test.sh BUILD_DIR
#
# Exit 0 on success; 1 with a "FAIL: ..." line otherwise; 77 (skip) when not
# root or iproute2 is missing.
set -euo pipefail

BUILD=$(cd "${1:?usage: $0 BUILD_DIR}" && pwd)
NAME=multihost-frozen-rank
PREFIX=mfr
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_root_and_ip

FMNIST=$BUILD/examples/fmnist_mlp
HOLDFAST=$BUILD/launcher/holdfast
WATCHDOG=6
# 8000 samples, batch 50: 160 steps an epoch, 480 in 3 epochs; a checkpoint
# every 20 steps.
SETTINGS=(--epochs 3 --train-samples 8000 --threads 1 --save-freq 20
  --watchdog-seconds "$WATCHDOG")
VICTIM=${PREFIX}3
# The watchdog looks every min(W/10, 1) s; then mpirun tears the job down
# (3-4 s measured here).
MARGIN=10

# The rank this test stopped, still there after a failure: wake and end it.
frozen=
test_cleanup() {
  [ -n "$frozen" ] || return 0
  if ip netns pids "$VICTIM" 2>/dev/null | grep -qx "$frozen"; then
    kill -CONT "$frozen" 2>/dev/null || true
    kill -KILL "$frozen" 2>/dev/null || true
  fi
}

start_hosts 3
"$HOSTS/hostfile.sh" --prefix "$PREFIX" >"$WORK/hostfile"
BACKUP=$WORK/backup

run_uninterrupted 3 weights_xxh64 "${SETTINGS[@]}"
expected=$EXPECTED

OUT=$WORK/launch.out
env "${HOST_ENV[@]}" timeout 300 "$HOSTS/run.sh" "${PREFIX}1" "$HOLDFAST" launch \
  --hostfile "$WORK/hostfile" --max-restarts 2 -- "$FMNIST" "${SETTINGS[@]}" \
  --backup-dir "$BACKUP" --summary-json "$WORK/summary.json" >"$OUT" 2>&1 &
job=$!

# attempt_failed N: the launcher reported attempt N failed.
attempt_failed() { has_line "$OUT" "holdfast launch: attempt $1 of at most 3: failed"; }
# gone PID: no process PID on the victim host.
gone() { ! ip netns pids "$VICTIM" | grep -qx "$1"; }

# ------------------------------------------------------------ freeze a rank
wait_for 120 has_checkpoint_after "$BACKUP" 39 || fail "no checkpoint past step 39 within 120 s"
frozen=$(host_pid "$VICTIM" fmnist_mlp) || fail "no single fmnist_mlp rank on $VICTIM"
kill -STOP "$frozen"
t_freeze=$(now_ms)
say "froze the rank on $VICTIM (pid $frozen); newest checkpoint ckpt-$(latest_step "$BACKUP")"

wait_for $((WATCHDOG + MARGIN)) has_line "$OUT" "(watchdog)" ||
  fail "no watchdog message within $WATCHDOG + $MARGIN s of the freeze"
noticed=$(seconds_since "$t_freeze")
wait_for $((WATCHDOG + MARGIN)) attempt_failed 1 ||
  fail "the attempt did not end within $WATCHDOG + $MARGIN s of the freeze"
ended=$(seconds_since "$t_freeze")
saved=$(latest_step "$BACKUP")
wait_for 30 has_line "$OUT" "resuming from step $saved " ||
  fail "the restarted job did not resume from the last checkpoint, step $saved"
resumed=$(seconds_since "$t_freeze")
# The watchdog line of a rank that waited, e.g. "holdfast: rank 0 of 3 on
# mfr1: no progress for 6 s in an all-reduce at step 57: ... (watchdog)".
line=$(grep -m1 "(watchdog)" "$OUT")
say "watchdog: ${line:0:120}..."
[[ $line =~ rank\ ([0-9]+)\ of\ 3\ on\ (${PREFIX}[0-9]+):\ no\ progress\ for\ ([0-9]+)\ s\ in\ .*\ at\ step\ ([0-9]+) ]] ||
  fail "the watchdog message does not name a rank, its host and the step: $line"
[ "${BASH_REMATCH[2]}" != "$VICTIM" ] || fail "the frozen rank on $VICTIM reported itself"
[ "${BASH_REMATCH[3]}" -ge "$WATCHDOG" ] || fail "the watchdog fired after ${BASH_REMATCH[3]} s"
frozen_at=${BASH_REMATCH[4]}
# mpirun's teardown ends the frozen rank too: nothing is left stopped.
wait_for 10 gone "$frozen" ||
  fail "the frozen rank (pid $frozen) outlived its job by 10 s"
frozen=
say "freeze at step $frozen_at -> watchdog message: $noticed s; -> attempt ended: $ended s;" \
  "-> resumed from step $saved: $resumed s; lost: $((frozen_at - saved)) step(s)"
[ "${ended%.*}" -lt $((WATCHDOG + MARGIN)) ] ||
  fail "the attempt took $ended s to end, more than $WATCHDOG + $MARGIN"

# ------------------------------------------------------------ kill a rank
wait_for 60 has_checkpoint_after "$BACKUP" "$saved" || fail "no checkpoint after the resume"
say "freeze -> first checkpoint after the resume: $(seconds_since "$t_freeze") s"
victim=$(host_pid "$VICTIM" fmnist_mlp) || fail "no single fmnist_mlp rank on $VICTIM"
kill -KILL "$victim"
t_kill=$(now_ms)
say "killed the rank on $VICTIM (pid $victim); newest checkpoint ckpt-$(latest_step "$BACKUP")"
wait_for "$MARGIN" attempt_failed 2 || fail "the attempt did not end within $MARGIN s of the kill"
killed_ended=$(seconds_since "$t_kill")
saved2=$(latest_step "$BACKUP")
wait_for 30 has_line "$OUT" "resuming from step $saved2 " ||
  fail "the restarted job did not resume from the last checkpoint, step $saved2"
killed_resumed=$(seconds_since "$t_kill")
grep -q "on node $VICTIM exited on signal 9" "$OUT" ||
  fail "mpirun did not name $VICTIM and signal 9 when the rank was killed"

rc=0
wait "$job" || rc=$?
[ "$rc" -eq 0 ] || fail "holdfast launch ended with exit $rc"
finished=$(seconds_since "$t_kill")
say "kill -> attempt ended: $killed_ended s; -> resumed from step $saved2: $killed_resumed s;" \
  "-> job done: $finished s"
grep "holdfast launch: attempt" "$OUT" | sed "s/^/$NAME:   /"

has_line "$OUT" "attempt 3 of at most 3: done (exit 0) .*resumed from step $saved2" ||
  fail "the third attempt did not finish from step $saved2"
[ "$(json "$WORK/summary.json" world_size)" = 3 ] || fail "the last run was not 3 ranks"
got=$(json "$WORK/summary.json" weights_xxh64)
[ "$got" = "$expected" ] ||
  fail "after a freeze and a kill the weights are $got, uninterrupted $expected"
say "weights $got after a freeze and a kill, as uninterrupted"
