#!/usr/bin/env bash
# CoAP interop: starts the debug build of Ferry with default ports in a temporary data dir,
# provisions a device with PSK credentials, and sends telemetry and an event over DTLS-PSK
# (coaps://127.0.0.1:5684) with libcoap's coap-client-openssl and coap-client-gnutls (Debian
# libcoap3-bin). Then, on the same port, both clients send telemetry with an openssl-made ECDSA
# client certificate (`-c cert.pem -j key.pem`) of a device registered under the tenant's trusted
# CA. Python qpid-proton consumes; every message must arrive northbound. A wrong key and a
# certificate from a foreign CA must not get through. The clients run with `-n` (no check of the
# server certificate): Ferry's generated DTLS certificate is self-signed, which libcoap does not
# take as its own trust anchor.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${CARGO_TARGET_DIR:-target}/debug/ferry
cargo build -q --bin ferry # cheap when up to date; never reuses a stale binary
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
  code=$(curl -s -o /dev/null -w '%{http_code}' "$mgmt/tenants/none" || true)
  [ "$code" = "404" ] && break
  sleep 0.2
done

fail() { echo "coap interop FAILED: $*"; echo "--- ferry log"; tail -n 50 "$work/ferry.log"; exit 1; }
expect() { # expect CODE curl-args...
  local want=$1; shift
  local got
  got=$(curl -s -o "$work/body" -w '%{http_code}' "$@")
  [ "$got" = "$want" ] || fail "curl $* answered $got, expected $want: $(cat "$work/body")"
}

ca() { # ca NAME SUBJECT
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -keyout "$work/$1-key.pem" -out "$work/$1-cert.pem" -subj "$2" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
}
device() { # device NAME CA SUBJECT
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$work/$1-key.pem" -out "$work/$1.csr" -subj "$3" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' >"$work/$1.ext"
  openssl x509 -req -in "$work/$1.csr" -CA "$work/$2-cert.pem" -CAkey "$work/$2-key.pem" -CAcreateserial \
    -days 7 -extfile "$work/$1.ext" -out "$work/$1-cert.pem" 2>/dev/null
}
ca fleet "/O=CI CoAP/CN=CoAP Device CA"
ca rogue "/O=Rogue/CN=Rogue CA"
device known fleet "/O=CI CoAP/CN=cert-dev"
device impostor rogue "/O=CI CoAP/CN=cert-dev"
der=$(openssl x509 -in "$work/fleet-cert.pem" -outform DER | base64 -w0)

key=coap-interop-key
expect 201 -X POST -H 'content-type: application/json' "$mgmt/tenants/coap-tenant" \
  -d "{\"trusted-ca\":[{\"cert\":\"$der\"}]}"
expect 201 -X POST "$mgmt/devices/coap-tenant/cert-dev"
expect 204 -X PUT -H 'content-type: application/json' "$mgmt/credentials/coap-tenant/cert-dev" \
  -d '[{"type":"x509-cert","auth-id":"CN=cert-dev,O=CI CoAP","secrets":[{}]}]'
expect 201 -X POST "$mgmt/devices/coap-tenant/dev1"
expect 204 -X PUT -H 'content-type: application/json' "$mgmt/credentials/coap-tenant/dev1" \
  -d "[{\"type\":\"psk\",\"auth-id\":\"sensor1\",\"secrets\":[{\"key\":\"$(printf %s "$key" | base64)\"}]}]"

/usr/bin/python3 .ci/proton_consumer.py 127.0.0.1:15672 coap-tenant 6 >"$work/consumed" 2>"$work/consumer.err" &
consumer_pid=$!
for _ in $(seq 1 100); do
  grep -q '^ready' "$work/consumed" 2>/dev/null && break
  kill -0 "$consumer_pid" 2>/dev/null || fail "consumer exited: $(cat "$work/consumer.err")"
  sleep 0.1
done
grep -q '^ready' "$work/consumed" || fail "consumer did not attach"

send() { # send CLIENT PATH PAYLOAD KEY
  timeout 20 "$1" -m post -B 10 -u sensor1@coap-tenant -k "$4" -t text/plain -e "$3" \
    "coaps://127.0.0.1/$2" >"$work/client.out" 2>&1
}
send_cert() { # send_cert CLIENT NAME PAYLOAD
  timeout 20 "$1" -m post -B 10 -n -c "$work/$2-cert.pem" -j "$work/$2-key.pem" -t text/plain -e "$3" \
    "coaps://127.0.0.1/t" >"$work/client.out" 2>&1
}
# First a wrong key and a foreign CA's certificate: the handshake fails or the session is closed
# right after it, nothing is forwarded (had it been, it would take one of the consumer's six
# places and a message below would be missing).
send coap-client-openssl t "must not arrive" wrong-key || true
send_cert coap-client-openssl impostor "must not arrive" || true
for client in coap-client-openssl coap-client-gnutls; do
  send "$client" t "telemetry from $client" "$key" || fail "$client telemetry: $(cat "$work/client.out")"
  grep -q '^[45]\.' "$work/client.out" && fail "$client telemetry refused: $(cat "$work/client.out")"
  send_cert "$client" known "certificate telemetry from $client" || fail "$client certificate: $(cat "$work/client.out")"
  grep -q '^[45]\.' "$work/client.out" && fail "$client certificate telemetry refused: $(cat "$work/client.out")"
  # An event last: its 2.04 does not wait for the consumer, which closes after its last message.
  send "$client" e "event from $client" "$key" || fail "$client event: $(cat "$work/client.out")"
  grep -q '^[45]\.' "$work/client.out" && fail "$client event refused: $(cat "$work/client.out")"
done

wait "$consumer_pid" || fail "consumer failed: $(cat "$work/consumer.err")"
consumer_pid=
for client in coap-client-openssl coap-client-gnutls; do
  grep -q "telemetry device_id=dev1 content-type=text/plain; charset=utf-8 payload=telemetry from $client" "$work/consumed" \
    || fail "telemetry from $client not received: $(cat "$work/consumed")"
  grep -q "event device_id=dev1 content-type=text/plain; charset=utf-8 payload=event from $client" "$work/consumed" \
    || fail "event from $client not received: $(cat "$work/consumed")"
  grep -q "telemetry device_id=cert-dev content-type=text/plain; charset=utf-8 payload=certificate telemetry from $client" "$work/consumed" \
    || fail "certificate telemetry from $client not received: $(cat "$work/consumed")"
done
if grep -q "must not arrive" "$work/consumed"; then fail "a wrong key or a foreign certificate got through"; fi
grep -qE "unknown issuer.*: CN=Rogue CA" "$work/ferry.log" || fail "the foreign certificate's refusal was not logged"
echo "coap interop: coap-client-openssl and coap-client-gnutls (DTLS-PSK and X.509) -> Ferry -> qpid-proton: telemetry and events received"
