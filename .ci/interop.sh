#!/usr/bin/env bash
# Starts the debug build of Ferry with default ports in a temporary data dir, provisions a
# device with curl, consumes with Python qpid-proton and checks that telemetry and an event
# sent with curl (HTTP), mosquitto_pub (MQTT 3.1.1 and 5, plain and TLS) and qpid-proton (AMQP,
# plain and TLS, and SASL EXTERNAL with an openssl-made client certificate) arrive northbound.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${CARGO_TARGET_DIR:-target}/debug/ferry
[ -x "$bin" ] || cargo build --bin ferry
work=$(mktemp -d)
cleanup() {
  [ -n "${ferry_pid:-}" ] && kill "$ferry_pid" 2>/dev/null || true
  [ -n "${consumer_pid:-}" ] && kill "$consumer_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

"$bin" run --data-dir "$work/data" >"$work/ferry.out" 2>"$work/ferry.log" &
ferry_pid=$!
mgmt=http://127.0.0.1:28080/v1
for _ in $(seq 1 100); do
  curl -sf -o /dev/null "$mgmt/tenants/none" -w '' 2>/dev/null && break
  code=$(curl -s -o /dev/null -w '%{http_code}' "$mgmt/tenants/none" || true)
  [ "$code" = "404" ] && break
  sleep 0.2
done

fail() { echo "interop FAILED: $*"; echo "--- ferry log"; tail -n 50 "$work/ferry.log"; exit 1; }
expect() { # expect CODE curl-args...
  local want=$1; shift
  local got
  got=$(curl -s -o "$work/body" -w '%{http_code}' "$@")
  [ "$got" = "$want" ] || fail "curl $* answered $got, expected $want: $(cat "$work/body")"
}

expect 201 -X POST "$mgmt/tenants/ci-tenant"
expect 201 -X POST "$mgmt/devices/ci-tenant/dev1"
expect 204 -X PUT -H 'content-type: application/json' "$mgmt/credentials/ci-tenant/dev1" \
  -d '[{"type":"hashed-password","auth-id":"dev1","secrets":[{"pwd-plain":"s3cret"}]}]'

# A CA and a device certificate made with openssl; the tenant trusts the CA (its public key as
# Base64 DER SubjectPublicKeyInfo), dev-x509 has the certificate's subject DN as x509-cert auth-id.
openssl ecparam -name prime256v1 -genkey -noout -out "$work/ca-key.pem" 2>/dev/null
openssl req -x509 -new -key "$work/ca-key.pem" -subj "/CN=ci-ca" -days 2 -out "$work/ca.pem" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out "$work/dev-key.pem" 2>/dev/null
openssl req -new -key "$work/dev-key.pem" -subj "/CN=dev-x509" -out "$work/dev.csr" 2>/dev/null
printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' \
  >"$work/dev.ext"
openssl x509 -req -in "$work/dev.csr" -CA "$work/ca.pem" -CAkey "$work/ca-key.pem" \
  -CAcreateserial -days 1 -extfile "$work/dev.ext" -out "$work/dev.pem" 2>/dev/null
ca_spki=$(openssl x509 -in "$work/ca.pem" -noout -pubkey | openssl pkey -pubin -outform DER | base64 -w0)
ca_from=$(date -u -d "$(openssl x509 -in "$work/ca.pem" -noout -startdate | cut -d= -f2)" +%Y-%m-%dT%H:%M:%SZ)
ca_to=$(date -u -d "$(openssl x509 -in "$work/ca.pem" -noout -enddate | cut -d= -f2)" +%Y-%m-%dT%H:%M:%SZ)
expect 204 -X PUT -H 'content-type: application/json' "$mgmt/tenants/ci-tenant" \
  -d "{\"trusted-ca\":[{\"subject-dn\":\"CN=ci-ca\",\"public-key\":\"$ca_spki\",\"algorithm\":\"EC\",\"not-before\":\"$ca_from\",\"not-after\":\"$ca_to\"}]}"
expect 201 -X POST "$mgmt/devices/ci-tenant/dev-x509"
expect 204 -X PUT -H 'content-type: application/json' "$mgmt/credentials/ci-tenant/dev-x509" \
  -d '[{"type":"x509-cert","auth-id":"CN=dev-x509","secrets":[{}]}]'

/usr/bin/python3 .ci/proton_consumer.py 127.0.0.1:15672 ci-tenant 10 >"$work/consumed" 2>"$work/consumer.err" &
consumer_pid=$!
for _ in $(seq 1 100); do
  grep -q '^ready' "$work/consumed" 2>/dev/null && break
  kill -0 "$consumer_pid" 2>/dev/null || fail "consumer exited: $(cat "$work/consumer.err")"
  sleep 0.1
done
grep -q '^ready' "$work/consumed" || fail "consumer did not attach"

# AMQP adapter: qpid-proton as the device, SASL PLAIN, anonymous relay, unsettled; plain and TLS.
# First, so that each outcome (which needs the consumer's acceptance) is in before the consumer
# has its count and closes.
/usr/bin/python3 .ci/proton_device.py 127.0.0.1:5672 dev1@ci-tenant s3cret \
  'telemetry=telemetry from proton' 'event=event from proton' >"$work/device.out" 2>&1 \
  || fail "proton device: $(cat "$work/device.out")"
/usr/bin/python3 .ci/proton_device.py --tls "$work/data/tls/server-cert.pem" localhost:5671 \
  dev1@ci-tenant s3cret 'telemetry=amqps from proton' >"$work/device-tls.out" 2>&1 \
  || fail "proton device over TLS: $(cat "$work/device-tls.out")"
/usr/bin/python3 .ci/proton_device.py --tls "$work/data/tls/server-cert.pem" \
  --cert "$work/dev.pem" "$work/dev-key.pem" localhost:5671 - - 'telemetry=external from proton' \
  >"$work/device-external.out" 2>&1 \
  || fail "proton device with SASL EXTERNAL: $(cat "$work/device-external.out")"

expect 202 -u dev1@ci-tenant:s3cret -H 'content-type: text/plain' -d 'hello from curl' http://127.0.0.1:8080/telemetry
expect 202 -u dev1@ci-tenant:s3cret -H 'content-type: text/plain' -d 'event from curl' http://127.0.0.1:8080/event
expect 401 -u dev1@ci-tenant:wrong -H 'content-type: text/plain' -d 'x' http://127.0.0.1:8080/telemetry
expect 202 --cacert "$work/data/tls/server-cert.pem" -u dev1@ci-tenant:s3cret \
  -H 'content-type: text/plain' -d 'over tls' https://localhost:8443/telemetry

# MQTT with Debian's mosquitto_pub: QoS 1 returns only after the PUBACK, which Ferry sends once
# the northbound accepted the message.
mqtt_pub() { # mqtt_pub args...
  timeout 20 mosquitto_pub -i "ci-$RANDOM" -u dev1@ci-tenant "$@" 2>"$work/mqtt.err" \
    || fail "mosquitto_pub $* failed: $(cat "$work/mqtt.err")"
}
# (QoS 1 telemetry waits for the consumer's acceptance, so it is not the last message: the
# consumer hangs up after the last one.)
mqtt_pub -h localhost -p 8883 --cafile "$work/data/tls/server-cert.pem" -P s3cret -q 1 \
  -t telemetry -m 'mqtt over tls'
mqtt_pub -h 127.0.0.1 -p 1883 -P s3cret -q 1 -t event -m 'event from mosquitto'
mqtt_pub -h 127.0.0.1 -p 1883 -P s3cret -q 1 -V mqttv5 -t e \
  -D publish content-type application/json -m '{"v":5}'
if timeout 20 mosquitto_pub -h 127.0.0.1 -p 1883 -u dev1@ci-tenant -P wrong -q 1 -t t -m x \
  2>"$work/mqtt.err"; then
  fail "mosquitto_pub with a wrong password succeeded"
fi
grep -qi 'bad user name or password' "$work/mqtt.err" \
  || fail "wrong MQTT password not refused with 0x04: $(cat "$work/mqtt.err")"

wait "$consumer_pid" || fail "consumer failed: $(cat "$work/consumer.err")"
consumer_pid=
grep -q 'telemetry device_id=dev1 content-type=text/plain payload=hello from curl' "$work/consumed" \
  || fail "telemetry not received: $(cat "$work/consumed")"
grep -q 'event device_id=dev1 content-type=text/plain payload=event from curl' "$work/consumed" \
  || fail "event not received: $(cat "$work/consumed")"
grep -q 'telemetry device_id=dev1 content-type=text/plain payload=over tls' "$work/consumed" \
  || fail "telemetry over TLS not received: $(cat "$work/consumed")"
grep -q 'event device_id=dev1 content-type=application/octet-stream payload=event from mosquitto' "$work/consumed" \
  || fail "MQTT event not received: $(cat "$work/consumed")"
grep -q 'event device_id=dev1 content-type=application/json payload={"v":5}' "$work/consumed" \
  || fail "MQTT 5 event with content type not received: $(cat "$work/consumed")"
grep -q 'telemetry device_id=dev1 content-type=.* payload=mqtt over tls' "$work/consumed" \
  || fail "MQTT telemetry over TLS not received: $(cat "$work/consumed")"
echo "interop: mosquitto_pub (3.1.1, 5, TLS) -> Ferry -> qpid-proton: events and telemetry received"
grep -q 'telemetry device_id=dev1 content-type=text/plain payload=telemetry from proton' "$work/consumed" \
  || fail "AMQP telemetry not received: $(cat "$work/consumed")"
grep -q 'event device_id=dev1 content-type=text/plain payload=event from proton' "$work/consumed" \
  || fail "AMQP event not received: $(cat "$work/consumed")"
grep -q 'telemetry device_id=dev1 content-type=text/plain payload=amqps from proton' "$work/consumed" \
  || fail "AMQP telemetry over TLS not received: $(cat "$work/consumed")"
echo "interop: curl -> Ferry -> qpid-proton: telemetry and event received"
grep -q 'telemetry device_id=dev-x509 content-type=text/plain payload=external from proton' "$work/consumed" \
  || fail "SASL EXTERNAL telemetry from qpid-proton missing: $(cat "$work/consumed")"
echo "interop: qpid-proton device -> Ferry AMQP adapter (plain and TLS) -> qpid-proton: telemetry and event received"
echo "interop: qpid-proton device with an openssl client certificate, SASL EXTERNAL -> Ferry: telemetry received"
echo "1 passed, 0 failed"
