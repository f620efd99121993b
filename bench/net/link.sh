#!/usr/bin/env bash
# A shaped link to a registry: Debian's docker-registry runs in its own
# network namespace, reached from the host over a veth pair whose two ends
# are shaped with tc HTB (each end's egress, so both directions).
#
#   host  skb-h 10.203.0.1  <== veth, HTB at RATE each way ==>  skb-n 10.203.0.2:5000  (netns skb)
#
# Usage (as root):
#   link.sh up PROFILE STORAGE_DIR   create the link, start the registry (storage in STORAGE_DIR)
#   link.sh shape PROFILE            change the rate of a running link
#   link.sh counters                 "RX TX": bytes the host end received / sent (registry -> host is RX)
#   link.sh registry                 the registry's address (10.203.0.2:5000)
#   link.sh down                     tear everything down; idempotent, safe when nothing is up
# PROFILE: 1gbit, 100mbit or 20mbit (any tc rate works). Counters come from
# /sys/class/net/skb-h/statistics, so they count what crossed the link,
# whoever sent it. SKIFF_NET_NAME and SKIFF_NET_SUBNET (default skb,
# 10.203.0) change the names, so two links can coexist.
set -euo pipefail

name=${SKIFF_NET_NAME:-skb}
subnet=${SKIFF_NET_SUBNET:-10.203.0}
ns=$name
host_if=$name-h
ns_if=$name-n
host_ip=$subnet.1
ns_ip=$subnet.2
port=5000
state=/run/skiff-bench-net/$name

die() { echo "bench/net: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (netns, tc)"

need_pkgs() {
  local missing=""
  command -v ip >/dev/null && command -v tc >/dev/null || missing="$missing iproute2"
  command -v docker-registry >/dev/null || missing="$missing docker-registry"
  [ -z "$missing" ] && return
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >&2 ||
    die "could not install$missing: run apt-get update, then retry"
}

# HTB on one interface's egress; the burst lets a 1 Gbit/s class keep up
# with the veth's 64 KiB GSO packets.
shape_dev() { # shape_dev NETNS_OR_EMPTY DEV RATE
  local run=(); [ -n "$1" ] && run=(ip netns exec "$1")
  "${run[@]}" tc qdisc del dev "$2" root 2>/dev/null || true
  # r2q 1000 keeps HTB's quantum within its limits from 20 Mbit/s to 1 Gbit/s.
  "${run[@]}" tc qdisc add dev "$2" root handle 1: htb default 10 r2q 1000
  "${run[@]}" tc class add dev "$2" parent 1: classid 1:10 htb rate "$3" ceil "$3" burst 256k cburst 256k
}

check_rate() {
  [[ $1 =~ ^[0-9]+(k|m|g)?(bit|bps)$ ]] || die "bad profile '$1' (use 1gbit, 100mbit or 20mbit)"
}

down() {
  if [ -f "$state/registry.pid" ]; then
    local pid; pid=$(cat "$state/registry.pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  # Anything else still in the namespace (deleting a netns does not kill its processes).
  if ip netns list | grep -qw "^$ns"; then
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  fi
  ip link del "$host_if" 2>/dev/null || true
  rm -rf "$state"
}

up() {
  local rate=$1 storage=$2
  check_rate "$rate"
  need_pkgs
  down
  trap 'down' ERR
  mkdir -p "$state" "$storage"
  ip netns add "$ns"
  ip link add "$host_if" type veth peer name "$ns_if"
  ip link set "$ns_if" netns "$ns"
  ip addr add "$host_ip/24" dev "$host_if"
  ip link set "$host_if" up
  ip netns exec "$ns" ip addr add "$ns_ip/24" dev "$ns_if"
  ip netns exec "$ns" ip link set "$ns_if" up
  ip netns exec "$ns" ip link set lo up
  shape_dev "" "$host_if" "$rate"
  shape_dev "$ns" "$ns_if" "$rate"
  echo "$rate" >"$state/rate"

  cat >"$state/registry.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $(realpath "$storage")
  delete:
    enabled: true
http:
  addr: $ns_ip:$port
YML
  # setsid: the registry must not die with (or hold the terminal of) the caller.
  setsid ip netns exec "$ns" docker-registry serve "$state/registry.yml" \
    >"$state/registry.log" 2>&1 </dev/null &
  echo $! >"$state/registry.pid"
  local ok=""
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/$ns_ip/$port") 2>/dev/null; then ok=1; break; fi
    kill -0 "$(cat "$state/registry.pid")" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$ok" ] || { cat "$state/registry.log" >&2; die "registry did not start on $ns_ip:$port (log above)"; }
  trap - ERR
  echo "$ns_ip:$port"
}

case ${1:-} in
up) [ $# = 3 ] || die "usage: link.sh up PROFILE STORAGE_DIR"; up "$2" "$3" ;;
shape)
  [ $# = 2 ] || die "usage: link.sh shape PROFILE"
  check_rate "$2"
  [ -d "$state" ] || die "no link is up (run: link.sh up PROFILE STORAGE_DIR)"
  shape_dev "" "$host_if" "$2"; shape_dev "$ns" "$ns_if" "$2"; echo "$2" >"$state/rate" ;;
counters)
  [ -d "/sys/class/net/$host_if" ] || die "no link is up (run: link.sh up PROFILE STORAGE_DIR)"
  echo "$(cat /sys/class/net/$host_if/statistics/rx_bytes) $(cat /sys/class/net/$host_if/statistics/tx_bytes)" ;;
registry) echo "$ns_ip:$port" ;;
down) down ;;
*) die "usage: link.sh up PROFILE STORAGE_DIR | shape PROFILE | counters | registry | down" ;;
esac
