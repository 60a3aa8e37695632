#!/usr/bin/env bash
# Start a real SLURM 22.05 (munged, slurmctld, slurmd) for holdfast's tests: on this
# machine alone (one node), or on N test hosts made of network namespaces (one slurmd
# each; see cluster/hosts).
#
#   cluster/local-slurm/start.sh [STATE_DIR]                       one node
#   cluster/local-slurm/start.sh --hosts N [--prefix P] [STATE_DIR] N nodes P1..PN
#
# Idempotent. Run with --help for the details.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: cluster/local-slurm/start.sh [--hosts N [--prefix P]] [STATE_DIR]

Start a real SLURM 22.05 (munged, slurmctld, slurmd; Debian packages, installed
by install.sh when missing) with partitions `low` (default, preemptible: requeue)
and `high`. Must run as root. Idempotent: daemons that already run (by their pid
files) are kept, and so is their config.

Without --hosts: one node, this machine, over 127.0.0.1; STATE_DIR defaults to
/tmp/holdfast-slurm (or $HOLDFAST_SLURM_STATE_DIR). Uses the machine's munged
(/run/munge), started if none answers.

--hosts N: N nodes P1..PN, the test hosts of cluster/hosts (made with
cluster/hosts/up.sh N --prefix P when missing; P defaults to hf): one slurmd in
each host's network namespace, with its own hostname and /etc/hosts;
slurmctld on P1 (at P1's address); a munged of this cluster's own, whose
socket lies in STATE_DIR (a unix socket: every host reaches it). STATE_DIR
defaults to /tmp/holdfast-slurm-P. Clients must run on a host, e.g.
  cluster/hosts/run.sh P1 sbatch ...
stop.sh --prefix P stops the cluster (and removes the hosts if this made them).

On success prints `export SLURM_CONF=STATE_DIR/etc/slurm.conf` on stdout
(progress on stderr), and writes it to STATE_DIR/env.sh, so that
  eval "$(cluster/local-slurm/start.sh)"
points sbatch, squeue and scontrol at the cluster.

Environment (all optional):
  HOLDFAST_SLURM_GRACE=10         GraceTime (s) of partition `low`: USR1 -> kill delay
  HOLDFAST_SLURM_CPUS=4           CPUs each node advertises (config_overrides)
  HOLDFAST_SLURM_PORT=6817        slurmctld port; slurmd uses PORT+1
  HOLDFAST_SLURM_START_TIMEOUT=30 seconds to wait for each daemon and for the idle nodes
  HOLDFAST_SLURM_KEEP_STATE=1     keep slurmctld's saved jobs (default: start clean, -c)
  HOLDFAST_SLURM_NO_INSTALL=1     do not run install.sh
See cluster/local-slurm/README.md.
USAGE
}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HOSTS_DIR=$(cd "$HERE/../hosts" && pwd)

START_NS=$(date +%s%N)
elapsed_ms() { echo $((($(date +%s%N) - START_NS) / 1000000)); }
log() { echo "local-slurm: [+$(elapsed_ms) ms] $*" >&2; }
die() {
  echo "local-slurm: FAILED: $*" >&2
  exit 1
}

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

N_HOSTS=0
PREFIX=hf
STATE_DIR=
while [ $# -gt 0 ]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --hosts) [ $# -ge 2 ] || die "--hosts needs a number"; N_HOSTS=$2; shift 2 ;;
    --prefix) [ $# -ge 2 ] || die "--prefix needs a value"; PREFIX=$2; shift 2 ;;
    -*) usage >&2; die "unknown option '$1'" ;;
    *) [ -z "$STATE_DIR" ] || die "one state dir only"; STATE_DIR=$1; shift ;;
  esac
done
if ! is_uint "$N_HOSTS" || [ "$N_HOSTS" -gt 200 ]; then
  die "--hosts must be a number of hosts from 1 to 200 (got '$N_HOSTS')"
fi

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
for bin in munged munge unmunge slurmctld slurmd sinfo scontrol nsenter unshare; do
  command -v "$bin" >/dev/null || die "$bin not found; run cluster/local-slurm/install.sh"
done

if [ "$N_HOSTS" -gt 0 ]; then
  DEFAULT_STATE_DIR=/tmp/holdfast-slurm-$PREFIX
else
  DEFAULT_STATE_DIR=${HOLDFAST_SLURM_STATE_DIR:-/tmp/holdfast-slurm}
fi
STATE_DIR=$(realpath -m -- "${STATE_DIR:-$DEFAULT_STATE_DIR}")
case "$STATE_DIR" in
  *[\|\&\ ]*) die "state dir '$STATE_DIR' must not contain spaces, '|' or '&'" ;;
esac
CONF=$STATE_DIR/etc/slurm.conf
LOG_DIR=$STATE_DIR/log
RUN_DIR=$STATE_DIR/run
mkdir -p "$STATE_DIR/etc" "$STATE_DIR/state" "$LOG_DIR" "$RUN_DIR"
chmod 755 "$STATE_DIR"
export SLURM_CONF=$CONF

# shellcheck source=SCRIPTDIR/procs.sh
. "$HERE/procs.sh"

# wait_for SECONDS CMD...: poll CMD every 0.1 s until it succeeds or SECONDS pass.
wait_for() {
  local deadline=$(($(date +%s) + $1))
  shift
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

# ---------------------------------------------------------------- nodes
# NODES: the node names; ADDRS: their addresses; CTLD_NODE runs slurmctld.
# on_node NODE CMD...: runs CMD as a process of NODE (for the daemons);
# client CMD...: runs a SLURM client where it reaches slurmctld.
if [ "$N_HOSTS" -eq 0 ]; then
  rm -f "$STATE_DIR/hosts" "$STATE_DIR/hosts.made"
  HOSTS_ENV=
  NODES=("$(hostname -s)")
  ADDRS=(127.0.0.1)
  on_node() { shift; "$@"; }
  client() { "$@"; }
  MUNGE_SOCKET=
else
  made=0
  [ -e "/run/netns/${PREFIX}1" ] || made=1
  HOSTS_ENV=$("$HOSTS_DIR/up.sh" "$N_HOSTS" --prefix "$PREFIX") ||
    die "cluster/hosts/up.sh $N_HOSTS --prefix $PREFIX failed"
  echo "$PREFIX" >"$STATE_DIR/hosts"
  # stop.sh removes the hosts when this script made them (now or in an earlier call).
  if [ "$made" = 1 ]; then touch "$STATE_DIR/hosts.made"; fi
  NODES=()
  ADDRS=()
  for i in $(seq 1 "$N_HOSTS"); do
    NODES+=("$PREFIX$i")
    addr=$(ip -n "$PREFIX$i" -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1 | head -n1)
    [ -n "$addr" ] || die "host $PREFIX$i has no IPv4 address on eth0"
    ADDRS+=("$addr")
  done
  # The host's own network, hostname and /etc/hosts (as `ip netns exec` would
  # give it), but not `ip netns exec` itself: its remount of /sys breaks slurmd.
  on_node() {
    # shellcheck disable=SC2016 # expanded by the inner sh
    nsenter --net="/run/netns/$1" unshare --mount --uts sh -c \
      'mount --bind "/etc/netns/$0/hosts" /etc/hosts &&
       mount --bind "/etc/netns/$0/resolv.conf" /etc/resolv.conf && hostname "$0" && exec "$@"' "$@"
  }
  client() { nsenter --net="/run/netns/${NODES[0]}" "$@"; }
  MUNGE_SOCKET=$STATE_DIR/munge/munge.socket
fi
CTLD_NODE=${NODES[0]}
printf '%s\n' "${NODES[@]}" >"$STATE_DIR/nodes"

# slurmstepd listens on <SlurmdSpoolDir>/<node>_<job>.<step>: a unix socket path, at
# most 107 bytes; a longer one makes every job step fail later with an obscure error.
for node in "${NODES[@]}"; do
  sock="$STATE_DIR/spool/$node/${node}_4294967295.4294967295"
  [ "${#sock}" -le 107 ] ||
    die "state dir path $STATE_DIR is too long for slurmstepd's sockets; use a shorter one (e.g. /tmp/holdfast-slurm)"
  mkdir -p "$STATE_DIR/spool/$node" "$STATE_DIR/tmp/$node"
done
chmod 1777 "$STATE_DIR/tmp"/*

# ---------------------------------------------------------------- munge
# One node: the machine's munged. Test hosts: a munged of this cluster's own, its
# socket, pid, seed and log in STATE_DIR/munge (stop.sh stops it with the cluster).
MUNGE_CLIENT_ARGS=()
MUNGED_ARGS=()
MUNGE_PIDFILE=/run/munge/munged.pid
MUNGE_LOG=/var/log/munge/munged.log
if [ -n "$MUNGE_SOCKET" ]; then
  MUNGE_DIR=$(dirname "$MUNGE_SOCKET")
  MUNGE_PIDFILE=$MUNGE_DIR/munged.pid
  MUNGE_LOG=$MUNGE_DIR/munged.log
  mkdir -p "$MUNGE_DIR"
  chown munge:munge "$MUNGE_DIR"
  chmod 755 "$MUNGE_DIR"
  MUNGE_CLIENT_ARGS=(-S "$MUNGE_SOCKET")
  MUNGED_ARGS=(--socket="$MUNGE_SOCKET" --pid-file="$MUNGE_PIDFILE"
    --seed-file="$MUNGE_DIR/munged.seed" --log-file="$MUNGE_LOG")
fi
munge_ok() {
  timeout 5 munge "${MUNGE_CLIENT_ARGS[@]}" -n 2>/dev/null |
    timeout 5 unmunge "${MUNGE_CLIENT_ARGS[@]}" >/dev/null 2>&1
}

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
  if [ -s "$MUNGE_PIDFILE" ] && ! pid_of munged "$MUNGE_PIDFILE" >/dev/null; then
    rm -f "$MUNGE_PIDFILE"
  fi
  runuser -u munge -- /usr/sbin/munged "${MUNGED_ARGS[@]}" </dev/null >>"$LOG_DIR/munged.out" 2>&1 ||
    die "munged did not start; see $MUNGE_LOG and $LOG_DIR/munged.out"
  wait_for "$TIMEOUT" munge_ok || die "munged does not answer (munge -n | unmunge); see $MUNGE_LOG"
  pid_of munged "$MUNGE_PIDFILE" >/dev/null || die "munged runs but $MUNGE_PIDFILE is missing; see $MUNGE_LOG"
  # Record that this script started it, so stop.sh stops it (and only it).
  cp "$MUNGE_PIDFILE" "$RUN_DIR/munged.pid"
  log "munged started (pid $(cat "$RUN_DIR/munged.pid"))"
fi

# ---------------------------------------------------------------- slurm.conf
node_lines() {
  local i
  for i in "${!NODES[@]}"; do
    echo "NodeName=${NODES[$i]} NodeAddr=${ADDRS[$i]} CPUs=$CPUS State=UNKNOWN"
  done
}
render_conf() {
  local conf nodes
  conf=$(sed -e "s|@CTLD_HOST@|$CTLD_NODE|g" \
    -e "s|@CTLD_ADDR@|${ADDRS[0]}|g" \
    -e "s|@AUTH_INFO@|cred_expire=10${MUNGE_SOCKET:+,socket=$MUNGE_SOCKET}|g" \
    -e "s|@STATE_DIR@|$STATE_DIR|g" \
    -e "s|@GRACE@|$GRACE|g" \
    -e "s|@CTLD_PORT@|$CTLD_PORT|g" \
    -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" \
    "$HERE/slurm.conf.in") || return 1
  nodes=$(node_lines)
  printf '%s\n' "${conf//@NODES@/$nodes}"
}

ctld_running=0
slurmd_running=0
pid_of slurmctld "$RUN_DIR/slurmctld.pid" >/dev/null && ctld_running=1
for node in "${NODES[@]}"; do
  pid_of slurmd "$RUN_DIR/slurmd-$node.pid" >/dev/null && slurmd_running=1
done

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
# The clients' environment; on test hosts also Open MPI's (up.sh's), for jobs.
printf 'export SLURM_CONF=%s\n%s' "$CONF" "${HOSTS_ENV:+$HOSTS_ENV$'\n'}" >"$STATE_DIR/env.sh"

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
  rm -f "$RUN_DIR/$1"*.pid
  die "$2"
}

# start_daemon NODE NAME FILE READY_CMD...: start NAME on NODE (it forks into the
# background; pid file run/FILE.pid, log log/FILE.log), then wait until READY_CMD
# succeeds while NAME runs; fail fast when NAME dies or logs a fatal error.
start_daemon() {
  local node=$1 name=$2 pidfile=$RUN_DIR/$3.pid log=$LOG_DIR/$3.log out=$LOG_DIR/$3.out
  shift 3
  local deadline=$(($(date +%s) + TIMEOUT)) err
  rm -f "$pidfile"
  if [ -f "$log" ]; then mv -f "$log" "$log.old"; fi
  if ! on_node "$node" "$name" -f "$CONF" "${DAEMON_ARGS[@]}" </dev/null >"$out" 2>&1; then
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
  log "$name started on $node (pid $(cat "$pidfile"))"
}

ctld_up() { client timeout 5 scontrol ping 2>/dev/null | grep -q 'is UP'; }

if [ "$ctld_running" = 1 ]; then
  log "slurmctld already running (pid $(cat "$RUN_DIR/slurmctld.pid"))"
else
  # -c: start without the jobs a previous (possibly killed) run left in StateSaveLocation.
  DAEMON_ARGS=(-c)
  if [ "${HOLDFAST_SLURM_KEEP_STATE:-0}" = 1 ]; then DAEMON_ARGS=(); fi
  start_daemon "$CTLD_NODE" slurmctld slurmctld ctld_up
fi

for node in "${NODES[@]}"; do
  if pid_of slurmd "$RUN_DIR/slurmd-$node.pid" >/dev/null; then
    log "slurmd already running on $node (pid $(cat "$RUN_DIR/slurmd-$node.pid"))"
  else
    DAEMON_ARGS=(-N "$node")
    start_daemon "$node" slurmd "slurmd-$node" true
  fi
done

# ---------------------------------------------------------------- nodes ready
# A fresh cluster reaches `idle`; one already running (or started with
# HOLDFAST_SLURM_KEEP_STATE=1) may be busy with jobs. Any suffix (`idle*`: not
# responding), `down`, `drained`, `unknown` ... means not ready.
nodes_ready() {
  local states
  states=$(client timeout 5 sinfo -h -N -o '%N %T' 2>/dev/null) || return 1
  for node in "${NODES[@]}"; do
    case "$(awk -v n="$node" '$1 == n {print $2; exit}' <<<"$states")" in
      idle | mixed | allocated | completing) ;;
      *) return 1 ;;
    esac
  done
}
if ! wait_for "$TIMEOUT" nodes_ready; then
  st=$(client timeout 5 sinfo -h -N -o '%N %T %E' 2>/dev/null | tr '\n' ';' || true)
  die "nodes ${NODES[*]} not all idle within ${TIMEOUT}s (states: '${st:-none}'); see $LOG_DIR/slurmd-*.log and $LOG_DIR/slurmctld.log"
fi

# Report the settings in force (a running cluster keeps its config).
cpus_now=$(sed -n 's/^NodeName=.* CPUs=\([0-9]*\).*/\1/p' "$CONF" | head -n1)
grace_now=$(sed -n 's/^PartitionName=low .*GraceTime=\([0-9]*\).*/\1/p' "$CONF" | head -n1)
log "ready: node(s) ${NODES[*]}, ${cpus_now} CPUs each, slurmctld on $CTLD_NODE," \
  "partitions low (default, GraceTime=${grace_now}) and high; logs in $LOG_DIR"
cat "$STATE_DIR/env.sh"
