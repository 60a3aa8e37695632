#!/usr/bin/env bash
# Data-parallel training across test hosts gives the single-host result: on
# HOSTS network-namespace hosts (cluster/hosts) with SLOTS ranks each and
# THREADS threads per rank (default 1), started by `holdfast launch
# --hostfile` on the first host, fmnist_mlp ends with the same weights
# (weights_xxh64) and test accuracy as the same world size under plain mpirun
# on one host with 1 thread per rank (layout-invariant training,
# docs/layout-invariance.md). Also reports the bytes the hosts sent per step
# against the lower bound of a float all-reduce of the gradients, 2(N-1) x
# gradient bytes in all. Must run as root.
#
#   tests/multihost/train_test.sh BUILD_DIR HOSTS SLOTS [THREADS]
#
# Exit 0 on success; 1 with a "FAIL: ..." line otherwise; 77 (skip) when not
# root or iproute2 is missing.
set -euo pipefail

BUILD=$(cd "${1:?usage: $0 BUILD_DIR HOSTS SLOTS [THREADS]}" && pwd)
N=${2:?usage: $0 BUILD_DIR HOSTS SLOTS [THREADS]}
SLOTS=${3:?usage: $0 BUILD_DIR HOSTS SLOTS [THREADS]}
THREADS=${4:-1}
NAME=multihost-train-${N}x$SLOTS
PREFIX=m${N}s${SLOTS}h
if [ "$THREADS" != 1 ]; then
  NAME=$NAME-threads$THREADS
  PREFIX=m${N}s${SLOTS}t${THREADS}h
fi
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_root_and_ip

FMNIST=$BUILD/examples/fmnist_mlp
HOLDFAST=$BUILD/launcher/holdfast
W=$((N * SLOTS))
# 6000 samples, batch 50: 120 steps.
TRAINING=(--epochs 1 --train-samples 6000)
STEPS=120
# 784-256-32-10: 209514 parameters, float gradients. The layout-invariant
# default all-gathers rows and every rank's share of the gradients instead of
# all-reducing them: each host sends at least its ranks' share, G/N, per step.
GRADIENT_BYTES=$((209514 * 4))

start_hosts "$N"
"$HOSTS/hostfile.sh" --prefix "$PREFIX" --slots "$SLOTS" >"$WORK/hostfile"

run_uninterrupted "$W" weights_xxh64 "${TRAINING[@]}" --threads 1
expected=$EXPECTED
expected_accuracy=$(json "$WORK/uninterrupted.json" test_accuracy)

declare -A sent_before
for i in $(seq 1 "$N"); do sent_before[$i]=$(tx_bytes "$PREFIX$i"); done
t=$(now_ms)
env "${HOST_ENV[@]}" timeout 300 "$HOSTS/run.sh" "${PREFIX}1" "$HOLDFAST" launch \
  --hostfile "$WORK/hostfile" --max-restarts 0 -- "$FMNIST" "${TRAINING[@]}" \
  --threads "$THREADS" --summary-json "$WORK/hosts.json" >"$WORK/hosts.out" 2>&1 ||
  fail "the run on $N hosts x $SLOTS ranks x $THREADS thread(s) failed"
elapsed=$(seconds_since "$t")
has_line "$WORK/hosts.out" "rank 0 of $W .* on ${PREFIX}1" ||
  fail "rank 0 did not report running on ${PREFIX}1 in a world of $W"
read -r got got_accuracy < <(json "$WORK/hosts.json" weights_xxh64 test_accuracy)
[ "$(json "$WORK/hosts.json" world_size)" = "$W" ] || fail "world size is not $W"
[ "$(json "$WORK/hosts.json" threads)" = "$THREADS" ] || fail "threads per rank is not $THREADS"

# Every host took part (sent at least half its share of the gradients per
# step), and the bytes on the wire against what an all-reduce of the float
# gradients over N hosts must send, 2(N-1) x G in all (each host 2(N-1)/N x G
# with reduce-scatter + all-gather; ranks on one host share memory). Counted:
# whole frames on each host's eth0 during the run (start-up broadcast and
# evaluation included).
bound=$((2 * (N - 1) * GRADIENT_BYTES))
total=0
for i in $(seq 1 "$N"); do
  sent=$(($(tx_bytes "$PREFIX$i") - sent_before[$i]))
  total=$((total + sent))
  say "$PREFIX$i sent $((sent / STEPS)) bytes per step"
  [ "$sent" -gt $((GRADIENT_BYTES / N * STEPS / 2)) ] ||
    fail "$PREFIX$i sent only $sent bytes in $STEPS steps: did its ranks take part?"
done
say "all hosts: $((total / STEPS)) bytes per step = $(python3 -c \
  "print(f'{$total / $STEPS / $bound:.2f}')") x a float all-reduce's lower bound 2(N-1)G = $bound"
if [ "$got" != "$expected" ] || [ "$got_accuracy" != "$expected_accuracy" ]; then
  fail "$N hosts x $SLOTS ranks x $THREADS thread(s) ended with weights $got, test accuracy" \
    "$got_accuracy; $W ranks x 1 thread on one host with $expected, $expected_accuracy"
fi
say "$N hosts x $SLOTS ranks x $THREADS thread(s): weights $got, test accuracy $got_accuracy," \
  "as $W ranks x 1 thread on one host, in $elapsed s"
