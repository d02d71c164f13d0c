#!/usr/bin/env bash
# The push benchmark (docs/benchmarks.md, "Push"). Builds in release mode, starts on loopback a
# Redis (when redis-server is installed), one chat-server storing chats in it, and a gateway in
# front over TCP, then:
#   1. latency: STREAMS (default 1000) chats each with an open SSE stream; RATE (default 200)
#      customer messages a second for DURATION_SECS (default 20); the simulated agent answers each
#      after AGENT_DELAY_MS; prints p50/p99/max from the agent message's utcTime to its
#      arrival in the stream, and the gaps and duplicates seen (both must be 0);
#   2. idle: IDLE_STREAMS (default 10000) more streams held open; the gateway's resident memory
#      before and after, and its CPU time over IDLE_SECONDS (default 30) of heartbeats only;
#   3. requests a second a site saves against polling at the same chat count.
# SKIP_LATENCY=1 runs the idle part only.
# Needs redis-server (optional), python3.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
STREAMS=${STREAMS:-1000}
RATE=${RATE:-200}
SECONDS_=${DURATION_SECS:-20}
IDLE_STREAMS=${IDLE_STREAMS:-10000}
IDLE_SECONDS=${IDLE_SECONDS:-30}
AGENT_DELAY_MS=${AGENT_DELAY_MS:-200}
POLL_EVERY_SECS=${POLL_EVERY_SECS:-4}
WATCH_SECS=${WATCH_SECS:-20}
SECRET=bench-secret-0123456789abcdef0123456789
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

echo "building (release)..." >&2
cargo build --release --workspace --bins -q
bin=$root/target/release
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

store=()
if command -v redis-server >/dev/null; then
  pr=$(free_port)
  redis-server --port "$pr" --save '' --appendonly no --dir "$work" >"$work/redis.log" 2>&1 & pids+=($!)
  wait_port "$pr"
  store=(--store "redis://127.0.0.1:$pr")
else
  echo "redis-server not installed: the chat server runs without a store" >&2
fi
ps_=$(free_port)
"$bin/chat-server" --listen "127.0.0.1:$ps_" --alias 117 "${store[@]}" \
  --session-limit 100000 --disconnect-timeout-ms 3600000 \
  --agent-join-delay-ms 100 --agent-reply-delay-ms "$AGENT_DELAY_MS" \
  >"$work/chat-server.log" 2>&1 & pids+=($!)
wait_port "$ps_"
pg=$(free_port)
printf '[[tenants]]\nname = "Environment"\n[[chat.instances]]\nalias = "117"\nkind = "tcp"\naddress = "127.0.0.1:%s"\n' "$ps_" > "$work/gateway.toml"
GATEWAY__SERVER__LISTEN=127.0.0.1:$pg \
GATEWAY__ADMIN__LISTEN=127.0.0.1:0 \
GATEWAY__LIMITS__PER_IP_PER_SECOND=0 \
GATEWAY__LIMITS__PER_CHAT_PER_SECOND=0 \
GATEWAY__LIMITS__CHAT_STARTS_PER_IP_PER_SECOND=0 \
GATEWAY__LIMITS__MAX_CONNECTIONS_PER_IP=0 \
GATEWAY__LIMITS__MAX_CONNECTIONS=30000 \
GATEWAY__PUSH__MAX_STREAMS=30000 \
GATEWAY__PUSH__MAX_STREAMS_PER_IP=30000 \
GATEWAY__PUSH__WATCH_SECS=$WATCH_SECS \
GATEWAY__EMAIL__SPOOL_DIR=$work/spool \
GATEWAY__CREDENTIALS__SECRET=$SECRET \
GATEWAY__LOG__LEVEL=warn \
  "$bin/webapi-gateway" --config "$work/gateway.toml" >"$work/gateway.log" 2>&1 &
gw=$!; pids+=("$gw")
wait_port "$pg"
url=http://127.0.0.1:$pg

echo "latency: $STREAMS streams, $RATE messages/s for ${SECONDS_}s, agent reply delay ${AGENT_DELAY_MS} ms" >&2
if [ -n "${SKIP_LATENCY:-}" ]; then
  latency='{"p50_ms":"-","p99_ms":"-","max_ms":"-","sent":0,"agent_messages":0,"gaps":0,"duplicates":0}'
else
  latency=$("$bin/push-bench" latency "$url" "$STREAMS" "$SECONDS_" "$RATE")
fi
echo "$latency"

idle_before=$(rss_kb "$gw")
echo "idle: opening $IDLE_STREAMS streams..." >&2
coproc IDLE { "$bin/push-bench" idle "$url" "$IDLE_STREAMS" $((IDLE_SECONDS + 5)); }
read -r ready <&"${IDLE[0]}"
[ "$ready" = ready ] || { echo "push-bench idle did not get ready: $ready" >&2; exit 1; }
sleep 2
idle_after=$(rss_kb "$gw")
t0=$(cpu_ticks "$gw"); sleep "$IDLE_SECONDS"; t1=$(cpu_ticks "$gw")
read -r idle_result <&"${IDLE[0]}" || true
hz=$(getconf CLK_TCK)
echo
echo "push over TCP to one chat-server$( [ ${#store[@]} -gt 0 ] && echo ' (Redis store)'), $(nproc) cores, $(date -u +%F)"
python3 - "$latency" "$idle_before" "$idle_after" "$t0" "$t1" "$hz" "$IDLE_SECONDS" "$IDLE_STREAMS" "$POLL_EVERY_SECS" "$WATCH_SECS" "$idle_result" <<'PY'
import json, sys
lat = json.loads(sys.argv[1])
before, after, t0, t1, hz, secs, n, poll, watch = (float(x) for x in sys.argv[2:11])
print(f"{'agent message -> stream, p50':<46} {lat['p50_ms']:>8} ms   (target p99 <= 50 ms)")
print(f"{'agent message -> stream, p99':<46} {lat['p99_ms']:>8} ms")
print(f"{'agent message -> stream, max':<46} {lat['max_ms']:>8} ms")
print(f"{'messages sent / agent messages received':<46} {lat['sent']:>8} / {lat['agent_messages']}")
print(f"{'gaps / duplicates':<46} {lat['gaps']:>8} / {lat['duplicates']}")
print(f"{'resident growth, %d idle streams' % n:<46} {(after - before) / 1024:>8.1f} MB (target <= 100)")
print(f"{'gateway CPU with them idle':<46} {(t1 - t0) / hz / secs * 100:>8.2f} % of a core")
print(f"{'client requests/s polling every %gs' % poll:<46} {n / poll:>8.0f}")
print(f"{'client requests/s with streams':<46} {0:>8}   (a stream is one request)")
print(f"{'gateway -> chat server calls/s (watch every %gs)' % watch:<46} {n / watch:>8.0f}")
print("idle client:", sys.argv[11])
PY
