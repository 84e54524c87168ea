#!/bin/bash
# Container entrypoint: decides which interfaces nvqos-agent attaches to on this node, says why, and
# execs the agent with them and the container's arguments. First match wins:
#   1. NVQOS_INTERFACES                       set on the container (one value for every node)
#   2. $NVQOS_INTERFACES_DIR/$NODE_NAME       the node's key in the nvqos-interfaces ConfigMap
#   3. $NVQOS_INTERFACES_DIR/default          that ConfigMap's default key
#   4. the interface holding $NVQOS_HOST_IP   the node's address (downward API status.hostIP)
# Values are IF[,IF...]. The pod runs with hostNetwork, so `ip` sees the node's interfaces.
set -euo pipefail

agent=${NVQOS_AGENT_BIN:-/usr/local/sbin/nvqos-agent}
dir=${NVQOS_INTERFACES_DIR:-/etc/nvqos/interfaces}
node=${NODE_NAME:-}

log() { printf 'level=%s msg="%s"%s\n' "$1" "$2" "${3:-}" >&2; }

trim() { tr -d ' \t\r\n' <"$1"; }

interfaces="" source=""
if [[ -n "${NVQOS_INTERFACES:-}" ]]; then
  interfaces=$NVQOS_INTERFACES source="env NVQOS_INTERFACES"
elif [[ -n "$node" && -s "$dir/$node" ]]; then
  interfaces=$(trim "$dir/$node") source="$dir/$node"
elif [[ -s "$dir/default" ]]; then
  interfaces=$(trim "$dir/default") source="$dir/default"
elif [[ -n "${NVQOS_HOST_IP:-}" ]]; then
  interfaces=$(ip -o addr show to "$NVQOS_HOST_IP" | awk '{print $2}' | sort -u | paste -sd, -)
  source="interface of node address $NVQOS_HOST_IP"
  if [[ -z "$interfaces" ]]; then
    log error "no interface holds the node address" " address=$NVQOS_HOST_IP node=$node hint=\"set the node's key in the nvqos-interfaces ConfigMap\""
    exit 1
  fi
else
  log error "no interface chosen" " node=$node hint=\"set NVQOS_INTERFACES, the nvqos-interfaces ConfigMap or NVQOS_HOST_IP\""
  exit 1
fi
log info "interfaces chosen" " interfaces=$interfaces source=\"$source\" node=$node"
exec "$agent" --interface "$interfaces" "$@"
