#!/usr/bin/env bash
# The load benchmark. Builds in release mode, starts everything on loopback, runs wrk, stops
# everything it started and prints one table:
#   (a) bare hyper: read a POST body, parse it as JSON, answer small JSON (the limit)
#   (b) the gateway on its embedded mock chat server
#   (c) the gateway over TCP to one chat-server process
#   (d) nginx (proxy_pass, upstream keep-alive, one worker) in front of (a)
# then the memory figures (100,000 open chats; 10,000 idle keep-alive connections).
#
# Environment: DURATION (wrk duration, default 10s), CONNS (default 64), OPEN_CHATS (chats
# the SendMessage workload spreads over, default 2000), CHATS_FOR_MEMORY
# (default 100000), IDLE_CONNS (default 10000), SKIP_MEMORY=1 to skip the memory part,
# WORKERS (worker threads of every server: bare hyper, the gateways, the chat server, via
# TOKIO_WORKER_THREADS; default one per core, nginx always has one). WORKERS=1 leaves wrk a
# core of its own on a 2-core machine (docs/benchmarks.md, "Tail latency").
# Needs wrk, nginx, curl, jq, python3 (Debian: apt-get install wrk nginx-light curl jq).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
DURATION=${DURATION:-10s}
if [ -n "${WORKERS:-}" ]; then export TOKIO_WORKER_THREADS=$WORKERS; fi
CONNS=${CONNS:-64}
CHATS_FOR_MEMORY=${CHATS_FOR_MEMORY:-100000}
IDLE_CONNS=${IDLE_CONNS:-10000}
OPEN_CHATS=${OPEN_CHATS:-2000}
SECRET=bench-secret-0123456789abcdef0123456789

for tool in wrk nginx curl jq python3; do
  command -v "$tool" >/dev/null || { echo "bench/run.sh needs $tool" >&2; exit 1; }
done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

echo "building (release)..." >&2
cargo build --release --workspace --bins -q
bin=$root/target/release

# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"

# Starts a gateway; extra config (TOML) in $2; echoes the pid.
start_gateway() {
  local port=$1 extra=${2:-}
  local conf="$work/gateway-$port.toml"
  if [ -n "$extra" ]; then
    printf '[[tenants]]\nname = "Environment"\n%s\n' "$extra" > "$conf"
  else
    cp "$root/gateway.toml" "$conf"
  fi
  # Rate limits lifted (wrk is one client address); everything else as configured.
  GATEWAY__SERVER__LISTEN=127.0.0.1:$port \
  GATEWAY__ADMIN__LISTEN=127.0.0.1:0 \
  GATEWAY__LIMITS__PER_IP_PER_SECOND=0 \
  GATEWAY__LIMITS__PER_CHAT_PER_SECOND=0 \
  GATEWAY__LIMITS__CHAT_STARTS_PER_IP_PER_SECOND=0 \
  GATEWAY__LIMITS__MAX_CONNECTIONS_PER_IP=0 \
  GATEWAY__LIMITS__MAX_CONNECTIONS=20000 \
  GATEWAY__EMAIL__PER_ADDRESS_PER_HOUR=0 \
  GATEWAY__EMAIL__SPOOL_DIR=$work/spool-$port \
  GATEWAY__CREDENTIALS__SECRET=$SECRET \
  GATEWAY__MOCK__SESSION_LIMIT=1000000 \
  GATEWAY__MOCK__DISCONNECT_TIMEOUT_SECS=3600 \
  GATEWAY__LOG__LEVEL=warn \
    "$bin/webapi-gateway" --config "$conf" >"$work/gateway-$port.log" 2>&1 &
  echo $!
}

# Opens OPEN_CHATS chats on a gateway and writes "chatId userId secureKey alias" lines.
# Many more chats than connections, so that no transcript grows unlike a real chat's.
open_chats() {
  python3 "$root/bench/open_chats.py" 127.0.0.1 "$1" "$OPEN_CHATS" > "$2"
}

results=()
# run_wrk NAME URL SCRIPT: appends "name rps p50_ms p99_ms non2xx" to results.
run_wrk() {
  local name=$1 url=$2 script=$3 out="$work/wrk-$1.txt"
  wrk -t1 -c"$CONNS" -d"$DURATION" --latency -s "$root/bench/lua/$script" "$url" >"$out" 2>&1
  local rps p50 p99 bad
  rps=$(awk '/^Requests\/sec/{print $2}' "$out")
  p50=$(awk '$1=="50%"{print $2}' "$out")
  p99=$(awk '$1=="99%"{print $2}' "$out")
  bad=$(awk '/Non-2xx/{print $5}' "$out"); bad=${bad:-0}
  results+=("$name $rps $(to_ms "$p50") $(to_ms "$p99") $bad")
}
to_ms() {
  python3 -c 'import sys,re
v=sys.argv[1]; m=re.match(r"([\d.]+)(us|ms|s)$",v)
n,u=float(m.group(1)),m.group(2)
print("%.3f"%(n/1000 if u=="us" else n*1000 if u=="s" else n))' "$1"
}

# (a) bare hyper
pa=$(free_port); "$bin/bare-hyper" "127.0.0.1:$pa" 2>"$work/bare.log" & pids+=($!); wait_port "$pa"
# (d) nginx in front of (a)
pd=$(free_port)
mkdir -p "$work/nginx"
cat > "$work/nginx.conf" <<NGINX
worker_processes 1;
daemon on;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  upstream bare { server 127.0.0.1:$pa; keepalive 64; }
  server {
    listen 127.0.0.1:$pd;
    location / {
      proxy_pass http://bare;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
NGINX
nginx -c "$work/nginx.conf"; wait_port "$pd"
# (b) gateway on the embedded mock
pb=$(free_port); pids+=("$(start_gateway "$pb")"); wait_port "$pb"
open_chats "$pb" "$work/chats-b.txt"
# (c) gateway over TCP to one chat-server, when the chat server is built
pc=""
if [ -x "$bin/chat-server" ]; then
  ps=$(free_port)
  "$bin/chat-server" --listen "127.0.0.1:$ps" --alias 117 --session-limit 1000000 --disconnect-timeout-ms 3600000 >"$work/chat-server.log" 2>&1 & pids+=($!)
  wait_port "$ps"
  pc=$(free_port)
  pids+=("$(start_gateway "$pc" "$(printf '[[chat.instances]]\nalias = "117"\nkind = "tcp"\naddress = "127.0.0.1:%s"\n' "$ps")")")
  wait_port "$pc"
  open_chats "$pc" "$work/chats-c.txt"
fi

export CHATS="$work/chats-b.txt"
run_wrk "a:bare-hyper" "http://127.0.0.1:$pa" send_message.lua
run_wrk "d:nginx->bare" "http://127.0.0.1:$pd" send_message.lua
run_wrk "b:gw-mock:SendMessage" "http://127.0.0.1:$pb" send_message.lua
run_wrk "b:gw-mock:mixed" "http://127.0.0.1:$pb" mixed.lua
if [ -n "$pc" ]; then
  export CHATS="$work/chats-c.txt"
  run_wrk "c:gw-tcp:SendMessage" "http://127.0.0.1:$pc" send_message.lua
  run_wrk "c:gw-tcp:mixed" "http://127.0.0.1:$pc" mixed.lua
fi

echo
echo "wrk -t1 -c$CONNS -d$DURATION on $(nproc) cores ($(uname -m)), server worker threads: ${WORKERS:-one per core}, $(date -u +%F)"
printf '%-24s %12s %10s %10s %8s\n' "server" "req/s" "p50 ms" "p99 ms" "non-2xx"
for r in "${results[@]}"; do
  # shellcheck disable=SC2086
  printf '%-24s %12s %10s %10s %8s\n' $r
done
python3 - "${results[@]}" <<'PY'
import sys
rows = {r.split()[0]: float(r.split()[1]) for r in sys.argv[1:]}
def ratio(a, b, label, target):
    if a in rows and b in rows:
        v = rows[a] / rows[b]
        print(f"{label:<34} {v:6.2f}   (target >= {target})")
print()
ratio("b:gw-mock:SendMessage", "a:bare-hyper", "(b)/(a) SendMessage", 0.8)
ratio("c:gw-tcp:SendMessage", "a:bare-hyper", "(c)/(a) SendMessage", "-")
ratio("c:gw-tcp:SendMessage", "d:nginx->bare", "(c)/(d) SendMessage", 1.0)
PY

# E-mail: 10 MB uploads to a fresh gateway (mock e-mail backend); throughput and peak memory.
pe=$(free_port); ge=$(start_gateway "$pe"); pids+=("$ge"); wait_port "$pe"
head -c 10000000 /dev/urandom > "$work/upload.pdf"
hwm_kb() { awk '/VmHWM/{print $2}' "/proc/$1/status"; }
curl -s -o /dev/null "http://127.0.0.1:$pe/api/v2/emails" -F firstName=J -F lastName=D \
  -F tenantName=Environment -F fromAddress=j@d.com -F subject=warm -F text=t
before=$(hwm_kb "$ge")
best=""
for _ in 1 2 3 4 5; do
  t=$(curl -s -o "$work/email-reply.json" -w '%{time_total}' "http://127.0.0.1:$pe/api/v2/emails" \
    -F firstName=John -F lastName=Doe -F tenantName=Environment -F fromAddress=john@doe.com \
    -F subject=Upload -F text=Attached -F "files=@$work/upload.pdf")
  grep -q interactionId "$work/email-reply.json" || { echo "upload refused: $(cat "$work/email-reply.json")" >&2; exit 1; }
  best=$(python3 -c "import sys; a=float(sys.argv[1]); b=sys.argv[2]; print(a if not b else min(a,float(b)))" "$t" "$best")
done
after=$(hwm_kb "$ge")
echo
printf '%-48s %10s\n' "e-mail (10 MB attachment, best of 5)" ""
printf '%-48s %10.0f   (target >= 100)\n' "upload throughput MB/s" "$(echo "10 / $best" | bc -l)"
printf '%-48s %10.1f   (target <= 16)\n' "peak resident growth MB" "$(echo "($after-$before)/1024" | bc -l)"

[ "${SKIP_MEMORY:-0}" = 1 ] && exit 0

# Memory: a fresh gateway on the mock, filled with open chats, then idle connections.
pm=$(free_port); gm=$(start_gateway "$pm"); pids+=("$gm"); wait_port "$pm"
base=$(rss_kb "$gm")
TOTAL=$CHATS_FOR_MEMORY wrk -t1 -c"$CONNS" -d120s -s "$root/bench/lua/request_chat.lua" \
  "http://127.0.0.1:$pm" >"$work/wrk-fill.txt" 2>&1
after_chats=$(rss_kb "$gm")
python3 "$root/bench/idle_conns.py" 127.0.0.1 "$pm" "$IDLE_CONNS" >"$work/idle.txt" 2>&1 & idle=$!; pids+=("$idle")
for _ in $(seq 600); do grep -q ready "$work/idle.txt" 2>/dev/null && break; sleep 0.1; done
after_idle=$(rss_kb "$gm")
echo
printf '%-48s %10s\n' "memory (gateway on mock, resident)" "MB"
printf '%-48s %10.1f\n' "at start" "$(echo "$base/1024" | bc -l)"
printf '%-48s %10.1f   (target <= 500)\n' "with $CHATS_FOR_MEMORY open chats" "$(echo "$after_chats/1024" | bc -l)"
printf '%-48s %10.1f   (target <= 100)\n' "+ $(awk '{print $2}' "$work/idle.txt") idle keep-alive connections (growth)" "$(echo "($after_idle-$after_chats)/1024" | bc -l)"
