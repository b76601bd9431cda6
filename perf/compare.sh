#!/usr/bin/env bash
# Side-by-side: the same ferry-perf scenarios against Ferry and against its peers on this machine.
#
#   HTTP telemetry   Ferry's HTTP adapter (northbound consumer attached)  vs  nginx answering 202,
#                    with one worker each, then with one worker per CPU each
#   MQTT telemetry   Ferry's MQTT adapter (QoS 0 and 1, 1 over TLS, 1 with MQTT 5)  vs  Mosquitto
#                    (subscriber), and over TLS with client certificates (QoS 0 and 1) from one test
#                    CA for both
#   idle connections Ferry vs nginx (HTTP) and Ferry vs Mosquitto (MQTT 3.1.1 and 5, plain, and
#                    3.1.1 with client certificates): resident memory per connection, each measured
#                    on a freshly started server (a process that held connections before reuses
#                    the freed memory and would look cheaper than it is)
#
# Everything binds to 127.0.0.1 on ports of one block (PORT_BASE, default 29000; see below), runs
# for a bounded time and is stopped when the script ends. Ferry runs from a release build with a
# temporary data dir (kept across its restarts, so provisioned devices stay); Mosquitto (password
# file with the same device users, a TLS listener with a throwaway CA, and a TLS listener that
# requires client certificates from ferry-perf's test CA: `require_certificate`,
# `use_identity_as_username`) and nginx (`return 202`) are Debian's, installed with apt-get when
# missing.
#
# Settings (environment): DURATION (s, default 10), DEVICES (100), PAYLOAD (256), RATE (max),
# CONNECTIONS (10000), SKIP=mqtt,mqtt5,x509,http,connections (parts to skip; x509: the
# client-certificate MQTT runs; mqtt5: the MQTT 5 runs), OUT (results dir, default a temp dir),
# PORT_BASE (29000), NO_BUILD=1 (use the existing release binaries).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
DEVICES=${DEVICES:-100}
PAYLOAD=${PAYLOAD:-256}
RATE=${RATE:-max}
CONNECTIONS=${CONNECTIONS:-10000}
SKIP=${SKIP:-}
PORT_BASE=${PORT_BASE:-29000}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
WORK=$(mktemp -d /tmp/ferry-compare.XXXXXX)
chmod 711 "$WORK" # Mosquitto drops root privileges and must reach its password file
OUT=${OUT:-$WORK/results}
mkdir -p "$OUT"

# Ports (loopback only): one block of 1,000 from PORT_BASE, the last three digits recalling the
# usual port. The default block, 29000-29999, lies away from Hono's defaults, from the 1xxxx-4xxxx
# ports the developers' own gateways use, and below the ephemeral range (32768+), which 10,000
# client connections would otherwise collide with.
port() { echo $((PORT_BASE + $1)); }
MGMT=$(port 80) HTTP=$(port 81) HTTPS=$(port 443) NORTH=$(port 672) AMQP=$(port 673) AMQPS=$(port 671)
FERRY_MQTT=$(port 183) FERRY_MQTTS=$(port 883) COAP=$(port 683) COAPS=$(port 684)
NGINX=$(port 90) MOSQ=$(port 283) MOSQ_TLS=$(port 284) MOSQ_X509=$(port 285)

FERRY_PID= MOSQ_PID= NGINX_WORKER=
FERRY_SETTINGS=() # extra `--set` arguments for the next start of Ferry
cleanup() {
  stop_ferry
  stop_mosquitto
  stop_nginx
  rm -rf "$WORK/ferry"
}
trap cleanup EXIT

skip() { [[ ",$SKIP," == *",$1,"* ]]; }
say() { printf '\n== %s\n' "$*" >&2; }
wait_port() { # port
  for _ in $(seq 1 100); do
    ss -ltnH "sport = :$1" | grep -q LISTEN && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  return 1
}

need=()
command -v mosquitto >/dev/null || need+=(mosquitto)
command -v mosquitto_passwd >/dev/null || need+=(mosquitto)
command -v nginx >/dev/null || need+=(nginx)
command -v python3 >/dev/null || need+=(python3)
command -v openssl >/dev/null || need+=(openssl)
if [ "${#need[@]}" -gt 0 ]; then
  say "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ -z "${NO_BUILD:-}" ]; then
  say "building ferry and ferry-perf (release)"
  cargo build --release -q -p ferry -p ferry-perf
fi
FERRY=$TARGET_DIR/release/ferry
PERF=$TARGET_DIR/release/ferry-perf
for bin in "$FERRY" "$PERF"; do
  [ -x "$bin" ] || { echo "$bin is missing: build it (unset NO_BUILD) or set CARGO_TARGET_DIR" >&2; exit 1; }
done

# Note: Ferry reads every FERRY_* variable as configuration, so the harness's own variables are PERF_*.
# One random device password for this comparison, set in Ferry's registry by ferry-perf and
# hashed into Mosquitto's password file. It lives only in this process and the temp dir.
PERF_PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
export PERF_PASSWORD
export PERF_LOG=${PERF_LOG:-error}

# Ferry, nginx and Mosquitto are restarted before every idle-connection measurement.
start_ferry() {
  FERRY_LOG=warn "$FERRY" run --data-dir "$WORK/ferry" \
    --set "management.bind=\"127.0.0.1:$MGMT\"" --set "northbound.bind=\"127.0.0.1:$NORTH\"" \
    --set "http.bind=\"127.0.0.1:$HTTP\"" --set "http.tls_bind=\"127.0.0.1:$HTTPS\"" \
    --set "mqtt.bind=\"127.0.0.1:$FERRY_MQTT\"" --set "mqtt.tls_bind=\"127.0.0.1:$FERRY_MQTTS\"" \
    --set "amqp.bind=\"127.0.0.1:$AMQP\"" --set "amqp.tls_bind=\"127.0.0.1:$AMQPS\"" \
    --set "coap.bind=\"127.0.0.1:$COAP\"" --set "coap.dtls_bind=\"127.0.0.1:$COAPS\"" \
    ${FERRY_SETTINGS[@]+"${FERRY_SETTINGS[@]}"} >>"$WORK/ferry.log" 2>&1 &
  FERRY_PID=$!
  for p in "$MGMT" "$HTTP" "$FERRY_MQTT" "$FERRY_MQTTS"; do wait_port "$p"; done
}
stop_ferry() {
  if [ -n "$FERRY_PID" ]; then
    kill "$FERRY_PID" 2>/dev/null || true
    wait "$FERRY_PID" 2>/dev/null || true
    FERRY_PID=
  fi
}
restart_ferry() {
  stop_ferry
  start_ferry
}

say "starting Ferry"
start_ferry

mkdir -p "$WORK/nginx"
nginx_config() { # workers: nginx.conf with that many worker processes, answering 202
  cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes $1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 20000; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
    server {
        listen 127.0.0.1:$NGINX;
        location / { return 202; }
    }
}
EOF
}
say "starting nginx (one worker, return 202)"
nginx_config 1
start_nginx() {
  nginx -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log"
  wait_port "$NGINX"
  NGINX_WORKER=$(pgrep -P "$(cat "$WORK/nginx/nginx.pid")" | head -n 1)
}
stop_nginx() { # the master runs detached: signal it and wait until it is gone
  local master
  master=$(cat "$WORK/nginx/nginx.pid" 2>/dev/null || true)
  if [ -n "$master" ]; then
    kill "$master" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$master" 2>/dev/null || break; sleep 0.1; done
  fi
  NGINX_WORKER=
}
restart_nginx() {
  stop_nginx
  start_nginx
}
start_nginx

say "starting Mosquitto (password file with the same $DEVICES device users)"
mkdir -p "$WORK/mosquitto"
: >"$WORK/mosquitto/passwd"
for i in $(seq 0 $((DEVICES - 1))); do
  printf 'perf-%05d@perf:%s\n' "$i" "$PERF_PASSWORD" >>"$WORK/mosquitto/passwd"
done
mosquitto_passwd -U "$WORK/mosquitto/passwd"
chmod 600 "$WORK/mosquitto/passwd"
# Debian's mosquitto drops root privileges to the `mosquitto` user.
if id mosquitto >/dev/null 2>&1; then chown mosquitto "$WORK/mosquitto/passwd"; fi
# A throwaway CA and server certificate (localhost, 127.0.0.1) for Mosquitto's TLS listener.
mkdir -p "$WORK/tls"
(
  cd "$WORK/tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
    -days 2 -subj "/CN=ferry-perf compare CA" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr \
    -subj "/CN=localhost" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 \
    -extfile ext 2>/dev/null
  chmod 644 ca.pem server.pem
  chmod 600 server.key
  if id mosquitto >/dev/null 2>&1; then chown mosquitto server.key; fi
)
chmod 711 "$WORK/tls"
# ferry-perf's test CA and device certificates (tenant perfx, so the password devices of tenant
# perf keep their credentials): Ferry's tenant trusts the CA, Mosquitto's cafile is the same CA.
say "provisioning $DEVICES certificate devices in Ferry (ferry-perf's test CA)"
X509_ARGS=(--tenant perfx --auth x509 --pki-dir "$WORK/pki")
"$PERF" --management "http://127.0.0.1:$MGMT" "${X509_ARGS[@]}" --devices "$DEVICES" setup
chmod go+x "$WORK/pki" "$WORK/pki/perfx"
chmod go+r "$WORK/pki/perfx/ca-cert.pem"
cat >"$WORK/mosquitto/mosquitto.conf" <<EOF
per_listener_settings false
allow_anonymous false
password_file $WORK/mosquitto/passwd
listener $MOSQ 127.0.0.1
listener $MOSQ_TLS 127.0.0.1
certfile $WORK/tls/server.pem
keyfile $WORK/tls/server.key
listener $MOSQ_X509 127.0.0.1
certfile $WORK/tls/server.pem
keyfile $WORK/tls/server.key
cafile $WORK/pki/perfx/ca-cert.pem
require_certificate true
use_identity_as_username true
max_inflight_messages 100
max_queued_messages 10000
persistence false
log_dest stderr
log_type error
EOF
start_mosquitto() {
  mosquitto -c "$WORK/mosquitto/mosquitto.conf" >>"$WORK/mosquitto.log" 2>&1 &
  MOSQ_PID=$!
  for p in "$MOSQ" "$MOSQ_TLS" "$MOSQ_X509"; do wait_port "$p"; done
}
stop_mosquitto() {
  if [ -n "$MOSQ_PID" ]; then
    kill "$MOSQ_PID" 2>/dev/null || true
    wait "$MOSQ_PID" 2>/dev/null || true
    MOSQ_PID=
  fi
}
restart_mosquitto() {
  stop_mosquitto
  start_mosquitto
}
start_mosquitto

FERRY_ARGS=(--management "http://127.0.0.1:$MGMT" --northbound "127.0.0.1:$NORTH"
  --http "http://127.0.0.1:$HTTP")
say "provisioning $DEVICES devices in Ferry"
"$PERF" "${FERRY_ARGS[@]}" --devices "$DEVICES" setup
COMMON=(--devices "$DEVICES" --payload-size "$PAYLOAD" --rate "$RATE" --duration "$DURATION" --quiet)
COMPARISONS=()

run() { # name args...: one ferry-perf run, JSON into $OUT/name.json, table to stderr
  local name=$1
  shift
  say "$name"
  "$PERF" "$@" --json "$OUT/$name.json" --plot "$OUT/$name.svg" >&2
}

FERRY_MQTT_ARGS=("${FERRY_ARGS[@]}" --mqtt "mqtt://127.0.0.1:$FERRY_MQTT" --no-setup --transport mqtt)
FERRY_X509_ARGS=("${FERRY_ARGS[@]}" "${X509_ARGS[@]}" --mqtt "mqtts://localhost:$FERRY_MQTTS"
  --ca "$WORK/ferry/tls/server-cert.pem" --no-setup --transport mqtt)
MOSQ_X509_ARGS=("${X509_ARGS[@]}" --target "mqtts://localhost:$MOSQ_X509" --ca "$WORK/tls/ca.pem" --transport mqtt)
CONN=(connections --count "$CONNECTIONS")

# Idle connections, each on a server started just before (see the header).
if ! skip connections; then
  restart_ferry
  run ferry-http-connections "${FERRY_ARGS[@]}" --no-setup --pid "$FERRY_PID" --transport http "${COMMON[@]}" "${CONN[@]}"
  restart_nginx
  run nginx-http-connections --target "http://127.0.0.1:$NGINX" --pid "$NGINX_WORKER" --transport http "${COMMON[@]}" "${CONN[@]}"
  COMPARISONS+=("conn|HTTP idle connections|ferry-http-connections|nginx-http-connections|nginx")
  restart_ferry
  run ferry-mqtt-connections "${FERRY_MQTT_ARGS[@]}" --pid "$FERRY_PID" "${COMMON[@]}" "${CONN[@]}"
  restart_mosquitto
  run mosquitto-mqtt-connections --target "mqtt://127.0.0.1:$MOSQ" --pid "$MOSQ_PID" --transport mqtt "${COMMON[@]}" "${CONN[@]}"
  COMPARISONS+=("conn|MQTT idle connections|ferry-mqtt-connections|mosquitto-mqtt-connections|Mosquitto")
  if ! skip mqtt5; then
    restart_ferry
    run ferry-mqtt5-connections "${FERRY_MQTT_ARGS[@]}" --mqtt-version 5 --pid "$FERRY_PID" "${COMMON[@]}" "${CONN[@]}"
    restart_mosquitto
    run mosquitto-mqtt5-connections --target "mqtt://127.0.0.1:$MOSQ" --mqtt-version 5 --pid "$MOSQ_PID" --transport mqtt "${COMMON[@]}" "${CONN[@]}"
    COMPARISONS+=("conn|MQTT 5 idle connections|ferry-mqtt5-connections|mosquitto-mqtt5-connections|Mosquitto")
  fi
  if ! skip x509; then
    restart_ferry
    run ferry-mqtts-x509-connections "${FERRY_X509_ARGS[@]}" --pid "$FERRY_PID" "${COMMON[@]}" "${CONN[@]}"
    restart_mosquitto
    run mosquitto-mqtts-x509-connections "${MOSQ_X509_ARGS[@]}" --pid "$MOSQ_PID" "${COMMON[@]}" "${CONN[@]}"
    COMPARISONS+=("conn|MQTT idle TLS connections with client certificates|ferry-mqtts-x509-connections|mosquitto-mqtts-x509-connections|Mosquitto")
  fi
  # The load runs start from fresh processes too.
  restart_ferry
  restart_mosquitto
  restart_nginx
fi

if ! skip http; then
  # Twice: one worker each (Ferry `worker_threads = 1`, nginx `worker_processes 1`), then one
  # worker per CPU each (Ferry's default). nginx's CPU is read from its one worker only, so the
  # second run shows none for it.
  WORKER_COUNTS=(1)
  if [ "$(nproc)" -gt 1 ]; then WORKER_COUNTS+=("$(nproc)"); fi
  for workers in "${WORKER_COUNTS[@]}"; do
    if [ "$workers" = 1 ]; then FERRY_SETTINGS=(--set worker_threads=1); else FERRY_SETTINGS=(); fi
    restart_ferry
    nginx_config "$workers"
    restart_nginx
    nginx_pid=()
    if [ "$workers" = 1 ]; then nginx_pid=(--pid "$NGINX_WORKER"); fi
    run "ferry-http-telemetry-w$workers" "${FERRY_ARGS[@]}" --no-setup --pid "$FERRY_PID" --transport http "${COMMON[@]}" telemetry
    run "nginx-http-telemetry-w$workers" --target "http://127.0.0.1:$NGINX" ${nginx_pid[@]+"${nginx_pid[@]}"} --transport http "${COMMON[@]}" telemetry
    COMPARISONS+=("load|HTTP telemetry QoS 0, $workers worker(s) each|ferry-http-telemetry-w$workers|nginx-http-telemetry-w$workers|nginx")
  done
fi

if ! skip mqtt; then
  for qos in 0 1; do
    run "ferry-mqtt-qos$qos" "${FERRY_MQTT_ARGS[@]}" --pid "$FERRY_PID" --qos "$qos" "${COMMON[@]}" telemetry
    run "mosquitto-mqtt-qos$qos" --target "mqtt://127.0.0.1:$MOSQ" --pid "$MOSQ_PID" --transport mqtt --qos "$qos" "${COMMON[@]}" telemetry
    COMPARISONS+=("load|MQTT telemetry QoS $qos|ferry-mqtt-qos$qos|mosquitto-mqtt-qos$qos|Mosquitto")
  done
  if ! skip mqtt5; then
    run ferry-mqtt5-qos1 "${FERRY_MQTT_ARGS[@]}" --mqtt-version 5 --pid "$FERRY_PID" --qos 1 "${COMMON[@]}" telemetry
    run mosquitto-mqtt5-qos1 --target "mqtt://127.0.0.1:$MOSQ" --mqtt-version 5 --pid "$MOSQ_PID" --transport mqtt --qos 1 "${COMMON[@]}" telemetry
    COMPARISONS+=("load|MQTT 5 telemetry QoS 1|ferry-mqtt5-qos1|mosquitto-mqtt5-qos1|Mosquitto")
  fi
  # QoS 1 over TLS with passwords.
  run ferry-mqtts-qos1 "${FERRY_ARGS[@]}" --mqtt "mqtts://localhost:$FERRY_MQTTS" --ca "$WORK/ferry/tls/server-cert.pem" \
    --no-setup --pid "$FERRY_PID" --transport mqtt --qos 1 "${COMMON[@]}" telemetry
  run mosquitto-mqtts-qos1 --target "mqtts://localhost:$MOSQ_TLS" --ca "$WORK/tls/ca.pem" --pid "$MOSQ_PID" \
    --transport mqtt --qos 1 "${COMMON[@]}" telemetry
  COMPARISONS+=("load|MQTT telemetry QoS 1 over TLS|ferry-mqtts-qos1|mosquitto-mqtts-qos1|Mosquitto")
  # QoS 0 and 1 over TLS with client certificates from the same test CA (issue 5's MQTT rows).
  if ! skip x509; then
    for qos in 0 1; do
      run "ferry-mqtts-x509-qos$qos" "${FERRY_X509_ARGS[@]}" --pid "$FERRY_PID" --qos "$qos" "${COMMON[@]}" telemetry
      run "mosquitto-mqtts-x509-qos$qos" "${MOSQ_X509_ARGS[@]}" --pid "$MOSQ_PID" --qos "$qos" "${COMMON[@]}" telemetry
      COMPARISONS+=("load|MQTT telemetry QoS $qos over TLS with client certificates|ferry-mqtts-x509-qos$qos|mosquitto-mqtts-x509-qos$qos|Mosquitto")
    done
  fi
fi

say "summary"
python3 - "$OUT" "${COMPARISONS[@]}" <<'EOF' | tee "$OUT/compare.md"
import json, os, sys

out, comparisons = sys.argv[1], sys.argv[2:]

def load(name):
    path = os.path.join(out, name + ".json")
    return json.load(open(path)) if os.path.exists(path) else None

def get(r, *path):
    for p in path:
        if r is None:
            return None
        r = r.get(p) if isinstance(r, dict) else None
    return r

e2e = lambda key: (lambda r: get(r, "end_to_end", key) if get(r, "end_to_end", "count") else None)
rows_load = [
    ("acknowledged msg/s", lambda r: get(r, "acked_per_s"), "{:,.0f}"),
    ("received msg/s", lambda r: get(r, "received_per_s"), "{:,.0f}"),
    ("received / acknowledged", lambda r: (get(r, "received") / get(r, "acked")) if get(r, "received") is not None and get(r, "acked") else None, "{:.3f}"),
    ("end-to-end p50 ms", e2e("p50_ms"), "{:.2f}"),
    ("end-to-end p99 ms", e2e("p99_ms"), "{:.2f}"),
    ("end-to-end p99.9 ms", e2e("p999_ms"), "{:.2f}"),
    ("acknowledge p50 ms", lambda r: get(r, "ack", "p50_ms") if get(r, "ack", "count") else None, "{:.2f}"),
    ("acknowledge p99 ms", lambda r: get(r, "ack", "p99_ms") if get(r, "ack", "count") else None, "{:.2f}"),
    ("errors", lambda r: sum(get(r, "errors").values()) if get(r, "errors") is not None else None, "{:,}"),
    ("server CPU (cores)", lambda r: get(r, "gateway", "cpu", "cores"), "{:.2f}"),
    ("server RSS peak MiB", lambda r: get(r, "gateway", "rss_kib_peak") / 1024 if get(r, "gateway", "rss_kib_peak") else None, "{:.1f}"),
    ("load generator CPU (cores)", lambda r: get(r, "loadgen", "cores"), "{:.2f}"),
    ("load generator CPU µs per message", lambda r: get(r, "loadgen", "us_per_message"), "{:.1f}"),
]
rows_conn = [
    ("connections open", lambda r: get(r, "connections", "opened"), "{:,}"),
    ("seconds to open them", lambda r: get(r, "connections", "open_seconds"), "{:.1f}"),
    ("server RSS before MiB", lambda r: get(r, "connections", "rss_kib_before") / 1024 if get(r, "connections", "rss_kib_before") else None, "{:.1f}"),
    ("server RSS with all open MiB", lambda r: get(r, "connections", "rss_kib_after") / 1024 if get(r, "connections", "rss_kib_after") else None, "{:.1f}"),
    ("RSS per connection (bytes)", lambda r: get(r, "connections", "rss_bytes_per_connection"), "{:,.0f}"),
    ("errors", lambda r: sum(get(r, "errors").values()) if get(r, "errors") is not None else None, "{:,}"),
]

def fmt(f, v):
    return "–" if v is None else f.format(v)

machine = None
for c in comparisons:
    kind, label, ferry_name, peer_name, peer = c.split("|")
    ferry, other = load(ferry_name), load(peer_name)
    machine = machine or get(ferry, "machine") or get(other, "machine")
    r = ferry or other
    if kind == "conn":
        rows = rows_conn
        print(f"\n### {label}: {get(r, 'connections', 'requested')} connections (each authenticated), held idle\n")
    else:
        rows = rows_load
        print(f"\n### {label}: {get(r, 'devices')} devices, {get(r, 'payload_size')}-byte payloads, rate {get(r, 'rate')}, {get(r, 'duration_s') or 0:.0f} s\n")
    if ferry is None:
        print(f"(Ferry skipped: not available for this comparison)\n")
    print(f"| figure | Ferry | {peer} | Ferry / {peer} |")
    print("|---|---:|---:|---:|")
    for name, f, spec in rows:
        a, b = f(ferry), f(other)
        if a is None and b is None:
            continue
        ratio = f"{a / b:.2f}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else "–"
        print(f"| {name} | {fmt(spec, a)} | {fmt(spec, b)} | {ratio} |")
if machine:
    print(f"\nMachine: {machine['nproc']} CPUs ({machine['cpu_model']}), load average {machine.get('load_average', 0):.2f} at the end; load generator on the same machine.")
EOF
echo >&2
echo "results: $OUT" >&2
