#!/usr/bin/env bash
# Apache Kafka 4.x, KRaft mode, single node (broker + controller in one JVM), on loopback.
# The broker's jars come from Maven Central via deploy/local/kafka/pom.xml into $EGX_CACHE.
source "$(dirname "$0")/common.sh"

KAFKA_HOME="$EGX_CACHE/kafka-$EGX_KAFKA_VERSION"
KAFKA_STATE="$EGX_STATE_DIR/kafka"
PIDFILE="$RUN_DIR/kafka.pid"

install() {
  if [[ -f "$KAFKA_HOME/.complete" ]]; then return; fi
  command -v java >/dev/null || die "java not found (install a JDK 17: apt-get install openjdk-17-jre-headless)"
  command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"
  say "resolving Kafka $EGX_KAFKA_VERSION jars from Maven Central into $KAFKA_HOME"
  rm -rf "$KAFKA_HOME/libs"
  mvn -q -B -Dstyle.color=never -f "$(dirname "$0")/kafka/pom.xml" -Dmaven.repo.local="$EGX_CACHE/m2" \
    -Dkafka.version="$EGX_KAFKA_VERSION" \
    dependency:copy-dependencies -DoutputDirectory="$KAFKA_HOME/libs" -DincludeScope=runtime
  touch "$KAFKA_HOME/.complete"
}

java_cmd() {
  java -Xms128m "-Xmx$EGX_KAFKA_HEAP" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dkafka.logs.dir="$LOG_DIR/kafka" \
    -Dlog4j2.configurationFile="$(cd "$(dirname "$0")" && pwd)/kafka/log4j2.yaml" \
    -cp "$KAFKA_HOME/libs/*" "$@"
}

configure() {
  mkdir -p "$KAFKA_STATE/data" "$LOG_DIR/kafka"
  cat > "$KAFKA_STATE/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$EGX_KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$EGX_KAFKA_PORT,CONTROLLER://127.0.0.1:$EGX_KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$EGX_KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_STATE/data
num.partitions=3
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# Topics are created explicitly by the bus with partition counts from settings.
auto.create.topics.enable=false
log.retention.hours=168
log.segment.bytes=67108864
PROPS
  if [[ ! -f "$KAFKA_STATE/data/meta.properties" ]]; then
    # A base64url id may start with "-", which the tool would read as an option: hence --cluster-id=ID.
    local cluster_id
    cluster_id=$(python3 -c 'import base64,uuid;print(base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode())')
    # A base64url id can start with "-", which the tool would take for an option: hence --cluster-id=ID.
    say "formatting KRaft storage (cluster $cluster_id)"
    java_cmd kafka.tools.StorageTool format --ignore-formatted --cluster-id="$cluster_id" \
      -c "$KAFKA_STATE/server.properties" >> "$LOG_DIR/kafka-format.log" 2>&1 \
      || die_log "$LOG_DIR/kafka-format.log" "storage format failed"
  fi
}

ready() {
  "$(venv_python)" "$(dirname "$0")/ready.py" kafka "127.0.0.1:$EGX_KAFKA_PORT"
}

start() {
  install
  if pid_alive "$PIDFILE"; then say "kafka already running"; return; fi
  configure
  say "starting kafka on 127.0.0.1:$EGX_KAFKA_PORT (heap $EGX_KAFKA_HEAP)"
  # setsid: the broker must outlive the shell that started it (make up returns).
  setsid nohup java -Xms128m "-Xmx$EGX_KAFKA_HEAP" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dkafka.logs.dir="$LOG_DIR/kafka" \
    -Dlog4j2.configurationFile="$(cd "$(dirname "$0")" && pwd)/kafka/log4j2.yaml" \
    -cp "$KAFKA_HOME/libs/*" kafka.Kafka "$KAFKA_STATE/server.properties" \
    >> "$LOG_DIR/kafka.out" 2>&1 < /dev/null &
  echo $! > "$PIDFILE"
  wait_until 120 kafka ready || die_log "$LOG_DIR/kafka.out" "kafka did not become ready (also see $LOG_DIR/kafka/server.log)"
}

stop() { stop_pidfile "$PIDFILE" kafka; }

status() {
  if pid_alive "$PIDFILE" && ready >/dev/null 2>&1; then echo "kafka     up    127.0.0.1:$EGX_KAFKA_PORT"; return 0; fi
  echo "kafka     down  127.0.0.1:$EGX_KAFKA_PORT"; return 1
}

"${1:-status}"
