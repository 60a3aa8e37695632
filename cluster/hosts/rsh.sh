#!/usr/bin/env bash
# The "ssh" of the test hosts: an Open MPI launch agent (plm_rsh_agent).
#
#   cluster/hosts/rsh.sh HOST COMMAND...      e.g. rsh.sh hf2 hostname
#
# See cluster/hosts/README.md.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: cluster/hosts/rsh.sh [ssh options] HOST COMMAND...

Run COMMAND, a remote shell command line (its words joined by spaces and read
by sh, as ssh does), on test host HOST made by up.sh: in HOST's network
namespace, with its own UTS namespace whose hostname is HOST. Meant as Open
MPI's launch agent (--mca plm_rsh_agent .../rsh.sh, which up.sh exports):
mpirun calls it as `rsh.sh HOST orted ...`. Leading ssh-style options (-x,
-o X, ...) are ignored.

Like ssh to a real host, it fails with exit 255 and
  ssh: connect to host HOST port 22: No route to host
when HOST's cable is cut (cluster/hosts/link.sh HOST down), or the caller's
own when it runs on a test host. So `rsh.sh HOST true` is a reachability
probe. It refuses hosts that up.sh did not make: nothing else is ever run.

Environment: HOLDFAST_HOSTS_TRACE=FILE appends a line for each call and
its exit status to FILE (debugging).
USAGE
}

# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

while [ $# -gt 0 ]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
    -[bcDEeFIiJLlmOopQRSWw]) shift 2 ;; # ssh options that take a value
    -*) shift ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || { usage >&2; exit 255; }
host=$1
shift
[ $# -ge 1 ] || die "no command for $host (no interactive logins)"
known_host "$host" || {
  echo "rsh.sh: $host is not a test host made by cluster/hosts/up.sh" >&2
  exit 255
}
unreachable() {
  echo "ssh: connect to host $host port 22: No route to host" >&2
  exit 255
}
link_up "$host" || unreachable
# The caller's side of the wire, when it runs on a test host itself.
if self=$(ip netns identify "$$" 2>/dev/null) && [ -n "$self" ] && [ "$self" != "$host" ] &&
  known_host "$self"; then
  link_up "$self" || unreachable
fi
# A remote command line, as sshd would hand it to the login shell.
if [ -z "${HOLDFAST_HOSTS_TRACE:-}" ]; then
  exec ip netns exec "$host" unshare --uts sh -c "hostname $host && $*"
fi
# Debugging: one line per call and one per exit in the file it names.
echo "$(date +%T.%N) $$ -> $host: $*" >>"$HOLDFAST_HOSTS_TRACE"
rc=0
ip netns exec "$host" unshare --uts sh -c "hostname $host && $*" || rc=$?
echo "$(date +%T.%N) $$ <- $host: exit $rc" >>"$HOLDFAST_HOSTS_TRACE"
exit "$rc"
