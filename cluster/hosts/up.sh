#!/usr/bin/env bash
# Create N test hosts on this machine: network namespaces on one private switch.
#
#   eval "$(cluster/hosts/up.sh 3)"            # hosts hf1 hf2 hf3
#   cluster/hosts/up.sh 3 --prefix ab          # hosts ab1 ab2 ab3 (another cluster)
#
# See cluster/hosts/README.md. Needs root and iproute2.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: cluster/hosts/up.sh N [--prefix P]

Create N test hosts P1..PN (default prefix hf): network namespaces, each with
eth0 = 10.77.0.<i>/24 on one bridge inside a switch namespace P-sw, no route
anywhere else, IPv6 off, and /etc/netns/P<i>/{hosts,resolv.conf} so that the
host names resolve inside them and DNS never leaves the host. Idempotent:
what exists is kept, what is missing is made, hosts above N are removed.

Prints on stdout the environment that points Open MPI at the hosts (eval it):
  export OMPI_MCA_plm_rsh_agent=.../cluster/hosts/rsh.sh   launch agent
  export OMPI_MCA_plm_rsh_no_tree_spawn=1                    mpirun starts every daemon
  export OMPI_MCA_oob_tcp_if_include=10.77.0.0/24            daemons talk on the switch
  export OMPI_MCA_btl_tcp_if_include=10.77.0.0/24            ranks talk on the switch
  export OMPI_MCA_mpi_yield_when_idle=1                      the hosts share the cores
  export HOLDFAST_HOSTS="P1 ... PN"
and writes the same lines to /run/holdfast-hosts/P/env. Run mpirun (or
holdfast launch) on a host: cluster/hosts/run.sh P1 mpirun --hostfile F ...
Remove everything with cluster/hosts/down.sh [--prefix P].
USAGE
}

# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N=
while [ $# -gt 0 ]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --prefix) [ $# -ge 2 ] || die "--prefix needs a value"; PREFIX=$2; shift 2 ;;
    --prefix=*) PREFIX=${1#--prefix=}; shift ;;
    -*) usage >&2; die "unknown option '$1'" ;;
    *) [ -z "$N" ] || die "one host count only (got '$N' and '$1')"; N=$1; shift ;;
  esac
done
if ! [[ $N =~ ^[0-9]+$ ]] || [ "$N" -lt 1 ] || [ "$N" -gt 200 ]; then
  usage >&2
  die "N must be a number of hosts from 1 to 200 (got '${N}')"
fi
check_prefix
require_tools

SW=$(switch_ns)
STATE=$(state_dir)
SUBNET=$SUBNET_BASE.0/24

# in_ns NS CMD...: CMD in NS's network namespace (and a private mount namespace).
in_ns() { ip netns exec "$@"; }

# no_ipv6 NS: no link-local addresses, router solicitations or DAD on the wire.
no_ipv6() {
  # shellcheck disable=SC2016 # expanded by the inner sh
  in_ns "$1" sh -c 'for f in /proc/sys/net/ipv6/conf/all/disable_ipv6 \
      /proc/sys/net/ipv6/conf/default/disable_ipv6; do [ -w "$f" ] && echo 1 >"$f"; done; true'
}

ensure_switch() {
  if ! ns_exists "$SW"; then
    ip netns add "$SW"
  fi
  no_ipv6 "$SW"
  if ! ip -n "$SW" link show br0 >/dev/null 2>&1; then
    ip -n "$SW" link add br0 type bridge
  fi
  ip -n "$SW" link set br0 up
}

ensure_host() {
  local i=$1 host=$PREFIX$1
  ns_exists "$host" || ip netns add "$host"
  no_ipv6 "$host"
  ip -n "$host" link set lo up
  # The cable: port $host on the switch <-> eth0 in the host, made inside the
  # two namespaces (never in the machine's own).
  if ! ip -n "$host" link show eth0 >/dev/null 2>&1; then
    ip -n "$SW" link del "$host" 2>/dev/null || true
    ip -n "$SW" link add "$host" type veth peer name eth0 netns "$host"
  fi
  ip -n "$SW" link set "$host" master br0
  ip -n "$SW" link set "$host" up
  if ! ip -n "$host" -o addr show dev eth0 | grep -qF " $SUBNET_BASE.$i/24 "; then
    ip -n "$host" addr flush dev eth0
    ip -n "$host" addr add "$SUBNET_BASE.$i/24" dev eth0
  fi
  ip -n "$host" link set eth0 up
}

remove_host() {
  local host=$1 pids
  pids=$(ip netns pids "$host" 2>/dev/null || true)
  # shellcheck disable=SC2086 # a list of pids
  [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
  ip -n "$SW" link del "$host" 2>/dev/null || true
  ip netns del "$host" 2>/dev/null || true
  rm -rf "/etc/netns/$host"
}

t0=$(date +%s%N)
ensure_switch
hosts=()
for i in $(seq 1 "$N"); do
  ensure_host "$i"
  hosts+=("$PREFIX$i")
done
# Hosts of an earlier, larger cluster with this prefix.
for ns in $(our_namespaces); do
  if idx=$(host_index "$ns") && [ "$idx" -gt "$N" ]; then
    log "removing $ns (above N=$N)"
    remove_host "$ns"
  fi
done

mkdir -p "$STATE"
printf '%s\n' "${hosts[@]}" >"$STATE/hosts.tmp" && mv "$STATE/hosts.tmp" "$STATE/hosts"
echo "$SUBNET" >"$STATE/subnet"
for i in $(seq 1 "$N"); do
  dir=/etc/netns/$PREFIX$i
  mkdir -p "$dir"
  {
    echo "# written by holdfast cluster/hosts/up.sh; removed by down.sh"
    echo "127.0.0.1 localhost"
    for j in $(seq 1 "$N"); do echo "$SUBNET_BASE.$j $PREFIX$j"; done
  } >"$dir/hosts"
  # DNS, if anything asks, goes to the host's own loopback (nothing listens).
  printf '%s\n' "# written by holdfast cluster/hosts/up.sh" "nameserver 127.0.0.1" \
    "options timeout:1 attempts:1" >"$dir/resolv.conf"
done
{
  echo "export OMPI_MCA_plm_rsh_agent=$HOSTS_DIR/rsh.sh"
  echo "export OMPI_MCA_plm_rsh_no_tree_spawn=1"
  echo "export OMPI_MCA_oob_tcp_if_include=$SUBNET"
  echo "export OMPI_MCA_btl_tcp_if_include=$SUBNET"
  # The hosts share this machine's cores: ranks must not spin while they wait.
  echo "export OMPI_MCA_mpi_yield_when_idle=1"
  echo "export HOLDFAST_HOSTS=\"${hosts[*]}\""
} >"$STATE/env"
cat "$STATE/env"
log "$N host(s) up: ${hosts[*]} on $SUBNET (switch $SW) in $((($(date +%s%N) - t0) / 1000000)) ms"
