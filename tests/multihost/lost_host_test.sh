#!/usr/bin/env bash
# A host lost mid-run, and a smaller world: fmnist_mlp runs under
# `holdfast launch --hostfile --min-np 2` on 3 test hosts (cluster/hosts) x 1
# rank with a checkpoint every 20 steps. Once a checkpoint exists, the third
# host's cable is cut (link.sh down). The job must end within the keepalive
# time + a margin with a message naming that host; the launcher must find it
# gone, restart on the 2 hosts that answer from the last checkpoint (same
# global batch) and finish with the weights (weights_xxh64) and test accuracy
# of an uninterrupted 3-rank run, bit for bit: training is layout-invariant
# (docs/layout-invariance.md), so the world size the job ends on does not
# matter. Then the cable comes back and the job, given one more epoch,
# resumes from its 2-rank checkpoint on all 3 hosts again and ends with the
# weights of an uninterrupted 4-epoch run.
# Reports the times from the cut to detection, restart, restore and the first
# checkpoint after it. Must run as root.
#
#   tests/multihost/lost_host_test.sh BUILD_DIR
#
# Exit 0 on success; 1 with a "FAIL: ..." line otherwise; 77 (skip) when not
# root or iproute2 is missing.
set -euo pipefail

BUILD=$(cd "${1:?usage: $0 BUILD_DIR}" && pwd)
NAME=multihost-lost-host
PREFIX=mlh
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_root_and_ip

FMNIST=$BUILD/examples/fmnist_mlp
HOLDFAST=$BUILD/launcher/holdfast
# 8000 samples, batch 50: 160 steps an epoch, 480 in 3 epochs; a checkpoint
# every 20. Small, so that it also finishes on a machine busy with other work:
# ranks that wait for the network poll, and on shared cores under load a step
# took up to 100x longer than on an idle machine (~4 ms).
SETTINGS=(--train-samples 8000 --threads 1 --save-freq 20 --watchdog-seconds 60)
LOST=${PREFIX}3
# Open MPI's daemons notice a dead link after keepalive time 5 s + 3 probes
# 2 s apart (holdfast launch's settings); mpirun then needs ~2 s to end.
KEEPALIVE=11
MARGIN=10

start_hosts 3
"$HOSTS/hostfile.sh" --prefix "$PREFIX" >"$WORK/hostfile"

run_uninterrupted 3 weights_xxh64 --epochs 3 "${SETTINGS[@]}"
expected=$EXPECTED
expected_accuracy=$(json "$WORK/uninterrupted.json" test_accuracy)
run_uninterrupted 3 weights_xxh64 --epochs 4 "${SETTINGS[@]}"
expected_4=$EXPECTED

OUT=$WORK/launch.out
launch() {
  env "${HOST_ENV[@]}" timeout 240 "$HOSTS/run.sh" "${PREFIX}1" "$HOLDFAST" launch \
    --hostfile "$WORK/hostfile" --min-np 2 --max-restarts 2 --probe-timeout 5 -- \
    "$FMNIST" "$@" --backup-dir "$WORK/backup" --keep-checkpoint \
    --summary-json "$WORK/summary.json"
}

# ------------------------------------------------------------ cut a host
launch --epochs 3 "${SETTINGS[@]}" >"$OUT" 2>&1 &
job=$!
wait_for 120 has_checkpoint_after "$WORK/backup" 39 || fail "no checkpoint past step 39 within 120 s"
before=$(latest_step "$WORK/backup")
"$HOSTS/link.sh" "$LOST" down
cut=$(now_ms)
say "cut $LOST's link at step ~$before (newest checkpoint ckpt-$before)"

wait_for $((KEEPALIVE + MARGIN + 5)) has_line "$OUT" "attempt 1 of at most 3: failed" ||
  fail "the job did not end within $((KEEPALIVE + MARGIN + 5)) s of the cut"
detected=$(seconds_since "$cut")
saved=$(latest_step "$WORK/backup")
stale=$(ip netns pids "$LOST" | wc -l)
wait_for 20 has_line "$OUT" "running 2 rank(s) on ${PREFIX}1 ${PREFIX}2" ||
  fail "the launcher did not restart on ${PREFIX}1 ${PREFIX}2"
restarted=$(seconds_since "$cut")
wait_for 60 has_line "$OUT" "resuming from step $saved " ||
  fail "the restarted job did not resume from step $saved"
resumed=$(seconds_since "$cut")
wait_for 60 has_checkpoint_after "$WORK/backup" "$saved" || fail "no checkpoint after the resume"
first_save=$(seconds_since "$cut")
wait "$job" || fail "holdfast launch ended with exit $? after the cut"

say "cut -> job ended: $detected s; -> restart on 2 hosts: $restarted s;" \
  "-> resumed from step $saved: $resumed s; -> next checkpoint: $first_save s"
say "$stale process(es) left on $LOST when the job ended"
[ "${detected%.*}" -lt $((KEEPALIVE + MARGIN)) ] ||
  fail "the job took $detected s to end, more than $KEEPALIVE + $MARGIN"
grep -q "Remote daemon: .* on node $LOST" "$OUT" || fail "mpirun's message did not name $LOST"
grep -q "host $LOST does not answer" "$OUT" || fail "the launcher did not name $LOST"
[ "$(json "$WORK/summary.json" world_size)" = 2 ] || fail "the restarted job was not 2 ranks"
[ "$(json "$WORK/summary.json" resumed_from)" != null ] || fail "summary: not resumed"
[ "$(json "$WORK/summary.json" layout_invariant)" = true ] || fail "not layout-invariant"
read -r got got_accuracy < <(json "$WORK/summary.json" weights_xxh64 test_accuracy)
if [ "$got" != "$expected" ] || [ "$got_accuracy" != "$expected_accuracy" ]; then
  fail "3 -> 2 hosts ended with weights $got, test accuracy $got_accuracy;" \
    "uninterrupted on 3 ranks: $expected, $expected_accuracy"
fi
say "3 -> 2 hosts: weights $got, test accuracy $got_accuracy, as uninterrupted on 3 ranks"

# ------------------------------------------------------------ it comes back
"$HOSTS/link.sh" "$LOST" up
step=$(latest_step "$WORK/backup")
: >"$OUT"
launch --epochs 4 "${SETTINGS[@]}" >"$OUT" 2>&1 || fail "the run with $LOST back failed"
grep -q "attempt [12] of at most 3: done (exit 0) after .* on 3 rank(s); resumed from step $step" \
  "$OUT" || fail "the job did not resume from step $step on 3 ranks with $LOST back"
[ "$(json "$WORK/summary.json" world_size)" = 3 ] || fail "the last run was not 3 ranks"
# Right after the link comes back, the daemon on it may fail to connect back
# (EHOSTUNREACH from an ARP resolution begun while the link was down); that
# attempt then fails at once and the next one runs.
attempts=$(grep -c "holdfast launch: attempt " "$OUT")
if [ "$attempts" -gt 1 ]; then
  say "first attempt: $(grep -m1 "holdfast launch: attempt 1 " "$OUT" | cut -d: -f3-)"
  grep -A3 -m1 "unable to complete a TCP connection" "$OUT" | sed "s/^/$NAME:   /" || true
fi
got=$(json "$WORK/summary.json" weights_xxh64)
[ "$got" = "$expected_4" ] ||
  fail "2 -> 3 hosts ended 4 epochs with weights $got; uninterrupted on 3 ranks: $expected_4"
say "$LOST back: resumed from step $step on 3 hosts in $attempts attempt(s), weights $got," \
  "as uninterrupted"
