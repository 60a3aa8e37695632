#!/usr/bin/env bash
# Write an Open MPI hostfile for the test hosts.
#
#   cluster/hosts/hostfile.sh --slots 2 >hosts.txt      # every host, 2 slots each
#
# See cluster/hosts/README.md.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: cluster/hosts/hostfile.sh [--prefix P] [--slots S] [--reachable] [HOST...]

Print an Open MPI hostfile on stdout, one line `HOST slots=S` (default S=1)
for each HOST, default every host of prefix P (default hf) that up.sh made,
in order. --reachable leaves out hosts whose cable is cut (link.sh).
USAGE
}

# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SLOTS=1
REACHABLE=0
hosts=()
while [ $# -gt 0 ]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --prefix) [ $# -ge 2 ] || die "--prefix needs a value"; PREFIX=$2; shift 2 ;;
    --slots) [ $# -ge 2 ] || die "--slots needs a value"; SLOTS=$2; shift 2 ;;
    --reachable) REACHABLE=1; shift ;;
    -*) usage >&2; die "unknown option '$1'" ;;
    *) hosts+=("$1"); shift ;;
  esac
done
check_prefix
[[ $SLOTS =~ ^[1-9][0-9]*$ ]] || die "--slots must be a positive number (got '$SLOTS')"
if [ ${#hosts[@]} -eq 0 ]; then
  [ -f "$(state_dir)/hosts" ] || die "no hosts with prefix $PREFIX (run up.sh first)"
  mapfile -t hosts <"$(state_dir)/hosts"
fi
for h in "${hosts[@]}"; do
  known_host "$h" || die "$h is not a test host made by cluster/hosts/up.sh"
  if [ "$REACHABLE" = 1 ] && ! link_up "$h"; then continue; fi
  echo "$h slots=$SLOTS"
done
