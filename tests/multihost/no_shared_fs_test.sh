#!/usr/bin/env bash
# Checkpoints without a shared filesystem: on 3 test hosts (cluster/hosts) x 1
# rank, the ranks on hosts 2 and 3 see a private, empty directory of their own
# at the backup path (rsh.sh with HOLDFAST_HOSTS_PRIVATE_DIR); only host 1,
# where rank 0 runs, sees the real one.
#  1. fmnist_mlp --chief-writes-all under `holdfast launch --hostfile`, a
#     checkpoint every 20 steps, fails at step 50 (--interrupt-at-step): the
#     real directory holds ckpt-40 of one shard, written by the chief;
#  2. run again, it resumes from step 40 (restored on the chief, broadcast)
#     and ends with the same weights (weights_xxh64) as an uninterrupted run
#     of 3 ranks on one host. The private directories stay empty throughout.
#  3. The same without --chief-writes-all: every save fails, with a warning
#     that names ranks 1 and 2 and says they do not share the directory; no
#     checkpoint is committed, so the next run would start over.
# Must run as root.
#
#   tests/multihost/no_shared_fs_test.sh BUILD_DIR
#
# Exit 0 on success; 1 with a "FAIL: ..." line otherwise; 77 (skip) when not
# root or iproute2 is missing.
set -euo pipefail

BUILD=$(cd "${1:?usage: $0 BUILD_DIR}" && pwd)
NAME=multihost-no-shared-fs
PREFIX=mns
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_root_and_ip

FMNIST=$BUILD/examples/fmnist_mlp
HOLDFAST=$BUILD/launcher/holdfast
# 6000 samples, batch 50: 120 steps an epoch, 240 in 2; a checkpoint every 20.
SETTINGS=(--epochs 2 --train-samples 6000 --threads 1 --save-freq 20)
STEPS=240
INTERRUPT=50
SAVED=40
# Where rsh.sh keeps each host's own directory (cluster/hosts/README.md).
PRIVATE=${HOLDFAST_HOSTS_STATE:-/run/holdfast-hosts}/$PREFIX/private

start_hosts 3
"$HOSTS/hostfile.sh" --prefix "$PREFIX" >"$WORK/hostfile"
BACKUP=$WORK/backup
mkdir "$BACKUP"

run_uninterrupted 3 weights_xxh64 "${SETTINGS[@]}"
expected=$EXPECTED

# The setup itself: a file in the real directory is seen on host 1 (run.sh)
# but not on host 2 (rsh.sh), and what host 2 writes there stays on host 2.
echo real >"$BACKUP/probe"
export HOLDFAST_HOSTS_PRIVATE_DIR=$BACKUP
[ "$("$HOSTS/run.sh" "${PREFIX}1" ls -A "$BACKUP")" = probe ] || fail "${PREFIX}1 does not see $BACKUP"
seen=$("$HOSTS/rsh.sh" "${PREFIX}2" "ls -A $BACKUP && echo private >$BACKUP/probe2") ||
  fail "rsh.sh with HOLDFAST_HOSTS_PRIVATE_DIR failed on ${PREFIX}2"
[ -z "$seen" ] || fail "${PREFIX}2 sees the real $BACKUP: $seen"
[ "$(cat "$PRIVATE/${PREFIX}2/probe2")" = private ] || fail "${PREFIX}2 did not write to its own directory"
[ ! -e "$BACKUP/probe2" ] || fail "${PREFIX}2 wrote to the real $BACKUP"
rm "$BACKUP/probe" "$PRIVATE/${PREFIX}2/probe2"

launch() {
  env "${HOST_ENV[@]}" timeout 240 "$HOSTS/run.sh" "${PREFIX}1" "$HOLDFAST" launch \
    --hostfile "$WORK/hostfile" --max-restarts 0 -- "$FMNIST" "${SETTINGS[@]}" \
    --backup-dir "$BACKUP" --keep-checkpoint --summary-json "$WORK/summary.json" "$@"
}
# private_dirs_empty: hosts 2 and 3 ran with their own directory, and nothing
# was written to it.
private_dirs_empty() {
  local i
  for i in 2 3; do
    [ -d "$PRIVATE/$PREFIX$i" ] || fail "$PREFIX$i never had a private directory"
    [ -z "$(ls -A "$PRIVATE/$PREFIX$i")" ] ||
      fail "something was written on $PREFIX$i: $(ls -A "$PRIVATE/$PREFIX$i")"
  done
}
# checkpoint_files STEP: the files of committed checkpoint STEP, one line.
checkpoint_files() { (cd "$BACKUP/ckpt-$1" && echo *); }
# nothing_committed: no checkpoint and no LATEST in the real directory.
nothing_committed() { [ ! -e "$BACKUP/LATEST" ] && ! compgen -G "$BACKUP/ckpt-*" >/dev/null; }

# ------------------------------------------------------------ chief writes all
rc=0
launch --chief-writes-all --interrupt-at-step "$INTERRUPT" >"$WORK/interrupted.out" 2>&1 || rc=$?
[ "$rc" -eq 1 ] || fail "the interrupted run ended with exit $rc, not 1"
has_line "$WORK/interrupted.out" "interrupted after step $INTERRUPT" ||
  fail "the run did not stop at step $INTERRUPT"
[ "$(latest_step "$BACKUP")" = "$SAVED" ] || fail "newest checkpoint $(latest_step "$BACKUP"), not $SAVED"
files=$(checkpoint_files "$SAVED")
[ "$files" = "MANIFEST.json shard-0-of-1.bin" ] || fail "ckpt-$SAVED holds: $files"
private_dirs_empty
say "interrupted at step $INTERRUPT: ckpt-$SAVED on ${PREFIX}1 holds $files; private dirs empty"

t=$(now_ms)
launch --chief-writes-all >"$WORK/resumed.out" 2>&1 || fail "the resumed run failed"
has_line "$WORK/resumed.out" "resuming from step $SAVED " || fail "the run did not resume from step $SAVED"
[ "$(json "$WORK/summary.json" world_size)" = 3 ] || fail "the resumed run was not 3 ranks"
[ "$(json "$WORK/summary.json" steps)" = "$STEPS" ] || fail "the resumed run did not reach step $STEPS"
[ "$(latest_step "$BACKUP")" = "$STEPS" ] || fail "no checkpoint of the last step $STEPS"
files=$(checkpoint_files "$STEPS")
[ "$files" = "MANIFEST.json shard-0-of-1.bin" ] || fail "ckpt-$STEPS holds: $files"
private_dirs_empty
got=$(json "$WORK/summary.json" weights_xxh64)
[ "$got" = "$expected" ] || fail "resumed without a shared filesystem: weights $got, uninterrupted $expected"
say "resumed from step $SAVED in $(seconds_since "$t") s: weights $got, as uninterrupted; private dirs empty"

# ------------------------------------------------------------ every rank writes
rm -rf "${BACKUP:?}"/* "${BACKUP:?}"/.[!.]* 2>/dev/null || true
rc=0
launch --interrupt-at-step "$INTERRUPT" >"$WORK/sharded.out" 2>&1 || rc=$?
[ "$rc" -eq 1 ] || fail "the interrupted run without --chief-writes-all ended with exit $rc, not 1"
warnings=$(grep -c "holdfast: warning: checkpoint ckpt-[0-9]* not committed" "$WORK/sharded.out") ||
  fail "no save failed without --chief-writes-all on private directories"
[ "$warnings" = $((INTERRUPT / 20)) ] || fail "$warnings failed save(s) reported, not $((INTERRUPT / 20))"
line=$(grep -m1 "holdfast: warning: checkpoint ckpt-20 not committed" "$WORK/sharded.out") ||
  fail "the save at step 20 did not fail"
for r in 1 2; do
  [[ $line == *"rank $r: "*"do not share the checkpoint directory"* ]] ||
    fail "the failed save does not say that rank $r does not share the directory: $line"
done
say "without --chief-writes-all: $line"
nothing_committed ||
  fail "a checkpoint was committed without the other hosts' shards: $(ls -A "$BACKUP")"
private_dirs_empty
say "without --chief-writes-all: $warnings save(s) failed with a warning naming ranks 1 and 2;" \
  "training went on; nothing committed, so a restart would begin at step 0"
