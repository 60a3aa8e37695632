# shellcheck shell=bash
# Shared by the cluster/hosts scripts (sourced): names, state and checks for the
# test hosts. A cluster of prefix P (default hf) is
#   network namespaces P1..PN   the hosts; each has lo and eth0 = 10.77.0.<i>/24
#   network namespace  P-sw     the switch: bridge br0 and one port per host, named
#                               after it (P1..PN); nothing else
#   /run/holdfast-hosts/P/      state: hosts (one name a line), subnet, env
#   /etc/netns/Pi/              hosts and resolv.conf that `ip netns exec` mounts over
#                               /etc inside host Pi (names resolve, DNS stays on lo)
# Nothing is created in the machine's own network namespace: the hosts can reach
# each other and their own loopback, nothing else (no route, no forwarding).

# shellcheck disable=SC2034 # used by the scripts that source this file
HOSTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE_ROOT=${HOLDFAST_HOSTS_STATE:-/run/holdfast-hosts}
PREFIX=${HOLDFAST_HOSTS_PREFIX:-hf}
# shellcheck disable=SC2034
SUBNET_BASE=10.77.0 # hosts are .1 .. .N of this /24

die() {
  echo "holdfast-hosts: $*" >&2
  exit 1
}
log() { echo "holdfast-hosts: $*" >&2; }

# check_prefix: a short lowercase name, so that P<i> and P-sw fit interface
# names; it ends in a letter, so that P<i> names one host only (a prefix ab1
# would make ab11 both host 1 of ab1 and host 11 of ab).
check_prefix() {
  [[ $PREFIX =~ ^[a-z]([a-z0-9]{0,6}[a-z])?$ ]] ||
    die "bad prefix '$PREFIX': 1-8 characters, [a-z][a-z0-9]*, ending in a letter"
}

require_tools() {
  [ "$(id -u)" -eq 0 ] || die "needs root (creates network namespaces)"
  local t
  for t in ip unshare; do
    command -v "$t" >/dev/null || die "needs '$t' (Debian: iproute2, util-linux)"
  done
}

switch_ns() { echo "$PREFIX-sw"; }
state_dir() { echo "$STATE_ROOT/$PREFIX"; }

# host_index NAME: i for NAME = P<i>, else fails.
host_index() {
  local name=$1
  [[ $name =~ ^${PREFIX}([0-9]+)$ ]] || return 1
  echo "$((10#${BASH_REMATCH[1]}))"
}

# ns_exists NAME
ns_exists() { [ -e "/run/netns/$1" ]; }

# our_namespaces: every namespace of this prefix (hosts and switch), also ones
# left behind by a crashed up.sh with no state written.
our_namespaces() {
  local ns
  for ns in /run/netns/*; do
    ns=${ns#/run/netns/}
    [[ $ns =~ ^${PREFIX}([0-9]+|-sw)$ ]] && echo "$ns"
  done
  return 0
}

# known_host NAME: NAME is a host of some holdfast-hosts cluster on this machine
# (listed in a state file and its namespace exists).
known_host() {
  local f
  for f in "$STATE_ROOT"/*/hosts; do
    [ -f "$f" ] && grep -qxF -- "$1" "$f" && ns_exists "$1" && return 0
  done
  return 1
}

# cluster_of HOST: the prefix whose state lists HOST.
cluster_of() {
  local f
  for f in "$STATE_ROOT"/*/hosts; do
    [ -f "$f" ] && grep -qxF -- "$1" "$f" && {
      basename "$(dirname "$f")"
      return 0
    }
  done
  return 1
}

# link_up HOST: HOST's cable is plugged in: its switch port has carrier (both
# ends administratively up). Uses the prefix of HOST's cluster.
link_up() {
  local host=$1 prefix state
  prefix=$(cluster_of "$host") || return 1
  state=$(ip -n "$prefix-sw" -o link show dev "$host" 2>/dev/null) || return 1
  # Carrier on both ends shows as LOWER_UP in the port's flags.
  [[ $state == *"<"*LOWER_UP*">"* ]] && [[ $state != *NO-CARRIER* ]] && [[ $state == *",UP"* ]]
}
