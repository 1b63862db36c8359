#!/usr/bin/env bash
# A bounded load run against a real broker on 127.0.0.1: Apache Kafka (one node, or `kafka3`: three
# nodes with the shop's topics at replication factor 3 and min.insync.replicas=2, both started by
# scripts/kafka.sh) or tansu (an independent Kafka-protocol broker); topics created with
# `pizza topics create`, the five services as their own processes at time scale 0, then `loadgen`
# (its exit status is 1 if any order was lost). Everything started here is stopped on exit.
# Usage: [WARMUP=5s] scripts/load-on.sh kafka|kafka3|tansu [RATE] [DURATION] [extra loadgen flags...]
# WARMUP is loadgen's unmeasured first stretch at RATE (a fresh broker's JVM is still compiling).
# CLIENT_PROPS (space-separated key=value) are librdkafka properties for every client, the
# services' and loadgen's, as a [kafka] section would give them (e.g. CLIENT_PROPS=linger.ms=5).
# INSTANCES=N runs N instances of each of the five services, each in its service's consumer group
# with a data directory of its own (docs/scale-out.md).
set -euo pipefail
cd "$(dirname "$0")/.."
broker=${1:-}
case $broker in
  kafka|kafka3|tansu) shift ;;
  *) echo "usage: scripts/load-on.sh kafka|kafka3|tansu [RATE] [DURATION] [loadgen flags...]" >&2; exit 2 ;;
esac
rate=${1:-200}
duration=${2:-10s}
shift $(( $# > 2 ? 2 : $# ))
bin=${PIZZA_BIN_DIR:-target/debug}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [[ $broker == kafka* ]]; then scripts/kafka.sh stop --dir "$work/kafka"; fi
  rm -rf "$work"
}
trap cleanup EXIT

topics=()
if [[ $broker == kafka* ]]; then
  nodes=1
  if [[ $broker == kafka3 ]]; then
    nodes=3
    printf '[kafka-topic-config]\nreplication_factor = 3\n' > "$work/sys.ini"
    topics=(--sys-config "$work/sys.ini")
  fi
  brokers=$(scripts/kafka.sh start --nodes "$nodes" --dir "$work/kafka" --port 0 --owner $$)
else
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  brokers=127.0.0.1:$port
  tansu broker --listener-url "tcp://$brokers" --advertised-listener-url "tcp://$brokers" \
    --storage-engine memory://tansu/ > "$work/tansu.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
fi

"$bin/pizza" topics create --brokers "$brokers" "${topics[@]}" >&2
{
  printf '[kafka]\nbootstrap.servers = %s\n' "$brokers"
  read -r -a client_props <<< "${CLIENT_PROPS:-}"
  for kv in "${client_props[@]}"; do
    [[ $kv == ?*=* ]] || { echo "load-on.sh: CLIENT_PROPS takes key=value, not '$kv'" >&2; exit 2; }
    printf '%s = %s\n' "${kv%%=*}" "${kv#*=}"
  done
} > "$work/kafka.ini"
instances=${INSTANCES:-1}
[[ $instances =~ ^[1-9]$ ]] || { echo "load-on.sh: INSTANCES is 1..9, not '$instances'" >&2; exit 2; }
for s in assemble bake deliver merge status; do
  for k in $(seq 1 "$instances"); do
    data=$work
    (( k > 1 )) && data=$work/$s-$k
    mkdir -p "$data"
    "$bin/pizza" serve "$s" --kafka-config "$work/kafka.ini" --data-dir "$data" --time-scale 0 2> "$work/$s-$k.log" &
    pids+=($!)
  done
done
# Ready: five orders through every service (their groups formed, and Kafka's __consumer_offsets
# created, which takes seconds on three nodes), so the run measures a shop at work, not its start.
"$bin/loadgen" --kafka-config "$work/kafka.ini" --rate 5 --duration 1s --warmup 0s --timeout 120s > "$work/ready.txt" \
  || { echo "load-on.sh: the shop did not take five orders through:" >&2; cat "$work/ready.txt" >&2; exit 1; }
"$bin/loadgen" --kafka-config "$work/kafka.ini" --rate "$rate" --duration "$duration" --warmup "${WARMUP:-5s}" --timeout 60s "$@"
