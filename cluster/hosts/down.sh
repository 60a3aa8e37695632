#!/usr/bin/env bash
# Remove the test hosts made by up.sh, and whatever runs on them.
#
#   cluster/hosts/down.sh [--prefix P]
#
# See cluster/hosts/README.md. Needs root.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: cluster/hosts/down.sh [--prefix P] [--timeout S]

Remove the test hosts of prefix P (default hf): every process running in
them gets SIGTERM, then SIGKILL after S seconds (default 3); then the
namespaces P<i> and P-sw (with their links and the bridge), /etc/netns/P<i>
and /run/holdfast-hosts/P. Works from the names alone, so it also cleans up
after a crashed up.sh or a killed test. Idempotent: exits 0 when nothing is
left.
USAGE
}

# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TIMEOUT=3
while [ $# -gt 0 ]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --prefix) [ $# -ge 2 ] || die "--prefix needs a value"; PREFIX=$2; shift 2 ;;
    --prefix=*) PREFIX=${1#--prefix=}; shift ;;
    --timeout) [ $# -ge 2 ] || die "--timeout needs a value"; TIMEOUT=$2; shift 2 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
done
[[ $TIMEOUT =~ ^[0-9]+$ ]] || die "--timeout must be whole seconds (got '$TIMEOUT')"
check_prefix
[ "$(id -u)" -eq 0 ] || die "needs root"
command -v ip >/dev/null || die "needs 'ip' (Debian: iproute2)"

mapfile -t namespaces < <(our_namespaces)

# pids_in_namespaces: every process still in one of them.
pids_in_namespaces() {
  local ns
  for ns in "${namespaces[@]}"; do ip netns pids "$ns" 2>/dev/null || true; done
}

pids=$(pids_in_namespaces)
if [ -n "$pids" ]; then
  log "stopping $(echo "$pids" | wc -w) process(es) on ${namespaces[*]}"
  # shellcheck disable=SC2086 # a list of pids
  kill -TERM $pids 2>/dev/null || true
  deadline=$(($(date +%s) + TIMEOUT))
  while [ -n "$(pids_in_namespaces)" ] && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.1; done
  pids=$(pids_in_namespaces)
  # shellcheck disable=SC2086
  [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
fi

for ns in "${namespaces[@]}"; do
  ip netns del "$ns" 2>/dev/null || log "could not delete namespace $ns"
  if [[ $ns =~ ^${PREFIX}[0-9]+$ ]]; then rm -rf "/etc/netns/$ns"; fi
done
# /etc/netns entries whose namespace was already gone.
for d in /etc/netns/"$PREFIX"[0-9]*; do
  [ -d "$d" ] && [[ ${d#/etc/netns/} =~ ^${PREFIX}[0-9]+$ ]] && rm -rf "$d"
done
rmdir /etc/netns 2>/dev/null || true
rm -rf "$(state_dir)"
rmdir "$STATE_ROOT" 2>/dev/null || true

left=$(our_namespaces)
[ -z "$left" ] || die "namespaces left: $left"
log "prefix $PREFIX: removed ${#namespaces[@]} namespace(s)${namespaces[*]:+ (${namespaces[*]})}"
