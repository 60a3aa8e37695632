# shellcheck shell=bash
# Shared by the multi-host test scripts (sourced): messages, skips, and test
# hosts (cluster/hosts) that are removed on every exit path.
#   Set NAME (message prefix) and PREFIX (the hosts' name prefix) first.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HOSTS=$ROOT/cluster/hosts
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1

# shellcheck source=SCRIPTDIR/../testutil/lib.sh
. "$ROOT/tests/testutil/lib.sh"

require_root_and_ip() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "$NAME: SKIP: needs root (creates network namespaces)"
    exit 77
  fi
  local t
  for t in ip unshare python3; do
    if ! command -v "$t" >/dev/null; then
      echo "$NAME: SKIP: needs '$t' (Debian: iproute2, util-linux, python3)"
      exit 77
    fi
  done
}

# host_diagnostics: what runs on each test host, its connections and neighbours.
host_diagnostics() {
  local ns pids
  for ns in $(ip netns list | awk '{print $1}' | grep -E "^${PREFIX}([0-9]+|-sw)$"); do
    echo "== host $ns"
    pids=$(ip netns pids "$ns" | tr '\n' ',')
    [ -z "$pids" ] || ps -o pid,stat,etime,args -p "${pids%,}" | cut -c1-200
    ip -n "$ns" -br link
    ip -n "$ns" neigh
    ip netns exec "$ns" ss -tanp 2>/dev/null | head -20
  done
}

# cleanup (the EXIT trap): diagnostics when the test failed, then the test's
# own test_cleanup function if it defines one, then the hosts and WORK go.
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$rc" -ne 0 ] && [ -n "${WORK:-}" ]; then
    echo "$NAME: --- diagnostics (rc=$rc) ---" >&2
    for f in "$WORK"/*.out; do
      [ -f "$f" ] && { echo "== $f (last 40 lines)" >&2; tail -n 40 "$f" >&2; }
    done
    host_diagnostics >&2
  fi
  if declare -F test_cleanup >/dev/null; then
    test_cleanup || echo "$NAME: test_cleanup failed" >&2
  fi
  "$HOSTS/down.sh" --prefix "$PREFIX" >/dev/null 2>&1 ||
    echo "$NAME: down.sh --prefix $PREFIX failed" >&2
  # A rank that was still saving when it was stopped may add files meanwhile.
  [ -z "${WORK:-}" ] || rm -rf "$WORK" 2>/dev/null || { sleep 1 && rm -rf "$WORK"; } ||
    echo "$NAME: could not remove $WORK" >&2
  exit "$rc"
}

# start_hosts N: N test hosts $PREFIX1..N; HOST_ENV holds the variables up.sh
# exports (for `env "${HOST_ENV[@]}" ...`); WORK is a fresh scratch directory
# that every host sees (a shared filesystem). Both go away on exit.
start_hosts() {
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  WORK=$(mktemp -d "/tmp/holdfast-$NAME.XXXXXX")
  "$HOSTS/down.sh" --prefix "$PREFIX" >/dev/null 2>&1 || true # a crashed earlier run
  local t out
  t=$(now_ms)
  out=$("$HOSTS/up.sh" "$1" --prefix "$PREFIX" 2>"$WORK/up.out") ||
    fail "up.sh $1 --prefix $PREFIX failed: $(cat "$WORK/up.out")"
  HOST_ENV=()
  local line
  while read -r line; do
    line=${line#export }
    line=${line//\"/}
    HOST_ENV+=("$line")
  done <<<"$out"
  say "$1 hosts up in $(($(now_ms) - t)) ms"
}

# run_uninterrupted NP KEY ARGS...: the run a test compares with: $FMNIST
# ARGS on NP ranks under plain mpirun on this machine (no test hosts). Sets
# EXPECTED to KEY of its JSON summary and says so.
run_uninterrupted() {
  local np=$1 key=$2 t
  shift 2
  t=$(now_ms)
  timeout 300 mpirun --oversubscribe -np "$np" "$FMNIST" "$@" \
    --summary-json "$WORK/uninterrupted.json" >"$WORK/uninterrupted.out" 2>&1 ||
    fail "the uninterrupted reference run (mpirun -np $np, one host) failed"
  EXPECTED=$(json "$WORK/uninterrupted.json" "$key")
  say "uninterrupted, $np ranks on one host: $key $EXPECTED in $(seconds_since "$t") s"
}

# tx_bytes HOST: bytes HOST has sent on its eth0.
tx_bytes() { ip netns exec "$1" cat /sys/class/net/eth0/statistics/tx_bytes; }

# host_pid HOST NAME: the pid of the one process named NAME on test host HOST;
# fails when there is none or more than one.
host_pid() {
  local pid found=()
  for pid in $(ip netns pids "$1"); do
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] && found+=("$pid")
  done
  [ "${#found[@]}" -eq 1 ] && echo "${found[0]}"
}

# latest_step DIR: the step of the newest committed checkpoint in backup
# directory DIR, from its LATEST (0 when none).
latest_step() {
  local latest
  latest=$(cat "$1/LATEST" 2>/dev/null) || latest=
  latest=${latest#ckpt-}
  echo "${latest:-0}"
}
# has_checkpoint_after DIR STEP: DIR has a checkpoint newer than STEP.
has_checkpoint_after() { [ "$(latest_step "$1")" -gt "$2" ]; }
