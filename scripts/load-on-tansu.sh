#!/usr/bin/env bash
# A bounded load run against tansu, an independent Kafka-protocol broker, on 127.0.0.1:
# topics created with `pizza topics create`, the five services as their own processes at time
# scale 0, then `loadgen` (its exit status is 1 if any order was lost). Everything started here is
# stopped on exit. Usage: scripts/load-on-tansu.sh [RATE] [DURATION] [extra loadgen flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:-200}
duration=${2:-10s}
shift $(( $# > 2 ? 2 : $# ))
bin=${PIZZA_BIN_DIR:-target/debug}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

tansu broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
  --storage-engine memory://tansu/ > "$work/tansu.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done

"$bin/pizza" topics create --brokers "127.0.0.1:$port" >&2
for s in assemble bake deliver merge status; do
  "$bin/pizza" serve "$s" --brokers "127.0.0.1:$port" --data-dir "$work" --time-scale 0 2> "$work/$s.log" &
  pids+=($!)
done
# The services' groups form while loadgen warms up (5 s, not counted).
"$bin/loadgen" --brokers "127.0.0.1:$port" --rate "$rate" --duration "$duration" --warmup 5s --timeout 60s "$@"
