#!/usr/bin/env bash
# Start a real single-node SLURM 22.05 (munged, slurmctld, slurmd) for holdfast's tests.
#
#   cluster/local-slurm/start.sh [STATE_DIR]     (default /tmp/holdfast-slurm)
#
# Idempotent: daemons that already run (by their pid files) are left alone. Installs the
# Debian packages first if they are missing (install.sh). Must run as root.
# On success prints one line, `export SLURM_CONF=<STATE_DIR>/etc/slurm.conf`, on stdout
# (progress goes to stderr), and writes the same line to <STATE_DIR>/env.sh, so both
#   eval "$(cluster/local-slurm/start.sh)"   and   . /tmp/holdfast-slurm/env.sh
# point sbatch/squeue/scontrol at this cluster.
#
# Environment (all optional):
#   HOLDFAST_SLURM_GRACE=10         GraceTime (s) of partition `low`: USR1 -> kill delay
#   HOLDFAST_SLURM_CPUS=4           CPUs the node advertises (config_overrides)
#   HOLDFAST_SLURM_PORT=6817        slurmctld port; slurmd uses PORT+1
#   HOLDFAST_SLURM_START_TIMEOUT=30 seconds to wait for each daemon and for the idle node
#   HOLDFAST_SLURM_KEEP_STATE=1     keep slurmctld's saved jobs (default: start clean, -c)
#   HOLDFAST_SLURM_NO_INSTALL=1     do not run install.sh
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

START_NS=$(date +%s%N)
elapsed_ms() { echo $((($(date +%s%N) - START_NS) / 1000000)); }
log() { echo "local-slurm: [+$(elapsed_ms) ms] $*" >&2; }
die() {
  echo "local-slurm: FAILED: $*" >&2
  exit 1
}

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

GRACE=${HOLDFAST_SLURM_GRACE:-10}
CPUS=${HOLDFAST_SLURM_CPUS:-4}
CTLD_PORT=${HOLDFAST_SLURM_PORT:-6817}
TIMEOUT=${HOLDFAST_SLURM_START_TIMEOUT:-30}
for v in GRACE CPUS CTLD_PORT TIMEOUT; do
  is_uint "${!v}" || die "$v='${!v}' is not a non-negative integer"
done
[ "$CPUS" -ge 1 ] || die "HOLDFAST_SLURM_CPUS must be >= 1"
SLURMD_PORT=$((CTLD_PORT + 1))

[ "$(id -u)" -eq 0 ] || die "must run as root (SlurmUser=root, munged is started as user munge)"

if [ "${HOLDFAST_SLURM_NO_INSTALL:-0}" != 1 ]; then
  "$HERE/install.sh" >&2 || die "package install failed (cluster/local-slurm/install.sh)"
fi
for bin in munged munge unmunge slurmctld slurmd sinfo scontrol; do
  command -v "$bin" >/dev/null || die "$bin not found; run cluster/local-slurm/install.sh"
done

STATE_DIR=${1:-${HOLDFAST_SLURM_STATE_DIR:-/tmp/holdfast-slurm}}
STATE_DIR=$(realpath -m -- "$STATE_DIR")
case "$STATE_DIR" in
  *[\|\&\ ]*) die "state dir '$STATE_DIR' must not contain spaces, '|' or '&'" ;;
esac
CONF=$STATE_DIR/etc/slurm.conf
LOG_DIR=$STATE_DIR/log
RUN_DIR=$STATE_DIR/run
HOST=$(hostname -s)
# slurmstepd listens on <SlurmdSpoolDir>/<host>_<job>.<step>: a unix socket path, at most
# 107 bytes; a longer one makes every job step fail later with an obscure error.
sock="$STATE_DIR/spool/${HOST}_4294967295.4294967295"
[ "${#sock}" -le 107 ] ||
  die "state dir path $STATE_DIR is too long for slurmstepd's sockets; use a shorter one (e.g. /tmp/holdfast-slurm)"
mkdir -p "$STATE_DIR/etc" "$STATE_DIR/state" "$STATE_DIR/spool" "$LOG_DIR" "$RUN_DIR"
chmod 755 "$STATE_DIR"
export SLURM_CONF=$CONF

# shellcheck source=SCRIPTDIR/procs.sh
. "$(dirname "${BASH_SOURCE[0]}")/procs.sh"

# wait_for SECONDS CMD...: poll CMD every 0.1 s until it succeeds or SECONDS pass.
wait_for() {
  local deadline=$(($(date +%s) + $1))
  shift
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

# ---------------------------------------------------------------- munge
munge_ok() { timeout 5 munge -n 2>/dev/null | timeout 5 unmunge >/dev/null 2>&1; }

MUNGE_LOG=/var/log/munge/munged.log
if munge_ok; then
  log "munged already running"
else
  if [ ! -s /etc/munge/munge.key ]; then
    log "creating /etc/munge/munge.key"
    mkdir -p /etc/munge
    mungekey -c -f -k /etc/munge/munge.key || die "mungekey could not create /etc/munge/munge.key"
    chown munge:munge /etc/munge /etc/munge/munge.key
    chmod 700 /etc/munge
    chmod 400 /etc/munge/munge.key
  fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  chmod 755 /run/munge
  chmod 700 /var/log/munge
  # A munged killed with -9 leaves its pid file behind; it is safe to drop when dead.
  if [ -s /run/munge/munged.pid ] && ! pid_of munged /run/munge/munged.pid >/dev/null; then
    rm -f /run/munge/munged.pid
  fi
  runuser -u munge -- /usr/sbin/munged </dev/null >>"$LOG_DIR/munged.out" 2>&1 ||
    die "munged did not start; see $MUNGE_LOG and $LOG_DIR/munged.out"
  wait_for "$TIMEOUT" munge_ok || die "munged does not answer (munge -n | unmunge); see $MUNGE_LOG"
  pid_of munged /run/munge/munged.pid >/dev/null || die "munged runs but /run/munge/munged.pid is missing; see $MUNGE_LOG"
  # Record that this script started it, so stop.sh stops it (and only it).
  cp /run/munge/munged.pid "$RUN_DIR/munged.pid"
  log "munged started (pid $(cat "$RUN_DIR/munged.pid"))"
fi

# ---------------------------------------------------------------- slurm.conf
render_conf() {
  sed -e "s|@HOSTNAME@|$HOST|g" \
    -e "s|@STATE_DIR@|$STATE_DIR|g" \
    -e "s|@CPUS@|$CPUS|g" \
    -e "s|@GRACE@|$GRACE|g" \
    -e "s|@CTLD_PORT@|$CTLD_PORT|g" \
    -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" \
    "$HERE/slurm.conf.in"
}

ctld_running=0
slurmd_running=0
pid_of slurmctld "$RUN_DIR/slurmctld.pid" >/dev/null && ctld_running=1
pid_of slurmd "$RUN_DIR/slurmd.pid" >/dev/null && slurmd_running=1

new_conf=$(render_conf) || die "could not read $HERE/slurm.conf.in"
if [ "$ctld_running" = 1 ] || [ "$slurmd_running" = 1 ]; then
  # Never change the config under running daemons.
  if [ -f "$CONF" ] && [ "$new_conf" != "$(cat "$CONF")" ]; then
    log "warning: daemons already run with $CONF, which differs from what this call would write;" \
      "run stop.sh first to apply the new settings"
  fi
else
  printf '%s\n' "$new_conf" >"$CONF.tmp"
  mv "$CONF.tmp" "$CONF"
fi
[ -f "$CONF" ] || die "no $CONF"
printf 'export SLURM_CONF=%s\n' "$CONF" >"$STATE_DIR/env.sh"

# ---------------------------------------------------------------- slurmctld, slurmd
# last_error LOG: the newest fatal (else error) line of a daemon log, without timestamp.
last_error() {
  local line
  line=$(grep -hE 'fatal|Unable to bind' "$@" 2>/dev/null | tail -n1)
  [ -n "$line" ] || line=$(grep -h 'error' "$@" 2>/dev/null | tail -n1)
  printf '%s' "${line#\[*\] }"
}

# fail_daemon NAME MESSAGE: stop what is left of NAME, then die with MESSAGE.
fail_daemon() {
  local pids
  pids=$(ours "$1")
  # shellcheck disable=SC2086  # one argument per pid
  if [ -n "$pids" ]; then kill -KILL $pids 2>/dev/null || true; fi
  rm -f "$RUN_DIR/$1.pid"
  die "$2"
}

# start_daemon NAME READY_CMD...: start NAME (it forks into the background), then wait
# until READY_CMD succeeds while NAME runs; fail fast when NAME dies or logs a fatal error.
start_daemon() {
  local name=$1 pidfile=$RUN_DIR/$1.pid log=$LOG_DIR/$1.log out=$LOG_DIR/$1.out
  shift
  local deadline=$(($(date +%s) + TIMEOUT)) err
  rm -f "$pidfile"
  if [ -f "$log" ]; then mv -f "$log" "$log.old"; fi
  if ! "$name" -f "$CONF" "${DAEMON_ARGS[@]}" </dev/null >"$out" 2>&1; then
    err=$(last_error "$log" "$out")
    fail_daemon "$name" "$name exited at start${err:+ ($err)}; see $log"
  fi
  until pid_of "$name" "$pidfile" >/dev/null && "$@"; do
    if grep -qE 'fatal|Unable to bind' "$log" "$out" 2>/dev/null ||
      { [ -s "$pidfile" ] && ! pid_of "$name" "$pidfile" >/dev/null; }; then
      err=$(last_error "$log" "$out")
      fail_daemon "$name" "$name died at start${err:+ ($err)}; see $log"
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      err=$(last_error "$log" "$out")
      fail_daemon "$name" "$name not ready within ${TIMEOUT}s${err:+ (last error: $err)}; see $log"
    fi
    sleep 0.1
  done
  log "$name started (pid $(cat "$pidfile"))"
}

ctld_up() { timeout 5 scontrol ping 2>/dev/null | grep -q 'is UP'; }

if [ "$ctld_running" = 1 ]; then
  log "slurmctld already running (pid $(cat "$RUN_DIR/slurmctld.pid"))"
else
  # -c: start without the jobs a previous (possibly killed) run left in StateSaveLocation.
  DAEMON_ARGS=(-c)
  if [ "${HOLDFAST_SLURM_KEEP_STATE:-0}" = 1 ]; then DAEMON_ARGS=(); fi
  start_daemon slurmctld ctld_up
fi

if [ "$slurmd_running" = 1 ]; then
  log "slurmd already running (pid $(cat "$RUN_DIR/slurmd.pid"))"
else
  DAEMON_ARGS=()
  start_daemon slurmd true
fi

# ---------------------------------------------------------------- node ready
# A fresh cluster reaches `idle`; one already running (or started with
# HOLDFAST_SLURM_KEEP_STATE=1) may be busy with jobs. Any suffix (`idle*`: not
# responding), `down`, `drained`, `unknown` ... means not ready.
node_ready() {
  local st
  st=$(timeout 5 sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -n1) || return 1
  case "$st" in
    idle | mixed | allocated | completing) return 0 ;;
    *) return 1 ;;
  esac
}
if ! wait_for "$TIMEOUT" node_ready; then
  st=$(timeout 5 sinfo -h -N -n "$HOST" -o '%T %E' 2>/dev/null | head -n1 || true)
  die "node $HOST not idle within ${TIMEOUT}s (state: '${st:-none}'); see $LOG_DIR/slurmd.log and $LOG_DIR/slurmctld.log"
fi

# Report the settings in force (a running cluster keeps its config).
cpus_now=$(sed -n 's/^NodeName=.* CPUs=\([0-9]*\).*/\1/p' "$CONF" | head -n1)
grace_now=$(sed -n 's/^PartitionName=low .*GraceTime=\([0-9]*\).*/\1/p' "$CONF" | head -n1)
log "ready: node $HOST, ${cpus_now} CPUs, partitions low (default, GraceTime=${grace_now}) and high; logs in $LOG_DIR"
printf 'export SLURM_CONF=%s\n' "$CONF"
