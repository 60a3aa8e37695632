# shellcheck shell=bash
# Shared by the SLURM test scripts (sourced): messages, polling, job fields,
# and a local cluster that is stopped on every exit path.
#   Set NAME (message prefix), STATE_DIR and JOBS before calling start_cluster,
#   and START_ARGS for more arguments to start.sh (e.g. --hosts 3 --prefix P).
# SLURM clients run as "${CLIENT[@]}" sbatch ...: here, or on the first node
# when the cluster runs on test hosts.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LS=$ROOT/cluster/local-slurm

# shellcheck source=SCRIPTDIR/../testutil/lib.sh
. "$ROOT/tests/testutil/lib.sh"
T0=$(now_ms)
elapsed() { echo "$(seconds_since "$T0")s"; }

START_ARGS=()
CLIENT=()
job_field() {
  timeout 5 "${CLIENT[@]}" scontrol show job "$1" 2>/dev/null | tr ' ' '\n' |
    sed -n "s/^$2=//p" | head -n1
}
job_state_is() { [ "$(job_field "$1" JobState)" = "$2" ]; }

require_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "$NAME: SKIP: needs root (starts munged, slurmctld, slurmd)"
    exit 77
  fi
}

# show_log FILE: FILE indented, without progress-bar rules, at most 60 lines.
show_log() {
  say "job log:"
  sed 's/^/  | /' "$1" | grep -v '^  | -\{10\}' | head -n 60
}

# require_host_tools: skip (77) unless what test hosts need is installed.
require_host_tools() {
  local t
  for t in ip unshare nsenter python3; do
    if ! command -v "$t" >/dev/null; then
      echo "$NAME: SKIP: needs '$t' (Debian: iproute2, util-linux, python3)"
      exit 77
    fi
  done
}

# has_checkpoint JOB DIR: backup directory DIR has a committed checkpoint;
# fails the test when job JOB ended before.
has_checkpoint() {
  [ ! -f "$2/LATEST" ] || return 0
  local state
  state=$(job_field "$1" JobState)
  case $state in
    FAILED | COMPLETED | CANCELLED | TIMEOUT | NODE_FAIL) fail "job $1 ended ($state) before its first checkpoint" ;;
  esac
  return 1
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$rc" -ne 0 ]; then
    echo "$NAME: --- diagnostics (rc=$rc) ---" >&2
    for f in "$JOBS"/*.out; do
      [ -f "$f" ] && { echo "== $f" >&2; tail -n 30 "$f" >&2; }
    done
    if [ -n "${SLURM_CONF:-}" ]; then
      timeout 5 "${CLIENT[@]}" squeue -t all -o '%.6i %.9P %.8j %.10T %.10r %R' >&2 2>/dev/null ||
        true
    fi
    for f in "$STATE_DIR"/log/slurmctld.log "$STATE_DIR"/log/slurmd*.log; do
      [ -f "$f" ] && { echo "== $f (last 30 lines)" >&2; tail -n 30 "$f" >&2; }
    done
  fi
  timeout 60 "$LS/stop.sh" "$STATE_DIR" || echo "$NAME: stop.sh failed" >&2
  exit "$rc"
}

# Installs what is missing, starts the cluster (cluster/local-slurm/start.sh
# START_ARGS... STATE_DIR), exports its environment (SLURM_CONF, ...), and
# arranges for cleanup on exit.
start_cluster() {
  rm -rf "$JOBS"  # no stale outputs in the diagnostics
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  "$LS/install.sh"
  local t out
  t=$(now_ms)
  out=$(timeout 120 "$LS/start.sh" "${START_ARGS[@]}" "$STATE_DIR") || fail "start.sh failed (see its message above)"
  say "start.sh took $(($(now_ms) - t)) ms"
  eval "$out"
  [ -f "${SLURM_CONF:-}" ] || fail "start.sh printed no usable SLURM_CONF line: '$out'"
  HOST_NETNS=()
  if [ -f "$STATE_DIR/hosts" ]; then
    CLIENT=("$ROOT/cluster/hosts/run.sh" "$(head -n1 "$STATE_DIR/nodes")")
    # The hosts' network namespaces, to find anything left in them at the end.
    local node
    while read -r node; do
      HOST_NETNS+=("net:[$(stat -L -c %i "/run/netns/$node")]")
    done <"$STATE_DIR/nodes"
  fi
  mkdir -p "$JOBS"
}

# stop_cluster_and_check: runs stop.sh, then fails unless nothing of the
# cluster is left: no process in a test host's network namespace or with
# STATE_DIR on its command line (daemons; ranks, whose files are under it), no
# test host. Sets STOP_MS to the time stop.sh took.
stop_cluster_and_check() {
  local t d ns cmd id left
  t=$(now_ms)
  timeout 60 "$LS/stop.sh" "$STATE_DIR" 2>"$JOBS/stop.out" || fail "stop.sh failed: $(cat "$JOBS/stop.out")"
  # shellcheck disable=SC2034 # for the test's report
  STOP_MS=$(($(now_ms) - t))
  if [ -f "$STATE_DIR/hosts" ]; then
    left=$(ip netns list | awk '{print $1}' | grep -E "^$(cat "$STATE_DIR/hosts")([0-9]+|-sw)$" || true)
    [ -z "$left" ] || fail "test hosts left after stop.sh: $left"
  fi
  for d in /proc/[0-9]*; do
    ns=$(readlink "$d/ns/net" 2>/dev/null) || continue
    cmd=$(tr '\0' ' ' <"$d/cmdline" 2>/dev/null) || continue
    for id in "${HOST_NETNS[@]}"; do
      [ "$ns" != "$id" ] || fail "process ${d#/proc/} ($cmd) is still in a test host's network namespace"
    done
    [[ $cmd != *"$STATE_DIR"* ]] || fail "process ${d#/proc/} ($cmd) of the cluster is still running"
  done
}
