#!/usr/bin/env bash
# Stop the local SLURM started by start.sh:
#
#   cluster/local-slurm/stop.sh [STATE_DIR]     (default /tmp/holdfast-slurm)
#
# Cancels the cluster's jobs (bounded wait), then stops slurmd, slurmctld and the munged
# that start.sh started, each by the pid file in STATE_DIR/run (a munged that was already
# running before start.sh is left alone). Idempotent; exits 0 when nothing runs.
# Keeps STATE_DIR (logs, job outputs) for inspection.
#
# Environment: HOLDFAST_SLURM_STOP_TIMEOUT=15 seconds to wait for each daemon before SIGKILL.
set -euo pipefail

log() { echo "local-slurm: $*" >&2; }

STATE_DIR=${1:-${HOLDFAST_SLURM_STATE_DIR:-/tmp/holdfast-slurm}}
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

# shellcheck source=SCRIPTDIR/procs.sh
. "$(dirname "${BASH_SOURCE[0]}")/procs.sh"

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
if pid_of slurmctld "$RUN_DIR/slurmctld.pid" >/dev/null && [ -f "$CONF" ]; then
  jobs=$(timeout 5 squeue -h -o %A 2>/dev/null || true)
  if [ -n "$jobs" ]; then
    log "cancelling jobs: $(echo "$jobs" | tr '\n' ' ')"
    # shellcheck disable=SC2086  # one argument per job id
    timeout 10 scancel $jobs 2>/dev/null || true
    deadline=$(($(date +%s) + 20))
    while [ -n "$(timeout 5 squeue -h -o %A 2>/dev/null || true)" ]; do
      if [ "$(date +%s)" -ge "$deadline" ]; then
        log "warning: jobs still listed after 20s: $(timeout 5 squeue -h -o '%A %T' 2>/dev/null | tr '\n' ' ')"
        break
      fi
      sleep 0.2
    done
  fi
fi

stop_daemons slurmd "$RUN_DIR/slurmd.pid" slurmctld "$RUN_DIR/slurmctld.pid" \
  munged "$RUN_DIR/munged.pid"
exit "$status"
