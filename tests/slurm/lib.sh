# shellcheck shell=bash
# Shared by the SLURM test scripts (sourced): messages, polling, job fields,
# and a local cluster that is stopped on every exit path.
#   Set NAME (message prefix), STATE_DIR and JOBS before calling start_cluster.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LS=$ROOT/cluster/local-slurm

# shellcheck source=SCRIPTDIR/../testutil/lib.sh
. "$ROOT/tests/testutil/lib.sh"
T0=$(now_ms)
elapsed() { echo "$(seconds_since "$T0")s"; }

job_field() { timeout 5 scontrol show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n1; }
job_state_is() { [ "$(job_field "$1" JobState)" = "$2" ]; }

require_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "$NAME: SKIP: needs root (starts munged, slurmctld, slurmd)"
    exit 77
  fi
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
      timeout 5 squeue -t all -o '%.6i %.9P %.8j %.10T %.10r %R' >&2 2>/dev/null || true
    fi
    for f in "$STATE_DIR"/log/slurmctld.log "$STATE_DIR"/log/slurmd.log; do
      [ -f "$f" ] && { echo "== $f (last 30 lines)" >&2; tail -n 30 "$f" >&2; }
    done
  fi
  timeout 60 "$LS/stop.sh" "$STATE_DIR" || echo "$NAME: stop.sh failed" >&2
  exit "$rc"
}

# Installs what is missing, starts the cluster, exports SLURM_CONF, and
# arranges for cleanup on exit.
start_cluster() {
  rm -rf "$JOBS"  # no stale outputs in the diagnostics
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  "$LS/install.sh"
  local t out
  t=$(now_ms)
  out=$(timeout 120 "$LS/start.sh" "$STATE_DIR") || fail "start.sh failed (see its message above)"
  say "start.sh took $(($(now_ms) - t)) ms"
  eval "$out"
  [ -f "${SLURM_CONF:-}" ] || fail "start.sh printed no usable SLURM_CONF line: '$out'"
  mkdir -p "$JOBS"
}
