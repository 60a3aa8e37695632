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

Environment:
  HOLDFAST_HOSTS_TRACE=FILE appends a line for each call and its exit
    status to FILE (debugging).
  HOLDFAST_HOSTS_PRIVATE_DIR=PATH (off by default) gives HOST a disk of its
    own at PATH, as on a cluster without a shared filesystem: the command
    runs in a private mount namespace where PATH (an existing directory) is
    /run/holdfast-hosts/P/private/HOST, made empty on first use; the machine's
    PATH, which the host that runs mpirun (run.sh) keeps seeing, is hidden.
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
remote=(unshare --uts sh -c "hostname $host && $*")
if [ -n "${HOLDFAST_HOSTS_PRIVATE_DIR:-}" ]; then
  # The host's own disk at PATH: bound over it in a mount namespace that only
  # this command and its children (Open MPI's daemon, its ranks) live in.
  shared=$HOLDFAST_HOSTS_PRIVATE_DIR
  [ -d "$shared" ] || die "HOLDFAST_HOSTS_PRIVATE_DIR=$shared is not a directory"
  own="$STATE_ROOT/$(cluster_of "$host")/private/$host"
  mkdir -p "$own"
  # shellcheck disable=SC2016 # expanded by the inner sh
  remote=(unshare --uts --mount --propagation private sh -c \
    'hostname "$1" && mount --bind "$2" "$3" && exec sh -c "$4"' sh "$host" "$own" "$shared" "$*")
fi
if [ -z "${HOLDFAST_HOSTS_TRACE:-}" ]; then
  exec ip netns exec "$host" "${remote[@]}"
fi
# Debugging: one line per call and one per exit in the file it names.
echo "$(date +%T.%N) $$ -> $host: $*" >>"$HOLDFAST_HOSTS_TRACE"
rc=0
ip netns exec "$host" "${remote[@]}" || rc=$?
echo "$(date +%T.%N) $$ <- $host: exit $rc" >>"$HOLDFAST_HOSTS_TRACE"
exit "$rc"
