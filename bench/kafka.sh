# Sourced by the bench scripts (after they set $work and the `kafkas` array, and cd to the
# workspace root): a free port, and Apache Kafka from scripts/kafka.sh on one.
# A free port below 55536 (kafka.sh takes ports to 55535: its controller listens on PORT+10000
# unless told otherwise).
port() { python3 -c 'import random, socket
while True:
    s, p = socket.socket(), random.randint(20000, 55535)
    try:
        s.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass
    finally:
        s.close()'; }
# Starts Apache Kafka (scripts/kafka.sh run: one node, a fresh log removed when it stops) on a
# free port and sets $broker to its address once it says `ready`. Not in a subshell: its pid
# must reach `kafkas`, which cleanup stops with SIGTERM (a controlled shutdown; SIGKILL would
# leave its JVM running). Should this script die without cleanup, --owner stops it.
kafka() {
  local p c log; p=$(port); c=$(port); log="$work/kafka-$p.log"
  while [ "$c" = "$p" ]; do c=$(port); done
  scripts/kafka.sh run "$p" --controller-port "$c" --owner $$ 2>"$log" & kafkas+=($!)
  until grep -qsx ready "$log"; do
    kill -0 "${kafkas[-1]}" 2>/dev/null || { cat "$log" >&2; echo "Kafka did not start on $p" >&2; exit 1; }
    sleep 0.2
  done
  broker="127.0.0.1:$p"
}
