#!/usr/bin/env bash
# Apache Kafka (KRaft, no ZooKeeper) on 127.0.0.1 from its Maven Central jars, with nothing but
# Java 17 and Maven: one node, or a cluster of combined broker+controller nodes whose controllers
# form the quorum. The integration tests start and stop their clusters through this script too.
#
#   scripts/kafka.sh fetch                      resolve the broker's jars into the cache (once)
#   scripts/kafka.sh start [--nodes N] [--dir D] [--port P] [--owner PID]
#   scripts/kafka.sh stop [--dir D]             stop every node (SIGTERM, SIGKILL after 20 s)
#   scripts/kafka.sh status [--dir D]           each node's pid and whether it runs
#   scripts/kafka.sh kill-node I [--dir D] [--signal SIG]   signal node I (default KILL)
#   scripts/kafka.sh start-node I [--dir D]     start node I again (its storage is kept)
#   scripts/kafka.sh topics [--dir D] -- ARGS   Kafka's kafka-topics on the cluster (--describe ...)
#   scripts/kafka.sh quorum [--dir D]           Kafka's kafka-metadata-quorum describe --status
#
# Node I (1..N) serves clients on P+2(I-1) and its controller on P+2(I-1)+1 (P defaults to 19092;
# --port 0 takes 2N consecutive free ports, for scripts and tests).
# `start` prints the bootstrap servers and writes them to D/bootstrap. With --owner, the cluster
# is stopped when that process exits (a test that dies does not leave brokers behind). With 3 or
# more nodes, internal topics get 3 replicas and every topic defaults to min.insync.replicas=2.
#
# Environment: KAFKA_VERSION (default 4.1.1); KAFKA_CACHE (default target/kafka) holds the jars
# of each version; KAFKA_HEAP (default 512m) is each node's heap; KAFKA_SERVER_PROPS (lines of
# key=value) goes at the end of every node's server.properties, after ours; KAFKA_JVM_OPTS
# (space-separated) are more options for each node's JVM, after ours (e.g. -Xlog:gc:file=gc.log,
# or "-XX:-UseG1GC -XX:+UseZGC" for another collector: ours is G1).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
version=${KAFKA_VERSION:-4.1.1}
cache=${KAFKA_CACHE:-$root/target/kafka}
libs=$cache/$version/libs
heap=${KAFKA_HEAP:-512m}
# Every JVM this script starts, the brokers and Kafka's tools alike.
jvm=(-Xms128m "-Xmx$heap" -XX:+UseG1GC -XX:MaxGCPauseMillis=20)
read -r -a node_jvm_extra <<< "${KAFKA_JVM_OPTS:-}"
# How long a node may take to start, and to stop before it is killed.
start_within=90
stop_within=20

die() { echo "kafka.sh: $*" >&2; exit 2; }

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
}

need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 is not installed ($2)"
}

# The broker's jars and their runtime dependencies, resolved by Maven from Maven Central; done
# again when the list of artifacts changes (the pom is kept as the cache's marker).
fetch() {
  local work
  work=$(mktemp -d)
  pom > "$work/pom.xml"
  if cmp -s "$work/pom.xml" "$libs/.complete"; then
    rm -rf "$work"
    return
  fi
  need java "Java 17 runs the broker"
  need mvn "Maven resolves the broker's jars from Maven Central"
  echo "kafka.sh: resolving Apache Kafka $version's jars from Maven Central into $libs" >&2
  rm -rf "$libs.partial"
  if ! mvn -q -B -Dstyle.color=never -f "$work/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$libs.partial" -DincludeScope=runtime >&2; then
    rm -rf "$work" "$libs.partial"
    die "Maven could not resolve org.apache.kafka:kafka_2.13:$version"
  fi
  rm -rf "$libs"
  mv "$libs.partial" "$libs"
  mv "$work/pom.xml" "$libs/.complete"
  rm -rf "$work"
}

pom() {
  cat <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.pizza</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$version</version>
    </dependency>
    <!-- The broker logs through SLF4J 1.7; its distribution binds it to Log4j 2. -->
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>2.24.3</version>
    </dependency>
    <!-- kafka-topics and kafka-metadata-quorum, on the broker's own jars (not Connect's). -->
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-tools</artifactId>
      <version>$version</version>
      <exclusions>
        <exclusion>
          <groupId>*</groupId>
          <artifactId>*</artifactId>
        </exclusion>
      </exclusions>
    </dependency>
  </dependencies>
</project>
EOF
}

java_cmd() {
  # The node's folder (for its log4j2 file), then the class and its arguments.
  local nd=$1
  shift
  java "${jvm[@]}" -Dlog4j2.configurationFile="$nd/log4j2.properties" -cp "$libs/*" "$@"
}

node_port() { echo $(( $1 + 2 * ($2 - 1) )); }

# The first of N consecutive ports of 127.0.0.1 that can be bound now, below Linux's ephemeral
# range (32768 and up), where outgoing connections would take them.
free_ports() {
  python3 - "$1" <<'EOF' || die "no $1 consecutive free ports on 127.0.0.1"
import random, socket, sys
n = int(sys.argv[1])
for _ in range(200):
    base = random.randrange(20000, 32768 - n)
    held = []
    try:
        for p in range(base, base + n):
            s = socket.socket()
            held.append(s)
            s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        for s in held:
            s.close()
    print(base)
    sys.exit(0)
sys.exit(1)
EOF
}

write_node() {
  local dir=$1 port=$2 nodes=$3 i=$4 voters=$5
  local nd=$dir/node$i
  mkdir -p "$nd"
  local client ctl rf isr
  client=$(node_port "$port" "$i")
  ctl=$((client + 1))
  if (( nodes >= 3 )); then rf=3; isr=2; else rf=$nodes; isr=1; fi
  cat > "$nd/server.properties" <<EOF
process.roles=broker,controller
node.id=$i
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$client,CONTROLLER://127.0.0.1:$ctl
advertised.listeners=PLAINTEXT://127.0.0.1:$client
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$nd/data
num.partitions=6
default.replication.factor=$rf
min.insync.replicas=$isr
offsets.topic.replication.factor=$rf
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
auto.create.topics.enable=false
# A test's group forms at once instead of waiting 3 s for more members.
group.initial.rebalance.delay.ms=0
# The consumer group protocol (KIP-848) keeps sessions on the broker (45 s by default): 6 s with a
# 1 s heartbeat, as the services ask of the classic protocol, so the two compare.
group.consumer.min.session.timeout.ms=6000
group.consumer.session.timeout.ms=6000
group.consumer.min.heartbeat.interval.ms=1000
group.consumer.heartbeat.interval.ms=1000
${KAFKA_SERVER_PROPS:-}
EOF
  cat > "$nd/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $nd/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = FILE
EOF
  cat > "$nd/run.sh" <<EOF
#!/usr/bin/env bash
exec java ${jvm[*]} ${node_jvm_extra[*]} -Dlog4j2.configurationFile='$nd/log4j2.properties' -cp '$libs/*' \\
  kafka.Kafka '$nd/server.properties'
EOF
  chmod +x "$nd/run.sh"
}

running() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

launch() {
  local nd=$1
  # A restarted node logs to a fresh file, so that waiting for it reads only its own start.
  if [[ -s $nd/server.log ]]; then
    cat "$nd/server.log" >> "$nd/server.log.old"
    : > "$nd/server.log"
  fi
  # Its own session, so a terminal's Ctrl-C or a test harness's process group does not reach it;
  # `stop` and --owner do. run.sh execs java: the pid is the broker's.
  setsid "$nd/run.sh" > "$nd/stdout.log" 2>&1 < /dev/null &
  echo $! > "$nd/pid"
}

# Waits until node I accepts connections and has logged that it started.
wait_started() {
  local nd=$1 client=$2 deadline=$((SECONDS + start_within))
  while (( SECONDS < deadline )); do
    if ! running "$nd/pid"; then
      echo "kafka.sh: node in $nd exited while starting; its log ends:" >&2
      tail -n 30 "$nd/server.log" "$nd/stdout.log" >&2 2>/dev/null || true
      return 1
    fi
    if grep -q "Kafka Server started" "$nd/server.log" 2>/dev/null \
        && (echo > "/dev/tcp/127.0.0.1/$client") 2>/dev/null; then
      return 0
    fi
    sleep 0.2
  done
  echo "kafka.sh: node in $nd did not start within ${start_within}s; its log ends:" >&2
  tail -n 30 "$nd/server.log" >&2 2>/dev/null || true
  return 1
}

stop_all() {
  local dir=$1 pids=() p
  for pf in "$dir"/node*/pid; do
    [[ -f $pf ]] || continue
    if running "$pf"; then
      p=$(cat "$pf")
      pids+=("$p")
      kill -CONT "$p" 2>/dev/null || true
      kill -TERM "$p" 2>/dev/null || true
    fi
  done
  local deadline=$((SECONDS + stop_within))
  for p in "${pids[@]}"; do
    while kill -0 "$p" 2>/dev/null && (( SECONDS < deadline )); do sleep 0.2; done
    if kill -0 "$p" 2>/dev/null; then
      echo "kafka.sh: node $p did not stop within ${stop_within}s: killed" >&2
      kill -KILL "$p" 2>/dev/null || true
    fi
  done
  if [[ -f $dir/owner.pid ]]; then
    kill "$(cat "$dir/owner.pid")" 2>/dev/null || true
    rm -f "$dir/owner.pid"
  fi
}

cmd=${1:-}
[[ -n $cmd ]] || usage
shift
nodes=1
dir=$root/target/kafka/cluster
port=19092
owner=
signal=KILL
node=
rest=()
while (( $# )); do
  case $1 in
    --nodes) nodes=${2:?--nodes needs a number}; shift 2 ;;
    --dir) dir=${2:?--dir needs a folder}; shift 2 ;;
    --port) port=${2:?--port needs a number}; shift 2 ;;
    --owner) owner=${2:?--owner needs a pid}; shift 2 ;;
    --signal) signal=${2:?--signal needs a name}; shift 2 ;;
    -h|--help) usage ;;
    --) shift; rest=("$@"); break ;;
    [0-9]*) node=$1; shift ;;
    *) die "unknown argument '$1' (see scripts/kafka.sh --help)" ;;
  esac
done
[[ $nodes =~ ^[1-9]$ ]] || die "--nodes must be 1 to 9, not '$nodes'"
[[ $port =~ ^[0-9]+$ ]] && (( port == 0 || (port >= 1024 && port + 2 * nodes <= 65535) )) \
  || die "--port must be 0 (free ports) or leave room for $nodes node(s) in 1024..65535, not '$port'"

case $cmd in
  fetch)
    fetch
    echo "$libs"
    ;;
  start)
    need java "Java 17 runs the broker"
    fetch
    for pf in "$dir"/node*/pid; do
      if running "$pf"; then die "a cluster already runs in $dir (scripts/kafka.sh stop --dir $dir)"; fi
    done
    rm -rf "$dir"
    mkdir -p "$dir"
    if (( port == 0 )); then port=$(free_ports $((2 * nodes))); fi
    voters=
    bootstrap=
    for i in $(seq 1 "$nodes"); do
      client=$(node_port "$port" "$i")
      voters+="${voters:+,}$i@127.0.0.1:$((client + 1))"
      bootstrap+="${bootstrap:+,}127.0.0.1:$client"
    done
    cluster_id=$(java_cmd "$dir" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
    for i in $(seq 1 "$nodes"); do
      write_node "$dir" "$port" "$nodes" "$i" "$voters"
      java_cmd "$dir/node$i" kafka.tools.StorageTool format -t "$cluster_id" \
        -c "$dir/node$i/server.properties" > "$dir/node$i/format.log" 2>&1 \
        || { cat "$dir/node$i/format.log" >&2; die "formatting node $i's storage failed"; }
    done
    for i in $(seq 1 "$nodes"); do launch "$dir/node$i"; done
    if [[ -n $owner ]]; then
      # Stops the cluster once the owner is gone.
      setsid bash -c "while kill -0 $owner 2>/dev/null; do sleep 1; done; '$0' stop --dir '$dir'" \
        > /dev/null 2>&1 < /dev/null &
      echo $! > "$dir/owner.pid"
    fi
    for i in $(seq 1 "$nodes"); do
      if ! wait_started "$dir/node$i" "$(node_port "$port" "$i")"; then
        stop_all "$dir"
        exit 1
      fi
    done
    echo "$bootstrap" > "$dir/bootstrap"
    echo "$bootstrap"
    ;;
  stop)
    stop_all "$dir"
    ;;
  status)
    for nd in "$dir"/node*; do
      [[ -d $nd ]] || continue
      if running "$nd/pid"; then state=running; else state=stopped; fi
      echo "$(basename "$nd") pid $(cat "$nd/pid" 2>/dev/null || echo -) $state"
    done
    ;;
  kill-node)
    [[ -n $node ]] || die "kill-node needs a node number"
    nd=$dir/node$node
    running "$nd/pid" || die "node $node is not running"
    pid=$(cat "$nd/pid")
    kill -s "$signal" "$pid"
    # A signal that ends the node returns once it has ended (bounded), so start-node can follow.
    case ${signal#SIG} in
      KILL|TERM|INT|9|15|2)
        deadline=$((SECONDS + stop_within))
        while kill -0 "$pid" 2>/dev/null && (( SECONDS < deadline )); do sleep 0.1; done
        ;;
    esac
    ;;
  start-node)
    [[ -n $node ]] || die "start-node needs a node number"
    nd=$dir/node$node
    [[ -f $nd/server.properties ]] || die "no node $node in $dir"
    running "$nd/pid" && die "node $node is already running"
    client=$(grep -o 'PLAINTEXT://127.0.0.1:[0-9]*' "$nd/server.properties" | head -n 1 | sed 's/.*://')
    launch "$nd"
    wait_started "$nd" "$client"
    ;;
  topics|quorum)
    [[ -f $dir/bootstrap ]] || die "no cluster started in $dir"
    fetch
    if [[ $cmd == topics ]]; then
      tool=(org.apache.kafka.tools.TopicCommand --bootstrap-server "$(cat "$dir/bootstrap")" "${rest[@]}")
    else
      tool=(org.apache.kafka.tools.MetadataQuorumCommand --bootstrap-server "$(cat "$dir/bootstrap")"
        describe --status)
    fi
    java -Xmx256m -Dlog4j2.configurationFile="$dir/node1/log4j2.properties" -cp "$libs/*" "${tool[@]}"
    ;;
  *)
    die "unknown command '$cmd' (fetch, start, stop, status, kill-node, start-node, topics, quorum)"
    ;;
esac
