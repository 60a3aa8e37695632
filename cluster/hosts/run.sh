#!/usr/bin/env bash
# Run a program on a test host, as from its console.
#
#   cluster/hosts/run.sh hf1 mpirun --hostfile F -np 6 prog      (after up.sh)
#
# See cluster/hosts/README.md.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: cluster/hosts/run.sh HOST PROGRAM [ARGS...]

Run PROGRAM with ARGS exactly as given (no shell) on test host HOST made by
up.sh: in HOST's network namespace with hostname HOST. The environment and
the working directory are kept, and PROGRAM replaces this script (same pid:
signals sent to it reach PROGRAM). Unlike rsh.sh it works whether or not
HOST's cable is plugged in: it is the host's console, not the network. Use
it to run mpirun or `holdfast launch` on the first host of a job.
USAGE
}

# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

case ${1:-} in
  -h | --help) usage; exit 0 ;;
  "" | -*) usage >&2; exit 2 ;;
esac
[ $# -ge 2 ] || { usage >&2; exit 2; }
host=$1
shift
known_host "$host" || die "$host is not a test host made by cluster/hosts/up.sh"
# shellcheck disable=SC2016 # expanded by the inner sh
exec ip netns exec "$host" unshare --uts sh -c 'hostname "$0" && exec "$@"' "$host" "$@"
