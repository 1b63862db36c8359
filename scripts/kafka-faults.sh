#!/usr/bin/env bash
# Broker faults on a three-node Apache Kafka cluster under load. The shop's topics at replication
# factor 3 and min.insync.replicas=2, producers idempotent with acks=all (as the services always
# are), the five services as processes at time scale 0, and for each fault a loadgen run at RATE
# orders/s for 60 s (after a 5 s warm-up) with the fault 15 s in:
#   leader      SIGKILL the node leading the most partitions, start it again 10 s later
#   controller  SIGKILL the active controller (the quorum's leader), start it again 10 s later
#   zombie      SIGSTOP the node leading the most partitions for 15 s (past its 9 s broker
#               session), then SIGCONT
#   two-down    SIGKILL two of the three nodes at once (writes must stop: acks=all cannot be met),
#               start both again 10 s later
#   service     SIGKILL the deliver service (not a broker), start it again 1 s later: the stall
#               is its group's rebalance
# and, when one of these is named, the shop runs three instances of each of the five services
# (each service one consumer group; each status instance folds its own view) and three web apps,
# each folding its own view too (issue 15):
#   kill-instance   SIGKILL one instance of each of the five services
#   add-instance    start one more instance of each
#   scale           SIGKILL one instance of each, start one more 5 s later, stop two gracefully
#                   5 s after that
# After each: no order told "placed" lost, none delivered twice, every group's lag back to 0
# (loadgen's own checks); through all of them no order's status moves back in any status
# instance's view or any web app's (`pizza view watch` on each); after all: the view of every
# status instance still running, and each web app's, equals its rebuild from the log. Prints a line
# per fault with how long the shop stalled (loadgen's longest time without a completion).
# Usage: [GROUP_PROTOCOL=classic|consumer] scripts/kafka-faults.sh [RATE] [FAULT...]
# (default: 300, every broker fault; `service` is run when named). GROUP_PROTOCOL=consumer puts
# the services' consumers on Kafka 4's consumer group protocol (KIP-848; the brokers keep its
# sessions, 6 s as the classic ones' here, see scripts/kafka.sh).
# PIZZA_BIN_DIR picks the binaries (default target/debug; build them first: cargo build -p pizza
# -p loadgen). Exits 1 when a check fails; the run's files are left in the folder it names then.
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:-300}
shift $(( $# > 0 ? 1 : 0 ))
faults=("$@")
(( ${#faults[@]} )) || faults=(leader controller zombie two-down)
bin=${PIZZA_BIN_DIR:-target/debug}
case ${GROUP_PROTOCOL:-classic} in
  classic|consumer) ;;
  *) echo "kafka-faults.sh: GROUP_PROTOCOL is classic or consumer, not '$GROUP_PROTOCOL'" >&2; exit 2 ;;
esac
for b in pizza loadgen; do
  [[ -x $bin/$b ]] || { echo "kafka-faults.sh: $bin/$b is missing (cargo build -p pizza -p loadgen)" >&2; exit 2; }
done
work=$(mktemp -d)
dir=$work/kafka
pids=()
failed=0
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  scripts/kafka.sh stop --dir "$dir" || true
  if (( failed )); then echo "kafka-faults.sh: the run's files are in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

brokers=$(scripts/kafka.sh start --nodes 3 --dir "$dir" --port 0 --owner $$)
printf '[kafka-topic-config]\nreplication_factor = 3\n' > "$work/sys.ini"
"$bin/pizza" topics create --brokers "$brokers" --sys-config "$work/sys.ini" >&2
mkdir -p "$work/data"
printf '[kafka]\nbootstrap.servers = %s\ngroup.protocol = %s\n' "$brokers" "${GROUP_PROTOCOL:-classic}" > "$work/kafka.ini"
# Three instances of every service when an instance fault is asked for.
instances=1
for f in "${faults[@]}"; do
  case $f in kill-instance|add-instance|scale) instances=3 ;; esac
done
scalable=(assemble bake deliver merge status)
declare -A service_pid # service -> its first instance's pid (the `service` fault's)
declare -A running     # service -> the pids of its running instances, oldest first
declare -A started     # service -> instances started so far
declare -A view_of     # a status instance's pid -> its view
serve() {
  local k=$(( ${started[$1]:-0} + 1 )) data=$work/data
  started[$1]=$k
  (( k > 1 )) && data=$work/data-$1-$k && mkdir -p "$data"
  "$bin/pizza" serve "$1" --kafka-config "$work/kafka.ini" --data-dir "$data" --time-scale 0 >> "$work/$1-$k.log" 2>&1 &
  (( k == 1 )) && service_pid[$1]=$!
  running[$1]="${running[$1]:-} $!"
  pids+=($!)
  [[ $1 == status ]] && view_of[$!]=$data/orders.db
  return 0
}
for s in "${scalable[@]}"; do
  for _ in $(seq 1 "$instances"); do serve "$s"; done
done
webs=()
if (( instances > 1 )); then
  for k in 1 2 3; do
    mkdir -p "$work/web-$k"
    "$bin/pizza" serve web --kafka-config "$work/kafka.ini" --data-dir "$work/web-$k" --listen 127.0.0.1:0 \
      >> "$work/web-$k.log" 2>&1 &
    pids+=($!)
    webs+=("$work/web-$k/web-view.db")
  done
fi

# Ready: five orders through every service before the first fault.
"$bin/loadgen" --brokers "$brokers" --rate 5 --duration 1s --warmup 0s --timeout 120s > "$work/ready.txt"
# No status regression, watched live: every order's status in each view (each status
# instance's, each web app's), polled every 250 ms through every fault. A service creates its
# view when it starts; wait for the file.
watchers=()
views=()
watch() {
  local n=${#views[@]}
  for _ in $(seq 1 100); do [[ -f $1 ]] && break; sleep 0.1; done
  "$bin/pizza" view watch --db "$1" --every 250ms > "$work/watch-$n.txt" 2> "$work/watch-$n.log" &
  watchers+=($!)
  pids+=($!)
  views+=("$1")
}
status_views() { local p; for p in ${running[status]}; do echo "${view_of[$p]}"; done; }
for v in $(status_views) "${webs[@]}"; do watch "$v"; done

# The node leading the most partitions of the shop's topics.
busiest() {
  scripts/kafka.sh topics --dir "$dir" -- --describe 2>/dev/null \
    | awk '$1 == "Topic:" && /Partition:/ { for (i = 1; i < NF; i++) if ($i == "Leader:") print $(i + 1) }' \
    | sort | uniq -c | sort -rn | awk 'NR == 1 { print $2 }'
}
controller() { scripts/kafka.sh quorum --dir "$dir" 2>/dev/null | awk '$1 == "LeaderId:" { print $2 }'; }
down() { scripts/kafka.sh kill-node "$1" --dir "$dir" --signal "${2:-KILL}"; }
up() { scripts/kafka.sh start-node "$1" --dir "$dir" >&2; }
# SIGKILL the oldest running instance of each service that scales.
kill_one() {
  local s p
  for s in "${scalable[@]}"; do
    read -r -a p <<< "${running[$s]}"
    (( ${#p[@]} )) || { echo "kafka-faults.sh: no $s instance left to kill" >&2; exit 1; }
    kill -KILL "${p[0]}" 2>/dev/null || true
    wait "${p[0]}" 2>/dev/null || true # (reaped here, so bash does not report the kill)
    running[$s]="${p[*]:1}"
  done
}
add_one() {
  local s
  for s in "${scalable[@]}"; do serve "$s"; done
  watch "${view_of[${pids[-1]}]}"
}
# SIGTERM the two oldest running instances of each, and wait for them to finish and leave.
stop_two() {
  local s p q gone=()
  for s in "${scalable[@]}"; do
    read -r -a p <<< "${running[$s]}"
    for q in "${p[@]:0:2}"; do kill -TERM "$q" 2>/dev/null || true; gone+=("$q"); done
    running[$s]="${p[*]:2}"
  done
  for q in "${gone[@]}"; do wait "$q" 2>/dev/null || true; done
}

inject() {
  local n m
  case $1 in
    leader) n=$(busiest); echo "SIGKILL node $n (leads the most partitions)"; down "$n"; sleep 10; up "$n" ;;
    controller) n=$(controller); echo "SIGKILL node $n (the active controller)"; down "$n"; sleep 10; up "$n" ;;
    zombie) n=$(busiest); echo "SIGSTOP node $n for 15 s"; down "$n" STOP; sleep 15; down "$n" CONT ;;
    service)
      echo "SIGKILL deliver (${GROUP_PROTOCOL:-classic} protocol)"
      kill -KILL "${service_pid[deliver]}" || { echo "kafka-faults.sh: deliver had already ended" >&2; exit 1; }
      running[deliver]=${running[deliver]/ ${service_pid[deliver]}/}
      sleep 1; serve deliver; service_pid[deliver]=${pids[-1]}
      ;;
    two-down)
      n=$(busiest); m=$(( n % 3 + 1 ))
      echo "SIGKILL nodes $n and $m"
      down "$n"; down "$m"; sleep 10
      up "$n" & local a=$!
      up "$m" & local b=$!
      wait "$a"; wait "$b"
      ;;
    kill-instance) echo "SIGKILL one instance of each of 5 services"; kill_one ;;
    add-instance) echo "one more instance of each of 5 services"; add_one ;;
    scale)
      echo "SIGKILL 1, add 1, stop 2 of each of 5"
      kill_one; sleep 5; add_one; sleep 5; stop_two
      ;;
    *) echo "kafka-faults.sh: unknown fault '$1' (leader, controller, zombie, two-down, service, kill-instance, add-instance, scale)" >&2; exit 2 ;;
  esac
}

printf '%-11s %-40s %9s %7s %8s %9s %6s %8s %10s %9s\n' fault what stall_ms lost twice errors unknown late p99_ms lag >&2
for f in "${faults[@]}"; do
  "$bin/loadgen" --brokers "$brokers" --rate "$rate" --duration 60s --warmup 5s --timeout 120s --json \
    > "$work/$f.json" 2> "$work/$f.loadgen.log" &
  lg=$!
  sleep 20
  # Not in a subshell: a service started again must be known to cleanup (and to a later fault).
  inject "$f" > "$work/$f.what" 2>> "$work/$f.fault.log"
  what=$(cat "$work/$f.what")
  wait "$lg" || true
  line=$(python3 - "$work/$f.json" "$f" "$what" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
p99 = next((p["p99_ms"] for p in s["latency"] if p["stage"] == "end-to-end"), float("nan"))
lag = sum(l for _, l in s["consumer_lag"])
ok = s["lost"] == 0 and s["delivered_twice"] == 0 and lag == 0 and s["completed"] > 0
print(f'{sys.argv[2]:<11} {sys.argv[3]:<40} {s["longest_gap_ms"]:>9.0f} {s["lost"]:>7} {s["delivered_twice"]:>8} '
      f'{s["errors"]:>9} {s["unknown"]:>6} {s["confirmed_late"]:>8} {p99:>10.1f} {lag:>9} {"ok" if ok else "FAILED"}')
EOF
  ) || { line="$f: loadgen wrote no summary (see $work/$f.loadgen.log)"; failed=1; }
  echo "$line" >&2
  if [[ $line != *" ok" ]]; then
    failed=1
    # Which group and partition the work stopped at, and what each service last warned of: the
    # run's files stay behind, but a CI log is all one may have.
    echo "== $f failed: the groups' partitions with lag" >&2
    "$bin/pizza" offsets show --brokers "$brokers" 2>&1 | awk '$1 == "group" || $NF != 0' | head -40 >&2 || true
    for log in "$work"/{assemble,bake,deliver,merge,status}-*.log; do
      echo "-- ${log#"$work"/}: its last warnings and errors" >&2
      grep -E ' (WARN|ERROR) ' "$log" | grep -v 'could not mark offset' | tail -5 >&2 || true
    done
  fi
done

for i in "${!watchers[@]}"; do
  out=$work/watch-$i.txt log=$work/watch-$i.log
  kill -TERM "${watchers[$i]}" 2>/dev/null || true # (it may have ended already: wait says how)
  if wait "${watchers[$i]}"; then
    echo "no status regression in ${views[$i]#"$work"/}: $(cat "$out")" >&2
  else
    echo "status REGRESSION in ${views[$i]#"$work"/} (or the watch failed): $(cat "$out")" >&2
    head -20 "$log" >&2
    failed=1
  fi
done

# The views every service's output folded into (each running status instance's, each web app's),
# against the log. A view follows the log on its own, so it may still be reading: compared again,
# 5 s apart, for at most a minute. (A killed or stopped instance's view stays where it stopped.)
views=($(status_views) "${webs[@]}")
for i in "${!views[@]}"; do
  for attempt in $(seq 1 12); do
    rm -f "$work/rebuilt-$i.db"*
    if "$bin/pizza" view rebuild --brokers "$brokers" --out "$work/rebuilt-$i.db" --compare "${views[$i]}" \
      > "$work/compare-$i.log" 2>&1; then
      echo "${views[$i]#"$work"/} equals its rebuild from the log (compare $attempt)" >&2
      break
    fi
    if (( attempt == 12 )); then
      tail -5 "$work/compare-$i.log" >&2
      echo "${views[$i]#"$work"/} DIFFERS from its rebuild" >&2
      failed=1
    fi
    sleep 5
  done
done
exit "$failed"
