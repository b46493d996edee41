#!/usr/bin/env bash
# A private Docker engine (Debian's docker.io) for machines without one, with all its state in one folder.
#
#   tools/container_engine.sh start DIR   # starts dockerd; prints the DOCKER_HOST to export
#   tools/container_engine.sh stop DIR    # stops it by its PID and removes what it added to the host
#
# The engine creates no bridge and no iptables rules ("bridge": "none", "iptables": false): the MAP runs
# with --network none (no PACS) or --network host (a PACS on the host), and images build with
# --network none. Needs root (dockerd does); `apt-get install docker.io` provides dockerd and containerd.
set -euo pipefail

cmd=${1:-}
dir=${2:-}
if [ -z "$cmd" ] || [ -z "$dir" ]; then
  echo "usage: $0 start|stop DIR" >&2
  exit 2
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
sock="$dir/docker.sock"

case "$cmd" in
start)
  command -v dockerd >/dev/null || { echo "dockerd not found (apt-get install docker.io)" >&2; exit 3; }
  if [ -f "$dir/dockerd.pid" ] && kill -0 "$(cat "$dir/dockerd.pid")" 2>/dev/null; then
    echo "export DOCKER_HOST=unix://$sock"
    exit 0
  fi
  # what is there before, so that stop removes only what this engine added
  cat /proc/sys/net/ipv4/ip_forward > "$dir/ip_forward.before" 2>/dev/null || true
  if ip link show docker0 >/dev/null 2>&1; then touch "$dir/docker0.before"; fi
  if iptables-save 2>/dev/null | grep -q DOCKER; then touch "$dir/iptables.before"; fi
  cat > "$dir/daemon.json" <<JSON
{ "data-root": "$dir/data", "exec-root": "$dir/exec", "pidfile": "$dir/docker.pid",
  "hosts": ["unix://$sock"], "bridge": "none", "iptables": false, "ip-forward": false, "ip-masq": false,
  "storage-driver": "overlay2", "log-level": "warn" }
JSON
  # setsid: the engine outlives this script but not a `kill -- -PGID` of its caller's group by mistake
  setsid dockerd --config-file "$dir/daemon.json" >"$dir/dockerd.log" 2>&1 < /dev/null &
  echo $! > "$dir/dockerd.pid"
  for _ in $(seq 1 100); do      # up to ~30 s
    if DOCKER_HOST="unix://$sock" timeout 5 docker info >/dev/null 2>&1; then
      echo "export DOCKER_HOST=unix://$sock"
      exit 0
    fi
    kill -0 "$(cat "$dir/dockerd.pid")" 2>/dev/null || break
    sleep 0.3
  done
  echo "dockerd did not start; its log:" >&2
  tail -n 30 "$dir/dockerd.log" >&2 || true
  "$0" stop "$dir" || true
  exit 1
  ;;
stop)
  if [ -f "$dir/dockerd.pid" ]; then
    pid=$(cat "$dir/dockerd.pid")
    if kill -0 "$pid" 2>/dev/null; then
      # containers first (bounded), then the engine; it stops the containerd it started itself
      ids=$(DOCKER_HOST="unix://$sock" timeout 20 docker ps -q 2>/dev/null || true)
      [ -n "$ids" ] && DOCKER_HOST="unix://$sock" timeout 30 docker kill $ids >/dev/null 2>&1 || true
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/dockerd.pid"
  fi
  # what an engine with default settings would have added (this one is configured not to)
  if [ ! -e "$dir/docker0.before" ] && ip link show docker0 >/dev/null 2>&1; then ip link delete docker0 || true; fi
  if [ ! -e "$dir/iptables.before" ] && command -v iptables >/dev/null; then
    for table in nat filter; do
      for _ in $(seq 1 50); do
        rule=$(iptables -t "$table" -S 2>/dev/null | grep -- '^-A .*DOCKER' | head -n1 || true)
        [ -n "$rule" ] || break
        eval iptables -t "$table" "${rule/#-A/-D}" || break
      done
      for chain in DOCKER DOCKER-USER DOCKER-ISOLATION-STAGE-1 DOCKER-ISOLATION-STAGE-2; do
        iptables -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
  fi
  # dockerd leaves its exec-root mounts (netns, overlay) behind only when killed hard
  grep -o " $dir/[^ ]*" /proc/mounts 2>/dev/null | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done || true
  ;;
*)
  echo "usage: $0 start|stop DIR" >&2
  exit 2
  ;;
esac
