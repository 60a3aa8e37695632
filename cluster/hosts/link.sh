#!/usr/bin/env bash
# Cut or restore a test host's network cable.
#
#   cluster/hosts/link.sh hf3 down     # pull the cable (at the switch)
#   cluster/hosts/link.sh hf3 up       # plug it back in
#
# See cluster/hosts/README.md.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: cluster/hosts/link.sh HOST down|up|status

down: set HOST's switch port down, as if its cable were pulled: nothing gets
in or out of HOST any more (its eth0 loses carrier), and processes on it go
on running, cut off. up: plug it back in. status: print "up" or "down" and
exit 0 or 1. Only for hosts made by up.sh.
USAGE
}

# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

case ${1:-} in
  -h | --help) usage; exit 0 ;;
esac
[ $# -eq 2 ] || { usage >&2; exit 2; }
host=$1
known_host "$host" || die "$host is not a test host made by cluster/hosts/up.sh"
sw=$(cluster_of "$host")-sw
case $2 in
  down) ip -n "$sw" link set "$host" down ;;
  up) ip -n "$sw" link set "$host" up ;;
  status)
    if link_up "$host"; then echo up; else
      echo down
      exit 1
    fi
    ;;
  *) usage >&2; exit 2 ;;
esac
