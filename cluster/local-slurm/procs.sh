# shellcheck shell=bash
# Process lookups shared by start.sh and stop.sh (sourced; they set CONF first).

# proc_state PID: the state letter in /proc/PID/stat (R, S, Z, ...), empty when gone.
proc_state() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1; }

# pid_of NAME PIDFILE: print the pid when the pid file names a live NAME process.
pid_of() {
  local name=$1 pidfile=$2 pid comm
  [ -s "$pidfile" ] || return 1
  pid=$(head -n1 "$pidfile" | tr -dc 0-9)
  [ -n "$pid" ] || return 1
  comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
  # A killed daemon may linger as a zombie until its parent (pid 1) reaps it.
  [ "$(proc_state "$pid")" != Z ] || return 1
  [ "$comm" = "$name" ] || return 1
  echo "$pid"
}

# ours NAME: pids of NAME processes started with `-f $CONF` (this cluster's daemons),
# also those that died before writing their pid file.
ours() {
  local d pid comm
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    comm=
    read -r comm 2>/dev/null <"$d/comm" || true # a builtin: no fork per process
    [ "$comm" = "$1" ] || continue
    [ "$(proc_state "$pid")" != Z ] || continue
    tr '\0' ' ' <"$d/cmdline" 2>/dev/null | grep -qF -- " -f $CONF " && echo "$pid"
  done
  return 0
}
