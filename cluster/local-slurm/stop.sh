#!/usr/bin/env bash
# Stop the local SLURM started by start.sh:
#
#   cluster/local-slurm/stop.sh [STATE_DIR]     (default /tmp/holdfast-slurm)
#   cluster/local-slurm/stop.sh --prefix P      (on test hosts: /tmp/holdfast-slurm-P)
#
# Idempotent. Run with --help for the details.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: cluster/local-slurm/stop.sh [--prefix P | STATE_DIR]

Stop the SLURM that start.sh started with state in STATE_DIR (default
/tmp/holdfast-slurm, or $HOLDFAST_SLURM_STATE_DIR; with --prefix P, the
cluster on test hosts P1..PN: /tmp/holdfast-slurm-P). Cancels its jobs
(bounded wait), then stops every slurmd, slurmctld and the munged that start.sh
started, each by its pid file in STATE_DIR/run (SIGTERM, then SIGKILL after
$HOLDFAST_SLURM_STOP_TIMEOUT s, default 15); a munged that was already running
before start.sh is left alone. On test hosts, then removes the hosts when
start.sh made them (cluster/hosts/down.sh --prefix P), with whatever still runs
on them. Idempotent; exits 0 when nothing runs. Keeps STATE_DIR (logs, job
outputs) for inspection.
USAGE
}

log() { echo "local-slurm: $*" >&2; }

STATE_DIR=
while [ $# -gt 0 ]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --prefix) [ $# -ge 2 ] || { log "FAILED: --prefix needs a value"; exit 1; }
      STATE_DIR=/tmp/holdfast-slurm-$2; shift 2 ;;
    -*) usage >&2; log "FAILED: unknown option '$1'"; exit 1 ;;
    *) STATE_DIR=$1; shift ;;
  esac
done
STATE_DIR=${STATE_DIR:-${HOLDFAST_SLURM_STATE_DIR:-/tmp/holdfast-slurm}}
TIMEOUT=${HOLDFAST_SLURM_STOP_TIMEOUT:-15}
[[ $TIMEOUT =~ ^[0-9]+$ ]] || {
  log "FAILED: HOLDFAST_SLURM_STOP_TIMEOUT='$TIMEOUT' is not an integer"
  exit 1
}
if [ ! -d "$STATE_DIR" ]; then
  log "nothing to stop ($STATE_DIR does not exist)"
  exit 0
fi
STATE_DIR=$(cd "$STATE_DIR" && pwd -P)
RUN_DIR=$STATE_DIR/run
CONF=$STATE_DIR/etc/slurm.conf
export SLURM_CONF=$CONF

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=SCRIPTDIR/procs.sh
. "$HERE/procs.sh"

# On test hosts, clients run on the controller's host (the first node).
PREFIX=$(cat "$STATE_DIR/hosts" 2>/dev/null || true)
CTLD_NODE=$(head -n1 "$STATE_DIR/nodes" 2>/dev/null || true)
client() {
  if [ -z "$PREFIX" ]; then "$@"; else nsenter --net="/run/netns/$CTLD_NODE" "$@"; fi
}

# wait_gone PID SECONDS: true once PID has exited.
wait_gone() {
  local pid=$1 deadline=$(($(date +%s) + $2))
  local st
  while st=$(proc_state "$pid") && [ -n "$st" ] && [ "$st" != Z ]; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

status=0
# stop_daemons NAME PIDFILE [NAME PIDFILE ...]: SIGTERM to each (shutdown takes
# 1-4 s per daemon, so in parallel), bounded wait, then SIGKILL for those left.
stop_daemons() {
  local names=() pids=() files=() i pid
  while [ $# -ge 2 ]; do
    if pid=$(pid_of "$1" "$2"); then
      kill -TERM "$pid" 2>/dev/null || true
      names+=("$1")
      pids+=("$pid")
      files+=("$2")
    else
      rm -f "$2"
      # A slurmd/slurmctld of this cluster that never wrote its pid file.
      for pid in $(ours "$1"); do
        kill -TERM "$pid" 2>/dev/null || true
        names+=("$1")
        pids+=("$pid")
        files+=("$2")
      done
    fi
    shift 2
  done
  for i in "${!pids[@]}"; do
    pid=${pids[$i]}
    if ! wait_gone "$pid" "$TIMEOUT"; then
      log "${names[$i]} (pid $pid) ignored SIGTERM for ${TIMEOUT}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      if ! wait_gone "$pid" 5; then
        log "FAILED: ${names[$i]} (pid $pid) is still running"
        status=1
        continue
      fi
    fi
    rm -f "${files[$i]}"
    log "${names[$i]} stopped (pid $pid)"
  done
}

# Jobs first, while slurmctld and slurmd still run: their processes (under slurmstepd)
# would outlive the daemons. KillWait=10, so allow TERM->KILL plus a margin.
if pid_of slurmctld "$RUN_DIR/slurmctld.pid" >/dev/null && [ -f "$CONF" ] &&
  { [ -z "$PREFIX" ] || [ -e "/run/netns/$CTLD_NODE" ]; }; then
  jobs=$(client timeout 5 squeue -h -o %A 2>/dev/null || true)
  if [ -n "$jobs" ]; then
    log "cancelling jobs: $(echo "$jobs" | tr '\n' ' ')"
    # shellcheck disable=SC2086  # one argument per job id
    client timeout 10 scancel $jobs 2>/dev/null || true
    deadline=$(($(date +%s) + 20))
    while [ -n "$(client timeout 5 squeue -h -o %A 2>/dev/null || true)" ]; do
      if [ "$(date +%s)" -ge "$deadline" ]; then
        log "warning: jobs still listed after 20s: $(client timeout 5 squeue -h -o '%A %T' 2>/dev/null | tr '\n' ' ')"
        break
      fi
      sleep 0.2
    done
  fi
fi

daemons=()
for f in "$RUN_DIR"/slurmd-*.pid "$RUN_DIR"/slurmd.pid; do
  [ -e "$f" ] && daemons+=(slurmd "$f")
done
[ ${#daemons[@]} -gt 0 ] || daemons=(slurmd "$RUN_DIR/slurmd.pid") # those with no pid file
stop_daemons "${daemons[@]}" slurmctld "$RUN_DIR/slurmctld.pid" munged "$RUN_DIR/munged.pid"

# Test hosts that start.sh made go too, with what still runs on them (job steps
# whose slurmd was gone before they ended).
if [ -n "$PREFIX" ] && [ -f "$STATE_DIR/hosts.made" ]; then
  if "$HERE/../hosts/down.sh" --prefix "$PREFIX"; then
    rm -f "$STATE_DIR/hosts.made"
  else
    log "FAILED: could not remove the test hosts $PREFIX*"
    status=1
  fi
fi
exit "$status"
